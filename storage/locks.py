"""Every PostgreSQL advisory lock the bot takes, with its key space, so no two uses can ever meet.

The two-key locks are transaction-scoped (released at commit or rollback): a pooled connection never keeps one.
Only the migration lock and the delivery lock are session-scoped, each on a connection of its own: a process that
dies gives them up with its connection.
"""

from __future__ import annotations

import asyncpg

# Any fixed number works; it only has to be the same in every replica ("gmail-reconnect migrations").
MIGRATION_LOCK_ID = 0x676D61696C5F6D69
# Held by the one drainer of the Slack delivery queue, on a connection of its own ("gmail-reconnect outbox").
DELIVERY_LOCK_ID = 0x676D61696C5F6F62
# The first key of pg_advisory_xact_lock(int, int): a namespace per kind of lock, ASCII of four letters.
REFRESH_LOCK_SPACE = 0x676D7263  # "gmrc": one refresh of an account at a time
PROMPT_LOCK_SPACE = 0x676D7270  # "gmrp": one sender of a user's Reconnect Gmail DM at a time
SUMMARY_LOCK_SPACE = 0x676D7273  # "gmrs": one edit of a run's admin summary at a time


async def lock_migrations(conn: asyncpg.Connection) -> None:
    """Wait for the migration lock, held by this session until unlock_migrations()."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)


async def unlock_migrations(conn: asyncpg.Connection) -> None:
    """Release the migration lock."""
    await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)


async def try_lock_delivery(conn: asyncpg.Connection) -> bool:
    """Take the delivery lock for this session if no other holds it (the drainer's); True when taken."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", DELIVERY_LOCK_ID))


async def unlock_delivery(conn: asyncpg.Connection) -> None:
    """Give the delivery lock up, for another process's drainer to take."""
    await conn.execute("SELECT pg_advisory_unlock($1)", DELIVERY_LOCK_ID)


async def lock_account_refresh(conn: asyncpg.Connection, account_id: int) -> None:
    """Wait, in the current transaction, until no other process refreshes this account."""
    await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", REFRESH_LOCK_SPACE, account_id)


async def lock_prompt(conn: asyncpg.Connection, slack_user_id: str) -> None:
    """Wait, in the current transaction, until no other process sends this user's Reconnect Gmail DM."""
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", PROMPT_LOCK_SPACE, slack_user_id)


async def lock_run_summary(conn: asyncpg.Connection, run_id: int) -> None:
    """Wait, in the current transaction, until no other process edits this run's admin summary."""
    await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", SUMMARY_LOCK_SPACE, run_id)
