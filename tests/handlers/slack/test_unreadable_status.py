"""An unreadable row on the Slack surfaces, in both languages: the /gmail-status card, the App Home and the
admins' `all` overview show the status, and the card says what the user can do."""

from __future__ import annotations

import pytest

from bot.appkeys import SERVICES
from bot.i18n import catalogue
from bot.slack.blocks.elements import RECONNECT_ACTION
from tests.fakes.google import FakeGoogle
from tests.fakes.slack import JSON_CONTENT_TYPE, FakeSlack, app_home_opened, event_body, slash_command_body
from tests.helpers import (
    SERVING_KEY,
    Serve,
    block_text,
    buttons,
    eventually,
    healthy,
    make_unreadable,
    post,
    settled,
)

VICTIM, ADMIN = "U0VICTIM", "UADMIN1"
WORDS = {
    "en-US": ("🔒 Stored connection unreadable", "can no longer decrypt your stored Gmail connection"),
    "ko-KR": ("🔒 저장된 연결을 읽을 수 없음", "저장된 Gmail 연결을 더 이상 복호화할 수 없습니다"),
}


@pytest.mark.parametrize("locale", list(WORDS))
async def test_the_card_the_home_tab_and_the_overview_show_an_unreadable_row(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle, locale: str
) -> None:
    label, cause = WORDS[locale]
    app = await serve(TOKEN_ENCRYPTION_KEYS=SERVING_KEY, ADMIN_SLACK_USER_IDS=ADMIN)
    fake_slack.add_user(VICTIM, locale=locale)
    fake_slack.add_user(ADMIN, locale=locale)
    await healthy(app, fake_google, VICTIM)
    await make_unreadable(app[SERVICES].pool, "wrong_key", VICTIM, other_user_id=ADMIN)
    account = await app[SERVICES].accounts.find_by_slack_id(VICTIM)
    assert account is not None
    await app[SERVICES].tokens.access(account)  # what a run or the API does: the row is marked unreadable

    await post(app, slash_command_body(user_id=VICTIM))
    (card,) = await settled(fake_slack, "chat.postEphemeral")
    await post(app, event_body(app_home_opened(VICTIM)), content_type=JSON_CONTENT_TYPE)
    await settled(fake_slack, "views.publish")
    before = len(fake_slack.ephemerals)
    await post(app, slash_command_body(text="all", user_id=ADMIN))
    await eventually(lambda: len(fake_slack.ephemerals) > before)

    text = block_text(card.args["blocks"])
    assert label in text and cause in text
    assert "TOKEN_ENCRYPTION_KEYS" not in text  # the operator's cause is for admins
    assert buttons(card.args["blocks"])[RECONNECT_ACTION]["style"] == "primary"
    home = block_text(fake_slack.views[VICTIM]["blocks"])
    assert label in home and cause in home
    overview = block_text(fake_slack.ephemerals[before]["blocks"])
    assert f"{label}: *1*" in overview
    # The admin's words, then what cannot be decrypted (the detail, in English): which key to look for.
    words = catalogue(locale[:2])["cause.tokens_unreadable"]
    assert (
        f"<@{VICTIM}> · u0victim@gmail.com · *{label.removeprefix('🔒 ')}*: {words} (The stored tokens cannot"
        in overview
    )
