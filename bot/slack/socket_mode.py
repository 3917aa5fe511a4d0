"""Socket Mode: Slack's requests over a WebSocket, connected in the background so the web server never waits."""

from __future__ import annotations

import asyncio
import logging
import random

import aiohttp
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)

FIRST_RETRY_SECONDS = 1.0
LAST_RETRY_SECONDS = 60.0
# slack_sdk's connect() retries the WebSocket URL it was given forever, and such a URL is only good for a short
# while: an attempt that has not connected by then starts over with a new URL.
CONNECT_TIMEOUT_SECONDS = 30.0
# What apps.connections.open answers when SLACK_APP_TOKEN is not an app-level token with connections:write:
# a bot token (xoxb-…) gets not_allowed_token_type, a made-up, revoked or other app's token invalid_auth.
TOKEN_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "not_allowed_token_type",
        "token_revoked",
        "token_expired",
        "account_inactive",
        "missing_scope",
        "no_permission",
    }
)
# What an unreachable or failing Slack raises from the Web API client.
UNREACHABLE_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)


def retry_delay(failures: int) -> float:
    """Seconds to wait after `failures` failed attempts: 1 s doubling to 60 s, less up to a quarter at random so
    replicas that lost Slack together do not come back in step (the delays still grow attempt after attempt)."""
    delay = min(LAST_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** min(failures - 1, 16))
    return delay * random.uniform(0.75, 1.0)


def refusal(error: str) -> str:
    """What an error of apps.connections.open means for the operator, naming the setting to fix."""
    if error in TOKEN_ERRORS:
        return (
            f"apps.connections.open answered {error}: SLACK_APP_TOKEN is not a valid app-level token (xapp-…) "
            "with connections:write (Basic Information → App-Level Tokens in the Slack app's settings)"
        )
    return f"apps.connections.open answered {error}"


class SocketMode:
    """Bolt's Socket Mode handler, connected by a background task that retries with backoff until it is."""

    def __init__(self, bolt: AsyncApp, app_token: str) -> None:
        self.bolt = bolt
        self.app_token = app_token
        # Bolt's client retries connection errors itself, which would only stretch each attempt: here the
        # backoff below is the retry, and each attempt logs one line.
        self.web_client = AsyncWebClient(
            base_url=bolt.client.base_url,
            timeout=bolt.client.timeout,
            session=bolt.client.session,
            retry_handlers=[],
        )
        self.handler: AsyncSocketModeHandler | None = None
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start connecting in the background (needs the running event loop)."""
        # The handler opens its own aiohttp session and a task as it is made, so it is made here, not before.
        self.handler = AsyncSocketModeHandler(self.bolt, self.app_token, web_client=self.web_client)
        self._task = asyncio.create_task(self._connect(), name="socket-mode-connect")

    async def stop(self) -> None:
        """Stop connecting, close the WebSocket and the handler's session, and wait for its tasks to end."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.handler is None:
            return
        client = self.handler.client
        await self.handler.close_async()
        # close() cancels the client's tasks without waiting for them; they end before the event loop does.
        tasks = [client.message_processor, client.current_session_monitor, client.message_receiver]
        await asyncio.gather(*(task for task in tasks if task is not None), return_exceptions=True)

    async def _connect(self) -> None:
        failures = 0
        while True:
            unexpected: Exception | None = None
            try:
                problem = await self._attempt()
            except Exception as error:
                # A bug or an SDK change rather than Slack's answer: logged with its traceback, and retried.
                problem, unexpected = f"{type(error).__name__}: {error}", error
            if problem is None:
                break
            failures += 1
            delay = retry_delay(failures)
            log.warning(
                "Socket Mode is not connected (attempt %d): %s. The web server is up; retrying in %.1f s",
                failures,
                problem,
                delay,
                exc_info=unexpected,
            )
            await asyncio.sleep(delay)
        self.connected.set()
        log.info("Connected to Slack in Socket Mode")

    async def _attempt(self) -> str | None:
        """Connect once: None when connected, else what went wrong, in one line."""
        assert self.handler is not None
        try:
            response = await self.web_client.apps_connections_open(app_token=self.app_token)
        except SlackApiError as error:
            return refusal(str(error.response.get("error") or f"HTTP {error.response.status_code}"))
        except UNREACHABLE_ERRORS as error:
            reason = str(error) or type(error).__name__
            return f"Slack's Web API at SLACK_API_URL ({self.web_client.base_url}) could not be reached: {reason}"
        self.handler.client.wss_uri = str(response["url"])
        try:
            await asyncio.wait_for(self.handler.connect_async(), CONNECT_TIMEOUT_SECONDS)
        except TimeoutError:
            return f"the WebSocket apps.connections.open gave did not open within {CONNECT_TIMEOUT_SECONDS:.0f} s"
        return None
