"""Slack text: values escaped as Slack documents (&, <, > only), the catalogue's own markup kept, text already
escaped never escaped twice, mentions only of real user IDs, and shortening that never breaks the markup."""

from __future__ import annotations

import pytest

from bot.slack.blocks.elements import BUTTON_TEXT_LIMIT, button_text, shorten
from bot.slack.mrkdwn import Mrkdwn, as_mrkdwn, escape, mention, slack_text
from tests.helpers import MARKUP, MARKUP_ESCAPED


def test_only_ampersand_and_angle_brackets_are_escaped() -> None:
    assert escape(MARKUP) == MARKUP_ESCAPED
    assert escape("*bold* _it_ ~s~ `code` > quote \"'") == "*bold* _it_ ~s~ `code` &gt; quote \"'"
    assert escape("&lt;") == "&amp;lt;"  # an entity in the data is data: it is shown as written


def test_a_template_keeps_its_markup_and_its_values_are_escaped() -> None:
    line = slack_text("en", "slack.status.linked", email=MARKUP)

    assert isinstance(line, Mrkdwn)
    assert line == f"Linked: *{MARKUP_ESCAPED}* is now your Gmail connection."
    assert slack_text("en", "slack.admin.nudge_healthy", user="U0ABC", email="a&b") == (
        "<@U0ABC>'s Gmail works (a&amp;b): no DM sent."
    )
    assert slack_text("ko", "slack.digest.title", count=3) == "📬 *지난 하루 동안 안 읽은 메일* (3개)"


def test_slack_text_already_built_is_not_escaped_again() -> None:
    reason = slack_text("en", "slack.status.fetch_failed", reason="<b>")
    line = slack_text("en", "slack.status.last_fetch", when="never", result=reason)

    assert line == "*Last briefing fetch:* never (failed: &lt;b&gt;)"
    assert as_mrkdwn(line) is line
    assert Mrkdwn(" · ").join([mention("U0ABC"), "<!here>"]) == "<@U0ABC> · &lt;!here&gt;"


@pytest.mark.parametrize(
    ("user_id", "shown"),
    [
        ("U0ABC123", "<@U0ABC123>"),
        ("W0ENTERPRISE", "<@W0ENTERPRISE>"),
        ("U1> <!channel", "U1&gt; &lt;!channel"),
        ("u0lower", "u0lower"),
    ],
)
def test_only_a_slack_user_id_becomes_a_mention(user_id: str, shown: str) -> None:
    assert mention(user_id) == shown


def test_shortening_slack_text_never_cuts_an_entity_or_a_control_sequence() -> None:
    label = slack_text("en", "slack.button.link", email=MARKUP * 3)
    for limit in range(10, 80):
        cut = shorten(label, limit)
        assert isinstance(cut, Mrkdwn) and len(cut) <= limit and cut.endswith("…")
        head = cut.removesuffix("…")
        assert head.count("&") == head.count(";"), head  # every entity whole
    mentions = Mrkdwn(" ").join([mention("U0ABCDEF")] * 5)
    assert [shorten(mentions, limit) for limit in (13, 14, 15)] == [
        "<@U0ABCDEF> …",
        "<@U0ABCDEF> …",
        "<@U0ABCDEF> …",
    ]
    assert len(button_text(label)) <= BUTTON_TEXT_LIMIT


def test_shortening_raw_text_is_a_plain_cut() -> None:
    assert shorten("a < b & c, and more", 10) == "a < b & c…"
    assert not isinstance(shorten("a < b & c, and more", 10), Mrkdwn)
