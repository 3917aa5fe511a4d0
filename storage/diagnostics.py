"""What `gmail-reconnect doctor` reads to find trouble in gmail_tokens: Slack users on two rows, rows linked to
no one, and the stored token data to check against the encryption keys."""

from __future__ import annotations

from typing import Any

import asyncpg


async def slack_users_on_several_rows(conn: asyncpg.Connection) -> list[tuple[str, list[str]]]:
    """(Slack user ID, the user_ids of its rows) for every Slack user linked to more than one row."""
    rows = await conn.fetch(
        """SELECT metadata->>'slack_user_id' AS slack_user_id, array_agg(user_id ORDER BY user_id) AS user_ids
             FROM gmail_tokens WHERE (metadata->>'slack_user_id') <> ''
            GROUP BY 1 HAVING count(*) > 1 ORDER BY 1"""
    )
    return [(row["slack_user_id"], list(row["user_ids"])) for row in rows]


async def unlinked_rows(conn: asyncpg.Connection) -> int:
    """How many rows no Slack user is linked to."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM gmail_tokens WHERE coalesce(metadata->>'slack_user_id', '') = ''"
    )
    return count


async def stored_token_data(conn: asyncpg.Connection) -> list[tuple[str, str | None, Any]]:
    """(user_id, status, token_data as stored) for every row that holds tokens, ordered by user_id.

    The status is read through to_jsonb: a legacy table not migrated yet has none (None)."""
    rows = await conn.fetch(
        """SELECT user_id, to_jsonb(g)->>'status' AS status, token_data FROM gmail_tokens AS g
            WHERE token_data IS NOT NULL ORDER BY user_id"""
    )
    return [(row["user_id"], row["status"], row["token_data"]) for row in rows]
