"""What can be said of a connection's health without asking Google: missing tokens and missing permissions."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.google.scopes import Capability, capabilities_of, missing_capabilities
from storage.causes import CauseCode, default_code, stored_code
from storage.models import Account, Status

_CAPABILITY_WORDS = {
    Capability.READ: "reading mail (gmail.readonly)",
    Capability.SEND: "sending mail (gmail.send)",
}


def offline_assessment(
    *,
    has_access_token: bool,
    has_refresh_token: bool,
    scopes: Iterable[str],
    required: Iterable[Capability],
    is_equipped: bool | None = None,
) -> tuple[Status, str]:
    """The status and cause that stored data alone shows; UNKNOWN when only Google can tell."""
    if not has_access_token and not has_refresh_token:
        cause = "No Gmail token is stored"
        if is_equipped:
            cause += " (the legacy is_equipped flag says connected, but token_data is empty)"
        return Status.MISSING, cause + "."
    if not has_refresh_token:
        return Status.MISSING, "No refresh token is stored, so the access token cannot be renewed."
    lacking = missing_capabilities(list(scopes), required)
    if lacking:
        return Status.INSUFFICIENT_SCOPE, lacking_cause(lacking)
    return Status.UNKNOWN, "Not checked with Google yet."


def lacking_cause(lacking: Iterable[Capability]) -> str:
    """The cause of an insufficient_scope status: the required permissions the grant lacks, named."""
    words = " or ".join(_CAPABILITY_WORDS[capability] for capability in lacking)
    return f"The granted permissions do not allow {words}."


def effective_status(account: Account, required: Iterable[Capability]) -> tuple[Status, str | None]:
    """The stored status, or for an account never checked, what the stored data already shows."""
    if account.status is not Status.UNKNOWN:
        return account.status, account.status_cause
    status, cause = offline_assessment(
        has_access_token=account.has_access_token,
        has_refresh_token=account.has_refresh_token,
        scopes=account.scopes,
        required=required,
        is_equipped=account.is_equipped,
    )
    return status, (account.status_cause or cause) if status is Status.UNKNOWN else cause


def effective_cause(account: Account, required: Iterable[Capability]) -> tuple[CauseCode | None, str | None]:
    """Why effective_status says what it says: the stable code, and the words that came with it (the detail)."""
    status, detail = effective_status(account, required)
    if status is account.status:
        return stored_code(account), detail
    return offline_code(
        status, has_access_token=account.has_access_token, scopes=account.scopes, required=required
    ), detail


def offline_code(
    status: Status, *, has_access_token: bool, scopes: Iterable[str], required: Iterable[Capability]
) -> CauseCode | None:
    """The code of a status that offline_assessment found."""
    if status is Status.MISSING:
        return CauseCode.REFRESH_TOKEN_MISSING if has_access_token else CauseCode.TOKEN_MISSING
    if status is Status.INSUFFICIENT_SCOPE:
        return scope_code(missing_capabilities(list(scopes), required))
    return default_code(status)


def scope_code(lacking: Iterable[Capability]) -> CauseCode:
    """The code of a grant that lacks these capabilities."""
    lacking = frozenset(lacking)
    if Capability.READ in lacking:
        return (
            CauseCode.SCOPE_MISSING_READ_SEND if Capability.SEND in lacking else CauseCode.SCOPE_MISSING_READ
        )
    return CauseCode.SCOPE_MISSING_SEND


class Cause(enum.StrEnum):
    """Why a user is asked to (re)connect, in the words of the Reconnect Gmail DM (slack.cause.*)."""

    MISSING = "missing"
    EXPIRED = "expired"
    REVOKED = "revoked"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    DISCONNECTED = "disconnected"
    UNREADABLE = "unreadable"  # the stored tokens cannot be decrypted (a key problem); reconnecting fixes it
    TESTING_EXPIRY = "testing_expiry"  # still works, but Google ends it soon (7-day testing-mode tokens)
    ACCESS_REMOVED = (
        "access_removed"  # Google's security event: the user removed the app in their Google Account
    )
    ACCESS_ENDING = "access_ending"  # still works, but the time-based access the user granted ends soon

    @classmethod
    def of(cls, status: Status) -> Cause | None:
        """The cause that a status shows, or None for a connection that works (or is not checked yet)."""
        return _CAUSE_OF_STATUS.get(status)


_CAUSE_OF_STATUS = {
    Status.MISSING: Cause.MISSING,
    Status.EXPIRED: Cause.EXPIRED,
    Status.REVOKED: Cause.REVOKED,
    Status.INSUFFICIENT_SCOPE: Cause.INSUFFICIENT_SCOPE,
    Status.DISCONNECTED: Cause.DISCONNECTED,
    Status.UNREADABLE: Cause.UNREADABLE,
}


# Google ends a testing-mode refresh token 7 days after it is issued; warn a day before.
TESTING_TOKEN_LIFETIME = timedelta(days=7)
TESTING_WARNING = timedelta(days=1)
# Time-based access that the user granted is warned about as early.
ACCESS_WARNING = TESTING_WARNING


def testing_expiry_near(account: Account, now: datetime) -> bool:
    """True when a testing-mode refresh token ends within a day (only meaningful with GOOGLE_OAUTH_TESTING_MODE)."""
    issued = account.refresh_token_issued_at
    return (
        account.has_refresh_token
        and issued is not None
        and now >= issued + TESTING_TOKEN_LIFETIME - TESTING_WARNING
    )


def granted_access_ending(account: Account, now: datetime) -> bool:
    """True when the time-based access the user granted ends within a day (and has not ended yet)."""
    ends = account.refresh_token_expires_at
    return account.has_refresh_token and ends is not None and ends - ACCESS_WARNING <= now < ends


def granted_access_ended(account: Account, now: datetime) -> bool:
    """True once the time-based access the user granted has ended: Google refuses the refresh token."""
    ends = account.refresh_token_expires_at
    return account.has_refresh_token and ends is not None and now >= ends


def access_ended_cause(account: Account) -> str:
    """The cause of an account expired because the time-based access its user granted ran out."""
    ends = account.refresh_token_expires_at
    when = f" on {ends.astimezone(UTC):%Y-%m-%d %H:%M} UTC" if ends is not None else ""
    return (
        f"The time-limited access the user granted on Google's consent screen ended{when}; "
        "reconnecting grants it again."
    )


def account_summary(account: Account, required: Iterable[Capability]) -> dict[str, Any]:
    """One account as plain data: what an admin needs, never a token."""
    status, _ = effective_status(account, required)
    code, detail = effective_cause(account, required)
    # What the grant allows, as long as there is a grant: a disconnected or NULL row can do nothing.
    capabilities = capabilities_of(account.scopes) if account.has_refresh_token else frozenset()
    return {
        "slack_user_id": account.slack_user_id,
        "user_id": account.user_id,
        "email": account.email,
        "status": str(status),
        # False while the status is only what the stored data suggests (never asked of Google).
        "status_checked": account.status is not Status.UNKNOWN,
        "cause": str(code) if code is not None else None,  # a stable code (README: "Causes")
        "cause_detail": detail,  # the words that came with it, in English (Google's answer, say)
        "can_read": Capability.READ in capabilities,
        "can_send": Capability.SEND in capabilities,
        # The required permissions the grant lacks (what a reconnection would ask Google for).
        "missing": [str(c) for c in missing_capabilities(account.scopes, required)]
        if account.has_refresh_token
        else [],
        "scopes": account.scopes,
        "expiry": _iso(account.expiry),
        "last_refresh_at": _iso(account.last_refresh_at),
        "last_checked_at": _iso(account.last_checked_at),
        "refresh_token_issued_at": _iso(account.refresh_token_issued_at),
        # Time-based access: when the access the user granted ends (null: until revoked).
        "access_ends_at": _iso(account.refresh_token_expires_at),
        "robing_id": account.robing_id,
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
