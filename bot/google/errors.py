"""How a call to Google failed: Google's error answers classified, so callers know what they may do."""

from __future__ import annotations

import enum
from typing import Any

from bot.errors import GmailReconnectError

# The token endpoint's retryable answers, as google-auth judges them (google/oauth2/_client.py _can_retry).
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_RETRYABLE_ERRORS = frozenset({"internal_failure", "server_error", "temporarily_unavailable"})
_REAUTH_SUBTYPES = frozenset({"invalid_rapt", "rapt_required"})


class Failure(enum.StrEnum):
    """How a call to Google failed, which decides what the caller may do about it."""

    INVALID_GRANT = "invalid_grant"  # the refresh token is expired or revoked: only the user can fix it
    REAUTH_REQUIRED = "invalid_rapt"  # a Workspace policy requires signing in again
    CLIENT_REJECTED = "invalid_client"  # the OAuth client id/secret is wrong, deleted or not allowed
    TRANSIENT = "transient"  # 5xx, 429, timeouts, connection errors: try again later
    UNAUTHORIZED = "unauthorized"  # Gmail refused the access token (HTTP 401)
    INSUFFICIENT_SCOPE = (
        "insufficient_scope"  # Gmail: the grant does not allow this (403 insufficientPermissions)
    )
    UNEXPECTED = "unexpected"  # an answer we do not understand: nothing is concluded from it


class GoogleError(GmailReconnectError):
    """A failed call to Google; the message holds Google's error code and description, never a token."""

    def __init__(
        self, failure: Failure, message: str, *, error: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.failure = failure
        self.error = error
        self.status = status

    @property
    def transient(self) -> bool:
        """True when the same call may well succeed later."""
        return self.failure is Failure.TRANSIENT


def gmail_error(status: int, body: Any) -> GoogleError:
    """Classify an error answer of the Gmail API."""
    error = body.get("error") if isinstance(body, dict) else None
    message = str(error.get("message")) if isinstance(error, dict) and error.get("message") else ""
    reasons = {
        str(item.get("reason"))
        for item in (error.get("errors") or [] if isinstance(error, dict) else [])
        if isinstance(item, dict)
    }
    text = f"Gmail answered HTTP {status}" + (f" ({message})" if message else "")
    if status == 401:
        return GoogleError(Failure.UNAUTHORIZED, text, status=status)
    if status == 403 and reasons & {"insufficientPermissions", "ACCESS_TOKEN_SCOPE_INSUFFICIENT"}:
        return GoogleError(Failure.INSUFFICIENT_SCOPE, text, error="insufficientPermissions", status=status)
    if status in _RETRYABLE_STATUS or reasons & {
        "rateLimitExceeded",
        "userRateLimitExceeded",
        "backendError",
    }:
        return GoogleError(Failure.TRANSIENT, text, status=status)
    return GoogleError(Failure.UNEXPECTED, text, status=status)


def token_error(status: int, body: Any) -> GoogleError:
    """Classify an error answer of a Google OAuth endpoint."""
    error = str(body.get("error")) if isinstance(body, dict) and body.get("error") else None
    subtype = str(body.get("error_subtype")) if isinstance(body, dict) and body.get("error_subtype") else None
    description = body.get("error_description") if isinstance(body, dict) else None
    text = f"Google answered HTTP {status}" + (f" ({error}: {description})" if error else "")
    if subtype:
        text += f" [error_subtype {subtype}]"
    if error == "invalid_rapt" or subtype in _REAUTH_SUBTYPES:
        return GoogleError(Failure.REAUTH_REQUIRED, text, error=subtype or error, status=status)
    if error == "invalid_grant":
        return GoogleError(Failure.INVALID_GRANT, text, error=error, status=status)
    if error in ("invalid_client", "unauthorized_client"):
        return GoogleError(Failure.CLIENT_REJECTED, text, error=error, status=status)
    if status in _RETRYABLE_STATUS or error in _RETRYABLE_ERRORS:
        return GoogleError(Failure.TRANSIENT, text, error=error, status=status)
    return GoogleError(Failure.UNEXPECTED, text, error=error, status=status)
