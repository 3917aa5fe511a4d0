"""The Reconnect Gmail DM and the card's buttons, through the real application, the fake Slack and the fake
Google: one open prompt per user, reminders edit it, "Remind me tomorrow", the DM after a reconnection,
Disconnect, and linking the row that matches the Slack profile email."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web

from bot.appkeys import SERVICES
from bot.google.health import Cause
from bot.slack.blocks.elements import (
    DISCONNECT_ACTION,
    LINK_ACTION,
    RECONNECT_ACTION,
    SNOOZE_ACTION,
    SWITCH_ACTION,
)
from bot.slack.prompter import Delivery
from storage import audit
from storage.models import Account, Status, TokenGrant
from storage.prompts import PromptState
from tests.fakes.google import FakeGoogle
from tests.fakes.slack import (
    FakeSlack,
    app_home_opened,
    block_actions_body,
    dm_channel_id,
    ephemeral_actions_body,
    event_body,
    slash_command_body,
)
from tests.helpers import (
    READONLY,
    SEND,
    Serve,
    block_text,
    buttons,
    eventually,
    load_legacy_seed,
    owner_link,
    post,
    settled,
    visit,
)

SCOPES = ["openid", "email", READONLY, SEND]
SEOUL = ZoneInfo("Asia/Seoul")


async def expired_account(app: web.Application, slack_user_id: str, email: str) -> Account:
    """A linked account whose refresh token Google refused."""
    account = await app[SERVICES].accounts.store_tokens(
        grant=TokenGrant("ya29.old", "1//old-" + slack_user_id, None, SCOPES),
        actor="test",
        slack_user_id=slack_user_id,
        metadata={"email": email},
        status=Status.HEALTHY,
    )
    return await app[SERVICES].accounts.set_status(
        account.id, status=Status.EXPIRED, cause="invalid_grant", actor="test"
    )


async def healthy_account(
    app: web.Application, fake_google: FakeGoogle, slack_user_id: str, email: str
) -> Account:
    """A linked account whose refresh token the fake Google knows (so it can be revoked)."""
    refresh_token = "1//good-" + slack_user_id
    fake_google.add_refresh_token(refresh_token, email=email, scopes=SCOPES)
    return await app[SERVICES].accounts.store_tokens(
        grant=TokenGrant("ya29.good", refresh_token, datetime.now(UTC) + timedelta(hours=1), SCOPES),
        actor="test",
        slack_user_id=slack_user_id,
        metadata={"email": email},
        status=Status.HEALTHY,
    )


def dm(fake: FakeSlack, slack_user_id: str) -> list[dict[str, Any]]:
    """The messages in the user's DM with the bot, oldest first."""
    channel = dm_channel_id(slack_user_id)
    return [message for (where, _), message in sorted(fake.messages.items()) if where == channel]


async def test_the_reconnect_dm_says_why_what_is_lost_and_offers_two_buttons(
    serve: Serve, fake_slack: FakeSlack
) -> None:
    app = await serve()
    fake_slack.add_user("U0EXP", locale="ko-KR")
    account = await expired_account(app, "U0EXP", "exp@gmail.com")

    result = await app[SERVICES].prompter.send("U0EXP", account=account, cause=Cause.EXPIRED, actor="test")

    assert result.delivery is Delivery.POSTED and result.prompt is not None
    (message,) = dm(fake_slack, "U0EXP")
    text = block_text(message["blocks"])
    assert "Gmail을 다시 연결해 주세요" in text
    assert "만료되었거나 취소되었다고" in text  # the cause in plain words
    assert "오전 9시 브리핑에 이메일 요약이 빠집니다" in text  # what the user loses
    assert "exp@gmail.com" in text
    assert message["text"].startswith("Gmail을 다시 연결해 주세요:")  # the notification text
    found = buttons(message["blocks"])
    assert found[RECONNECT_ACTION]["style"] == "primary"
    claims = app[SERVICES].links.verify(found[RECONNECT_ACTION]["url"].split("t=", 1)[1])
    assert claims.slack_user_id == "U0EXP"
    assert found[SNOOZE_ACTION]["text"]["text"] == "내일 다시 알림"
    assert found[SNOOZE_ACTION]["value"] == str(result.prompt.id)
    assert (result.prompt.channel_id, result.prompt.message_ts) == (dm_channel_id("U0EXP"), message["ts"])
    assert "ya29.old" not in str(message) and "1//old" not in str(message)


