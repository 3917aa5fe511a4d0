"""Google's security events as stored: each jti taken once, accounts found by their Google `sub`, audited."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from storage import audit
from storage.models import Account
from storage.rows import SELECT_ACCOUNT, account_of

# Longer than the age at which a token is refused anyway (bot.google.risc.MAX_AGE), with room for clocks.
JTI_KEPT = timedelta(days=14)
ACTOR = "google-risc"


class SecurityEvents:
    """What was received from Google's RISC stream, over the pool shared by every replica."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def receiving(self, jti: str, *, issued_at: datetime) -> AsyncIterator[asyncpg.Connection | None]:
        """A transaction in which to act on the token `jti`, or None when it was received before.

        The jti is recorded in the same transaction as what is done about it: if acting fails, neither stays,
        and Google's redelivery is acted on."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "DELETE FROM risc_events_received WHERE jti IN "
                "(SELECT jti FROM risc_events_received WHERE expires_at < now() LIMIT 100)"
            )
            fresh = await conn.fetchval(
                """INSERT INTO risc_events_received (jti, expires_at) VALUES ($1, $2)
                   ON CONFLICT (jti) DO NOTHING RETURNING true""",
                jti,
                max(issued_at, datetime.now(issued_at.tzinfo)) + JTI_KEPT,
            )
            yield conn if fresh else None

    @staticmethod
    async def accounts_by_sub(conn: asyncpg.Connection, sub: str) -> list[Account]:
        """The accounts of the Google account `sub` (one Google account may be connected by two Slack users)."""
        rows = await conn.fetch(
            f"""{SELECT_ACCOUNT} WHERE (g.metadata->>'google_sub') = $1 AND (g.metadata->>'google_sub') <> ''
                ORDER BY g.id""",
            sub,
        )
        return [account_of(row) for row in rows]

    @staticmethod
    async def accounts_with_refresh_tokens(conn: asyncpg.Connection) -> list[Account]:
        """Every account that holds a refresh token, for matching a token-revoked event's identifier."""
        rows = await conn.fetch(
            f"""{SELECT_ACCOUNT}
                WHERE coalesce(g.token_data->>'refresh_token', g.token_data->'encrypted'->>'refresh_token', '') <> ''
                ORDER BY g.id"""
        )
        return [account_of(row) for row in rows]

    @staticmethod
    async def note_disabled_reason(conn: asyncpg.Connection, account_id: int, reason: str | None) -> None:
        """Remember why Google disabled the account (shown on the status card), or forget it (None)."""
        if reason is None:
            await conn.execute(
                "UPDATE gmail_tokens SET metadata = metadata - 'google_disabled_reason' WHERE id = $1",
                account_id,
            )
            return
        await conn.execute(
            """UPDATE gmail_tokens
                  SET metadata = coalesce(metadata, '{}'::jsonb) || jsonb_build_object('google_disabled_reason', $2::text)
                WHERE id = $1""",
            account_id,
            reason,
        )

    @staticmethod
    async def audit(
        conn: asyncpg.Connection, name: str, *, account: Account | None, details: dict[str, Any]
    ) -> None:
        """Record one event (risc.<name>), for an account or for a subject no account matches."""
        await audit.append(
            conn,
            actor=ACTOR,
            action=f"risc.{name}",
            account_id=account.id if account else None,
            user_id=account.user_id if account else None,
            slack_user_id=account.slack_user_id if account else None,
            details=details,
        )

    async def verification_received(self, state: str) -> bool:
        """True once a verification event with this state has been audited."""
        found = await self.pool.fetchval(
            "SELECT true FROM audit_log WHERE action = 'risc.verification' AND details->>'verification_state' = $1 LIMIT 1",
            state,
        )
        return bool(found)
