"""API keys for other services: shown once when created, stored only as a SHA-256 hash, each with the scopes
it may use.

A key is 32 random bytes, so a fast hash is enough: nothing short of the key itself matches its hash. The
first characters (`key_prefix`) are kept in clear so that people can tell keys apart in `api-key list`.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from storage import audit
from storage.errors import Conflict, NotFound

KEY_PREFIX = "gmr_"
SHOWN_PREFIX_LENGTH = len(KEY_PREFIX) + 8
# Revoking by prefix takes at least this much of the key, so that a slip does not match every key.
MIN_PREFIX_LENGTH = len(KEY_PREFIX) + 4
# last_used_at is written at most this often per key, so that busy callers do not write on every call.
LAST_USED_PRECISION = timedelta(minutes=1)
_COLUMNS = "id, name, key_prefix, scopes, created_by, created_at, last_used_at, revoked_at"


class Scope(enum.StrEnum):
    """What a key may do (the migration's CHECK constraint lists the same values)."""

    CREDENTIALS = "credentials"  # read users' access tokens
    REGISTRY = "registry"  # list the accounts, read one account's status
    REPORT = "report"  # report that a token failed


@dataclass(frozen=True)
class ApiKey:
    """One key, without its secret."""

    id: int
    name: str
    key_prefix: str
    scopes: frozenset[Scope]
    created_by: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        """True until the key is revoked."""
        return self.revoked_at is None

    def allows(self, scope: Scope) -> bool:
        """True when the key was given `scope`."""
        return scope in self.scopes

    @property
    def scope_names(self) -> list[str]:
        """The key's scopes in a stable order, as they are shown and stored."""
        return sorted(map(str, self.scopes))


def _key_of(row: asyncpg.Record) -> ApiKey:
    return ApiKey(**{**dict(row), "scopes": frozenset(Scope(scope) for scope in row["scopes"])})


def _hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    """Repository over api_keys; creating and revoking are audited."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create(self, name: str, *, scopes: Iterable[Scope], actor: str) -> tuple[ApiKey, str]:
        """A new key named `name` allowed `scopes` (at least one), and its secret, which is not stored and
        cannot be shown again."""
        wanted = sorted({str(Scope(scope)) for scope in scopes})
        if not wanted:
            raise ValueError("an API key needs at least one scope")
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                row = await conn.fetchrow(
                    f"""INSERT INTO api_keys (name, key_prefix, key_hash, scopes, created_by)
                        VALUES ($1, $2, $3, $4, $5)
                        RETURNING {_COLUMNS}""",
                    name,
                    secret[:SHOWN_PREFIX_LENGTH],
                    _hash(secret),
                    wanted,
                    actor,
                )
            except asyncpg.UniqueViolationError:
                raise Conflict(
                    f"an active API key is already named {name!r}: revoke it first, or choose another name"
                ) from None
            key = _key_of(row)
            await audit.append(
                conn,
                actor=actor,
                action="api_key.created",
                details={"name": name, "prefix": key.key_prefix, "scopes": wanted},
            )
        return key, secret

    async def list(self, *, include_revoked: bool = False) -> list[ApiKey]:
        """The keys by name (the active ones, or all)."""
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM api_keys WHERE $1 OR revoked_at IS NULL ORDER BY name, id",
            include_revoked,
        )
        return [_key_of(row) for row in rows]

    async def revoke(self, which: str, *, actor: str) -> ApiKey:
        """Revoke the active key with this name, or that starts with `which` (its prefix as `list` shows it,
        at least MIN_PREFIX_LENGTH characters, or the whole key); NotFound if there is none."""
        by_prefix = which.startswith(KEY_PREFIX) and len(which) >= MIN_PREFIX_LENGTH
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"""SELECT {_COLUMNS} FROM api_keys
                     WHERE revoked_at IS NULL
                       AND (name = $1 OR key_hash = $2
                            OR ($3 AND (key_prefix LIKE $4 || '%' OR $1 LIKE key_prefix || '%')))
                     FOR UPDATE""",
                which,
                _hash(which),
                by_prefix,
                which.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_"),
            )
            if not rows:
                raise NotFound(
                    f"no active API key is named {which!r} or starts with it "
                    f"(a prefix needs at least {MIN_PREFIX_LENGTH} characters, as `api-key list` shows them)"
                )
            if len(rows) > 1:
                raise Conflict(f"{which!r} matches several keys: give the key's name instead")
            await conn.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", rows[0]["id"])
            key = _key_of(
                await conn.fetchrow(f"SELECT {_COLUMNS} FROM api_keys WHERE id = $1", rows[0]["id"])
            )
            await audit.append(
                conn,
                actor=actor,
                action="api_key.revoked",
                details={"name": key.name, "prefix": key.key_prefix},
            )
        return key

    async def verify(self, presented: str) -> ApiKey | None:
        """The active key this secret belongs to (its last use recorded), or None."""
        key = await self.identify(presented)
        return key if key is not None and key.active else None

    async def identify(self, presented: str) -> ApiKey | None:
        """The key this secret belongs to, active or revoked (an active key's last use recorded), or None."""
        if not presented.startswith(KEY_PREFIX):
            return None
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM api_keys WHERE key_hash = $1", _hash(presented)
        )
        if row is None:
            return None
        key = _key_of(row)
        if key.active and (
            key.last_used_at is None
            or key.last_used_at < datetime.now(key.created_at.tzinfo) - LAST_USED_PRECISION
        ):
            await self.pool.execute("UPDATE api_keys SET last_used_at = now() WHERE id = $1", key.id)
        return key
