"""The append-only audit log: who did what to which account, when, with details stripped of secrets."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from storage.models import AuditEvent

_SECRET_KEYS = frozenset(
    {"token", "code", "password", "secret", "cookie", "authorization", "api_key", "key", "state", "verifier"}
)
REDACTED = "[redacted]"


def redact(details: Any) -> Any:
    """A copy of `details` with the value of every secret-looking key replaced (at any depth)."""
    if isinstance(details, dict):
        return {
            key: REDACTED if _is_secret_key(str(key)) else redact(value) for key, value in details.items()
        }
    if isinstance(details, list | tuple):
        return [redact(item) for item in details]
    return details


def _is_secret_key(key: str) -> bool:
    key = key.lower()
    return key in _SECRET_KEYS or key.endswith(
        ("_token", "_secret", "_code", "_password", "_verifier", "_key")
    )


async def append(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    actor: str,
    action: str,
    account_id: int | None = None,
    user_id: str | None = None,
    slack_user_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Record one event (call it on the transaction's connection so it commits with the change)."""
    await conn.execute(
        """INSERT INTO audit_log (actor, action, account_id, user_id, slack_user_id, details)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        actor,
        action,
        account_id,
        user_id,
        slack_user_id,
        redact(details or {}),
    )


async def recent(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    account_id: int | None = None,
    slack_user_id: str | None = None,
    limit: int = 50,
) -> list[AuditEvent]:
    """The newest events first, optionally for one account or one Slack user."""
    rows = await conn.fetch(
        """SELECT id, occurred_at, actor, action, account_id, user_id, slack_user_id, details
             FROM audit_log
            WHERE ($1::int IS NULL OR account_id = $1) AND ($2::text IS NULL OR slack_user_id = $2)
            ORDER BY id DESC
            LIMIT $3""",
        account_id,
        slack_user_id,
        limit,
    )
    return [AuditEvent(**dict(row)) for row in rows]


async def frequent(
    conn: asyncpg.Connection | asyncpg.Pool, *, action: str, since: datetime, at_least: int
) -> list[tuple[str, int]]:
    """The Slack users with at least `at_least` events of `action` since `since`, and how many, most first."""
    rows = await conn.fetch(
        """SELECT slack_user_id, count(*) AS n
             FROM audit_log
            WHERE action = $1 AND occurred_at >= $2 AND slack_user_id IS NOT NULL
            GROUP BY slack_user_id
           HAVING count(*) >= $3
            ORDER BY n DESC, slack_user_id""",
        action,
        since,
        at_least,
    )
    return [(row["slack_user_id"], row["n"]) for row in rows]
