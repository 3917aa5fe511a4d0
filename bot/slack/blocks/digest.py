"""The email part of the 9am briefing: the newest unread messages, as Slack mrkdwn that cannot mention or link."""

from __future__ import annotations

from typing import Any

from bot.google.gmail import MailSummary
from bot.slack.blocks.elements import SECTION_LIMIT, shorten
from bot.slack.mrkdwn import Mrkdwn, slack_text


def digest_blocks(mail: list[MailSummary], total: int, locale: str) -> tuple[list[dict[str, Any]], str]:
    """The email part of the briefing: the newest unread messages (sender, subject, snippet), each escaped,
    so that a subject holding `<!here>` notifies nobody and one holding `*` at worst ends the bold early.

    Built as plain dicts rather than slack_sdk's block models: this runs once per account per run, and the
    models' validation cost more CPU than the rest of the message."""
    if not mail:
        line = slack_text(locale, "slack.digest.none")
        return [_markdown_section(line)], line
    blocks = [_markdown_section(slack_text(locale, "slack.digest.title", count=total))]
    for message in mail:
        item = slack_text(
            locale,
            "slack.digest.item",
            subject=shorten(message.subject or slack_text(locale, "slack.digest.no_subject"), 200),
            sender=shorten(message.sender, 150),
            snippet=shorten(message.snippet, 300),
        )
        blocks.append(_markdown_section(item))
    if total > len(mail):
        more = slack_text(locale, "slack.digest.more", count=total - len(mail))
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": more}]})
    return blocks, slack_text(locale, "slack.digest.fallback", count=total)


def _markdown_section(line: Mrkdwn) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": shorten(line, SECTION_LIMIT)}}
