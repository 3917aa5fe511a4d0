"""Slack markup in the data the bot shows is shown as text, on every surface: planted in a stored email, a
stored cause, a Slack profile (its names and email), Google's error texts, the address in Google's ID token
and Gmail's subjects, senders and snippets, it reaches Slack escaped (`&lt;!channel&gt;`), so it pings nobody
and disguises no link, while the mentions the bot builds on purpose stay mentions.

Every surface is driven as in production (signed requests through Bolt, the briefing run, the consent flow in
a browser), and what the fake Slack received is read back: each test collects the payloads of its surfaces
and asserts that none holds the markup raw."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web

from bot.appkeys import SERVICES
from bot.briefing.run import Kind, Result
from bot.slack.blocks.elements import LINK_ACTION, RECONNECT_ACTION, SNOOZE_ACTION
from storage.causes import CauseCode
from storage.models import Status
from tests.fakes.google import FakeGoogle
from tests.fakes.slack import (
    JSON_CONTENT_TYPE,
    FakeSlack,
    app_home_opened,
    block_actions_body,
    dm_channel_id,
    ephemeral_actions_body,
    event_body,
    slash_command_body,
)
from tests.helpers import (
    MARKUP,
    MARKUP_ESCAPED,
    Serve,
    block_text,
    buttons,
    eventually,
    healthy,
    post,
    raw_markup,
    settled,
    visit,
)

VICTIM = "U0VICTIM"
ADMIN = "U0ADMIN"
ADMIN_CHANNEL = "C0ADMINS"


def member(fake: FakeSlack, user_id: str, **profile: Any) -> None:
    """A workspace member whose display and real names are markup too (the bot must never show them raw)."""
    fake.add_user(user_id, locale="en-US", name=MARKUP, real_name=MARKUP, **profile)


async def unlinked_row(app: web.Application, user_id: str, email: str) -> None:
    """A legacy row no Slack user is linked to, with no token stored."""
    await app[SERVICES].pool.execute(
        "INSERT INTO gmail_tokens (user_id, metadata) VALUES ($1, $2)", user_id, {"email": email}
    )


async def command(app: web.Application, fake: FakeSlack, user_id: str, text: str = "") -> dict[str, Any]:
    """Type `/gmail-status <text>` as `user_id`; the ephemeral answer."""
    before = len(fake.ephemerals)
    status, _ = await post(app, slash_command_body(text=text, user_id=user_id))
    assert status == 200
    await eventually(lambda: len(fake.ephemerals) > before)
    return fake.ephemerals[before]


def unescaped(surfaces: dict[str, Any]) -> dict[str, list[str]]:
    """The surfaces whose payload holds some of MARKUP raw, with the raw pieces."""
    return {name: raw for name, payload in surfaces.items() if (raw := raw_markup(payload))}


def assert_only_our_control_sequences(fake: FakeSlack, *mentioned: str) -> None:
    """Whatever the app showed, Slack would ping no channel, follow no planted link, and mention only the users
    the bot itself names (`mentioned`)."""
    assert fake.control_of("broadcast") == []
    assert fake.control_of("link") == []
    assert set(fake.control_of("mention")) <= {f"@{user_id}" for user_id in mentioned}


async def test_the_status_card_app_home_and_help_escape_the_email_and_googles_error(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve()
    member(fake_slack, VICTIM)
    await healthy(app, fake_google, VICTIM, email=MARKUP)
    fake_google.fail_gmail(400, message=MARKUP)  # Google's error text, recorded as the last fetch's result
    report = await app[SERVICES].briefing.run(Kind.BRIEFING, only=[VICTIM])
    assert [line.result for line in report.accounts] == [Result.FAILED]

    card = await command(app, fake_slack, VICTIM)
    await post(app, event_body(app_home_opened(VICTIM)), content_type=JSON_CONTENT_TYPE)
    (home,) = await settled(fake_slack, "views.publish")
    help_answer = await command(app, fake_slack, VICTIM, MARKUP)  # the command's text, echoed back

    surfaces = {"status card": card, "App Home": home.args["view"], "help": help_answer}
    assert unescaped(surfaces) == {}
    for shown in (block_text(card["blocks"]), block_text(home.args["view"]["blocks"])):
        assert f"*Google account:* {MARKUP_ESCAPED}" in shown
        assert f"(failed: Gmail answered HTTP 400 ({MARKUP_ESCAPED}))" in shown
    assert "I don't know `&lt;!channel&gt;`" in block_text(help_answer["blocks"])
    assert_only_our_control_sequences(fake_slack)


async def test_the_offer_to_link_and_the_linked_notice_escape_the_email(
    serve: Serve, fake_slack: FakeSlack
) -> None:
    app = await serve()
    member(fake_slack, VICTIM, email=MARKUP)  # the Slack profile email matches the unlinked row's
    await unlinked_row(app, "legacy-user", MARKUP)

    card = await command(app, fake_slack, VICTIM)
    link = buttons(card["blocks"])[LINK_ACTION]
    await post(
        app,
        ephemeral_actions_body(
            LINK_ACTION, user_id=VICTIM, value=link["value"], response_url=fake_slack.response_url(VICTIM)
        ),
    )
    await eventually(lambda: bool(fake_slack.responses))
    (linked,) = fake_slack.responses

    assert unescaped({"card with the offer": card, "linked notice": linked}) == {}
    assert f"A Gmail connection for *{MARKUP_ESCAPED}*" in block_text(card["blocks"])
    assert link["text"]["type"] == "plain_text" and link["text"]["text"].startswith("Link &lt;!channel&gt; ")
    assert len(link["text"]["text"]) <= 75 and "&lt…" not in link["text"]["text"]  # no entity cut in half
    assert linked["text"] == f"Linked: *{MARKUP_ESCAPED}* is now your Gmail connection."
    assert_only_our_control_sequences(fake_slack)


async def test_the_admin_overview_and_nudges_escape_emails_causes_user_ids_and_slacks_errors(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve(ADMIN_SLACK_USER_IDS=ADMIN)
    for user_id in (ADMIN, VICTIM, "U0FINE"):
        member(fake_slack, user_id)
    victim = await healthy(app, fake_google, VICTIM, email=MARKUP + " victim")
    # A cause whose detail the admin sees (which OAuth client Google refuses, in Google's words).
    await app[SERVICES].accounts.set_status(
        victim.id, status=Status.EXPIRED, cause=MARKUP, code=CauseCode.CLIENT_REJECTED, actor="test"
    )
    await unlinked_row(app, MARKUP, MARKUP + " unlinked")
    await healthy(
        app, fake_google, "U0FINE", email=MARKUP + " fine", expiry_known=False
    )  # the nudge asks Google first

    overview = await command(app, fake_slack, ADMIN, "all")
    works = await command(app, fake_slack, ADMIN, "nudge <@U0FINE>")
    fake_slack.fail("chat.postMessage", error=MARKUP)  # Slack's answer, quoted back to the admin
    refused = await command(app, fake_slack, ADMIN, f"nudge <@{VICTIM}>")

    surfaces = {"admin overview": overview, "nudge: works": works, "nudge: refused": refused}
    assert unescaped(surfaces) == {}
    rows = block_text(overview["blocks"])
    assert (
        f"• <@{VICTIM}> · {MARKUP_ESCAPED} victim · *Expired*: "
        f"Issued to an OAuth client that Google no longer accepts (invalid_client) ({MARKUP_ESCAPED})" in rows
    )  # the mention stays
    assert f"• `{MARKUP_ESCAPED}` (not linked to Slack) · {MARKUP_ESCAPED} unlinked" in rows
    assert works["text"] == f"<@U0FINE>'s Gmail works ({MARKUP_ESCAPED} fine): no DM sent."
    assert refused["text"] == f"The DM to <@{VICTIM}> could not be sent (Slack answered `{MARKUP_ESCAPED}`)."
    assert_only_our_control_sequences(fake_slack, VICTIM, "U0FINE")


async def test_the_run_the_reminder_and_the_reconnection_escape_the_email_and_googles_error(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle, browser: aiohttp.ClientSession
) -> None:
    app = await serve(ADMIN_CHANNEL_ID=ADMIN_CHANNEL, DEFAULT_LOCALE="en")
    fake_slack.channels.add(ADMIN_CHANNEL)
    member(fake_slack, VICTIM)
    await healthy(app, fake_google, VICTIM, email=MARKUP)
    fake_google.fail_gmail(403, message=MARKUP)  # Gmail refuses the scope: the cause stored is Google's text

    report = await app[SERVICES].briefing.run(Kind.BRIEFING)

    assert [line.result for line in report.accounts] == [Result.PROMPTED]
    prompt_call, summary_call = fake_slack.calls_to("chat.postMessage")
    assert (prompt_call.args["channel"], summary_call.args["channel"]) == (VICTIM, ADMIN_CHANNEL)
    prompt = await app[SERVICES].prompts.open_for(VICTIM)
    assert prompt is not None
    await post(
        app,
        block_actions_body(
            SNOOZE_ACTION,
            user_id=VICTIM,
            value=str(prompt.id),
            channel_id=dm_channel_id(VICTIM),
            message_ts=prompt.message_ts,
        ),
    )
    (snoozed_call,) = await settled(fake_slack, "chat.update")

    # The user reconnects with the button, and Google's ID token carries the address with the markup.
    fake_google.consent.email = MARKUP
    fake_slack.sign_in(VICTIM)  # the DM's owner clicks its button
    url = buttons(prompt_call.args["blocks"])[RECONNECT_ACTION]["url"]
    status, _, _ = await visit(browser, url)
    assert status == 200
    await eventually(lambda: len(fake_slack.calls_to("chat.update")) >= 3)
    await eventually(lambda: bool(fake_slack.calls_to("views.publish")))
    updates = fake_slack.calls_to("chat.update")
    (resolved_call,) = [call for call in updates[1:] if call.args["channel"] == dm_channel_id(VICTIM)]
    (summary_edit,) = [call for call in updates if call.args["channel"] == ADMIN_CHANNEL]
    (confirmation,) = [
        call
        for call in fake_slack.calls_to("chat.postMessage")
        if call.args["channel"] == VICTIM and "connected again" in call.args["text"]
    ]
    (home,) = fake_slack.calls_to("views.publish")

    surfaces = {
        "Reconnect DM": prompt_call.args,
        "admin summary": summary_call.args,
        "Reconnect DM, snoozed": snoozed_call.args,
        "Reconnect DM, reconnected": resolved_call.args,
        "confirmation": confirmation.args,
        "admin summary, edited": summary_edit.args,
        "App Home, redrawn": home.args["view"],
    }
    assert unescaped(surfaces) == {}
    assert f"Google account: {MARKUP_ESCAPED}" in block_text(prompt_call.args["blocks"])
    assert f"Google account: {MARKUP_ESCAPED}" in block_text(snoozed_call.args["blocks"])
    summary = block_text(summary_call.args["blocks"])
    assert (
        f"• <@{VICTIM}> · {MARKUP_ESCAPED} · *Permission missing*: "
        "Permission to read mail not granted (gmail.readonly)" in summary
    )
    lowered = MARKUP_ESCAPED.lower()  # Google's addresses are compared, and so kept, in lower case
    assert block_text(resolved_call.args["blocks"]) == f"✅ Reconnected as *{lowered}*"
    assert f"connected again ({lowered})" in confirmation.args["text"]
    assert f"~<@{VICTIM}> · {lowered}~ ✅ reconnected" in block_text(summary_edit.args["blocks"])
    assert f"*Google account:* {lowered}" in block_text(home.args["view"]["blocks"])
    assert_only_our_control_sequences(fake_slack, VICTIM)


async def test_the_digest_escapes_subjects_senders_and_snippets_and_keeps_its_own_formatting(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve()
    member(fake_slack, "U0READER")
    await healthy(app, fake_google, "U0READER")
    fake_google.add_message(
        "u0reader@gmail.com", sender=MARKUP, subject=f"{MARKUP} *b* `c` ~s~ _i_", snippet=MARKUP
    )

    await app[SERVICES].briefing.run(Kind.BRIEFING)

    (digest,) = [call.args for call in fake_slack.calls_to("chat.postMessage")]
    assert unescaped({"digest": digest}) == {}
    assert f"*{MARKUP_ESCAPED} *b* `c` ~s~ _i_*\n{MARKUP_ESCAPED} · {MARKUP_ESCAPED}" in block_text(
        digest["blocks"]
    )
    assert_only_our_control_sequences(fake_slack)
