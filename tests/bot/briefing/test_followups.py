"""What follows a run: the missed briefing after a reconnection (once), the admin summary edited as users
reconnect, the next day's reminder editing the same DM, and the testing-mode warning."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import aiohttp
from aiohttp import web

from bot.appkeys import SERVICES
from bot.briefing.run import Kind, Result
from bot.slack.blocks.elements import RECONNECT_ACTION
from tests.fakes.google import FakeGoogle
from tests.fakes.slack import FakeSlack
from tests.helpers import Serve, block_text, buttons, dms, eventually, healthy, visit

ADMIN_CHANNEL = "C0ADMINS"


def digests(fake: FakeSlack, slack_id: str) -> list[dict[str, Any]]:
    """The email parts of the briefing in the user's DM."""
    return [m for m in dms(fake, slack_id) if "unread mail" in block_text(m.get("blocks") or [])]


def summaries(fake: FakeSlack) -> list[dict[str, Any]]:
    return [message for (channel, _), message in sorted(fake.messages.items()) if channel == ADMIN_CHANNEL]


async def reconnect(
    app: web.Application, fake: FakeSlack, google: FakeGoogle, browser: aiohttp.ClientSession, slack_id: str
) -> None:
    """The user clicks Reconnect Gmail in their DM and consents as the same Google account."""
    google.consent.email = f"{slack_id.lower()}@gmail.com"
    prompt = await app[SERVICES].prompts.open_for(slack_id)
    if prompt is not None:
        message = fake.messages[prompt.channel_id or "", prompt.message_ts or ""]
        url = buttons(message["blocks"])[RECONNECT_ACTION]["url"]
    else:
        url = app[SERVICES].links.new_url(slack_id)
    fake.sign_in(slack_id)  # the user clicks it, signed in to Slack as themselves
    status, _, _ = await visit(browser, url)
    assert status == 200


async def test_the_missed_briefing_is_posted_once_after_a_reconnection(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle, browser: aiohttp.ClientSession
) -> None:
    app = await serve()
    fake_slack.add_user("U0GONE", locale="en-US")
    await healthy(app, fake_google, "U0GONE", expiring=True)
    fake_google.revoke_refresh_token("1//U0GONE")
    fake_google.add_message("u0gone@gmail.com", sender="Kim", subject="Budget", snippet="Numbers")
    report = await app[SERVICES].briefing.run(Kind.BRIEFING)
    assert [line.result for line in report.accounts] == [Result.PROMPTED]
    assert digests(fake_slack, "U0GONE") == []

    await reconnect(app, fake_slack, fake_google, browser, "U0GONE")

    await eventually(lambda: len(digests(fake_slack, "U0GONE")) == 1)
    assert "Budget" in block_text(digests(fake_slack, "U0GONE")[0]["blocks"])
    outcome = await app[SERVICES].pool.fetchval("SELECT outcome FROM briefing_run_items")
    assert outcome == "digest"

    # Reconnecting again the same day (say, to switch accounts) confirms again, but the briefing is not repeated.
    confirmations = len(dms(fake_slack, "U0GONE"))
    await reconnect(app, fake_slack, fake_google, browser, "U0GONE")
    await eventually(lambda: len(dms(fake_slack, "U0GONE")) == confirmations + 1)
    await app[SERVICES].briefing.reconnected(await app[SERVICES].accounts.get(report.accounts[0].account.id))
    assert len(digests(fake_slack, "U0GONE")) == 1


async def test_no_missed_briefing_before_the_run_or_in_check_mode(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle, browser: aiohttp.ClientSession
) -> None:
    app = await serve(BRIEFING_MODE="check")
    fake_slack.add_user("U0GONE", locale="en-US")
    await healthy(app, fake_google, "U0GONE", expiring=True)
    fake_google.revoke_refresh_token("1//U0GONE")
    await app[SERVICES].briefing.run(Kind.PREFLIGHT)  # prompts, but today's briefing has not run

    await reconnect(app, fake_slack, fake_google, browser, "U0GONE")
    await eventually(lambda: any("connected again" in m["text"] for m in dms(fake_slack, "U0GONE")))
    await app[SERVICES].briefing.run(Kind.BRIEFING)
    account = await app[SERVICES].accounts.find_by_slack_id("U0GONE")
    assert account is not None
    await app[SERVICES].briefing.reconnected(account)

    assert digests(fake_slack, "U0GONE") == []  # check mode: another service posts the briefing
    assert account.last_fetch_result == "ok"  # but the health work was done


