"""What Slack has already sent (tables slack_request_replays and slack_events_handled): each signed request and
each Events API event is taken once, by whichever replica it reaches first."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import asyncpg

# A signed request is remembered this long past its timestamp: Slack's signature check accepts a timestamp up
# to 5 minutes from now, and the rest is room for replicas' and the database's clocks to differ.
REQUEST_KEPT_FOR = timedelta(minutes=10)
# Slack delivers an unacknowledged event again three times, over about 5 minutes; an hour is well past that.
EVENT_KEPT_FOR = timedelta(hours=1)
# Expired rows are deleted by the process that remembers something, at most this often.
PURGE_EVERY_SECONDS = 60.0


class SlackDeliveries:
    """Repository over slack_request_replays and slack_events_handled."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._next_purge = 0.0

    async def first_request(self, request_hash: bytes, *, timestamp: int) -> bool:
        """Remember a signed request (a hash of its timestamp and signature): True the first time, False for a
        replay. Of two replicas given the same request at once, exactly one gets True."""
        await self._purge_now_and_then()
        taken = await self.pool.fetchval(
            """INSERT INTO slack_request_replays (request_hash, expires_at) VALUES ($1, $2)
               ON CONFLICT (request_hash) DO NOTHING
               RETURNING true""",
            request_hash,
            datetime.fromtimestamp(timestamp, UTC) + REQUEST_KEPT_FOR,
        )
        return taken is True

    async def first_event(self, event_id: str) -> bool:
        """Remember an Events API event_id for EVENT_KEPT_FOR: True the first time, False when it was handled."""
        await self._purge_now_and_then()
        taken = await self.pool.fetchval(
            """INSERT INTO slack_events_handled (event_id, expires_at) VALUES ($1, now() + $2::interval)
               ON CONFLICT (event_id) DO NOTHING
               RETURNING true""",
            event_id,
            EVENT_KEPT_FOR,
        )
        return taken is True

    async def purge(self) -> int:
        """Forget the requests and events past their time; how many rows were deleted."""
        deleted = await self.pool.fetchval(
            """WITH requests AS (DELETE FROM slack_request_replays WHERE expires_at <= now() RETURNING 1),
                    events AS (DELETE FROM slack_events_handled WHERE expires_at <= now() RETURNING 1)
               SELECT (SELECT count(*) FROM requests) + (SELECT count(*) FROM events)"""
        )
        return int(deleted)

    async def _purge_now_and_then(self) -> None:
        # Opportunistic, so no scheduler is needed: the tables stay as small as a few minutes of traffic.
        if time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + PURGE_EVERY_SECONDS
        await self.purge()
