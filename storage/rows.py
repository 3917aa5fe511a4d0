"""How the adopted gmail_tokens table's rows are read (as Account) and locked or created for a write."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from storage.causes import code_of
from storage.errors import Conflict, NotFound
from storage.models import Account, Status
from storage.scopes import normalize_scopes

# The legacy table keeps `expiry` as a naive TIMESTAMP in UTC (as google-auth writes it); created_at/updated_at are
# naive CURRENT_TIMESTAMP values, i.e. the server's time zone, which ::timestamptz interprets correctly.
# is_equipped (the flag legacy services read) may or may not exist, so it is read through to_jsonb of the row.
ACCOUNT_COLUMNS = """
       g.id, g.user_id, g.robing_id, g.metadata, g.scopes, g.status, g.status_cause, g.status_cause_code,
       g.status_changed_at,
       g.expiry AT TIME ZONE 'UTC' AS expiry, g.last_refresh_at, g.last_checked_at, g.refresh_token_issued_at,
       g.created_at::timestamptz AS created_at, g.updated_at::timestamptz AS updated_at,
       g.last_fetch_at, g.last_fetch_result, g.last_fetch_messages, g.refresh_token_expires_at,
       coalesce(g.token_data->>'access_token', g.token_data->'encrypted'->>'access_token', '') <> ''
           AS has_access_token,
       coalesce(g.token_data->>'refresh_token', g.token_data->'encrypted'->>'refresh_token', '') <> ''
           AS has_refresh_token,
       (to_jsonb(g)->>'is_equipped')::boolean AS is_equipped"""
SELECT_ACCOUNT = f"SELECT {ACCOUNT_COLUMNS}\n  FROM gmail_tokens AS g\n"
# What a write locks and reads of the row it changes.
LOCKED_COLUMNS = "id, user_id, status, token_data, metadata, to_jsonb(g) ? 'is_equipped' AS has_legacy_flag"
# The same expression and predicate as the partial unique index, so lookups can use it.
BY_SLACK_ID = "(g.metadata->>'slack_user_id') = $1 AND (g.metadata->>'slack_user_id') <> ''"


def account_of(row: asyncpg.Record) -> Account:
    """The Account of a row read with ACCOUNT_COLUMNS."""
    metadata = row["metadata"] if isinstance(row["metadata"], dict) else {}
    return Account(
        id=row["id"],
        user_id=row["user_id"],
        robing_id=row["robing_id"],
        slack_user_id=metadata.get("slack_user_id") or None,
        email=metadata.get("email") or None,
        display_name=metadata.get("display_name") or None,
        scopes=normalize_scopes(row["scopes"]),
        status=Status(row["status"]),
        status_cause=row["status_cause"],
        status_changed_at=row["status_changed_at"],
        expiry=row["expiry"],
        last_refresh_at=row["last_refresh_at"],
        last_checked_at=row["last_checked_at"],
        refresh_token_issued_at=row["refresh_token_issued_at"],
        has_access_token=row["has_access_token"],
        has_refresh_token=row["has_refresh_token"],
        is_equipped=row["is_equipped"],
        metadata=metadata,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_fetch_at=row["last_fetch_at"],
        last_fetch_result=row["last_fetch_result"],
        last_fetch_messages=row["last_fetch_messages"],
        refresh_token_expires_at=row["refresh_token_expires_at"],
        status_cause_code=code_of(row["status_cause_code"]),
    )


def naive_utc(moment: datetime | None) -> datetime | None:
    """A moment as the legacy `expiry` column holds it: naive, in UTC."""
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


async def sync_legacy_flag(conn: asyncpg.Connection, row: asyncpg.Record, *, equipped: bool) -> None:
    """Keep is_equipped, which legacy services read, true exactly when working tokens are stored."""
    if row["has_legacy_flag"]:
        await conn.execute(
            "UPDATE gmail_tokens SET is_equipped = $2 WHERE id = $1 AND is_equipped IS DISTINCT FROM $2",
            row["id"],
            equipped,
        )


def slack_id_of(row: asyncpg.Record) -> str | None:
    """The Slack user a row read with LOCKED_COLUMNS is linked to."""
    metadata = row["metadata"]
    return (metadata.get("slack_user_id") or None) if isinstance(metadata, dict) else None


async def lock_or_create(
    conn: asyncpg.Connection, *, slack_user_id: str | None, user_id: str | None
) -> asyncpg.Record:
    """The row a write goes to, locked (FOR UPDATE): the Slack user's, else user_id's, else a new one;
    Conflict when user_id's row belongs to another Slack user."""
    lookups: list[tuple[str, str | None]] = []
    if slack_user_id:
        lookups.append(
            (
                f"SELECT {LOCKED_COLUMNS} FROM gmail_tokens AS g WHERE {BY_SLACK_ID} FOR UPDATE",
                slack_user_id,
            )
        )
    lookups.append(
        (
            f"SELECT {LOCKED_COLUMNS} FROM gmail_tokens AS g WHERE user_id = $1 FOR UPDATE",
            user_id or slack_user_id,
        )
    )
    for query, value in lookups:
        row = await conn.fetchrow(query, value)
        if row is not None:
            linked = slack_id_of(row)
            if slack_user_id and linked and linked != slack_user_id:
                raise Conflict(f"user_id {row['user_id']!r} is linked to another Slack user ({linked})")
            return row
    # A concurrent creator may win the insert; then the row exists and is locked by re-reading it.
    await conn.execute(
        """INSERT INTO gmail_tokens (user_id, metadata) VALUES ($1, $2)
           ON CONFLICT (user_id) DO NOTHING""",
        user_id or slack_user_id,
        {},
    )
    row = await conn.fetchrow(lookups[-1][0], lookups[-1][1])
    if row is None:
        raise NotFound(f"could not create or find the gmail_tokens row for {user_id or slack_user_id!r}")
    return row
