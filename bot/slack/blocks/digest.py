"""The email part of the 9am briefing: the newest unread messages, as Slack mrkdwn that cannot mention or link.

It stays within Slack's limits whatever BRIEFING_MAX_MESSAGES is. Several messages share a section (at most
SECTION_LIMIT characters), the message never holds more than MAX_BLOCKS blocks, and all its texts together
stay within TEXT_BUDGET: chat.postMessage refuses blocks whose texts add up to about 12,000 characters
(`msg_blocks_too_long`, a limit Slack does not document; slackapi/bolt-js#2509 and #2867), so the more
messages there are, the shorter each one's subject, sender and snippet. What still does not fit is counted in
the "more in Gmail" line.
"""

from __future__ import annotations

from typing import Any

from bot.google.gmail import MailSummary
from bot.slack.blocks.elements import SECTION_LIMIT, shorten
from bot.slack.mrkdwn import Mrkdwn, as_mrkdwn, slack_text

# Slack refuses a message of more than 50 blocks (invalid_blocks).
MAX_BLOCKS = 50
# All the texts of the digest's blocks, well inside the 12,000 characters that Slack was seen to refuse.
TEXT_BUDGET = 9000
# Slack truncates a message's `text` beyond 40,000 characters; as the notification's text, far less will do.
FALLBACK_LIMIT = 4000
# Each value's length once escaped (`<` is written `&lt;`), so that a subject of markup cannot grow fourfold;
# these are the lengths of a short digest, and a long one gives each message less.
SUBJECT_LIMIT = 200
SENDER_LIMIT = 120
SNIPPET_LIMIT = 300
# The shortest a subject and a sender are made, and the shortest snippet worth showing at all.
SUBJECT_FLOOR = 30
SENDER_FLOOR = 16
SNIPPET_FLOOR = 20
# Room kept for the title and the closing notes.
_FRAME = 400
_BETWEEN_ITEMS = Mrkdwn("\n\n")


def digest_blocks(
    mail: list[MailSummary], total: int, locale: str, *, unreadable: int = 0
) -> tuple[list[dict[str, Any]], str]:
    """The email part of the briefing: the newest unread messages (sender, subject, snippet), each escaped,
    so that a subject holding `<!here>` notifies nobody and one holding `*` at worst ends the bold early;
    `unreadable`: how many of `total` Gmail would not give, which the digest says.

    Built as plain dicts rather than slack_sdk's block models: this runs once per account per run, and the
    models' validation cost more CPU than the rest of the message."""
    if not mail and not unreadable:
        line = slack_text(locale, "slack.digest.none")
        return [_markdown_section(line)], line
    title = _markdown_section(slack_text(locale, "slack.digest.title", count=total))
    # The title and the closing context take two blocks; the sections share the rest.
    limits = _limits(len(mail), locale)
    items = [_item(message, locale, *limits) for message in mail]
    sections, shown = _pack(items, room=MAX_BLOCKS - 2, budget=TEXT_BUDGET - _FRAME)
    notes = []
    more = total - shown - unreadable
    if more > 0:
        notes.append(slack_text(locale, "slack.digest.more", count=more))
    if unreadable:
        notes.append(slack_text(locale, "slack.digest.unreadable", count=unreadable))
    blocks = [title, *(_markdown_section(text) for text in sections)]
    if notes:
        elements = [{"type": "mrkdwn", "text": shorten(note, SECTION_LIMIT)} for note in notes]
        blocks.append({"type": "context", "elements": elements})
    fallback = slack_text(locale, "slack.digest.fallback", count=total)
    return blocks, shorten(fallback, FALLBACK_LIMIT)


def _limits(count: int, locale: str) -> tuple[int, int, int]:
    """How long each message's subject, sender and snippet may be, so that `count` of them share the
    budget: the subject first, then the sender, and the snippet gets what is left (nothing, if too little)."""
    template = slack_text(locale, "slack.digest.item", subject="", sender="", snippet="")
    room = (TEXT_BUDGET - _FRAME) // max(count, 1) - len(_BETWEEN_ITEMS) - len(template)
    subject = min(SUBJECT_LIMIT, max(SUBJECT_FLOOR, room // 2))
    sender = min(SENDER_LIMIT, max(SENDER_FLOOR, room // 4))
    snippet = min(SNIPPET_LIMIT, room - subject - sender)
    return subject, sender, snippet if snippet >= SNIPPET_FLOOR else 0


def _item(
    message: MailSummary, locale: str, subject_limit: int, sender_limit: int, snippet_limit: int
) -> Mrkdwn:
    """One message's lines; each value escaped first and cut after, so no entity (`&lt;`) is cut in half."""
    subject = as_mrkdwn(message.subject) if message.subject else slack_text(locale, "slack.digest.no_subject")
    values = {
        "subject": shorten(subject, subject_limit),
        "sender": shorten(as_mrkdwn(message.sender), sender_limit),
    }
    if not snippet_limit or not message.snippet:
        return slack_text(locale, "slack.digest.item_brief", **values)
    return slack_text(
        locale, "slack.digest.item", **values, snippet=shorten(as_mrkdwn(message.snippet), snippet_limit)
    )


def _pack(items: list[Mrkdwn], *, room: int, budget: int) -> tuple[list[Mrkdwn], int]:
    """The items joined into at most `room` texts of at most SECTION_LIMIT characters, in order, `budget`
    characters in all; and how many items they hold (the rest did not fit)."""
    texts: list[Mrkdwn] = []
    current: list[Mrkdwn] = []
    size, spent, packed = 0, 0, 0
    for item in items:
        item = shorten(item, SECTION_LIMIT)
        if current and size + len(_BETWEEN_ITEMS) + len(item) > SECTION_LIMIT:
            texts.append(_BETWEEN_ITEMS.join(current))
            current, size = [], 0
        cost = (len(_BETWEEN_ITEMS) if current else 0) + len(item)
        if len(texts) == room or spent + cost > budget:
            break
        size += cost
        spent += cost
        current.append(item)
        packed += 1
    if current:
        texts.append(_BETWEEN_ITEMS.join(current))
    return texts, packed


def _markdown_section(line: Mrkdwn) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": shorten(line, SECTION_LIMIT)}}
