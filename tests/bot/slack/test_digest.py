"""The digest's blocks stay within Slack's limits whatever the number and the length of the messages."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.google.gmail import MailSummary
from bot.slack.blocks.digest import FALLBACK_LIMIT, MAX_BLOCKS, TEXT_BUDGET, digest_blocks
from tests.helpers import MARKUP, block_text

LONG = ((MARKUP + " ") * 18)[:1000]
BROKEN_ENTITY = re.compile(r"&(?!amp;|lt;|gt;)")


def messages(count: int, *, subject: str = LONG, snippet: str = LONG) -> list[MailSummary]:
    return [
        MailSummary(str(n), f"{MARKUP} <s{n}@example.com>", f"{n:03d} {subject}", snippet, datetime.now(UTC))
        for n in range(count)
    ]


def shown(blocks: list[dict[str, Any]]) -> list[str]:
    return re.findall(r"^\*(\d{3}) ", block_text(blocks), re.MULTILINE)


def assert_within_slacks_limits(blocks: list[dict[str, Any]], fallback: str) -> None:
    assert len(blocks) <= MAX_BLOCKS and len(fallback) <= FALLBACK_LIMIT
    for block in blocks:
        texts = [block["text"]] if block["type"] == "section" else block["elements"]
        assert all(0 < len(text["text"]) <= 3000 for text in texts) and len(texts) <= 10
    everything = block_text(blocks)
    assert len(everything) <= TEXT_BUDGET  # what chat.postMessage was seen to take, with room to spare
    assert "<" not in everything and ">" not in everything and not BROKEN_ENTITY.search(everything)


@pytest.mark.parametrize("count", [1, 2, 10, 25, 49, 50, 51, 99, 100])
@pytest.mark.parametrize("locale", ["ko", "en"])
def test_every_message_up_to_a_hundred_fits_however_long_and_full_of_markup(count: int, locale: str) -> None:
    blocks, fallback = digest_blocks(messages(count), count, locale)

    assert_within_slacks_limits(blocks, fallback)
    assert shown(blocks) == [f"{n:03d}" for n in range(count)]
    assert "…and" not in block_text(blocks) and "…외" not in block_text(blocks)


def test_a_short_digest_keeps_long_subjects_and_snippets_long() -> None:
    blocks, _ = digest_blocks(messages(10), 10, "en")

    first = blocks[1]["text"]["text"].split("\n\n")[0]
    subject, rest = first.split("\n")
    assert len(subject) == 200 + 2  # cut at 200 characters inside the *bold*
    assert len(rest.split(" · ")[1]) == 300


def test_more_messages_than_fit_are_counted_in_gmail() -> None:
    blocks, fallback = digest_blocks(messages(300), 420, "en")

    assert_within_slacks_limits(blocks, fallback)
    listed = len(shown(blocks))
    assert 100 < listed < 300 and shown(blocks) == [f"{n:03d}" for n in range(listed)]
    assert blocks[-1] == {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": f"…and {420 - listed} more in Gmail."}],
    }
    assert fallback == "Your unread mail from the last day: 420"


def test_unreadable_messages_are_said_in_the_users_language_even_when_none_could_be_read() -> None:
    blocks, _ = digest_blocks([], 3, "ko", unreadable=3)

    assert "(3개)" in block_text(blocks) and "없습니다" not in block_text(blocks)
    assert blocks[-1]["elements"] == [
        {
            "type": "mrkdwn",
            "text": "⚠️ 그중 3개는 지금 Gmail에서 읽어 오지 못했습니다. 받은편지함에서 확인하세요.",
        }
    ]

    blocks, _ = digest_blocks(messages(2, subject="Hi", snippet="x"), 9, "en", unreadable=3)
    assert [element["text"] for element in blocks[-1]["elements"]] == [
        "…and 4 more in Gmail.",
        "⚠️ 3 of them could not be read from Gmail just now; they are in your inbox.",
    ]


def test_a_cut_never_ends_inside_an_entity() -> None:
    for offset in range(6):  # every position of the cut within `&amp;` and `&lt;`
        subject, snippet = "x" * offset + "&" * 300, "y" * offset + "<" * 300
        blocks, _ = digest_blocks(messages(1, subject=subject, snippet=snippet), 1, "en")
        text = block_text(blocks)
        assert not BROKEN_ENTITY.search(text) and text.count("…") == 2
