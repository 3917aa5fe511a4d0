"""The admin side of /gmail-status (`all`, `nudge @user`, "Nudge all unhealthy") through the real application:
signed Slack requests over real HTTP, answered through the local fake Slack Web API and fake Google."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from bot.appkeys import SERVICES
from bot.i18n import text
from bot.slack.blocks.elements import NUDGE_ALL_ACTION, RECONNECT_ACTION, SNOOZE_ACTION
from storage import audit
from storage.causes import CauseCode
from storage.models import Account, AuditEvent, Status, TokenGrant
from tests.fakes.google import FakeGoogle
from tests.fakes.slack import (
    MAX_MESSAGE_BLOCKS,
    FakeSlack,
    block_actions_body,
    dm_channel_id,
    ephemeral_actions_body,
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

ADMIN = "UADMIN1"
EXPIRED_CAUSE = "Google says the access was revoked or has expired (invalid_grant)."
SECTION_TEXT_LIMIT = 3000


async def ask(app: web.Application, fake_slack: FakeSlack, user_id: str, text: str) -> dict[str, Any]:
    """Type `/gmail-status <text>` as `user_id` and return the ephemeral answer."""
    before = len(fake_slack.ephemerals)
    status, _ = await post(app, slash_command_body(text=text, user_id=user_id))
    assert status == 200
    await eventually(lambda: len(fake_slack.ephemerals) > before)
    answer = fake_slack.ephemerals[before]
    assert answer["user"] == user_id
    return answer


async def audited(app: web.Application, slack_user_id: str, action: str) -> list[AuditEvent]:
    """The audit events of one action by (or about) a Slack user, newest first."""
    return [
        event
        for event in await audit.recent(app[SERVICES].pool, slack_user_id=slack_user_id)
        if event.action == action
    ]


async def linked_account(
    app: web.Application,
    slack_user_id: str,
    *,
    status: Status,
    cause: str | None = None,
    code: CauseCode | None = None,
    scopes: tuple[str, ...] = (READONLY, SEND),
    refresh_token: str | None = None,
) -> Account:
    """An account linked to a Slack user, with tokens stored and the given status."""
    account = await app[SERVICES].accounts.store_tokens(
        grant=TokenGrant("ya29.stored", refresh_token or f"1//{slack_user_id.lower()}", None, list(scopes)),
        actor="test",
        slack_user_id=slack_user_id,
        metadata={"email": f"{slack_user_id.lower()}@gmail.com"},
        status=Status.HEALTHY,
    )
    if status is Status.HEALTHY:
        return account
    return await app[SERVICES].accounts.set_status(
        account.id, status=status, cause=cause, code=code, actor="test"
    )


async def unlinked_row(app: web.Application, user_id: str) -> None:
    """A legacy row no Slack user is linked to, with no token stored."""
    await app[SERVICES].pool.execute(
        "INSERT INTO gmail_tokens (user_id, metadata) VALUES ($1, $2)",
        user_id,
        {"email": f"{user_id}@gmail.com"},
    )


def sections(blocks: list[dict[str, Any]]) -> list[str]:
    return [block["text"]["text"] for block in blocks if block["type"] == "section"]


def ephemeral_click(action_id: str, *, fake: FakeSlack, value: str, user_id: str, message_ts: str) -> bytes:
    """A button click in the ephemeral admin overview, with a response_url the fake Slack serves."""
    return ephemeral_actions_body(
        action_id,
        user_id=user_id,
        value=value,
        response_url=fake.response_url(user_id),
        message_ts=message_ts,
        block_id="admin_actions",
    )


# ---- Refusals -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["all", "nudge <@UEXPIRED|expired>"])
async def test_a_non_admin_is_refused_politely_in_their_language(
    serve: Serve, fake_slack: FakeSlack, command: str
) -> None:
    app = await serve(ADMIN_SLACK_USER_IDS=ADMIN)
    fake_slack.add_user("U0USER", locale="ko-KR")
    fake_slack.add_user("UEXPIRED", locale="en-US")
    await linked_account(app, "UEXPIRED", status=Status.EXPIRED, cause=EXPIRED_CAUSE)

    answer = await ask(app, fake_slack, "U0USER", command)

    verb = command.split()[0]
    assert answer["text"] == (
        f"죄송합니다. `/gmail-status {verb}` 은(는) 이 봇의 관리자만 사용할 수 있습니다. "
        "내 연결 상태는 `/gmail-status` 로 확인하거나 관리자에게 문의해 주세요."
    )
    assert answer["channel"] == "C0GENERAL" and sections(answer["blocks"]) == [answer["text"]]
    assert fake_slack.calls_to("conversations.open") == [] and fake_slack.calls_to("chat.postMessage") == []
    assert await app[SERVICES].prompts.open_for("UEXPIRED") is None
    (refusal,) = await audited(app, "U0USER", "admin.refused")
    assert (refusal.actor, refusal.details) == ("slack:U0USER", {"command": verb})


async def test_nobody_is_an_admin_when_none_is_configured(serve: Serve, fake_slack: FakeSlack) -> None:
    app = await serve()
    fake_slack.add_user(ADMIN, locale="en-US")

    answer = await ask(app, fake_slack, ADMIN, "all")

    assert answer["text"].startswith("Sorry, `/gmail-status all` is only for this bot's admins.")
    assert await audited(app, ADMIN, "admin.overview_viewed") == []


# ---- /gmail-status all ----------------------------------------------------------------------------------------

OVERVIEW_TEXTS = {
    "en-US": {
        "title": "Gmail connections: 8",
        "counts": "⏳ Not checked yet: *2*\n✅ Connected: *1*\n⚠️ Expired: *1*\n⚠️ No token stored: *3*\n"
        "⚠️ Permission missing: *1*",
        "attention": "*Need attention: 5*",
        "not_linked": "`{}` (not linked to Slack)",
        "expired": "Expired",
        "missing": "No token stored",
        "scope": "Permission missing",
        "button": "Nudge all unhealthy (3)",
    },
    "ko-KR": {
        "title": "Gmail 연결: 8개",
        "counts": "⏳ 아직 확인 전: *2*\n✅ 연결됨: *1*\n⚠️ 만료됨: *1*\n⚠️ 저장된 토큰 없음: *3*\n⚠️ 권한 부족: *1*",
        "attention": "*확인 필요: 5개*",
        "not_linked": "`{}` (Slack에 연결되지 않음)",
        "expired": "만료됨",
        "missing": "저장된 토큰 없음",
        "scope": "권한 부족",
        "button": "확인 필요 계정 모두 알림 (3)",
    },
}


@pytest.mark.parametrize("locale", list(OVERVIEW_TEXTS))
async def test_all_shows_counts_and_every_account_that_needs_its_user(
    serve: Serve, fake_slack: FakeSlack, database_url: str, locale: str
) -> None:
    words = OVERVIEW_TEXTS[locale]
    language = locale[:2]
    await load_legacy_seed(database_url)
    app = await serve(ADMIN_SLACK_USER_IDS=f"U0OTHERADMIN,{ADMIN}")
    fake_slack.add_user(ADMIN, locale=locale)
    await linked_account(app, "UHEALTHY", status=Status.HEALTHY)
    await linked_account(app, "UEXPIRED", status=Status.EXPIRED, cause=EXPIRED_CAUSE)

    answer = await ask(app, fake_slack, ADMIN, "all")

    blocks = answer["blocks"]
    assert (blocks[0]["type"], blocks[0]["text"]["text"]) == ("header", words["title"])
    assert answer["text"] == words["title"]
    counts, attention = sections(blocks)
    assert counts == words["counts"]
    heading, *rows = attention.split("\n")
    assert heading == words["attention"]
    not_linked = words["not_linked"]
    # Each cause in the admin's language, whatever words (often Google's English) came with it.
    missing, no_scope, revoked = (
        text(language, f"cause.{code}")
        for code in ("token_missing", "scope_missing_read_send", "refresh_token_revoked")
    )
    assert sorted(rows) == sorted(
        [
            f"• <@U0HAPPYBELL> · goeun2dc@gmail.com · *{words['missing']}*: {missing}",
            f"• <@U0EAGLE0914> · 0914eagle@gmail.com · *{words['missing']}*: {missing}",
            f"• {not_linked.format('69ae4ea9-a15f-5110-9f5d-6568e380fcfb')} · cdctfm@gmail.com · "
            f"*{words['missing']}*: {missing}",
            f"• {not_linked.format('unknown')} · unknown@gmail.com · *{words['scope']}*: {no_scope}",
            f"• <@UEXPIRED> · uexpired@gmail.com · *{words['expired']}*: {revoked}",
        ]
    )
    assert "UHEALTHY" not in block_text(blocks) and "U091UNVE41M" not in block_text(blocks)
    nudge_all = buttons(blocks)[NUDGE_ALL_ACTION]
    assert nudge_all["text"]["text"] == words["button"]
    assert "confirm" in nudge_all  # a button that DMs many people asks first
    (viewed,) = await audited(app, ADMIN, "admin.overview_viewed")
    assert (viewed.actor, viewed.details) == (f"slack:{ADMIN}", {"attention": 5})
    assert fake_slack.calls_to("chat.postMessage") == []


async def test_all_with_every_account_healthy_offers_no_nudge(serve: Serve, fake_slack: FakeSlack) -> None:
    app = await serve(ADMIN_SLACK_USER_IDS=ADMIN)
    fake_slack.add_user(ADMIN, locale="en-US")
    await linked_account(app, "UHEALTHY", status=Status.HEALTHY)

    answer = await ask(app, fake_slack, ADMIN, "all")

    assert sections(answer["blocks"]) == ["✅ Connected: *1*", "✅ No account needs attention."]
    assert NUDGE_ALL_ACTION not in buttons(answer["blocks"])


async def test_all_with_many_unhealthy_accounts_stays_within_slacks_limits(
    serve: Serve, fake_slack: FakeSlack
) -> None:
    app = await serve(ADMIN_SLACK_USER_IDS=ADMIN)
    fake_slack.add_user(ADMIN, locale="en-US")
    long_cause = "Google said no. " * 40  # 640 characters, shortened in the list
    await app[SERVICES].pool.executemany(
        "INSERT INTO gmail_tokens (user_id, metadata, status, status_cause) VALUES ($1, $2, 'expired', $3)",
        [
            (
                f"bulk-{n:03d}",
                {"slack_user_id": f"UBULK{n:03d}", "email": f"{'x' * 60}{n}@example.com"},
                long_cause,
            )
            for n in range(120)
        ],
    )

    answer = await ask(app, fake_slack, ADMIN, "all")

    (call,) = fake_slack.calls_to("chat.postEphemeral")
    assert call.status == 200  # the fake answers ok: false (invalid_blocks) past 50 blocks
    blocks = answer["blocks"]
    assert len(blocks) <= MAX_MESSAGE_BLOCKS
    texts = sections(blocks)
    assert all(len(text) <= SECTION_TEXT_LIMIT for text in texts)
    lines = "\n".join(texts).split("\n")
    assert "*Need attention: 120*" in lines
    assert sum(line.startswith("• <@UBULK") for line in lines) == 40
    assert "…and 80 more: `gmail-reconnect accounts` lists every account." in lines
    assert buttons(blocks)[NUDGE_ALL_ACTION]["text"]["text"] == "Nudge all unhealthy (120)"


# ---- /gmail-status nudge @user --------------------------------------------------------------------------------


async def test_nudge_sends_the_reconnect_dm_then_edits_it_in_place(
    serve: Serve, fake_slack: FakeSlack
) -> None:
    app = await serve(ADMIN_SLACK_USER_IDS=ADMIN)
    fake_slack.add_user(ADMIN, locale="en-US")
    fake_slack.add_user("UEXPIRED", locale="ko-KR")
    account = await linked_account(app, "UEXPIRED", status=Status.EXPIRED, cause=EXPIRED_CAUSE)

    answer = await ask(app, fake_slack, ADMIN, "nudge <@UEXPIRED|expired>")

    assert answer["text"] == ("Sent <@UEXPIRED> the Reconnect Gmail DM (Expired).")
    (posted,) = fake_slack.calls_to("chat.postMessage")
    assert posted.args["channel"] == "UEXPIRED"  # the user ID: Slack posts in the DM with the bot
    (dm,) = fake_slack.messages.values()
    channel, ts = dm["channel"], dm["ts"]
    assert channel == dm_channel_id("UEXPIRED")
    assert "Gmail을 다시 연결해 주세요" in block_text(dm["blocks"])  # the user's language, not the admin's
    assert "Google 계정: uexpired@gmail.com" in block_text(dm["blocks"])
    found = buttons(dm["blocks"])
    reconnect, snooze = found[RECONNECT_ACTION], found[SNOOZE_ACTION]
    assert reconnect["text"]["text"] == "Gmail 다시 연결" and snooze["text"]["text"] == "내일 다시 알림"
    claims = app[SERVICES].links.verify(reconnect["url"].split("t=", 1)[1])
    assert claims.slack_user_id == "UEXPIRED"
    prompt = await app[SERVICES].prompts.open_for("UEXPIRED")
    assert prompt is not None
    assert (prompt.channel_id, prompt.message_ts, prompt.account_id, prompt.cause, prompt.sent_count) == (
        channel,
        ts,
        account.id,
        "expired",
        1,
    )
    assert snooze["value"] == str(prompt.id)
    (nudged,) = await audited(app, ADMIN, "admin.nudged")
    assert (nudged.actor, nudged.details) == (
        f"slack:{ADMIN}",
        {"target": "UEXPIRED", "cause": "expired", "delivery": "posted"},
    )
    (sent,) = await audited(app, "UEXPIRED", "prompt.sent")
    assert sent.actor == f"slack:{ADMIN}"

    again = await ask(app, fake_slack, ADMIN, "nudge @UEXPIRED")

    assert again["text"] == ("Updated <@UEXPIRED>'s Reconnect Gmail DM (Expired).")
    assert len(fake_slack.calls_to("chat.postMessage")) == 1
    (update,) = fake_slack.calls_to("chat.update")
    assert (update.args["channel"], update.args["ts"]) == (channel, ts)
    assert "edited" in fake_slack.messages[channel, ts]
    reminded = await app[SERVICES].prompts.open_for("UEXPIRED")
    assert reminded is not None and (reminded.id, reminded.sent_count) == (prompt.id, 2)
    assert [event.details["delivery"] for event in await audited(app, ADMIN, "admin.nudged")] == [
        "updated",
        "posted",
    ]


async def test_nudge_of_a_user_without_a_row_asks_them_to_connect(
    serve: Serve, fake_slack: FakeSlack
) -> None:
    app = await serve(ADMIN_SLACK_USER_IDS=ADMIN)
    fake_slack.add_user(ADMIN, locale="en-US")
    fake_slack.add_user("U0NOROW", locale="en-US")

    answer = await ask(app, fake_slack, ADMIN, "nudge <@U0NOROW>")

    assert answer["text"] == ("Sent <@U0NOROW> the Reconnect Gmail DM (No token stored).")
    (dm,) = fake_slack.messages.values()
    assert dm["channel"] == dm_channel_id("U0NOROW")
    assert "No Gmail token is stored for you" in block_text(dm["blocks"])
    claims = app[SERVICES].links.verify(buttons(dm["blocks"])[RECONNECT_ACTION]["url"].split("t=", 1)[1])
    assert claims.slack_user_id == "U0NOROW"
    prompt = await app[SERVICES].prompts.open_for("U0NOROW")
    assert prompt is not None and (prompt.account_id, prompt.cause) == (None, "missing")
    (nudged,) = await audited(app, ADMIN, "admin.nudged")
    assert nudged.details == {"target": "U0NOROW", "cause": "missing", "delivery": "posted"}


async def test_nudge_of_a_working_account_checks_with_google_and_sends_nothing(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve(ADMIN_SLACK_USER_IDS=ADMIN)
    fake_slack.add_user(ADMIN, locale="en-US")
    fake_slack.add_user("UHEALTHY", locale="en-US")
    fake_google.add_refresh_token("1//works", email="uhealthy@gmail.com", scopes=[READONLY, SEND])
    await linked_account(app, "UHEALTHY", status=Status.HEALTHY, refresh_token="1//works")

    answer = await ask(app, fake_slack, ADMIN, "nudge <@UHEALTHY>")

    assert answer["text"] == "<@UHEALTHY>'s Gmail works (uhealthy@gmail.com): no DM sent."
    assert [call.status for call in fake_google.calls_to("/token")] == [200]
    assert fake_slack.calls_to("conversations.open") == [] and fake_slack.calls_to("chat.postMessage") == []
    assert await app[SERVICES].prompts.open_for("UHEALTHY") is None
    (nudged,) = await audited(app, ADMIN, "admin.nudged")
    assert nudged.details == {"target": "UHEALTHY", "delivery": "not_sent", "reason": "healthy"}


async def test_nudge_of_an_account_google_rejects_marks_it_expired_and_sends_the_dm(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve(ADMIN_SLACK_USER_IDS=ADMIN)
    fake_slack.add_user(ADMIN, locale="en-US")
    fake_slack.add_user("UREVOKED", locale="en-US")
    fake_google.add_refresh_token("1//gone", email="urevoked@gmail.com", scopes=[READONLY, SEND])
    fake_google.revoke_refresh_token("1//gone")
    await linked_account(app, "UREVOKED", status=Status.HEALTHY, refresh_token="1//gone")

    answer = await ask(app, fake_slack, ADMIN, "nudge <@UREVOKED>")

    assert answer["text"] == ("Sent <@UREVOKED> the Reconnect Gmail DM (Expired).")
    assert [call.status for call in fake_google.calls_to("/token")] == [400]
    account = await app[SERVICES].accounts.find_by_slack_id("UREVOKED")
    assert account is not None and account.status is Status.EXPIRED
    (dm,) = fake_slack.messages.values()
    assert dm["channel"] == dm_channel_id("UREVOKED")
    assert "expired or was revoked" in block_text(dm["blocks"])
    (nudged,) = await audited(app, ADMIN, "admin.nudged")
    assert nudged.details == {"target": "UREVOKED", "cause": "expired", "delivery": "posted"}


async def test_nudge_while_google_is_unavailable_sends_nothing(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve(ADMIN_SLACK_USER_IDS=ADMIN)
    fake_slack.add_user(ADMIN, locale="en-US")
    fake_slack.add_user("UHEALTHY", locale="en-US")
    fake_google.add_refresh_token("1//works", email="uhealthy@gmail.com", scopes=[READONLY, SEND])
    await linked_account(app, "UHEALTHY", status=Status.HEALTHY, refresh_token="1//works")
    fake_google.fail_token(503, times=3)  # every attempt of the token service's retries

    answer = await ask(app, fake_slack, ADMIN, "nudge <@UHEALTHY>")

    assert answer["text"] == (
        "Google could not be asked about <@UHEALTHY>'s Gmail just now; no DM sent. Try again in a few minutes."
    )
    assert [call.status for call in fake_google.calls_to("/token")] == [503, 503, 503]
    assert fake_slack.calls_to("conversations.open") == [] and fake_slack.calls_to("chat.postMessage") == []
    account = await app[SERVICES].accounts.find_by_slack_id("UHEALTHY")
    assert account is not None and account.status is Status.HEALTHY
    (nudged,) = await audited(app, ADMIN, "admin.nudged")
    assert nudged.details == {"target": "UHEALTHY", "delivery": "not_sent", "reason": "unavailable"}


@pytest.mark.parametrize(
    "command",
    ["nudge", "nudge bob", "nudge <#C0GENERAL|general>", "nudge <@UEXPIRED> <@UOTHER>", "nudge @uexpired"],
)
async def test_nudge_without_one_mention_answers_with_the_usage(
    serve: Serve, fake_slack: FakeSlack, command: str
) -> None:
    app = await serve(ADMIN_SLACK_USER_IDS=ADMIN)
    fake_slack.add_user(ADMIN, locale="en-US")

    answer = await ask(app, fake_slack, ADMIN, command)

    assert answer["text"] == "Usage: `/gmail-status nudge @user` (mention the user)."
    assert fake_slack.calls_to("chat.postMessage") == []
    assert await audited(app, ADMIN, "admin.nudged") == []


@pytest.mark.parametrize(
    ("in_workspace", "failure", "error"),
    [
        (True, "user_not_found", "user_not_found"),
        (True, "is_archived", "is_archived"),
        (False, None, "channel_not_found"),  # chat.postMessage to a user ID Slack does not know
    ],
)
async def test_a_dm_slack_refuses_is_reported_and_leaves_no_prompt(
    serve: Serve, fake_slack: FakeSlack, in_workspace: bool, failure: str | None, error: str
) -> None:
    app = await serve(ADMIN_SLACK_USER_IDS=ADMIN)
    fake_slack.add_user(ADMIN, locale="en-US")
    if in_workspace:
        fake_slack.add_user("UEXPIRED", locale="en-US")
    if failure:
        fake_slack.fail("chat.postMessage", error=failure)
    await linked_account(app, "UEXPIRED", status=Status.EXPIRED, cause=EXPIRED_CAUSE)

    answer = await ask(app, fake_slack, ADMIN, "nudge <@UEXPIRED>")

    assert answer["text"] == f"The DM to <@UEXPIRED> could not be sent (Slack answered `{error}`)."
    assert fake_slack.messages == {}
    assert await app[SERVICES].prompts.open_for("UEXPIRED") is None
    assert await audited(app, "UEXPIRED", "prompt.sent") == []
    (nudged,) = await audited(app, ADMIN, "admin.nudged")
    assert nudged.details == {
        "target": "UEXPIRED",
        "cause": "expired",
        "delivery": "failed",
        "slack_error": error,
    }


# ---- "Nudge all unhealthy" ------------------------------------------------------------------------------------


async def test_nudge_all_dms_every_linked_unhealthy_user_and_skips_the_snoozed(
    serve: Serve, fake_slack: FakeSlack
) -> None:
    app = await serve(ADMIN_SLACK_USER_IDS=ADMIN)
    fake_slack.add_user(ADMIN, locale="en-US")
    for user in ("UEXP1", "UEXP2", "UNOSCOPE", "USNOOZE", "UHEALTHY"):
        fake_slack.add_user(user, locale="en-US")
    for user in ("UEXP1", "UEXP2", "USNOOZE", "UGONE1", "UGONE2"):  # UGONE*: not in the workspace any more
        await linked_account(app, user, status=Status.EXPIRED, cause=EXPIRED_CAUSE)
    await linked_account(
        app,
        "UNOSCOPE",
        status=Status.INSUFFICIENT_SCOPE,
        cause="No gmail.send.",
        code=CauseCode.SCOPE_MISSING_SEND,
        scopes=(READONLY,),
    )
    await linked_account(app, "UHEALTHY", status=Status.HEALTHY)
    for user_id in ("legacy-a", "legacy-b", "legacy-c"):
        await unlinked_row(app, user_id)
    overview = await ask(app, fake_slack, ADMIN, "all")
    button = buttons(overview["blocks"])[NUDGE_ALL_ACTION]
    assert button["text"]["text"] == "Nudge all unhealthy (6)"

    def click() -> bytes:
        return ephemeral_click(
            NUDGE_ALL_ACTION,
            value=button["value"],
            user_id=ADMIN,
            message_ts=overview["ts"],
            fake=fake_slack,
        )

    status, _ = await post(app, click())
    await eventually(lambda: len(fake_slack.responses) == 1)

    assert status == 200
    assert fake_slack.responses[0]["text"] == (
        "Reminders: 4 sent, 0 updated, 0 skipped (asked to be reminded tomorrow), 2 failed, 3 not linked to Slack."
    )
    assert fake_slack.responses[0]["response_type"] == "ephemeral"
    assert fake_slack.responses[0]["replace_original"] is False  # the overview stays
    dms = {message["channel"]: message for message in fake_slack.messages.values()}
    assert sorted(dms) == sorted(dm_channel_id(user) for user in ("UEXP1", "UEXP2", "UNOSCOPE", "USNOOZE"))
    # The DM names the one permission the read-only grant lacks, and that the briefing keeps its email part.
    noscope = block_text(dms[dm_channel_id("UNOSCOPE")]["blocks"])
    assert "The bot cannot send mail for you" in noscope
    assert "without “Send email on your behalf”" in noscope and "keeps its email part" in noscope
    assert "expired or was revoked" in block_text(dms[dm_channel_id("UEXP1")]["blocks"])
    first = (await audited(app, ADMIN, "admin.nudged_all"))[0]
    assert (first.actor, first.details) == (
        f"slack:{ADMIN}",
        {"posted": 4, "updated": 0, "snoozed": 0, "failed": 2, "unlinked": 3},
    )

    snoozed_dm = dms[dm_channel_id("USNOOZE")]
    prompt = await app[SERVICES].prompts.open_for("USNOOZE")
    assert prompt is not None
    await post(
        app,
        block_actions_body(
            SNOOZE_ACTION,
            user_id="USNOOZE",
            value=str(prompt.id),
            channel_id=snoozed_dm["channel"],
            message_ts=snoozed_dm["ts"],
        ),
    )
    await settled(fake_slack, "chat.update")
    updates_before = len(fake_slack.calls_to("chat.update"))

    await post(app, click())
    await eventually(lambda: len(fake_slack.responses) == 2)

    assert fake_slack.responses[1]["text"] == (
        "Reminders: 0 sent, 3 updated, 1 skipped (asked to be reminded tomorrow), 2 failed, 3 not linked to Slack."
    )
    posted = [call.args["channel"] for call in fake_slack.calls_to("chat.postMessage")]
    # No second DM for anyone: the second click edited them (Slack refuses the UGONE* users each time).
    assert sorted(channel for channel in posted if not channel.startswith("UGONE")) == [
        "UEXP1",
        "UEXP2",
        "UNOSCOPE",
        "USNOOZE",
    ]
    edited = {call.args["channel"] for call in fake_slack.calls_to("chat.update")[updates_before:]}
    assert edited == {dm_channel_id(user) for user in ("UEXP1", "UEXP2", "UNOSCOPE")}
    assert "OK, I'll remind you tomorrow." in block_text(
        fake_slack.messages[snoozed_dm["channel"], snoozed_dm["ts"]]["blocks"]
    )
    latest = (await audited(app, ADMIN, "admin.nudged_all"))[0]
    assert latest.details == {"posted": 0, "updated": 3, "snoozed": 1, "failed": 2, "unlinked": 3}


async def test_a_forged_nudge_all_click_by_a_non_admin_is_refused(
    serve: Serve, fake_slack: FakeSlack
) -> None:
    app = await serve(ADMIN_SLACK_USER_IDS=ADMIN)
    fake_slack.add_user("U0USER", locale="en-US")
    fake_slack.add_user("UEXPIRED", locale="en-US")
    await linked_account(app, "UEXPIRED", status=Status.EXPIRED, cause=EXPIRED_CAUSE)

    status, _ = await post(
        app,
        ephemeral_click(
            NUDGE_ALL_ACTION,
            value="unhealthy",
            user_id="U0USER",
            message_ts="1700000000.000100",
            fake=fake_slack,
        ),
    )
    await eventually(lambda: bool(fake_slack.responses))

    assert status == 200
    (refusal,) = fake_slack.responses
    assert refusal["text"].startswith("Sorry, `/gmail-status all` is only for this bot's admins.")
    assert refusal["response_type"] == "ephemeral"
    assert fake_slack.calls_to("conversations.open") == [] and fake_slack.calls_to("chat.postMessage") == []
    assert await app[SERVICES].prompts.open_for("UEXPIRED") is None
    (refused,) = await audited(app, "U0USER", "admin.refused")
    assert (refused.actor, refused.details) == ("slack:U0USER", {"command": "nudge-all"})
    assert await audited(app, "U0USER", "admin.nudged_all") == []
