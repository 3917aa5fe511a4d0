"""The listeners' error handler: a listener that fails after its ack is logged with the traceback, and the
user who asked is told, in their language, that something went wrong (rather than nothing at all)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.services import Services
from bot.slack.mrkdwn import slack_text
from storage.errors import DATABASE_OUTAGE, StorageError

log = logging.getLogger(__name__)

# What telling the user can run into: Slack refusing, Slack or the database out of reach.
_TELLING_FAILED = (SlackApiError, aiohttp.ClientError, TimeoutError, OSError, StorageError)


async def after_ack(
    services: Services,
    *,
    ack: AsyncAck,
    body: dict[str, Any],
    respond: AsyncRespond | None,
    client: AsyncWebClient,
    work: Callable[[], Awaitable[None]],
) -> None:
    """Acknowledge, then do the work; a failure of the work is reported here as Bolt's error handler would.

    Not left to Bolt: when a listener fails after ack() and Bolt's error handler returns within the runner's
    10 ms polling interval, slack_bolt.listener.asyncio_runner has set ack.response back to None by the time it
    looks, and answers Slack 404, which Slack shows the user as an error of its own. A database that refuses
    at once, and a user whose language is known, make that fast enough (seen during outages)."""
    await ack()
    try:
        await work()
    except Exception as error:
        await listener_failed(services, error=error, body=body, respond=respond, client=client)


# What a listener does after its ack: every one takes the request's body, the Web API client and `respond`.
Work = Callable[..., Awaitable[None]]
Listener = Callable[[AsyncAck, dict[str, Any], AsyncWebClient, AsyncRespond], Awaitable[None]]


def acknowledging(services: Services, work: Work) -> Listener:
    """A Bolt listener that acknowledges, then runs `work(services, body=, client=, respond=)` (see after_ack)."""

    async def listener(
        ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond
    ) -> None:
        await after_ack(
            services,
            ack=ack,
            body=body,
            respond=respond,
            client=client,
            work=lambda: work(services, body=body, client=client, respond=respond),
        )

    listener.__qualname__ = getattr(work, "__qualname__", "listener")  # Bolt's logs name the listener by it
    return listener


def register(bolt: AsyncApp, services: Services) -> None:
    """Make `listener_failed` Bolt's error handler."""

    async def on_error(
        error: Exception, body: dict[str, Any], respond: AsyncRespond | None, client: AsyncWebClient
    ) -> None:
        await listener_failed(services, error=error, body=body, respond=respond, client=client)

    bolt.error(on_error)


async def listener_failed(
    services: Services,
    *,
    error: Exception,
    body: dict[str, Any],
    respond: AsyncRespond | None,
    client: AsyncWebClient,
) -> None:
    """Log the failure with its traceback; tell the user through the request's response URL, or (for a
    button on the App Home, which has none) in their DM. Events the user did not ask for are only logged."""
    kind = str(body.get("type") or ("slash_command" if body.get("command") else "unknown"))
    log.error("A Slack listener failed (%s)", kind, exc_info=(type(error), error, error.__traceback__))
    user_id = _user_of(body)
    if user_id is None or kind == "event_callback":
        return
    try:
        key = "slack.error.database" if isinstance(error, DATABASE_OUTAGE) else "slack.error.generic"
        line = slack_text(await services.users.locale(user_id), key)
        if respond is not None and body.get("response_url"):
            await respond(text=line, response_type="ephemeral", replace_original=False)
        elif kind == "block_actions":
            await client.chat_postMessage(channel=user_id, text=line)
    except _TELLING_FAILED as telling:
        log.warning("The user %s could not be told of the failure: %s", user_id, type(telling).__name__)


def _user_of(body: dict[str, Any]) -> str | None:
    user = body.get("user")
    if isinstance(user, dict) and isinstance(user.get("id"), str):
        return str(user["id"])
    return str(body["user_id"]) if isinstance(body.get("user_id"), str) else None
