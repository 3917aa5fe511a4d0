"""Events Slack delivers again are acknowledged and not handled twice: over HTTP, Slack signs each delivery anew
(X-Slack-Retry-Num), and Socket Mode, which is not signed at all, redelivers the same way, so this is a Bolt
global middleware on the Events API's event_id rather than part of the HTTP route."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from slack_bolt.async_app import AsyncApp
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from storage.errors import DATABASE_OUTAGE
from storage.slack_deliveries import SlackDeliveries

log = logging.getLogger(__name__)


class EventsHandledOnce(AsyncMiddleware):
    """Remembers each event_callback's event_id, and answers one already seen with an empty 200."""

    def __init__(self, deliveries: SlackDeliveries) -> None:
        self.deliveries = deliveries

    async def async_process(
        self,
        *,
        req: AsyncBoltRequest,
        resp: BoltResponse,
        next: Callable[[], Awaitable[BoltResponse]],
    ) -> BoltResponse:
        """Pass the request on, unless it is an event already handled."""
        event_id = req.body.get("event_id")
        if req.body.get("type") != "event_callback" or not isinstance(event_id, str):
            return await next()  # only the Events API has event ids (and retries of the same body)
        try:
            first = await self.deliveries.first_event(event_id)
        except DATABASE_OUTAGE as error:
            # As for replays: the listener meets the outage itself, and handles it as it does.
            log.warning(
                "Event %s could not be checked for a redelivery: the database could not be reached (%s)",
                event_id,
                type(error).__name__,
            )
            return await next()
        if first:
            return await next()
        retry = (req.headers.get("x-slack-retry-num") or ["?"])[0]
        log.info("Event %s delivered again (retry %.8s): already handled, acknowledged only", event_id, retry)
        return BoltResponse(status=200, body="")


def register(bolt: AsyncApp, deliveries: SlackDeliveries) -> None:
    """Make every event pass EventsHandledOnce before any listener."""
    bolt.middleware(EventsHandledOnce(deliveries))