async def test_the_admin_summary_is_edited_as_users_reconnect(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle, browser: aiohttp.ClientSession
) -> None:
    app = await serve(ADMIN_CHANNEL_ID=ADMIN_CHANNEL, DEFAULT_LOCALE="en")
    fake_slack.channels.add(ADMIN_CHANNEL)
    for slack_id in ("U0OK", "U0GONE1", "U0GONE2"):
        fake_slack.add_user(slack_id, locale="en-US")
        await healthy(app, fake_google, slack_id, expiring=slack_id != "U0OK")
    fake_google.revoke_refresh_token("1//U0GONE1")
    fake_google.revoke_refresh_token("1//U0GONE2")

    await app[SERVICES].briefing.run(Kind.BRIEFING)

    (summary,) = summaries(fake_slack)
    first = block_text(summary["blocks"])
    assert "3 linked accounts" in first and "1 briefings posted" in first and "2 asked to reconnect" in first
    assert "*2 need attention*" in first and "<@U0GONE1>" in first and "<@U0GONE2>" in first

    await reconnect(app, fake_slack, fake_google, browser, "U0GONE1")
    await eventually(lambda: "2 → 1 need attention" in block_text(summaries(fake_slack)[0]["blocks"]))
    (summary,) = summaries(fake_slack)  # edited, not posted again
    assert "~<@U0GONE1> · u0gone1@gmail.com~ ✅ reconnected" in block_text(summary["blocks"])
    assert "2 briefings posted" in block_text(summary["blocks"])  # the missed one counts now

    await reconnect(app, fake_slack, fake_google, browser, "U0GONE2")
    await eventually(lambda: "2 → 0: resolved" in block_text(summaries(fake_slack)[0]["blocks"]))
    assert len(summaries(fake_slack)) == 1


async def test_a_summary_that_slack_refuses_does_not_fail_the_run(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve(ADMIN_CHANNEL_ID="C0NOTJOINED")  # the bot was not invited
    fake_slack.add_user("U0OK")
    await healthy(app, fake_google, "U0OK")

    report = await app[SERVICES].briefing.run(Kind.BRIEFING)

    assert [line.result for line in report.accounts] == [Result.DIGEST]
    assert await app[SERVICES].pool.fetchval("SELECT finished_at IS NOT NULL FROM briefing_runs")
    assert await app[SERVICES].pool.fetchval("SELECT summary_ts FROM briefing_runs") is None


async def test_the_next_days_reminder_edits_the_same_dm(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve()
    fake_slack.add_user("U0GONE", locale="en-US")
    await healthy(app, fake_google, "U0GONE", expiring=True)
    fake_google.revoke_refresh_token("1//U0GONE")
    await app[SERVICES].briefing.run(Kind.BRIEFING)
    (first,) = dms(fake_slack, "U0GONE")
    # A day passes: today's run becomes yesterday's.
    await app[SERVICES].pool.execute("UPDATE briefing_runs SET day = day - 1")

    report = await app[SERVICES].briefing.run(Kind.BRIEFING)

    assert [line.result for line in report.accounts] == [Result.PROMPTED]
    (reminder,) = dms(fake_slack, "U0GONE")
    assert reminder["ts"] == first["ts"] and len(fake_slack.calls_to("chat.update")) == 1
    prompt = await app[SERVICES].prompts.open_for("U0GONE")
    assert prompt is not None and prompt.sent_count == 2


async def test_testing_mode_warns_a_day_before_google_ends_the_connection(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve(GOOGLE_OAUTH_TESTING_MODE="true")
    for slack_id in ("U0OLD", "U0NEW"):
        fake_slack.add_user(slack_id, locale="en-US")
        await healthy(app, fake_google, slack_id)
    await app[SERVICES].pool.execute(
        "UPDATE gmail_tokens SET refresh_token_issued_at = now() - $1::interval WHERE metadata->>'slack_user_id' = 'U0OLD'",
        timedelta(days=6, hours=12),
    )

    report = await app[SERVICES].briefing.run(Kind.BRIEFING)

    results = {line.account.slack_user_id: line.result for line in report.accounts}
    assert results == {"U0OLD": Result.DIGEST, "U0NEW": Result.DIGEST}  # both still work today
    warning, digest = dms(fake_slack, "U0OLD")
    assert "7 days" in block_text(warning["blocks"]) and RECONNECT_ACTION in buttons(warning["blocks"])
    assert "unread mail" in block_text(digest["blocks"])
    assert len(dms(fake_slack, "U0NEW")) == 1  # only the briefing