async def test_the_dm_in_english_for_a_missing_permission(serve: Serve, fake_slack: FakeSlack) -> None:
    app = await serve()
    fake_slack.add_user("U0SCOPE", locale="en-US")

    await app[SERVICES].prompter.send("U0SCOPE", account=None, cause=Cause.INSUFFICIENT_SCOPE, actor="test")

    (message,) = dm(fake_slack, "U0SCOPE")
    text = block_text(message["blocks"])
    assert "Your Gmail needs reconnecting" in text and "tick every box" in text
    assert buttons(message["blocks"])[SNOOZE_ACTION]["text"]["text"] == "Remind me tomorrow"


async def test_a_reminder_edits_the_open_dm_instead_of_sending_another(
    serve: Serve, fake_slack: FakeSlack
) -> None:
    app = await serve()
    fake_slack.add_user("U0EXP")
    account = await expired_account(app, "U0EXP", "exp@gmail.com")

    first = await app[SERVICES].prompter.send("U0EXP", account=account, cause=Cause.EXPIRED, actor="test")
    second = await app[SERVICES].prompter.send("U0EXP", account=account, cause=Cause.REVOKED, actor="test")

    assert (first.delivery, second.delivery) == (Delivery.POSTED, Delivery.UPDATED)
    assert len(fake_slack.calls_to("chat.postMessage")) == 1
    (message,) = dm(fake_slack, "U0EXP")
    assert "edited" in message and "취소되었다고 알려왔습니다" in block_text(message["blocks"])
    assert second.prompt is not None and first.prompt is not None
    assert (second.prompt.id, second.prompt.sent_count) == (first.prompt.id, 2)
    actions = [event.action for event in await audit.recent(app[SERVICES].pool, slack_user_id="U0EXP")]
    assert actions[:2] == ["prompt.updated", "prompt.sent"]


async def test_a_dm_deleted_in_slack_is_sent_again(serve: Serve, fake_slack: FakeSlack) -> None:
    app = await serve()
    fake_slack.add_user("U0EXP")
    account = await expired_account(app, "U0EXP", "exp@gmail.com")
    first = await app[SERVICES].prompter.send("U0EXP", account=account, cause=Cause.EXPIRED, actor="test")
    assert first.prompt is not None
    del fake_slack.messages[dm_channel_id("U0EXP"), first.prompt.message_ts]

    again = await app[SERVICES].prompter.send("U0EXP", account=account, cause=Cause.EXPIRED, actor="test")

    assert again.delivery is Delivery.POSTED and again.prompt is not None
    assert again.prompt.id == first.prompt.id and again.prompt.message_ts != first.prompt.message_ts
    assert len(dm(fake_slack, "U0EXP")) == 1


async def test_two_senders_at_once_send_one_dm(serve: Serve, fake_slack: FakeSlack) -> None:
    app = await serve()
    fake_slack.add_user("U0EXP")
    fake_slack.delay = 0.05
    account = await expired_account(app, "U0EXP", "exp@gmail.com")

    results = await asyncio.gather(
        *(
            app[SERVICES].prompter.send("U0EXP", account=account, cause=Cause.EXPIRED, actor="test")
            for _ in range(4)
        )
    )

    assert sorted(result.delivery for result in results) == sorted(
        [Delivery.POSTED, Delivery.UPDATED, Delivery.UPDATED, Delivery.UPDATED]
    )
    assert len(fake_slack.calls_to("chat.postMessage")) == 1 and len(dm(fake_slack, "U0EXP")) == 1
    async with app[SERVICES].pool.acquire() as conn:
        assert (
            await conn.fetchval("SELECT count(*) FROM reconnect_prompts WHERE slack_user_id = 'U0EXP'") == 1
        )


