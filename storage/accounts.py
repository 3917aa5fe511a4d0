"""The gmail_tokens repository: find, list, link, store tokens (keeping the refresh token), set status."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import asyncpg

from storage import audit, webhooks
from storage.causes import CauseCode, default_code
from storage.errors import Conflict, NotFound
from storage.locks import lock_account_refresh
from storage.models import Account, Status, StoredTokens, TokenGrant, TokenSet
from storage.pool import transaction
from storage.rows import (
    ACCOUNT_COLUMNS,
    BY_SLACK_ID,
    LOCKED_COLUMNS,
    SELECT_ACCOUNT,
    account_of,
    lock_or_create,
    naive_utc,
    slack_id_of,
    sync_legacy_flag,
)
from storage.scopes import normalize_scopes
from storage.token_data import TokenCodec

DEFAULT_TOKEN_TYPE = "Bearer"


class Accounts:
    """Repository over gmail_tokens; every multi-step write runs in one transaction with its audit event."""

    def __init__(self, pool: asyncpg.Pool, codec: TokenCodec) -> None:
        self.pool = pool
        self.codec = codec

    @asynccontextmanager
    async def refresh_locked(self, account_id: int) -> AsyncIterator[asyncpg.Connection]:
        """A transaction holding the account's refresh lock: one refresh (or disconnection) at a time, in every
        process."""
        async with self.pool.acquire() as conn, conn.transaction():
            await lock_account_refresh(conn, account_id)
            yield conn

    async def find_by_slack_id(self, slack_user_id: str) -> Account | None:
        """The account linked to a Slack user, or None."""
        row = await self.pool.fetchrow(f"{SELECT_ACCOUNT} WHERE {BY_SLACK_ID}", slack_user_id)
        return account_of(row) if row else None

    async def get(self, account_id: int, *, conn: asyncpg.Connection | None = None) -> Account:
        """The account with this id; NotFound if there is none."""
        row = await (conn or self.pool).fetchrow(f"{SELECT_ACCOUNT} WHERE g.id = $1", account_id)
        if row is None:
            raise NotFound(f"no gmail_tokens row has id {account_id}")
        return account_of(row)

    async def list(
        self, *, statuses: Iterable[Status] | None = None, ids: Iterable[int] | None = None
    ) -> list[Account]:
        """Every account (or those in `statuses`, or with these `ids`), ordered by user_id."""
        wanted = [str(status) for status in statuses] if statuses is not None else None
        rows = await self.pool.fetch(
            f"""{SELECT_ACCOUNT} WHERE ($1::text[] IS NULL OR g.status = ANY($1))
                            AND ($2::int[] IS NULL OR g.id = ANY($2)) ORDER BY g.user_id""",
            wanted,
            list(ids) if ids is not None else None,
        )
        return [account_of(row) for row in rows]

    async def count_by_status(self) -> dict[Status, int]:
        """How many accounts are in each status (statuses with none are left out)."""
        rows = await self.pool.fetch("SELECT status, count(*) AS n FROM gmail_tokens GROUP BY status")
        return {Status(row["status"]): row["n"] for row in rows}

    async def link_slack_user(self, *, slack_user_id: str, user_id: str, actor: str) -> Account:
        """Record `slack_user_id` on the row `user_id`; Conflict if either side is linked elsewhere."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(f"{SELECT_ACCOUNT} WHERE g.user_id = $1 FOR UPDATE", user_id)
            if row is None:
                raise NotFound(f"no gmail_tokens row has user_id {user_id!r}")
            account = account_of(row)
            if account.slack_user_id == slack_user_id:
                return account
            if account.slack_user_id is not None:
                raise Conflict(
                    f"user_id {user_id!r} is already linked to Slack user {account.slack_user_id}; "
                    f"if that link is wrong, run `gmail-reconnect unlink {account.slack_user_id}` first"
                )
            other = await conn.fetchval(
                f"SELECT g.user_id FROM gmail_tokens AS g WHERE {BY_SLACK_ID}", slack_user_id
            )
            if other is not None:
                raise Conflict(f"Slack user {slack_user_id} is already linked to user_id {other!r}")
            await conn.execute(
                """UPDATE gmail_tokens
                      SET metadata = coalesce(metadata, '{}'::jsonb) || jsonb_build_object('slack_user_id', $2::text)
                    WHERE id = $1""",
                account.id,
                slack_user_id,
            )
            await audit.append(
                conn,
                actor=actor,
                action="account.linked",
                account_id=account.id,
                user_id=user_id,
                slack_user_id=slack_user_id,
            )
            return account_of(await conn.fetchrow(f"{SELECT_ACCOUNT} WHERE g.id = $1", account.id))

    async def unlink_slack_user(self, *, slack_user_id: str, actor: str) -> Account:
        """Remove `slack_user_id` from the row it is linked to (tokens and row stay); NotFound if none is."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(f"{SELECT_ACCOUNT} WHERE {BY_SLACK_ID} FOR UPDATE", slack_user_id)
            if row is None:
                raise NotFound(f"no gmail_tokens row is linked to Slack user {slack_user_id}")
            account = account_of(row)
            await conn.execute(
                "UPDATE gmail_tokens SET metadata = metadata - 'slack_user_id' WHERE id = $1", account.id
            )
            await audit.append(
                conn,
                actor=actor,
                action="account.unlinked",
                account_id=account.id,
                user_id=account.user_id,
                slack_user_id=slack_user_id,
            )
            return account_of(await conn.fetchrow(f"{SELECT_ACCOUNT} WHERE g.id = $1", account.id))

    async def for_refresh(
        self, account_id: int, *, conn: asyncpg.Connection
    ) -> tuple[Account, StoredTokens, tuple[str, str] | None]:
        """What a refresh reads of a row under its refresh lock, in one round trip: the account, its stored tokens
        (Accounts.unpack decrypts them) and the OAuth client recorded on it (see oauth_client); NotFound if
        there is none."""
        row = await conn.fetchrow(
            f"SELECT {ACCOUNT_COLUMNS}, g.token_data, g.oauth_config FROM gmail_tokens AS g WHERE g.id = $1",
            account_id,
        )
        if row is None:
            raise NotFound(f"no gmail_tokens row has id {account_id}")
        account, stored = self.from_row(row)
        return account, stored, _oauth_client(row["oauth_config"])

    async def read_tokens(
        self, account_id: int, *, conn: asyncpg.Connection | None = None
    ) -> TokenSet | None:
        """The decrypted tokens of an account, or None when it has none."""
        row = await (conn or self.pool).fetchrow(
            "SELECT user_id, token_data, expiry AT TIME ZONE 'UTC' AS expiry FROM gmail_tokens WHERE id = $1",
            account_id,
        )
        if row is None:
            raise NotFound(f"no gmail_tokens row has id {account_id}")
        return self.codec.unpack(row["token_data"], user_id=row["user_id"], expiry=row["expiry"])

    def unpack(self, account: Account, stored: StoredTokens) -> TokenSet | None:
        """The decrypted tokens of token_data read along with the account's row."""
        return self.codec.unpack(stored.token_data, user_id=account.user_id, expiry=stored.expiry)

    @staticmethod
    def from_row(row: asyncpg.Record) -> tuple[Account, StoredTokens]:
        """The account and its stored tokens from a row of ACCOUNT_COLUMNS plus g.token_data."""
        return account_of(row), StoredTokens(row["token_data"], row["expiry"])

    async def store_tokens(
        self,
        *,
        grant: TokenGrant,
        actor: str,
        slack_user_id: str | None = None,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        oauth_config: dict[str, Any] | None = None,
        status: Status = Status.HEALTHY,
        cause: str | None = None,
        code: CauseCode | None = None,
        action: str = "tokens.stored",
        details: dict[str, Any] | None = None,
        refreshed: bool = False,
        conn: asyncpg.Connection | None = None,
    ) -> Account:
        """Store a grant on the account of `slack_user_id` (else `user_id`), creating the row if needed.

        A grant without a refresh token keeps the stored one (and its end, unless the grant gives a new one); a
        new refresh token without an end lasts until revoked. Metadata keys given are merged in; the status, its
        cause (`code`, else the status's default, and `cause` as the detail) and an audit event are written in
        the same transaction (nested in `conn`'s, if given).
        """
        if not (slack_user_id or user_id):
            raise ValueError("store_tokens needs a slack_user_id or a user_id")
        async with transaction(self.pool, conn) as conn:
            row = await lock_or_create(conn, slack_user_id=slack_user_id, user_id=user_id)
            refresh_token = grant.refresh_token
            if not refresh_token:
                # Only a grant without a refresh token reads the stored one (TokenUnreadable if it cannot):
                # new tokens replace a row that cannot be decrypted.
                stored = self.codec.unpack(row["token_data"], user_id=row["user_id"], expiry=None)
                refresh_token = stored.refresh_token if stored else None
            token_data = self.codec.pack(
                row["token_data"],
                user_id=row["user_id"],
                tokens={"access_token": grant.access_token, "refresh_token": refresh_token},
                token_type=grant.token_type,
            )
            extra = dict(metadata or {})
            if slack_user_id:
                extra["slack_user_id"] = slack_user_id
            updated = await conn.fetchrow(
                f"""UPDATE gmail_tokens AS g
                      SET token_data = $2,
                          expiry = $3,
                          scopes = coalesce($4::jsonb, scopes),
                          metadata = coalesce(metadata, '{{}}'::jsonb) || $5::jsonb,
                          oauth_config = coalesce($6::jsonb, oauth_config),
                          refresh_token_issued_at = CASE WHEN $7 THEN now() ELSE refresh_token_issued_at END,
                          refresh_token_expires_at = CASE WHEN $12::timestamptz IS NOT NULL THEN $12
                                                          WHEN $7 THEN NULL
                                                          ELSE refresh_token_expires_at END,
                          status_changed_at = CASE WHEN status IS DISTINCT FROM $8 THEN now()
                                                   ELSE status_changed_at END,
                          status = $8,
                          status_cause = $9,
                          status_cause_code = $11,
                          last_checked_at = now(),
                          last_refresh_at = CASE WHEN $10 THEN now() ELSE last_refresh_at END
                    WHERE g.id = $1
                RETURNING {ACCOUNT_COLUMNS}""",
                row["id"],
                token_data,
                naive_utc(grant.expiry),
                normalize_scopes(grant.scopes) if grant.scopes is not None else None,
                extra,
                oauth_config,
                bool(grant.refresh_token),
                str(status),
                cause,
                refreshed,
                _code(status, code),
                grant.refresh_token_expiry,
            )
            account = account_of(updated)
            if status is Status.HEALTHY and row["has_legacy_flag"]:
                await sync_legacy_flag(conn, row, equipped=True)
                account = replace(account, is_equipped=True)
            await audit.append(
                conn,
                actor=actor,
                action=action,
                account_id=row["id"],
                user_id=row["user_id"],
                slack_user_id=slack_user_id or slack_id_of(row),
                details={
                    "status": str(status),
                    **(
                        {"cause": _code(status, code), "cause_detail": cause}
                        if status is not Status.HEALTHY
                        else {}
                    ),
                    "refresh_token_issued": bool(grant.refresh_token),
                    "scopes": normalize_scopes(grant.scopes) if grant.scopes is not None else None,
                    **(details or {}),
                },
            )
            await webhooks.record_transition(conn, before=Status(row["status"]), account=account)
            return account

    async def set_status(
        self,
        account_id: int,
        *,
        status: Status,
        cause: str | None,
        actor: str,
        code: CauseCode | None = None,
        conn: asyncpg.Connection | None = None,
    ) -> Account:
        """Record the connection's health: the status, why (`code`, else the status's default) and the words
        that came with it (`cause`, the detail); a change of status is audited, a mere re-check is not."""
        # One statement locks the row, reads the status it had and writes the new one: a run sets the status of
        # every account it finds broken.
        async with transaction(self.pool, conn) as conn:
            row = await conn.fetchrow(
                f"""UPDATE gmail_tokens AS g
                       SET status = $2, status_cause = $3, status_cause_code = $4, last_checked_at = now(),
                           status_changed_at = CASE WHEN previous.status IS DISTINCT FROM $2 THEN now()
                                                    ELSE g.status_changed_at END
                      FROM (SELECT id, status FROM gmail_tokens WHERE id = $1 FOR UPDATE) AS previous
                     WHERE g.id = previous.id
                 RETURNING previous.status AS previous_status, {ACCOUNT_COLUMNS}""",
                account_id,
                str(status),
                cause,
                _code(status, code),
            )
            if row is None:
                raise NotFound(f"no gmail_tokens row has id {account_id}")
            account = account_of(row)
            if row["previous_status"] == str(status):
                return account
            await audit.append(
                conn,
                actor=actor,
                action="status.changed",
                account_id=account_id,
                user_id=account.user_id,
                slack_user_id=account.slack_user_id,
                details={
                    "from": row["previous_status"],
                    "to": str(status),
                    "cause": _code(status, code),
                    "cause_detail": cause,
                },
            )
            await webhooks.record_transition(conn, before=Status(row["previous_status"]), account=account)
            return account

    async def clear_tokens(
        self,
        account_id: int,
        *,
        status: Status,
        cause: str,
        actor: str,
        code: CauseCode | None = None,
        details: dict[str, Any] | None = None,
        conn: asyncpg.Connection | None = None,
    ) -> Account:
        """Remove an account's tokens (keeping the row, its metadata and other token_data keys) and set its status."""
        async with transaction(self.pool, conn) as conn:
            row = await conn.fetchrow(
                f"SELECT {LOCKED_COLUMNS} FROM gmail_tokens AS g WHERE id = $1 FOR UPDATE", account_id
            )
            if row is None:
                raise NotFound(f"no gmail_tokens row has id {account_id}")
            token_data = (
                self.codec.pack(
                    row["token_data"], user_id=row["user_id"], tokens={}, token_type=DEFAULT_TOKEN_TYPE
                )
                if isinstance(row["token_data"], dict)
                else row["token_data"]
            )
            account = account_of(
                await conn.fetchrow(
                    f"""UPDATE gmail_tokens AS g
                          SET token_data = $2, expiry = NULL, refresh_token_expires_at = NULL, status = $3,
                              status_cause = $4, status_cause_code = $5, last_checked_at = now(),
                              status_changed_at = CASE WHEN status IS DISTINCT FROM $3 THEN now()
                                                       ELSE status_changed_at END
                        WHERE g.id = $1
                    RETURNING {ACCOUNT_COLUMNS}""",
                    account_id,
                    token_data,
                    str(status),
                    cause,
                    _code(status, code),
                )
            )
            if row["has_legacy_flag"]:
                await sync_legacy_flag(conn, row, equipped=False)
                account = replace(account, is_equipped=False)
            await audit.append(
                conn,
                actor=actor,
                action="tokens.cleared",
                account_id=account_id,
                user_id=row["user_id"],
                slack_user_id=slack_id_of(row),
                details={
                    "status": str(status),
                    "cause": _code(status, code),
                    "cause_detail": cause,
                    **(details or {}),
                },
            )
            await webhooks.record_transition(conn, before=Status(row["status"]), account=account)
            return account

    async def oauth_client(
        self, account_id: int, *, conn: asyncpg.Connection | None = None
    ) -> tuple[str, str] | None:
        """The OAuth client (id, secret) recorded on a row, if both are; legacy rows were issued by their own."""
        config = await (conn or self.pool).fetchval(
            "SELECT oauth_config FROM gmail_tokens WHERE id = $1", account_id
        )
        return _oauth_client(config)

    async def record_fetch(self, account_id: int, *, result: str, messages: int | None) -> None:
        """Remember how the account's briefing fetch went ("ok" with the unread count, or why not)."""
        await self.pool.execute(
            """UPDATE gmail_tokens SET last_fetch_at = now(), last_fetch_result = $2, last_fetch_messages = $3
                WHERE id = $1""",
            account_id,
            result,
            messages,
        )

    async def find_unlinked_by_email(self, email: str) -> builtins.list[Account]:
        """Rows with this metadata.email (any case) that no Slack user is linked to."""
        rows = await self.pool.fetch(
            f"""{SELECT_ACCOUNT} WHERE lower(g.metadata->>'email') = lower($1)
                  AND coalesce(g.metadata->>'slack_user_id', '') = '' ORDER BY g.id""",
            email,
        )
        return [account_of(row) for row in rows]

    async def reencrypt_all(self, *, actor: str) -> int:
        """Rewrite every row whose tokens are plain or under an old key with the current key; return the count."""
        ids = await self.pool.fetch("SELECT id FROM gmail_tokens WHERE token_data IS NOT NULL ORDER BY id")
        rewritten = 0
        for record in ids:
            async with self.pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    "SELECT id, user_id, token_data, metadata FROM gmail_tokens WHERE id = $1 FOR UPDATE",
                    record["id"],
                )
                if row is None or not self.codec.needs_rewrite(row["token_data"]):
                    continue
                tokens = self.codec.unpack(row["token_data"], user_id=row["user_id"], expiry=None)
                if tokens is None:
                    continue
                token_data = self.codec.pack(
                    row["token_data"],
                    user_id=row["user_id"],
                    tokens={"access_token": tokens.access_token, "refresh_token": tokens.refresh_token},
                    token_type=tokens.token_type,
                )
                await conn.execute(
                    "UPDATE gmail_tokens SET token_data = $2 WHERE id = $1", row["id"], token_data
                )
                await audit.append(
                    conn,
                    actor=actor,
                    action="tokens.reencrypted",
                    account_id=row["id"],
                    user_id=row["user_id"],
                    slack_user_id=slack_id_of(row),
                    details={"key_id": self.codec.cipher.current_key_id if self.codec.cipher else None},
                )
                rewritten += 1
        return rewritten


def _code(status: Status, code: CauseCode | None) -> str | None:
    """The code stored with a status: the one given, else the status's default (none for a healthy one)."""
    if status is Status.HEALTHY:
        return None
    chosen = code or default_code(status)
    return str(chosen) if chosen is not None else None


def _oauth_client(config: object) -> tuple[str, str] | None:
    """(client id, secret) of a row's oauth_config, if it records both."""
    if isinstance(config, dict) and config.get("client_id") and config.get("client_secret"):
        return str(config["client_id"]), str(config["client_secret"])
    return None
