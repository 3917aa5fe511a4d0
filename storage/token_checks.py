"""When a token-failure report last made the bot check an account with Google: one check per account per
interval, claimed in PostgreSQL so that every replica shares it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg


@dataclass(frozen=True)
class CheckClaim:
    """The answer of `claim_check`: whether this caller may check now, and when the account was last checked."""

    claimed: bool
    checked_at: datetime
    next_check_after: datetime


async def claim_check(pool: asyncpg.Pool, account_id: int, *, every: timedelta) -> CheckClaim:
    """Claim the account's check if its last one is at least `every` old (or there was none).

    One statement decides: of callers in any replica racing for the same account, one claims it and the others
    see its time (ON CONFLICT re-reads the row the winner committed)."""
    claimed_at = await pool.fetchval(
        """INSERT INTO token_failure_checks AS c (account_id, checked_at) VALUES ($1, now())
           ON CONFLICT (account_id) DO UPDATE SET checked_at = now()
            WHERE c.checked_at <= now() - $2::interval
           RETURNING checked_at""",
        account_id,
        every,
    )
    if claimed_at is not None:
        return CheckClaim(True, claimed_at, claimed_at + every)
    checked_at = await pool.fetchval(
        "SELECT checked_at FROM token_failure_checks WHERE account_id = $1", account_id
    )
    if checked_at is None:  # the account was deleted between the two statements: nothing to check
        checked_at = await pool.fetchval("SELECT now()")
    return CheckClaim(False, checked_at, checked_at + every)