async def test_slack_refusing_the_dm_records_nothing(serve: Serve, fake_slack: FakeSlack) -> None:
    app = await serve()
    fake_slack.add_user("U0GONE")
    fake_slack.fail("chat.postMessage", error="user_disabled")

    result = await app[SERVICES].prompter.send("U0GONE", account=None, cause=Cause.MISSING, actor="test")

    assert (result.delivery, result.error) == (Delivery.FAILED, "user_disabled")
    assert await app[SERVICES].prompts.open_for("U0GONE") is None


async def test_remind_me_tomorrow_holds_reminders_until_the_next_day(
    serve: Serve, fake_slack: FakeSlack
) -> None:
    app = await serve()
    fake_slack.add_user("U0EXP", locale="en-US")
    account = await expired_account(app, "U0EXP", "exp@gmail.com")
    sent = await app[SERVICES].prompter.send("U0EXP", account=account, cause=Cause.EXPIRED, actor="test")
    assert sent.prompt is not None
    channel, ts = dm_channel_id("U0EXP"), sent.prompt.message_ts

    status, _ = await post(
        app,
        block_actions_body(
            SNOOZE_ACTION, user_id="U0EXP", value=str(sent.prompt.id), channel_id=channel, message_ts=ts
        ),
    )

    assert status == 200
    await settled(fake_slack, "chat.update")
    prompt = await app[SERVICES].prompts.open_for("U0EXP")
    assert prompt is not None and prompt.snoozed_until is not None
    local = prompt.snoozed_until.astimezone(SEOUL)
    assert (local.hour, local.minute) == (0, 0)
    assert local.date() == datetime.now(SEOUL).date() + timedelta(days=1)
    (message,) = dm(fake_slack, "U0EXP")
    assert "I'll remind you tomorrow" in block_text(message["blocks"])
    assert SNOOZE_ACTION not in buttons(message["blocks"]) and RECONNECT_ACTION in buttons(message["blocks"])
    assert "prompt.snoozed" in [
        e.action for e in await audit.recent(app[SERVICES].pool, slack_user_id="U0EXP")
    ]

    skipped = await app[SERVICES].prompter.send("U0EXP", account=account, cause=Cause.EXPIRED, actor="test")
    assert skipped.delivery is Delivery.SNOOZED and len(fake_slack.calls_to("chat.update")) == 1
    forced = await app[SERVICES].prompter.send(
        "U0EXP", account=account, cause=Cause.EXPIRED, actor="test", respect_snooze=False
    )
    assert forced.delivery is Delivery.UPDATED and forced.prompt is not None
    assert forced.prompt.snoozed_until is None  # a reminder that went out ends the snooze


async def test_snoozing_someone_elses_prompt_does_nothing(serve: Serve, fake_slack: FakeSlack) -> None:
    app = await serve()
    fake_slack.add_user("U0EXP")
    fake_slack.add_user("U0OTHER")
    account = await expired_account(app, "U0EXP", "exp@gmail.com")
    sent = await app[SERVICES].prompter.send("U0EXP", account=account, cause=Cause.EXPIRED, actor="test")
    assert sent.prompt is not None

    status, _ = await post(
        app, block_actions_body(SNOOZE_ACTION, user_id="U0OTHER", value=str(sent.prompt.id))
    )
    await asyncio.sleep(0.3)

    assert status == 200
    prompt = await app[SERVICES].prompts.open_for("U0EXP")
    assert prompt is not None and prompt.snoozed_until is None
    assert fake_slack.calls_to("chat.update") == []


