"""The email part of the 9am briefing: the newest unread messages, as Slack mrkdwn that cannot mention or link."""

from __future__ import annotations

from typing import Any

from bot.google.gmail import MailSummary
from bot.i18n import text
from bot.slack.blocks.elements import SECTION_LIMIT, shorten


def digest_blocks(mail: list[MailSummary], total: int, locale: str) -> tuple[list[dict[str, Any]], str]:
    """The email part of the briefing: the newest unread messages (sender, subject, snippet).

    Built as plain dicts rather than slack_sdk's block models: this runs once per account per run, and the
    models' validation cost more CPU than the rest of the message."""
    if not mail:
        line = text(locale, "slack.digest.none")
        return [_markdown_section(line)], line
    blocks = [_markdown_section(text(locale, "slack.digest.title", count=total))]
    for message in mail:
        item = text(
            locale,
            "slack.digest.item",
            subject=_escape(shorten(message.subject or text(locale, "slack.digest.no_subject"), 200)),
            sender=_escape(shorten(message.sender, 150)),
            snippet=_escape(shorten(message.snippet, 300)),
        )
        blocks.append(_markdown_section(item))
    if total > len(mail):
        more = text(locale, "slack.digest.more", count=total - len(mail))
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": more}]})
    return blocks, text(locale, "slack.digest.fallback", count=total)


def _markdown_section(line: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": shorten(line, SECTION_LIMIT)}}


def _escape(value: str) -> str:
    """Mail text shown as Slack mrkdwn: &, < and > escaped, so a subject cannot mention or link."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
