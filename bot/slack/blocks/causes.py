"""Why a user is asked to reconnect, in the words of the DM and the status card: the cause, and what happens to
the briefing meanwhile; a grant that lacks a permission and time-based access say which, and until when."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from bot.google.health import Cause
from bot.google.scopes import Capability
from bot.slack.blocks.elements import local_time
from bot.slack.mrkdwn import Mrkdwn, slack_text

# Causes that come while the connection still works: the briefing loses nothing yet.
_STILL_WORKING = frozenset({Cause.TESTING_EXPIRY, Cause.ACCESS_ENDING})


def cause_words(
    locale: str,
    cause: Cause,
    *,
    missing: Sequence[Capability] = (),
    access_ends_at: datetime | None = None,
    zone: ZoneInfo,
) -> Mrkdwn:
    """The cause in plain words: which permission is missing, or when the access the user allowed ends or
    ended, where that is known; else the cause's own words."""
    if cause is Cause.INSUFFICIENT_SCOPE and missing:
        joiner = slack_text(locale, "list.and")
        return slack_text(
            locale,
            "slack.cause.lacking",
            permissions=joiner.join(slack_text(locale, f"capability.{c}.permission") for c in missing),
            purposes=joiner.join(slack_text(locale, f"capability.{c}.purpose") for c in missing),
        )
    if access_ends_at is not None:
        when = local_time(access_ends_at, locale, zone)
        if cause is Cause.ACCESS_ENDING:
            return slack_text(locale, "slack.cause.access_ending", when=when)
        if cause is Cause.EXPIRED and access_ends_at <= datetime.now(UTC):
            return slack_text(locale, "slack.cause.access_ended", when=when)
    return slack_text(locale, f"slack.cause.{cause}")


def briefing_meanwhile(locale: str, cause: Cause, *, missing: Sequence[Capability] = ()) -> Mrkdwn | None:
    """What the 9am briefing does until the user acts: nothing to say while the connection still works, it
    keeps its email part when only sending is missing, else it loses it."""
    if cause in _STILL_WORKING:
        return None
    if cause is Cause.INSUFFICIENT_SCOPE and missing and Capability.READ not in missing:
        return slack_text(locale, "slack.status.keeps_digest")
    return slack_text(locale, "slack.status.lose")