async def test_reconnecting_turns_the_dm_into_reconnected_and_confirms(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle, browser: aiohttp.ClientSession
) -> None:
    app = await serve()
    fake_slack.add_user("U0EXP", locale="en-US")
    account = await expired_account(app, "U0EXP", "exp@gmail.com")
    sent = await app[SERVICES].prompter.send("U0EXP", account=account, cause=Cause.EXPIRED, actor="test")
    assert sent.prompt is not None
    url = buttons(dm(fake_slack, "U0EXP")[0]["blocks"])[RECONNECT_ACTION]["url"]
    fake_google.consent.email = "exp@gmail.com"
    fake_slack.sign_in("U0EXP")  # the DM's owner clicks its button

    status, _, _ = await visit(browser, url)

    assert status == 200
    await eventually(lambda: len(dm(fake_slack, "U0EXP")) == 2)
    prompt_message, confirmation = dm(fake_slack, "U0EXP")
    assert prompt_message["ts"] == sent.prompt.message_ts
    assert block_text(prompt_message["blocks"]) == "✅ Reconnected as *exp@gmail.com*"
    assert buttons(prompt_message["blocks"]) == {}
    assert "connected again (exp@gmail.com)" in confirmation["text"]
    await eventually(lambda: "U0EXP" in fake_slack.views)
    assert "✅ Connected" in block_text(fake_slack.views["U0EXP"]["blocks"])  # the Home tab is current
    assert await app[SERVICES].prompts.open_for("U0EXP") is None
    closed = await app[SERVICES].prompts.get(sent.prompt.id)
    assert closed is not None and closed.state is PromptState.RESOLVED
    for secret in fake_google.issued_secrets:
        assert secret not in str(fake_slack.calls)


async def test_a_first_connection_without_a_prompt_is_confirmed(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle, browser: aiohttp.ClientSession
) -> None:
    app = await serve()
    fake_slack.add_user("U0NEW", locale="ko-KR")
    fake_google.consent.email = "new@gmail.com"

    await visit(browser, owner_link(app, fake_slack, "U0NEW"))

    await eventually(lambda: len(dm(fake_slack, "U0NEW")) == 1)
    assert "Gmail이 다시 연결되었습니다(new@gmail.com)" in dm(fake_slack, "U0NEW")[0]["text"]
    assert fake_slack.calls_to("chat.update") == []


def ephemeral_click(fake: FakeSlack, action_id: str, user_id: str, value: str) -> bytes:
    """A click on the ephemeral /gmail-status card, whose response URL the fake Slack serves."""
    return ephemeral_actions_body(
        action_id, user_id=user_id, value=value, response_url=fake.response_url(user_id)
    )


