"""The webhook outbox: senders claim due deliveries (FOR UPDATE SKIP LOCKED, so replicas share the work) and
record each attempt's result.

A claim moves the delivery's next_attempt_at past the attempt's timeout (a lease) and commits at once, so no
connection is held while the receiver answers; a sender that dies mid-attempt leaves the delivery due again when
the lease ends. Each result is written only by the claim it belongs to (same attempt number, still pending).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from storage import audit
from storage.webhooks import StoredSecret


@dataclass(frozen=True)
class Delivery:
    """One event to send to one webhook, as claimed for one attempt."""

    id: int
    webhook_id: int
    event_id: uuid.UUID
    event_type: str
    body: str
    attempt: int
    created_at: datetime
    url: str
    secret: StoredSecret


class WebhookDeliveries:
    """Repository over webhook_deliveries."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def claim(self, *, limit: int, lease: timedelta) -> list[Delivery]:
        """Up to `limit` due deliveries, each claimed for one attempt until `lease` has passed."""
        rows = await self.pool.fetch(
            """UPDATE webhook_deliveries AS d
                  SET attempts = d.attempts + 1, last_attempt_at = now(), next_attempt_at = now() + $2::interval
                 FROM webhooks AS w
                WHERE w.id = d.webhook_id
                  AND d.id IN (SELECT id FROM webhook_deliveries
                                WHERE state = 'pending' AND next_attempt_at <= now()
                                ORDER BY next_attempt_at LIMIT $1
                                  FOR UPDATE SKIP LOCKED)
            RETURNING d.id, d.webhook_id, d.event_id, d.event_type, d.body, d.attempts AS attempt, d.created_at,
                      w.url, w.secret""",
            limit,
            lease,
        )
        return [
            Delivery(**{**dict(row), "secret": StoredSecret(row["secret"])})
            for row in sorted(rows, key=lambda row: row["id"])
        ]

    async def next_due_in(self) -> float | None:
        """Seconds until the earliest pending delivery is due, by the database's clock (None: none pending)."""
        due: float | None = await self.pool.fetchval(
            """SELECT extract(epoch FROM min(next_attempt_at) - now())::float8
                 FROM webhook_deliveries WHERE state = 'pending'"""
        )
        return due

    async def delivered(self, delivery: Delivery, *, result: str) -> None:
        """The receiver took it: done."""
        await self.pool.execute(
            """UPDATE webhook_deliveries SET state = 'delivered', last_result = $3, finished_at = now()
                WHERE id = $1 AND attempts = $2 AND state = 'pending'""",
            delivery.id,
            delivery.attempt,
            result,
        )

    async def retry_or_fail(
        self, delivery: Delivery, *, result: str, retry_in: timedelta, retry_for: timedelta, actor: str
    ) -> bool:
        """The attempt failed: try again after `retry_in`, unless that is past `retry_for` since the event was
        queued; then the delivery fails (audited). True when it failed for good."""
        async with self.pool.acquire() as conn, conn.transaction():
            state = await conn.fetchval(
                """UPDATE webhook_deliveries
                      SET last_result = $3,
                          state = CASE WHEN now() + $4::interval > created_at + $5::interval THEN 'failed'
                                       ELSE 'pending' END,
                          next_attempt_at = now() + $4::interval,
                          finished_at = CASE WHEN now() + $4::interval > created_at + $5::interval THEN now() END
                    WHERE id = $1 AND attempts = $2 AND state = 'pending'
                RETURNING state""",
                delivery.id,
                delivery.attempt,
                result,
                retry_in,
                retry_for,
            )
            if state != "failed":
                return False
            await audit.append(
                conn,
                actor=actor,
                action="webhook.delivery_failed",
                details={
                    "webhook_id": delivery.webhook_id,
                    "event_id": str(delivery.event_id),
                    "type": delivery.event_type,
                    "attempts": delivery.attempt,
                    "last_result": result,
                },
            )
            return True

    async def prune(self, *, older_than: timedelta) -> int:
        """Delete deliveries delivered or failed more than `older_than` ago; how many were deleted."""
        deleted = await self.pool.fetchval(
            """WITH deleted AS (
                   DELETE FROM webhook_deliveries
                    WHERE state <> 'pending' AND finished_at < now() - $1::interval RETURNING 1)
               SELECT count(*) FROM deleted""",
            older_than,
        )
        return int(deleted)
