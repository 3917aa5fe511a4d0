"""A connection's cause in its reader's words: the code's text from the catalogue, the stored detail only where
it adds something (and escaped, since it may be Google's words)."""

from __future__ import annotations

from bot.i18n import catalogue
from bot.slack.blocks.elements import shorten
from bot.slack.mrkdwn import Mrkdwn, slack_text
from storage.causes import CauseCode
from storage.models import Status

# Codes whose detail tells an admin more than the code's words: which key or field cannot be decrypted, and
# which OAuth client Google refuses and how.
_DETAIL_HELPS = frozenset({CauseCode.TOKENS_UNREADABLE, CauseCode.CLIENT_REJECTED})
DETAIL_LIMIT = 160


def admin_cause(code: CauseCode | None, detail: str | None, status: Status, locale: str) -> Mrkdwn:
    """Why, for an admin: the code's words, with the detail where it helps (a connection without a code, i.e.
    a healthy one, is said by its status)."""
    if code is None:
        return _status_words(status, locale)
    words = slack_text(locale, f"cause.{code}")
    if detail and code in _DETAIL_HELPS:
        return slack_text(locale, "cause.detail", words=words, detail=shorten(detail, DETAIL_LIMIT))
    return words


def user_cause(code: CauseCode | None, status: Status, locale: str) -> Mrkdwn:
    """Why, for the user: what happened and what to do, in plain words."""
    if code is None:
        return _status_words(status, locale)
    return slack_text(locale, f"cause.{code}.user")


def _status_words(status: Status, locale: str) -> Mrkdwn:
    key = f"slack.cause.{status}"
    # Both catalogues hold the same keys (tests/bot/test_i18n.py).
    return slack_text(locale, key if key in catalogue("ko") else f"slack.label.{status}")
