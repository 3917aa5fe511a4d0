"""Migration 0016 and the security-events store: the status check keeps what it allowed and adds 'disabled';
a jti is taken once."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from storage.migrator import migrate
from storage.pool import connect
from storage.security_events import SecurityEvents

OLD_STATUSES = ("unknown", "healthy", "expired", "revoked", "missing", "insufficient_scope", "disconnected")


async def test_the_status_check_keeps_every_value_a_migration_before_added(database_url: str) -> None:
    conn = await connect(database_url)
    try:
        await migrate(conn, until=12)
        # Another migration before this one allowed a status of its own.
        await conn.execute(
            "ALTER TABLE gmail_tokens DROP CONSTRAINT gmail_tokens_status_check; "
            "ALTER TABLE gmail_tokens ADD CONSTRAINT gmail_tokens_status_check CHECK (status IN ("
            + ", ".join(f"'{s}'" for s in (*OLD_STATUSES, "unreadable"))
            + "))"
        )
        await migrate(conn)
        for status in (*OLD_STATUSES, "unreadable", "disabled"):
            await conn.execute(
                "INSERT INTO gmail_tokens (user_id, status) VALUES ($1, $2)", f"row-{status}", status
            )
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("INSERT INTO gmail_tokens (user_id, status) VALUES ('bad', 'bogus')")
        indexes = {row["indexname"] for row in await conn.fetch("SELECT indexname FROM pg_indexes")}
        assert "gmail_tokens_google_sub_idx" in indexes
    finally:
        await conn.close()


async def test_a_jti_is_taken_once_and_a_failed_transaction_takes_nothing(pool: asyncpg.Pool) -> None:
    events = SecurityEvents(pool)
    now = datetime.now(UTC)

    with pytest.raises(RuntimeError):
        async with events.receiving("jti-1", issued_at=now) as conn:
            assert conn is not None
            raise RuntimeError("acting failed")
    async with events.receiving("jti-1", issued_at=now) as conn:
        assert conn is not None  # the failed attempt left nothing behind: Google's redelivery is acted on
    async with events.receiving("jti-1", issued_at=now) as conn:
        assert conn is None
