"""Text for Slack: the catalogue's templates keep their markup, and every value put into them is escaped.

Slack reads `&`, `<` and `>` as control characters in the text it shows (a message's text, mrkdwn and
plain_text objects alike) and asks for exactly these three to be written `&amp;`, `&lt;` and `&gt;` when they
are meant as text ("Escaping text", Slack's Formatting message text). Unescaped, an email address, a name or
an error text holding `<!channel>` would notify a whole channel, and `<https://evil|click>` would disguise a
link. slack_sdk has no helper for this. `*`, `_`, `~` and backticks need no escaping: at worst they change
the emphasis of a line, and they never notify anyone or link anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bot.i18n import text
from bot.slack.ids import is_user_id


class Mrkdwn(str):
    """Text in Slack's markup that the bot built, with every value in it escaped: its markup is meant, and
    it is never escaped again when it goes into another text."""

    def join(self, parts: Iterable[str], /) -> Mrkdwn:
        """The parts joined with this text between them; a part that is not Mrkdwn yet is escaped."""
        return Mrkdwn(str.join(self, (as_mrkdwn(part) for part in parts)))


def escape(value: str) -> str:
    """`value` as Slack shows it, character for character: `&`, `<` and `>` written as entities."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def as_mrkdwn(value: str) -> Mrkdwn:
    """`value` as Slack text: Mrkdwn as it is, any other text escaped."""
    return value if isinstance(value, Mrkdwn) else Mrkdwn(escape(value))


def slack_text(locale: str, key: str, **params: Any) -> Mrkdwn:
    """The catalogue's text `key` in `locale` (as bot.i18n.text) for Slack: the template's own markup (`*bold*`,
    `<@{user}>`) kept, and each value filled in escaped, unless it is Mrkdwn already."""
    safe = {name: as_mrkdwn(value) if isinstance(value, str) else value for name, value in params.items()}
    return Mrkdwn(text(locale, key, **safe))


def mention(slack_user_id: str) -> Mrkdwn:
    """`<@U123>`, which Slack shows as the user's name; anything that is not a user ID is shown as text."""
    return Mrkdwn(f"<@{slack_user_id}>") if is_user_id(slack_user_id) else as_mrkdwn(slack_user_id)
