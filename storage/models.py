"""Typed rows of the storage layer. Tokens never travel inside Account: read them with read_tokens."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from storage.causes import CauseCode


class Status(enum.StrEnum):
    """The health of one Gmail connection."""

    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    EXPIRED = "expired"
    REVOKED = "revoked"
    MISSING = "missing"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    DISCONNECTED = "disconnected"
    UNREADABLE = "unreadable"  # the stored tokens cannot be decrypted; reconnecting stores new ones
    DISABLED = "disabled"  # Google disabled the Google account: not used until Google enables it again

    @property
    def needs_user(self) -> bool:
        """True when only the user (by reconnecting) can make this connection work again."""
        return self in _NEEDS_USER


_NEEDS_USER = frozenset(
    {Status.EXPIRED, Status.REVOKED, Status.MISSING, Status.INSUFFICIENT_SCOPE, Status.UNREADABLE}
)


@dataclass(frozen=True)
class Account:
    """One gmail_tokens row, without its tokens."""

    id: int
    user_id: str
    robing_id: str | None
    slack_user_id: str | None
    email: str | None
    display_name: str | None
    scopes: list[str]
    status: Status
    status_cause: str | None
    status_changed_at: datetime | None
    expiry: datetime | None
    last_refresh_at: datetime | None
    last_checked_at: datetime | None
    refresh_token_issued_at: datetime | None
    has_access_token: bool
    has_refresh_token: bool
    is_equipped: bool | None
    metadata: dict[str, Any] = field(repr=False)
    created_at: datetime | None
    updated_at: datetime | None
    last_fetch_at: datetime | None = None
    last_fetch_result: str | None = None  # "ok", or why the briefing fetch did not happen
    last_fetch_messages: int | None = None
    refresh_token_expires_at: datetime | None = None  # time-based access: when the granted time ends
    # Why, as a stable code (storage/causes.py); status_cause holds the words that came with it, as the detail.
    status_cause_code: CauseCode | None = None


@dataclass(frozen=True)
class TokenSet:
    """The tokens of one account, decrypted. Never log or print it: its repr hides the values."""

    access_token: str | None = field(repr=False)
    refresh_token: str | None = field(repr=False)
    token_type: str
    expiry: datetime | None


@dataclass(frozen=True)
class StoredTokens:
    """An account's token_data as read along with its row, not yet decrypted."""

    token_data: Any = field(repr=False)
    expiry: datetime | None


@dataclass(frozen=True)
class TokenGrant:
    """Tokens from Google (a code exchange, a refresh or an imported file). No refresh token keeps the stored one."""

    access_token: str | None = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expiry: datetime | None
    scopes: list[str] | None
    token_type: str = "Bearer"
    # Time-based access: when Google ends the refresh token (None: Google gave no end).
    refresh_token_expiry: datetime | None = None


@dataclass(frozen=True)
class AuditEvent:
    """One line of the append-only audit log."""

    id: int
    occurred_at: datetime
    actor: str
    action: str
    account_id: int | None
    user_id: str | None
    slack_user_id: str | None
    details: dict[str, Any]
