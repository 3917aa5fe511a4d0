"""Webhooks for the services that use the API: the subscriptions, and the events a status change puts in their
outbox (webhook_deliveries) in the same transaction as the change.

The signing secret is shown once when a webhook is added and stored so that it can sign: encrypted with
TOKEN_ENCRYPTION_KEYS when that is set, plain otherwise (as the tokens are).
"""

from __future__ import annotations

import builtins
import enum
import json
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from storage import audit
from storage.causes import stored_code
from storage.crypto import DecryptionError, TokenCipher, is_encrypted
from storage.errors import NotFound
from storage.models import Account, Status

SECRET_PREFIX = "whsec_"


class Event(enum.StrEnum):
    """What a webhook can be told."""

    BROKEN = "connection.broken"  # the connection stopped working: only the user, reconnecting, can fix it
    RESTORED = "connection.restored"  # a broken or disconnected connection works again
    DISCONNECTED = "connection.disconnected"  # the grant was revoked and the tokens wiped on purpose


EVENTS = tuple(Event)
# Statuses in which a connection is taken to work: checked and healthy, or not yet checked with Google.
_USABLE = frozenset({Status.HEALTHY, Status.UNKNOWN})


def event_of(before: Status, after: Status) -> Event | None:
    """The event a change of status announces, or None (no change, or one between two broken statuses)."""
    if before is after:
        return None
    if after is Status.DISCONNECTED:
        return Event.DISCONNECTED
    if after is Status.HEALTHY:
        return None if before in _USABLE else Event.RESTORED
    if after not in _USABLE and before in _USABLE:
        return Event.BROKEN
    return None


async def record_transition(conn: asyncpg.Connection, *, before: Status, account: Account) -> int:
    """Queue the event of `before` → `account.status` for every webhook subscribed to it, on `conn`'s
    transaction (so it commits or rolls back with the change); how many deliveries were queued."""
    event = event_of(before, account.status)
    if event is None:
        return 0
    occurred = account.status_changed_at or datetime.now(UTC)
    payload = {
        "id": str(uuid.uuid4()),
        "type": str(event),
        "occurred_at": occurred.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "slack_user_id": account.slack_user_id,
        "user_id": account.user_id,
        "email": account.email,
        "status": str(account.status),
        "cause": stored_code(account),
        # The words that came with the cause (Google's answer, say), in English; null when there are none.
        "cause_detail": account.status_cause if account.status is not Status.HEALTHY else None,
    }
    queued = await conn.fetchval(
        """WITH queued AS (
               INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, body)
               SELECT id, $1, $2, $3 FROM webhooks WHERE disabled_at IS NULL AND $2 = ANY(events)
               RETURNING 1)
           SELECT count(*) FROM queued""",
        uuid.UUID(payload["id"]),
        str(event),
        json.dumps(payload),
    )
    return int(queued)


@dataclass(frozen=True)
class Webhook:
    """One subscription, with how its deliveries stand; never its secret."""

    id: int
    url: str
    events: list[str]
    created_by: str
    created_at: datetime
    disabled_at: datetime | None
    disabled_reason: str | None
    last_attempt_at: datetime | None = None
    last_result: str | None = None
    pending: int = 0
    failed: int = 0


@dataclass(frozen=True)
class DeliveryCounts:
    """Pending and failed deliveries of one webhook, for /metrics."""

    webhook_id: int
    pending: int
    failed: int


_LISTED = """
SELECT w.id, w.url, w.events, w.created_by, w.created_at, w.disabled_at, w.disabled_reason,
       last.last_attempt_at, last.last_result,
       count(d.id) FILTER (WHERE d.state = 'pending') AS pending,
       count(d.id) FILTER (WHERE d.state = 'failed') AS failed
  FROM webhooks AS w
  LEFT JOIN webhook_deliveries AS d ON d.webhook_id = w.id
  LEFT JOIN LATERAL (SELECT last_attempt_at, last_result FROM webhook_deliveries
                      WHERE webhook_id = w.id AND last_attempt_at IS NOT NULL
                      ORDER BY last_attempt_at DESC LIMIT 1) AS last ON true
"""


@dataclass(frozen=True)
class StoredSecret:
    """A webhook's signing secret as stored; `reveal` it with Webhooks.secret."""

    value: str = field(repr=False)


