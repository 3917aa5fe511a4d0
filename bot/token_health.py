"""What can be said of a connection's health without asking Google: missing tokens and missing permissions."""

from __future__ import annotations

from collections.abc import Iterable

from storage.models import Account, Status
from storage.scopes import Capability, missing_capabilities

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
        words = " or ".join(_CAPABILITY_WORDS[capability] for capability in lacking)
        return Status.INSUFFICIENT_SCOPE, f"The granted permissions do not allow {words}."
    return Status.UNKNOWN, "Not checked with Google yet."


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
