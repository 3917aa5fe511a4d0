"""A connection's cause in its reader's words: the code's text from the catalogue, the stored detail only where
it adds something (and escaped, since it may be Google's words); for the user also what happens to the briefing
meanwhile, and, for a grant that lacks a permission or time-based access, which permission and until when."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from bot.google.health import Cause, scope_code
from bot.google.scopes import Capability
from bot.i18n import catalogue
from bot.slack.blocks.elements import local_time, shorten
from bot.slack.mrkdwn import Mrkdwn, slack_text
from storage.causes import CauseCode
from storage.models import Status

# Codes whose detail tells an admin more than the code's words: which key or field cannot be decrypted, and
# which OAuth client Google refuses and how.
_DETAIL_HELPS = frozenset({CauseCode.TOKENS_UNREADABLE, CauseCode.CLIENT_REJECTED})
DETAIL_LIMIT = 160
# What a grant with each scope code lacks: the user's words name those permissions.
_LACKING = {
    CauseCode.SCOPE_MISSING_READ: (Capability.READ,),
    CauseCode.SCOPE_MISSING_SEND: (Capability.SEND,),
    CauseCode.SCOPE_MISSING_READ_SEND: (Capability.READ, Capability.SEND),
}
# Causes that come while the connection still works: the briefing loses nothing yet.
_STILL_WORKING = frozenset({Cause.TESTING_EXPIRY, Cause.ACCESS_ENDING})


def admin_cause(code: CauseCode | None, detail: str | None, status: Status, locale: str) -> Mrkdwn:
    """Why, for an admin: the code's words, with the detail where it helps (a connection without a code, i.e.
    a healthy one, is said by its status)."""
    if code is None:
        return _status_words(status, locale)
    words = slack_text(locale, f"cause.{code}")
    if detail and code in _DETAIL_HELPS:
        return slack_text(locale, "cause.detail", words=words, detail=shorten(detail, DETAIL_LIMIT))
    return words


def user_cause(
    code: CauseCode | None,
    status: Status,
    locale: str,
    *,
    access_ends_at: datetime | None = None,
    zone: ZoneInfo | None = None,
) -> Mrkdwn:
    """Why, for the user: what happened and what to do, in plain words; a missing permission is named, and
    time-based access that ended says when (where the end is known)."""
    if code is None:
        return _status_words(status, locale)
    if code is CauseCode.ACCESS_TIME_ENDED and access_ends_at is not None and zone is not None:
        return slack_text(locale, "slack.cause.access_ended", when=local_time(access_ends_at, locale, zone))
    lacking = _LACKING.get(code)
    if lacking is not None:
        joiner = slack_text(locale, "list.and")
        return slack_text(
            locale,
            f"cause.{code}.user",
            permissions=joiner.join(slack_text(locale, f"capability.{c}.permission") for c in lacking),
            purposes=joiner.join(slack_text(locale, f"capability.{c}.purpose") for c in lacking),
        )
    return slack_text(locale, f"cause.{code}.user")


def prompt_cause(
    cause: Cause,
    code: CauseCode | None,
    locale: str,
    *,
    missing: Sequence[Capability] = (),
    access_ends_at: datetime | None = None,
    zone: ZoneInfo,
) -> Mrkdwn:
    """Why the Reconnect Gmail DM asks: the recorded code's words (for a grant that lacks a permission, the
    code of what it lacks), else the prompt's own cause, e.g. the warning that the access the user allowed ends
    soon, with when."""
    if code is None and cause is Cause.INSUFFICIENT_SCOPE and missing:
        code = scope_code(missing)
    if code is not None:
        return user_cause(code, Status.HEALTHY, locale, access_ends_at=access_ends_at, zone=zone)
    if cause is Cause.ACCESS_ENDING and access_ends_at is not None:
        return slack_text(locale, "slack.cause.access_ending", when=local_time(access_ends_at, locale, zone))
    return slack_text(locale, f"slack.cause.{cause}")


def briefing_meanwhile(locale: str, cause: Cause, *, missing: Sequence[Capability] = ()) -> Mrkdwn | None:
    """What the 9am briefing does until the user acts: nothing to say while the connection still works, it
    keeps its email part when only sending is missing, else it loses it."""
    if cause in _STILL_WORKING:
        return None
    if cause is Cause.INSUFFICIENT_SCOPE and missing and Capability.READ not in missing:
        return slack_text(locale, "slack.status.keeps_digest")
    return slack_text(locale, "slack.status.lose")


def _status_words(status: Status, locale: str) -> Mrkdwn:
    key = f"slack.cause.{status}"
    # Both catalogues hold the same keys (tests/bot/test_i18n.py).
    return slack_text(locale, key if key in catalogue("ko") else f"slack.label.{status}")