class Webhooks:
    """Repository over webhooks; adding, removing and disabling are audited."""

    def __init__(self, pool: asyncpg.Pool, cipher: TokenCipher | None) -> None:
        self.pool = pool
        self.cipher = cipher

    async def add(self, url: str, *, events: Iterable[Event], actor: str) -> tuple[Webhook, str]:
        """A new webhook for `events` (at least one) and its signing secret, which is shown only now."""
        wanted = sorted({str(Event(event)) for event in events})
        if not wanted:
            raise ValueError("a webhook needs at least one event")
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        async with self.pool.acquire() as conn, conn.transaction():
            webhook_id = await conn.fetchval("SELECT nextval(pg_get_serial_sequence('webhooks', 'id'))")
            await conn.execute(
                "INSERT INTO webhooks (id, url, events, secret, created_by) VALUES ($1, $2, $3, $4, $5)",
                webhook_id,
                url,
                wanted,
                self._seal(webhook_id, secret),
                actor,
            )
            await audit.append(
                conn,
                actor=actor,
                action="webhook.added",
                details={"id": webhook_id, "url": url, "events": wanted},
            )
            webhook = await self._get(conn, webhook_id)
        return webhook, secret

    async def list(self) -> list[Webhook]:
        """Every webhook, by id, with its last delivery result and its pending and failed counts."""
        rows = await self.pool.fetch(
            f"{_LISTED} GROUP BY w.id, last.last_attempt_at, last.last_result ORDER BY w.id"
        )
        return [Webhook(**dict(row)) for row in rows]

    async def remove(self, webhook_id: int, *, actor: str) -> Webhook:
        """Delete a webhook and every delivery still queued for it; NotFound if there is none."""
        async with self.pool.acquire() as conn, conn.transaction():
            webhook = await self._get(conn, webhook_id)
            await conn.execute("DELETE FROM webhooks WHERE id = $1", webhook_id)
            await audit.append(
                conn,
                actor=actor,
                action="webhook.removed",
                details={"id": webhook_id, "url": webhook.url, "pending": webhook.pending},
            )
        return webhook

    async def disable(self, webhook_id: int, *, reason: str, actor: str) -> None:
        """Stop sending to a webhook (its receiver said it is gone): its pending deliveries fail now."""
        async with self.pool.acquire() as conn, conn.transaction():
            url = await conn.fetchval(
                """UPDATE webhooks SET disabled_at = now(), disabled_reason = $2
                    WHERE id = $1 AND disabled_at IS NULL RETURNING url""",
                webhook_id,
                reason,
            )
            if url is None:
                return
            dropped = await conn.fetchval(
                """WITH dropped AS (
                       UPDATE webhook_deliveries
                          SET state = 'failed', finished_at = now(), last_result = 'disabled: ' || $2
                        WHERE webhook_id = $1 AND state = 'pending' RETURNING 1)
                   SELECT count(*) FROM dropped""",
                webhook_id,
                reason,
            )
            await audit.append(
                conn,
                actor=actor,
                action="webhook.disabled",
                details={"id": webhook_id, "url": url, "reason": reason, "failed_deliveries": dropped},
            )

    def secret(self, webhook_id: int, stored: StoredSecret) -> str:
        """The signing secret of a webhook, decrypted (DecryptionError when the key is missing)."""
        if is_encrypted(stored.value):
            if self.cipher is None:
                raise DecryptionError(
                    "the webhook's secret is encrypted, but TOKEN_ENCRYPTION_KEYS is not set"
                )
            return self.cipher.decrypt(stored.value, context=_context(webhook_id))
        return stored.value

    async def counts(self) -> builtins.list[DeliveryCounts]:
        """Pending and failed deliveries of every webhook (zeros included)."""
        rows = await self.pool.fetch(
            """SELECT w.id AS webhook_id,
                      count(d.id) FILTER (WHERE d.state = 'pending') AS pending,
                      count(d.id) FILTER (WHERE d.state = 'failed') AS failed
                 FROM webhooks AS w LEFT JOIN webhook_deliveries AS d ON d.webhook_id = w.id
                GROUP BY w.id ORDER BY w.id"""
        )
        return [DeliveryCounts(**dict(row)) for row in rows]

    async def reencrypt_all(self, *, actor: str) -> int:
        """Seal every secret that is plain or under an old key with the current key; how many were rewritten."""
        if self.cipher is None:
            return 0
        rewritten = 0
        async with self.pool.acquire() as conn, conn.transaction():
            for row in await conn.fetch("SELECT id, secret FROM webhooks ORDER BY id FOR UPDATE"):
                stored = row["secret"]
                if is_encrypted(stored) and not self.cipher.needs_reencryption(stored):
                    continue
                plain = self.secret(row["id"], StoredSecret(stored))
                await conn.execute(
                    "UPDATE webhooks SET secret = $2 WHERE id = $1", row["id"], self._seal(row["id"], plain)
                )
                rewritten += 1
            if rewritten:
                await audit.append(
                    conn, actor=actor, action="webhook.reencrypted", details={"count": rewritten}
                )
        return rewritten

    async def _get(self, conn: asyncpg.Connection, webhook_id: int) -> Webhook:
        row = await conn.fetchrow(
            f"{_LISTED} WHERE w.id = $1 GROUP BY w.id, last.last_attempt_at, last.last_result", webhook_id
        )
        if row is None:
            raise NotFound(f"no webhook has id {webhook_id}: `gmail-reconnect webhook list` shows them")
        return Webhook(**dict(row))

    def _seal(self, webhook_id: int, secret: str) -> str:
        return self.cipher.encrypt(secret, context=_context(webhook_id)) if self.cipher else secret


def _context(webhook_id: int) -> str:
    # Bound as associated data: a sealed secret copied to another webhook's row no longer decrypts.
    return f"webhooks:{webhook_id}:secret"
