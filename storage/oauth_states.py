"""OAuth states: one row per visit to a consent link, consumed once, atomically, by the callback.

Only a SHA-256 hash of the state and of the browser-binding cookie is stored. The PKCE code verifier is
encrypted when TOKEN_ENCRYPTION_KEYS is set, bound to its row by associated data.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg

from storage.crypto import DecryptionError, TokenCipher, is_encrypted
from storage.errors import StorageError, TokenUnreadable

# States are kept a day past their expiry, so a late callback is told "expired" rather than "unknown".
_KEEP_EXPIRED = timedelta(days=1)
_COLUMNS = """id, slack_user_id, slack_team_id, purpose, link_id, link_expires_at, code_verifier, redirect_uri,
              scopes, outcome, account_id, state_hash"""


class Provider(enum.StrEnum):
    """Whose consent a state waits for: Slack's sign-in (which proves who the browser is) or Google's."""

    GOOGLE = "google"
    SLACK = "slack"


class Rejection(enum.StrEnum):
    """Why a callback's state cannot be used."""

    UNKNOWN = "unknown"
    WRONG_BROWSER = "wrong_browser"
    USED = "used"
    EXPIRED = "expired"


class StateRejected(StorageError):
    """The callback's state is unknown, expired, already used, or belongs to another browser."""

    def __init__(self, reason: Rejection, state: OAuthState | None = None) -> None:
        super().__init__(f"OAuth state rejected: {reason}")
        self.reason = reason
        # Only set when the browser proved it started this flow (its cookie matches).
        self.state = state


@dataclass(frozen=True)
class OAuthState:
    """A started consent flow, as the callback needs it to finish."""

    id: int
    slack_user_id: str
    slack_team_id: str | None
    purpose: str
    link_id: str | None
    link_expires_at: datetime | None
    code_verifier: str = field(repr=False)
    redirect_uri: str | None
    scopes: list[str]
    outcome: str | None
    account_id: int | None


def digest(value: str) -> bytes:
    """The SHA-256 of a state or cookie value, as stored."""
    return hashlib.sha256(value.encode()).digest()


class OAuthStates:
    """Repository over oauth_states."""

    def __init__(self, pool: asyncpg.Pool, cipher: TokenCipher | None) -> None:
        self.pool = pool
        self.cipher = cipher

    async def create(
        self,
        *,
        state: str,
        browser_binding: str,
        slack_user_id: str,
        slack_team_id: str | None,
        purpose: str,
        link_id: str,
        link_expires_at: datetime,
        code_verifier: str,
        redirect_uri: str,
        scopes: list[str],
        ttl: timedelta,
        provider: Provider = Provider.GOOGLE,
    ) -> None:
        """Record a new state (and forget states that expired more than a day ago). For Slack's sign-in,
        `code_verifier` is the nonce, kept the same way."""
        state_hash = digest(state)
        stored_verifier = (
            self.cipher.encrypt(code_verifier, context=_context(state_hash)) if self.cipher else code_verifier
        )
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "DELETE FROM oauth_states WHERE expires_at < now() - $1::interval", _KEEP_EXPIRED
            )
            await conn.execute(
                """INSERT INTO oauth_states (state_hash, browser_binding_hash, slack_user_id, slack_team_id, purpose,
                                            link_id, link_expires_at, code_verifier, redirect_uri, scopes, expires_at,
                                            provider)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now() + $11::interval, $12)""",
                state_hash,
                digest(browser_binding),
                slack_user_id,
                slack_team_id,
                purpose,
                link_id,
                link_expires_at,
                stored_verifier,
                redirect_uri,
                scopes,
                ttl,
                str(provider),
            )

    async def consume(
        self, *, state: str, browser_binding: str | None, provider: Provider = Provider.GOOGLE
    ) -> OAuthState:
        """Mark the state used and return it; exactly one of concurrent callers wins, the rest get StateRejected.
        A state of the other provider is unknown here."""
        state_hash = digest(state)
        binding_hash = digest(browser_binding) if browser_binding else b""
        row = await self.pool.fetchrow(
            f"""UPDATE oauth_states SET consumed_at = now()
                 WHERE state_hash = $1 AND browser_binding_hash = $2 AND provider = $3
                   AND consumed_at IS NULL AND expires_at > now()
             RETURNING {_COLUMNS}""",
            state_hash,
            binding_hash,
            str(provider),
        )
        if row is not None:
            return self._state(row)
        found = await self.pool.fetchrow(
            f"SELECT {_COLUMNS}, browser_binding_hash, consumed_at, expires_at <= now() AS expired "
            "FROM oauth_states WHERE state_hash = $1 AND provider = $2",
            state_hash,
            str(provider),
        )
        if found is None:
            raise StateRejected(Rejection.UNKNOWN)
        if found["browser_binding_hash"] != binding_hash:
            raise StateRejected(Rejection.WRONG_BROWSER)
        state_row = self._state(found, with_verifier=False)
        if found["consumed_at"] is not None:
            raise StateRejected(Rejection.USED, state_row)
        raise StateRejected(Rejection.EXPIRED, state_row)

    async def finish(self, state_id: int, *, outcome: str, account_id: int | None = None) -> None:
        """Record how a consumed state's flow ended ('connected', 'denied', 'wrong_account', ...)."""
        await self.pool.execute(
            "UPDATE oauth_states SET completed_at = now(), outcome = $2, account_id = $3 WHERE id = $1",
            state_id,
            outcome,
            account_id,
        )

    async def link_used(self, link_id: str) -> bool:
        """True once a flow started from this link connected a mailbox: a link reconnects at most once."""
        return bool(
            await self.pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM oauth_states WHERE link_id = $1 AND outcome = 'connected')",
                link_id,
            )
        )

    def _state(self, row: asyncpg.Record, *, with_verifier: bool = True) -> OAuthState:
        return OAuthState(
            id=row["id"],
            slack_user_id=row["slack_user_id"],
            slack_team_id=row["slack_team_id"],
            purpose=row["purpose"],
            link_id=row["link_id"],
            link_expires_at=row["link_expires_at"],
            code_verifier=self._verifier(row) if with_verifier else "",
            redirect_uri=row["redirect_uri"],
            scopes=list(row["scopes"] or []),
            outcome=row["outcome"],
            account_id=row["account_id"],
        )

    def _verifier(self, row: asyncpg.Record) -> str:
        value: str = row["code_verifier"]
        if not is_encrypted(value):
            return value
        if self.cipher is None:
            raise TokenUnreadable(
                "An OAuth state's code verifier is encrypted, but TOKEN_ENCRYPTION_KEYS is not set."
            )
        try:
            return self.cipher.decrypt(value, context=_context(row["state_hash"]))
        except DecryptionError as error:
            raise TokenUnreadable(f"An OAuth state's code verifier cannot be read: {error}") from error


def _context(state_hash: bytes) -> str:
    return f"oauth_states:{state_hash.hex()}:code_verifier"