async def test_disconnect_from_the_card_revokes_at_google_and_redraws_it(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve()
    fake_slack.add_user("U0OK", locale="en-US")
    account = await healthy_account(app, fake_google, "U0OK", "ok@gmail.com")
    await post(app, slash_command_body(user_id="U0OK"))
    (card,) = await settled(fake_slack, "chat.postEphemeral")
    disconnect_button = buttons(card.args["blocks"])[DISCONNECT_ACTION]
    assert disconnect_button["confirm"]["title"]["text"] == "Disconnect Gmail?"
    assert disconnect_button["style"] == "danger"

    status, _ = await post(
        app, ephemeral_click(fake_slack, DISCONNECT_ACTION, "U0OK", disconnect_button["value"])
    )

    assert status == 200
    await eventually(lambda: bool(fake_slack.responses))
    (response,) = fake_slack.responses
    assert response["replace_original"] is True
    text = block_text(response["blocks"])
    assert "revoked at Google" in text and "Disconnected" in text
    assert DISCONNECT_ACTION not in buttons(response["blocks"])
    assert "1//good-U0OK" in fake_google.revoked
    after = await app[SERVICES].accounts.get(account.id)
    assert after.status is Status.DISCONNECTED and not after.has_refresh_token


async def test_disconnect_from_app_home_republishes_it(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve()
    fake_slack.add_user("U0OK", locale="ko-KR")
    account = await healthy_account(app, fake_google, "U0OK", "ok@gmail.com")
    await post(app, event_body(app_home_opened("U0OK")), content_type="application/json")
    await settled(fake_slack, "views.publish")
    home = fake_slack.views["U0OK"]
    value = buttons(home["blocks"])[DISCONNECT_ACTION]["value"]

    await post(app, block_actions_body(DISCONNECT_ACTION, user_id="U0OK", value=value, view=home))

    await settled(fake_slack, "views.publish", 2)
    assert "Google에서 봇의 접근 권한을 취소했고" in block_text(fake_slack.views["U0OK"]["blocks"])
    assert (await app[SERVICES].accounts.get(account.id)).status is Status.DISCONNECTED


async def test_a_forged_disconnect_of_another_account_changes_nothing(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve()
    fake_slack.add_user("U0OK", locale="en-US")
    fake_slack.add_user("U0MALLORY", locale="en-US")
    victim = await healthy_account(app, fake_google, "U0OK", "ok@gmail.com")

    await post(app, ephemeral_click(fake_slack, DISCONNECT_ACTION, "U0MALLORY", str(victim.id)))

    await eventually(lambda: bool(fake_slack.responses))
    assert "another user's card" in block_text(fake_slack.responses[0]["blocks"])
    after = await app[SERVICES].accounts.get(victim.id)
    assert after.status is Status.HEALTHY and after.has_refresh_token and not fake_google.revoked


async def test_a_user_without_a_row_is_offered_the_row_with_their_slack_email(
    serve: Serve, fake_slack: FakeSlack, database_url: str
) -> None:
    await load_legacy_seed(database_url)  # holds an unlinked row for cdctfm@gmail.com
    app = await serve()
    fake_slack.add_user("U0CDC", locale="en-US", email="CDCTFM@gmail.com")
    await post(app, slash_command_body(user_id="U0CDC"))
    (card,) = await settled(fake_slack, "chat.postEphemeral")
    text = block_text(card.args["blocks"])
    assert "A Gmail connection for *cdctfm@gmail.com*" in text
    link = buttons(card.args["blocks"])[LINK_ACTION]
    assert link["text"]["text"] == "Link cdctfm@gmail.com" and link["style"] == "primary"
    assert (
        "style" not in buttons(card.args["blocks"])[RECONNECT_ACTION]
    )  # Connect stays, as the second choice

    await post(app, ephemeral_click(fake_slack, LINK_ACTION, "U0CDC", link["value"]))

    await eventually(lambda: bool(fake_slack.responses))
    assert "Linked: *cdctfm@gmail.com*" in block_text(fake_slack.responses[0]["blocks"])
    account = await app[SERVICES].accounts.find_by_slack_id("U0CDC")
    assert account is not None and account.email == "cdctfm@gmail.com" and account.id == int(link["value"])
    assert "account.linked" in [
        e.action for e in await audit.recent(app[SERVICES].pool, slack_user_id="U0CDC")
    ]


async def test_linking_needs_the_matching_slack_email(
    serve: Serve, fake_slack: FakeSlack, database_url: str
) -> None:
    await load_legacy_seed(database_url)
    app = await serve()
    fake_slack.add_user("U0NOPE", locale="en-US", email="someone.else@gmail.com")
    unlinked = await app[SERVICES].accounts.find_unlinked_by_email("cdctfm@gmail.com")

    await post(app, slash_command_body(user_id="U0NOPE"))
    (card,) = await settled(fake_slack, "chat.postEphemeral")
    assert LINK_ACTION not in buttons(card.args["blocks"])
    await post(app, ephemeral_click(fake_slack, LINK_ACTION, "U0NOPE", str(unlinked[0].id)))

    await eventually(lambda: bool(fake_slack.responses))
    assert "can no longer be linked" in block_text(fake_slack.responses[0]["blocks"])
    assert await app[SERVICES].accounts.find_by_slack_id("U0NOPE") is None
    assert [a.id for a in await app[SERVICES].accounts.find_unlinked_by_email("cdctfm@gmail.com")] == [
        unlinked[0].id
    ]


async def test_every_button_click_is_acknowledged(serve: Serve, fake_slack: FakeSlack) -> None:
    app = await serve()
    fake_slack.add_user("U0ANY")
    for action_id in (RECONNECT_ACTION, SWITCH_ACTION, SNOOZE_ACTION, DISCONNECT_ACTION, LINK_ACTION):
        status, body = await post(app, block_actions_body(action_id, user_id="U0ANY", value="999"))
        assert (status, body) == (200, ""), action_id
