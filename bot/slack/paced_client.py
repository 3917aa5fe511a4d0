"""The Web API client that waits for the pacer before each call and never gives up a rate-limited one.

PacedWebClient takes its turn from the Pacer before every attempt and, on a 429, tells the pacer (which pauses
every sender of that method for Retry-After) and waits its turn again, as often as it takes. Bolt builds a plain
AsyncWebClient per request with a copy of the retry handlers: PacedRateLimitRetryHandler is among them, so a 429
met by a listener's client pauses the others too, and is retried in its turn.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.slack.pacer import Pacer, retry_after_seconds

log = logging.getLogger(__name__)

# Set while PacedWebClient.api_call runs: it handles its 429s itself, so the retry handler leaves them to it.
_PACED: contextvars.ContextVar[bool] = contextvars.ContextVar("paced", default=False)


class PacedWebClient(AsyncWebClient):
    """An AsyncWebClient whose every call waits for the shared pacer, and whose 429s wait their turn again."""

    def __init__(self, *, pacer: Pacer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pacer = pacer

    async def api_call(self, api_method: str, **kwargs: Any) -> AsyncSlackResponse:
        """The call, in its turn; a 429 pauses every sender of the method and the call goes again later."""
        channel = _channel_of(kwargs)
        asked_at = self.pacer.clock()
        token = _PACED.set(True)
        try:
            while True:
                ticket = await self.pacer.turn(api_method, channel)
                try:
                    response = await super().api_call(api_method, **kwargs)
                except SlackApiError as error:
                    if error.response.status_code != 429:
                        self.pacer.accepted(api_method, asked_at=asked_at)
                        raise
                    retry_after = retry_after_seconds(error.response.headers.get("Retry-After"))
                    log.info("Slack rate-limited %s: all wait %.2f s", api_method, retry_after)
                    self.pacer.limited(api_method, retry_after, ticket)
                    continue
                self.pacer.accepted(api_method, asked_at=asked_at)
                return response
        finally:
            _PACED.reset(token)


class PacedRateLimitRetryHandler(AsyncRetryHandler):
    """For the clients Bolt makes per request: a 429 is told to the pacer and retried in the method's turn."""

    def __init__(self, pacer: Pacer) -> None:
        # slack_sdk stops any call after 100 attempts, whatever its handlers say.
        super().__init__(max_retry_count=sys.maxsize)
        self.pacer = pacer

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return response is not None and response.status_code == 429 and not _PACED.get()

    async def prepare_for_next_attempt_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        assert response is not None
        method = request.url.rstrip("/").rsplit("/", 1)[-1]
        values = [
            value
            for name, found in response.headers.items()
            if name.lower() == "retry-after"
            for value in found
        ]
        retry_after = retry_after_seconds(values[0] if values else None)
        self.pacer.limited(method, retry_after, None)
        await self.pacer.turn(method)
        state.next_attempt_requested = True
        state.increment_current_attempt()


def _channel_of(kwargs: dict[str, Any]) -> str | None:
    """The `channel` argument of a call, wherever slack_sdk put it (JSON, form data or query)."""
    for part in ("json", "data", "params"):
        values = kwargs.get(part)
        if isinstance(values, dict) and values.get("channel"):
            return str(values["channel"])
    return None
