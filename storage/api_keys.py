"""API keys for other services: shown once when created, stored only as a SHA-256 hash.

A key is 32 random bytes, so a fast hash is enough: nothing short of the key itself matches its hash. The
first characters (`key_prefix`) are kept in clear so that people can tell keys apart in `api-key list`.
"""

from __future__ import annotations

import hashlib
import secrets
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
_COLUMNS = "id, name, key_prefix, created_by, created_at, last_used_at, revoked_at"


@dataclass(frozen=True)
class ApiKey:
    """One key, without its secret."""

    id: int
    name: str
    key_prefix: str
    created_by: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        """True until the key is revoked."""
        return self.revoked_at is None


def _hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    """Repository over api_keys; creating and revoking are audited."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create(self, name: str, *, actor: str) -> tuple[ApiKey, str]:
        """A new key named `name` and its secret, which is not stored and cannot be shown again."""
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                row = await conn.fetchrow(
                    f"""INSERT INTO api_keys (name, key_prefix, key_hash, created_by) VALUES ($1, $2, $3, $4)
                        RETURNING {_COLUMNS}""",
                    name,
                    secret[:SHOWN_PREFIX_LENGTH],
                    _hash(secret),
                    actor,
                )
            except asyncpg.UniqueViolationError:
                raise Conflict(
                    f"an active API key is already named {name!r}: revoke it first, or choose another name"
                ) from None
            key = ApiKey(**dict(row))
            await audit.append(
                conn, actor=actor, action="api_key.created", details={"name": name, "prefix": key.key_prefix}
            )
        return key, secret

    async def list(self, *, include_revoked: bool = False) -> list[ApiKey]:
        """The keys by name (the active ones, or all)."""
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM api_keys WHERE $1 OR revoked_at IS NULL ORDER BY name, id",
            include_revoked,
        )
        return [ApiKey(**dict(row)) for row in rows]

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
            rows = [await conn.fetchrow(f"SELECT {_COLUMNS} FROM api_keys WHERE id = $1", rows[0]["id"])]
            key = ApiKey(**dict(rows[0]))
            await audit.append(
                conn,
                actor=actor,
                action="api_key.revoked",
                details={"name": key.name, "prefix": key.key_prefix},
            )
        return key

    async def verify(self, presented: str) -> ApiKey | None:
        """The active key this secret belongs to (its last use recorded), or None."""
        if not presented.startswith(KEY_PREFIX):
            return None
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL", _hash(presented)
        )
        if row is None:
            return None
        key = ApiKey(**dict(row))
        if (
            key.last_used_at is None
            or key.last_used_at < datetime.now(key.created_at.tzinfo) - LAST_USED_PRECISION
        ):
            await self.pool.execute("UPDATE api_keys SET last_used_at = now() WHERE id = $1", key.id)
        return key
