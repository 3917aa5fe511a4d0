"""What every message shares: action IDs, Slack's size limits, status emoji, and small text helpers."""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar
from zoneinfo import ZoneInfo

from slack_sdk.models.blocks import (
    ConfirmObject,
)

from bot.slack.mrkdwn import Mrkdwn, slack_text
from storage.models import Status

Text = TypeVar("Text", str, Mrkdwn)

RECONNECT_ACTION = "reconnect_gmail"


SWITCH_ACTION = "switch_gmail_account"


DISCONNECT_ACTION = "disconnect_gmail"


LINK_ACTION = "link_gmail_account"


SNOOZE_ACTION = "snooze_reconnect_prompt"


NUDGE_ALL_ACTION = "nudge_all_unhealthy"


# Slack allows 50 blocks per message and 3,000 characters per section; the admin list stays well inside.
ADMIN_LIST_LIMIT = 40


SECTION_LIMIT = 2900


BUTTON_TEXT_LIMIT = 75


EMOJI = {
    Status.HEALTHY: "✅",
    Status.UNKNOWN: "⏳",
    Status.EXPIRED: "⚠️",
    Status.REVOKED: "⚠️",
    Status.MISSING: "⚠️",
    Status.INSUFFICIENT_SCOPE: "⚠️",
    Status.DISCONNECTED: "⏸️",
    Status.UNREADABLE: "🔒",
    Status.DISABLED: "⛔",
}


def confirm_dialog(locale: str, key: str, *, style: str | None = None) -> ConfirmObject:
    """Slack's confirmation dialog, from the catalogue's `key`.title/.text/.yes/.no."""
    return ConfirmObject(
        title=slack_text(locale, f"{key}.title"),
        text=slack_text(locale, f"{key}.text"),
        confirm=slack_text(locale, f"{key}.yes"),
        deny=slack_text(locale, f"{key}.no"),
        style=style,
    )


def chunks(lines: list[str], limit: int) -> list[str]:
    """Lines joined into texts of at most `limit` characters each."""
    chunks: list[str] = []
    current = ""
    for line in lines:
        if current and len(current) + 1 + len(line) > limit:
            chunks.append(current)
            current = ""
        current = f"{current}\n{line}" if current else line
    return [*chunks, current] if current else chunks


def shorten(value: Text, limit: int) -> Text:
    """`value` cut to `limit` characters, ending in "…"; Slack text is never cut inside an entity (`&lt;`),
    which would show as broken text, or inside one of its own `<…>`."""
    if len(value) <= limit:
        return value
    cut = value[: limit - 1]
    if not isinstance(value, Mrkdwn):
        return cut + "…"
    entity = cut.rfind("&")
    if entity > len(cut) - len("&amp;") and ";" not in cut[entity:]:
        cut = cut[:entity]
    if cut.rfind("<") > cut.rfind(">"):
        cut = cut[: cut.rfind("<")]
    return Mrkdwn(cut + "…")


def button_text(value: Mrkdwn) -> Mrkdwn:
    return shorten(value, BUTTON_TEXT_LIMIT)


def local_time(moment: datetime | None, locale: str, zone: ZoneInfo) -> str:
    """A moment as users read it, in BRIEFING_TIMEZONE with its abbreviation (2026-12-01 09:00 KST)."""
    if moment is None:
        return slack_text(locale, "slack.status.never")
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")
