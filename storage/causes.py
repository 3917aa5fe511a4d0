"""Why a connection is in its status, as a stable code (gmail_tokens.status_cause_code).

The code is what surfaces translate (bot/locales: `cause.<code>` for admins, `cause.<code>.user` for the user)
and what the API and webhooks give as `cause`; status_cause keeps the words that came with it (Google's answer,
the decryption problem, who disconnected) as the detail. The README lists the codes and what each asks of whom.
"""

from __future__ import annotations

import enum

from storage.models import Account, Status


class CauseCode(enum.StrEnum):
    """Why a connection is in its status; the comment names the status each goes with."""

    TOKEN_MISSING = (
        "token_missing"  # missing: no token stored at all (a NULL token_data, seed 001's incident)
    )
    REFRESH_TOKEN_MISSING = (
        "refresh_token_missing"  # missing: an access token but no refresh token to renew it
    )
    REFRESH_TOKEN_REVOKED = "refresh_token_revoked"  # expired or revoked: Google answered invalid_grant
    TESTING_MODE_EXPIRED = (
        "testing_mode_expired"  # expired: invalid_grant 7+ days after consent, testing mode
    )
    ACCESS_TIME_ENDED = "access_time_ended"  # expired: the time-based access the user granted ran out
    REAUTH_REQUIRED = (
        "reauth_required"  # expired: a Workspace policy requires signing in again (invalid_rapt)
    )
    CLIENT_REJECTED = "client_rejected"  # expired: the (legacy) OAuth client that issued the token is refused
    SCOPE_MISSING_READ = "scope_missing_read"  # insufficient_scope: the grant cannot read mail
    SCOPE_MISSING_SEND = "scope_missing_send"  # insufficient_scope: the grant cannot send mail
    SCOPE_MISSING_READ_SEND = "scope_missing_read_send"  # insufficient_scope: neither read nor send
    ACCESS_REMOVED = "access_removed"  # revoked: Google's security event, the user removed the app's access
    ACCOUNT_DISABLED = "account_disabled"  # disabled: Google's security event, the Google account is disabled
    TOKENS_UNREADABLE = (
        "tokens_unreadable"  # unreadable: the stored tokens cannot be decrypted (a key problem)
    )
    DISCONNECTED_BY_USER = "disconnected_by_user"  # disconnected: the user's Disconnect button
    DISCONNECTED_BY_ADMIN = "disconnected_by_admin"  # disconnected: `gmail-reconnect disconnect`
    NOT_CHECKED = (
        "not_checked"  # unknown: imported, or enabled again by Google, and not checked with Google yet
    )


# The code a status has when nothing more precise is known (a row written before codes, or by another program).
_DEFAULT_CODE = {
    Status.UNKNOWN: CauseCode.NOT_CHECKED,
    Status.MISSING: CauseCode.TOKEN_MISSING,
    Status.EXPIRED: CauseCode.REFRESH_TOKEN_REVOKED,
    Status.REVOKED: CauseCode.REFRESH_TOKEN_REVOKED,
    Status.INSUFFICIENT_SCOPE: CauseCode.SCOPE_MISSING_READ,
    Status.DISCONNECTED: CauseCode.DISCONNECTED_BY_USER,
    Status.UNREADABLE: CauseCode.TOKENS_UNREADABLE,
    Status.DISABLED: CauseCode.ACCOUNT_DISABLED,
}
# Google's invalid_grant, whichever words the bot chose for it (but for the end of the time the user granted,
# which the bot expects and says as its own code).
INVALID_GRANT_CODES = frozenset({CauseCode.REFRESH_TOKEN_REVOKED, CauseCode.TESTING_MODE_EXPIRED})


def default_code(status: Status) -> CauseCode | None:
    """The code of a status when no code was recorded; None for a healthy connection, which has no cause."""
    return _DEFAULT_CODE.get(status)


def stored_code(account: Account) -> CauseCode | None:
    """Why the account is in its stored status: its recorded code, else the status's default."""
    if account.status is Status.HEALTHY:
        return None
    return account.status_cause_code or default_code(account.status)


def code_of(value: str | None) -> CauseCode | None:
    """A stored code as a CauseCode; None for none, or for a code this version does not know."""
    return CauseCode(value) if value in _KNOWN else None


_KNOWN = frozenset(CauseCode)
