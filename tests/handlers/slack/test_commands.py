"""The Slack surface through the real application: requests signed as Slack signs them, over real HTTP,
dispatched by Bolt, answered through the local fake Slack Web API."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web

from bot.appkeys import SERVICES
from bot.reconnect.links import Purpose
from bot.slack.blocks.elements import RECONNECT_ACTION, SWITCH_ACTION
from storage.models import Status, TokenGrant
from tests.fakes.slack import (
    JSON_CONTENT_TYPE,
    FakeSlack,
    app_home_opened,
    block_actions_body,
    event_body,
    sign,
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
    post,
    settled,
)


async def test_slacks_documented_signature_vector_verifies() -> None:
    from slack_sdk.signature import SignatureVerifier

    body = (
        "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
        "&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
        "&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
        "&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    expected = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    secret = "8f742231b10e8888abcd99yyyzzz85a5"
    assert sign(body.encode(), secret, 1531420618)["X-Slack-Signature"] == expected
    verifier = SignatureVerifier(
        secret, clock=type("Clock", (), {"now": staticmethod(lambda: 1531420618.0)})()
    )
    assert verifier.is_valid(body, "1531420618", expected)


@pytest.mark.parametrize(
    "tamper", [{"secret": "another-signing-secret-0123456789"}, {"timestamp": int(time.time()) - 600}]
)
async def test_a_bad_signature_or_stale_timestamp_gets_401_and_does_nothing(
    serve: Serve, fake_slack: FakeSlack, tamper: dict[str, Any]
) -> None:
    app = await serve()

    status, _ = await post(app, slash_command_body(user_id="U0ALICE"), **tamper)
    await asyncio.sleep(0.2)

    assert status == 401
    assert [call.method for call in fake_slack.calls] == []


async def test_gmail_status_for_a_user_without_a_row_offers_to_connect(
    serve: Serve, fake_slack: FakeSlack
) -> None:
    app = await serve()
    fake_slack.add_user("U0NEW", locale="en-US")

    started = time.perf_counter()
    status, body = await post(app, slash_command_body(user_id="U0NEW"))
    ack_seconds = time.perf_counter() - started

    assert status == 200 and body == ""
    assert ack_seconds < 3  # Slack's limit; the measured figure is in the closing note, not asserted tightly
    (call,) = await settled(fake_slack, "chat.postEphemeral")
    assert (call.args["channel"], call.args["user"]) == ("C0GENERAL", "U0NEW")
    text = block_text(call.args["blocks"])
    assert "No Gmail account is connected" in text
    connect = buttons(call.args["blocks"])[RECONNECT_ACTION]
    assert connect["text"]["text"] == "Connect Gmail" and connect["style"] == "primary"
    claims = app[SERVICES].links.verify(connect["url"].split("t=", 1)[1])
    assert (claims.slack_user_id, claims.slack_team_id, claims.purpose) == (
        "U0NEW",
        "T0TEAM",
        Purpose.RECONNECT,
    )
    assert SWITCH_ACTION not in buttons(call.args["blocks"])


async def test_gmail_status_for_a_healthy_account_in_korean(serve: Serve, fake_slack: FakeSlack) -> None:
    app = await serve()
    fake_slack.add_user("U0OK", locale="ko-KR")
    await app[SERVICES].accounts.store_tokens(
        grant=TokenGrant("ya29.ok", "1//ok", None, ["openid", "email", READONLY, SEND]),
        actor="test",
        slack_user_id="U0OK",
        metadata={"email": "ok@gmail.com"},
        status=Status.HEALTHY,
    )

    await post(app, slash_command_body(user_id="U0OK"))

    (call,) = await settled(fake_slack, "chat.postEphemeral")
    text = block_text(call.args["blocks"])
    assert "ok@gmail.com" in text and "✅ 연결됨" in text
    assert "메일 읽기 ✅ · 메일 보내기 ✅" in text
    assert "해결될 때까지 오전 9시 브리핑에 이메일 요약이 빠집니다" not in text
    found = buttons(call.args["blocks"])
    assert (
        found[RECONNECT_ACTION]["text"]["text"] == "Gmail 다시 연결"
        and "style" not in found[RECONNECT_ACTION]
    )
    switch = app[SERVICES].links.verify(found[SWITCH_ACTION]["url"].split("t=", 1)[1])
    assert switch.purpose is Purpose.SWITCH
    assert "ya29.ok" not in str(call.args) and "1//ok" not in str(call.args)


@pytest.mark.parametrize(
    ("slack_id", "label", "cause"),
    [
        ("U0HAPPYBELL", "저장된 토큰 없음", "저장된 Gmail 토큰이 없어"),  # legacy: NULL token_data
        ("U091UNVE41M", "아직 확인 전", None),  # legacy: tokens stored, never checked
    ],
)
async def test_gmail_status_for_legacy_rows(
    serve: Serve, fake_slack: FakeSlack, database_url: str, slack_id: str, label: str, cause: str | None
) -> None:
    await load_legacy_seed(database_url)
    app = await serve()
    fake_slack.add_user(slack_id)

    await post(app, slash_command_body(user_id=slack_id))

    (call,) = await settled(fake_slack, "chat.postEphemeral")
    text = block_text(call.args["blocks"])
    assert label in text
    if cause:
        assert cause in text and "이메일 요약이 빠집니다" in text


async def test_gmail_status_for_an_expired_account_says_why(serve: Serve, fake_slack: FakeSlack) -> None:
    app = await serve()
    fake_slack.add_user("U0EXP", locale="en-GB")
    account = await app[SERVICES].accounts.store_tokens(
        grant=TokenGrant("ya29.x", "1//x", None, [READONLY, SEND]), actor="test", slack_user_id="U0EXP"
    )
    await app[SERVICES].accounts.set_status(
        account.id, status=Status.EXPIRED, cause="invalid_grant", actor="test"
    )

    await post(app, slash_command_body(user_id="U0EXP"))

    (call,) = await settled(fake_slack, "chat.postEphemeral")
    text = block_text(call.args["blocks"])
    assert "⚠️ Expired" in text and "expired or was revoked" in text
    assert "without its email part" in text
    assert buttons(call.args["blocks"])[RECONNECT_ACTION]["style"] == "primary"


async def test_gmail_status_help(serve: Serve, fake_slack: FakeSlack) -> None:
    app = await serve(ADMIN_SLACK_USER_IDS="U0ADMIN")
    fake_slack.add_user("U0ADMIN", locale="en-US")
    fake_slack.add_user("U0USER", locale="en-US")

    await post(app, slash_command_body(user_id="U0USER", text="help"))
    await post(app, slash_command_body(user_id="U0ADMIN", text="help"))

    user_help, admin_help = (
        block_text(call.args["blocks"]) for call in await settled(fake_slack, "chat.postEphemeral", 2)
    )
    assert "/gmail-status help" in user_help and "/gmail-status all" not in user_help
    assert "/gmail-status all" in admin_help


async def test_the_locale_is_looked_up_once_and_cached(serve: Serve, fake_slack: FakeSlack) -> None:
    app = await serve()
    fake_slack.add_user("U0CACHE", locale="en-US")

    for count in (1, 2):
        await post(app, slash_command_body(user_id="U0CACHE"))
        await settled(fake_slack, "chat.postEphemeral", count)

    (lookup,) = fake_slack.calls_to("users.info")
    assert lookup.args["include_locale"] in ("1", 1, True, "true")


async def test_the_locale_is_kept_in_the_database_across_a_restart_for_about_a_week(
    serve: Serve, fake_slack: FakeSlack
) -> None:
    first = await serve()
    fake_slack.add_user("U0KEEP", locale="en-US")
    await first[
        SERVICES
    ].accounts.store_tokens(  # linked: the status card needs no profile email, only the language
        grant=TokenGrant("ya29.keep", "1//keep", None, ["openid", "email", READONLY, SEND]),
        actor="test",
        slack_user_id="U0KEEP",
        status=Status.HEALTHY,
    )
    await post(first, slash_command_body(user_id="U0KEEP"))
    await settled(fake_slack, "chat.postEphemeral")

    restarted = await serve()  # a new process: its memory is empty, the database is not
    await post(restarted, slash_command_body(user_id="U0KEEP"))

    second = (await settled(fake_slack, "chat.postEphemeral", 2))[1]
    assert "Gmail connection" in block_text(second.args["blocks"])  # English, from the stored language
    assert len(fake_slack.calls_to("users.info")) == 1
    fresh_for = await first[SERVICES].pool.fetchval("SELECT fresh_until - fetched_at FROM slack_locales")
    assert timedelta(days=6) <= fresh_for <= timedelta(days=8)

    await first[SERVICES].pool.execute("UPDATE slack_locales SET fresh_until = now() - interval '1 second'")
    fake_slack.add_user("U0KEEP", locale="ko-KR")  # changed in Slack meanwhile
    third = await serve()
    await post(third, slash_command_body(user_id="U0KEEP"))

    last = (await settled(fake_slack, "chat.postEphemeral", 3))[2]
    assert len(fake_slack.calls_to("users.info")) == 2  # stale: Slack was asked again
    assert "Gmail connection" not in block_text(last.args["blocks"])
    assert await first[SERVICES].pool.fetchval("SELECT locale FROM slack_locales") == "ko-KR"


async def test_an_unknown_locale_falls_back_to_default_locale(serve: Serve, fake_slack: FakeSlack) -> None:
    app = await serve(DEFAULT_LOCALE="en")
    fake_slack.add_user("U0FR", locale="fr-FR")

    await post(app, slash_command_body(user_id="U0FR"))

    (call,) = await settled(fake_slack, "chat.postEphemeral")
    assert "Gmail connection" in block_text(call.args["blocks"])


async def test_a_channel_the_bot_is_not_in_is_answered_through_the_response_url(
    serve: Serve, fake_slack: FakeSlack
) -> None:
    received: list[dict[str, Any]] = []

    async def response_url(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    hook = web.Application()
    hook.router.add_post("/commands/T0TEAM/1/abc", response_url)
    from aiohttp.test_utils import TestServer

    server = TestServer(hook, host="127.0.0.1")
    await server.start_server()
    try:
        app = await serve()
        fake_slack.add_user("U0ELSEWHERE")
        body = slash_command_body(
            user_id="U0ELSEWHERE",
            channel_id="C0PRIVATE",
            response_url=str(server.make_url("/commands/T0TEAM/1/abc")),
        )
        await post(app, body)
        await eventually(lambda: bool(received))
    finally:
        await server.close()

    assert received[0]["response_type"] == "ephemeral" and "Gmail 연결 상태" in block_text(
        received[0]["blocks"]
    )


async def test_a_rate_limited_slack_is_retried(serve: Serve, fake_slack: FakeSlack) -> None:
    app = await serve()
    fake_slack.add_user("U0BUSY")
    fake_slack.rate_limit("chat.postEphemeral", retry_after=0)

    await post(app, slash_command_body(user_id="U0BUSY"))

    calls = await settled(fake_slack, "chat.postEphemeral", 2)
    assert [call.status for call in calls] == [429, 200]


@pytest.mark.parametrize("action_id", [RECONNECT_ACTION, SWITCH_ACTION])
async def test_link_buttons_are_acknowledged(serve: Serve, fake_slack: FakeSlack, action_id: str) -> None:
    app = await serve()
    body = block_actions_body(
        action_id, user_id="U0CLICK", url="https://example.invalid/", channel_id="C0GENERAL", message_ts="1.2"
    )

    status, _ = await post(app, body)

    assert status == 200


async def test_app_home_shows_the_status_card(serve: Serve, fake_slack: FakeSlack) -> None:
    app = await serve()
    fake_slack.add_user("U0HOME", locale="en-US")

    status, _ = await post(app, event_body(app_home_opened("U0HOME")), content_type=JSON_CONTENT_TYPE)

    assert status == 200
    (call,) = await settled(fake_slack, "views.publish")
    view = fake_slack.views["U0HOME"]
    assert call.args["user_id"] == "U0HOME" and view["type"] == "home"
    assert "keeps your Gmail connected" in block_text(view["blocks"])
    assert "No Gmail account is connected" in block_text(view["blocks"])


async def test_the_messages_tab_publishes_nothing(serve: Serve, fake_slack: FakeSlack) -> None:
    app = await serve()
    fake_slack.add_user("U0MSG")

    status, _ = await post(
        app, event_body(app_home_opened("U0MSG", tab="messages")), content_type=JSON_CONTENT_TYPE
    )
    await asyncio.sleep(0.2)

    assert status == 200 and fake_slack.calls_to("views.publish") == []


async def test_the_card_shows_the_last_briefing_fetch(serve: Serve, fake_slack: FakeSlack) -> None:
    app = await serve()
    fake_slack.add_user("U0OK", locale="en-US")
    fake_slack.add_user("U0BAD", locale="ko-KR")
    for slack_id in ("U0OK", "U0BAD"):
        await app[SERVICES].accounts.store_tokens(
            grant=TokenGrant("ya29.x", "1//x", None, ["openid", "email", READONLY, SEND]),
            actor="test",
            slack_user_id=slack_id,
            metadata={"email": f"{slack_id.lower()}@gmail.com"},
            status=Status.HEALTHY,
        )
    ok = await app[SERVICES].accounts.find_by_slack_id("U0OK")
    bad = await app[SERVICES].accounts.find_by_slack_id("U0BAD")
    assert ok is not None and bad is not None
    await app[SERVICES].accounts.record_fetch(ok.id, result="ok", messages=3)
    await app[SERVICES].accounts.record_fetch(bad.id, result="Gmail answered 503", messages=None)

    await post(app, slash_command_body(user_id="U0OK"))
    await post(app, slash_command_body(user_id="U0BAD"))

    cards = {
        call.args["user"]: block_text(call.args["blocks"])
        for call in await settled(fake_slack, "chat.postEphemeral", 2)
    }
    assert re.search(r"\*Last briefing fetch:\* \d{4}-\d\d-\d\d \d\d:\d\d KST \(3 unread\)", cards["U0OK"])
    assert "*마지막 브리핑 메일 확인:*" in cards["U0BAD"] and "(실패: Gmail answered 503)" in cards["U0BAD"]
