"""What the user granted on Google's consent screen, through the real application over real HTTP against the fake
Google and Slack: granular consent (unticked boxes), incremental authorization for the missing permission, and
time-based access."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
from aiohttp import web

from bot.appkeys import SERVICES
from bot.briefing.run import Kind, Result
from bot.slack.blocks.elements import RECONNECT_ACTION
from storage.causes import CauseCode
from storage.models import Account, Status
from tests.fakes.google import Consent, FakeGoogle
from tests.fakes.slack import FakeSlack
from tests.helpers import READONLY, SEND, Serve, block_text, buttons, dms, follow_until, owner_link, visit

EN = {"Accept-Language": "en-US,en;q=0.9"}


def digests(fake: FakeSlack, slack_id: str) -> list[dict[str, Any]]:
    """The email parts of the briefing in the user's DM."""
    return [m for m in dms(fake, slack_id) if "unread mail" in block_text(m.get("blocks") or [])]


async def open_prompt_message(app: web.Application, fake: FakeSlack, slack_id: str) -> dict[str, Any]:
    """The user's open Reconnect Gmail DM, as Slack shows it now."""
    prompt = await app[SERVICES].prompts.open_for(slack_id)
    assert prompt is not None and prompt.has_message
    return fake.messages[prompt.channel_id or "", prompt.message_ts or ""]


async def account_of(app: web.Application, slack_id: str) -> Account:
    account = await app[SERVICES].accounts.find_by_slack_id(slack_id)
    assert account is not None
    return account


def query_of(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


async def new_day(app: web.Application) -> None:
    """A day passes: today's runs become yesterday's, so the next run is a new one."""
    await app[SERVICES].pool.execute("UPDATE briefing_runs SET day = day - 1")


async def test_a_read_only_grant_keeps_the_digest_and_the_button_asks_google_for_send_only(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle, browser: aiohttp.ClientSession
) -> None:
    app = await serve()
    fake_slack.add_user("U0READ", locale="en-US")
    fake_google.consent = Consent(
        email="u0read@gmail.com", granted_scopes=[READONLY]
    )  # "Send email" unticked

    status, page, _ = await visit(browser, owner_link(app, fake_slack, "U0READ"), **EN)

    assert status == 200
    assert "Gmail connected, with a permission missing" in page and "Send email on your behalf" in page
    assert (
        "Your 9am briefing will include your email again" in page and "Allow the missing permission" in page
    )
    account = await account_of(app, "U0READ")
    assert account.status is Status.INSUFFICIENT_SCOPE and account.email == "u0read@gmail.com"
    assert account.status_cause_code is CauseCode.SCOPE_MISSING_SEND
    assert READONLY in account.scopes and SEND not in account.scopes
    assert account.status_cause is not None and "gmail.send" in account.status_cause
    tokens = await app[SERVICES].accounts.read_tokens(account.id)
    assert tokens is not None and tokens.refresh_token in fake_google.issued_secrets

    # The DM (and the App Home) say what is missing, and that the briefing keeps its email part.
    await app[SERVICES].hooks.drain()
    prompt_text = block_text((await open_prompt_message(app, fake_slack, "U0READ"))["blocks"])
    assert "without “Send email on your behalf”" in prompt_text and "keeps its email part" in prompt_text
    home = block_text(fake_slack.views["U0READ"]["blocks"])
    assert "without “Send email on your behalf”" in home and "reading mail ✅ · sending mail ❌" in home

    # The morning run posts the digest, and edits the same DM rather than sending another.
    fake_google.add_message("u0read@gmail.com", sender="Kim", subject="Budget", snippet="Numbers")
    dm_count = len(dms(fake_slack, "U0READ"))
    report = await app[SERVICES].briefing.run(Kind.BRIEFING)
    (line,) = report.accounts
    assert (line.result, line.status) == (Result.DIGEST, Status.INSUFFICIENT_SCOPE)
    (digest,) = digests(fake_slack, "U0READ")
    assert "Budget" in block_text(digest["blocks"])
    assert len(dms(fake_slack, "U0READ")) == dm_count + 1  # the digest; the prompt was edited in place

    # The DM's button asks Google for gmail.send only (with the sign-in scopes), keeping what was granted.
    button = buttons((await open_prompt_message(app, fake_slack, "U0READ"))["blocks"])[RECONNECT_ACTION]
    fake_slack.sign_in("U0READ")
    google_url = await follow_until(browser, button["url"], lambda url: url.startswith(fake_google.auth_uri))
    query = query_of(google_url)
    assert set(query["scope"].split()) == {"openid", "email", SEND}
    assert query["include_granted_scopes"] == "true" and query["login_hint"] == "u0read@gmail.com"

    # The user ticks it; Google's token answer names the union, and the account is healthy.
    fake_google.consent = Consent(email="u0read@gmail.com")
    status, page, _ = await visit(browser, google_url, **EN)
    assert status == 200 and "Gmail connected" in page and "missing" not in page
    account = await account_of(app, "U0READ")
    assert account.status is Status.HEALTHY and account.status_cause is None
    assert {READONLY, SEND} <= set(account.scopes)
    await app[SERVICES].hooks.drain()
    assert await app[SERVICES].prompts.open_for("U0READ") is None
    assert any("connected again" in message["text"] for message in dms(fake_slack, "U0READ"))


async def test_the_partial_pages_button_asks_for_the_missing_permission_with_the_same_link(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle, browser: aiohttp.ClientSession
) -> None:
    app = await serve()
    fake_slack.add_user("U0PAGE", locale="en-US")
    fake_google.consent = Consent(email="u0page@gmail.com", granted_scopes=[READONLY])
    link = owner_link(app, fake_slack, "U0PAGE")
    await visit(browser, link)

    # The link did not "connect": it stays usable, and now leads to a request for send alone.
    google_url = await follow_until(browser, link, lambda url: url.startswith(fake_google.auth_uri))
    assert set(query_of(google_url)["scope"].split()) == {"openid", "email", SEND}


async def test_a_grant_that_allows_nothing_the_bot_needs_stores_nothing(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle, browser: aiohttp.ClientSession
) -> None:
    app = await serve()
    fake_slack.add_user("U0NONE", locale="en-US")
    fake_google.consent = Consent(email="u0none@gmail.com", granted_scopes=[])  # every box unticked

    status, page, _ = await visit(browser, owner_link(app, fake_slack, "U0NONE"), **EN)

    assert status == 400
    assert "One more permission is needed" in page and "Your new sign-in was not saved" in page
    assert "View your email messages" in page and "Send email on your behalf" in page
    assert await app[SERVICES].accounts.find_by_slack_id("U0NONE") is None
    (auth,) = fake_google.calls_to("/o/oauth2/auth")
    assert set(auth.query["scope"].split()) == {"openid", "email", READONLY, SEND}  # a new user: everything


async def test_a_send_only_grant_is_stored_but_brings_no_digest(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle, browser: aiohttp.ClientSession
) -> None:
    app = await serve()
    fake_slack.add_user("U0SEND", locale="en-US")
    fake_google.consent = Consent(email="u0send@gmail.com", granted_scopes=[SEND])

    status, page, _ = await visit(browser, owner_link(app, fake_slack, "U0SEND"), **EN)

    assert status == 200 and "View your email messages" in page and "comes without its email part" in page
    send_only = await account_of(app, "U0SEND")
    assert (send_only.status, send_only.status_cause_code) == (
        Status.INSUFFICIENT_SCOPE,
        CauseCode.SCOPE_MISSING_READ,
    )
    report = await app[SERVICES].briefing.run(Kind.BRIEFING)
    assert [line.result for line in report.accounts] == [Result.PROMPTED]
    assert fake_google.calls_to("/gmail/v1/users/me/messages") == []  # no digest without reading
    await app[SERVICES].hooks.drain()
    (prompt,) = dms(fake_slack, "U0SEND")  # the one DM, edited by the run, asks for reading
    assert "without “View your email messages and settings”" in block_text(prompt["blocks"])
    assert "comes without its email part" in block_text(prompt["blocks"])


async def test_time_based_access_is_warned_the_day_before_and_expires_after(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle, browser: aiohttp.ClientSession
) -> None:
    app = await serve()
    fake_slack.add_user("U0TIME", locale="en-US")
    fake_google.consent = Consent(email="u0time@gmail.com", access_for=timedelta(days=3))

    status, _, _ = await visit(browser, owner_link(app, fake_slack, "U0TIME"), **EN)

    assert status == 200
    account = await account_of(app, "U0TIME")
    ends = account.refresh_token_expires_at
    assert account.status is Status.HEALTHY and ends is not None
    assert abs(ends - (datetime.now(UTC) + timedelta(days=3))) < timedelta(minutes=1)
    await app[SERVICES].hooks.drain()
    home = block_text(fake_slack.views["U0TIME"]["blocks"])
    assert "Access you allowed ends" in home

    async def ending_in(left: timedelta) -> None:
        await app[SERVICES].pool.execute(
            "UPDATE gmail_tokens SET refresh_token_expires_at = now() + $1::interval WHERE id = $2",
            left,
            account.id,
        )

    # Two days before: the briefing as usual, no warning.
    await ending_in(timedelta(days=1, hours=12))
    before = len(dms(fake_slack, "U0TIME"))
    report = await app[SERVICES].briefing.run(Kind.BRIEFING)
    assert [line.result for line in report.accounts] == [Result.DIGEST]
    assert (
        len(dms(fake_slack, "U0TIME")) == before + 1
        and await app[SERVICES].prompts.open_for("U0TIME") is None
    )

    # The day before: warned (with the date and the button that renews it), and the briefing still comes.
    await new_day(app)
    await ending_in(timedelta(hours=12))
    report = await app[SERVICES].briefing.run(Kind.BRIEFING)
    assert [line.result for line in report.accounts] == [Result.DIGEST]
    warning = await open_prompt_message(app, fake_slack, "U0TIME")
    assert "you allowed the bot into your Gmail until" in block_text(warning["blocks"])
    assert RECONNECT_ACTION in buttons(warning["blocks"]) and len(digests(fake_slack, "U0TIME")) == 2

    # After: Google ends the refresh token, and the account is expired because the granted time ran out.
    await new_day(app)
    await ending_in(timedelta(minutes=-1))
    tokens = await app[SERVICES].accounts.read_tokens(account.id)
    assert tokens is not None and tokens.refresh_token is not None
    fake_google.end_granted_time(tokens.refresh_token)
    await app[SERVICES].pool.execute("UPDATE gmail_tokens SET expiry = now() WHERE id = $1", account.id)
    report = await app[SERVICES].briefing.run(Kind.BRIEFING)
    assert [line.result for line in report.accounts] == [Result.PROMPTED]
    account = await account_of(app, "U0TIME")
    assert (account.status, account.status_cause_code) == (Status.EXPIRED, CauseCode.ACCESS_TIME_ENDED)
    assert account.status_cause is not None and "time-limited access" in account.status_cause
    ended = block_text((await open_prompt_message(app, fake_slack, "U0TIME"))["blocks"])
    assert "The access to your Gmail you allowed on Google's screen ended on" in ended
    assert len(digests(fake_slack, "U0TIME")) == 2


async def test_reconnecting_with_lasting_access_forgets_the_end(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle, browser: aiohttp.ClientSession
) -> None:
    app = await serve()
    fake_slack.add_user("U0RENEW", locale="en-US")
    fake_google.consent = Consent(email="u0renew@gmail.com", access_for=timedelta(hours=20))
    await visit(browser, owner_link(app, fake_slack, "U0RENEW"))
    assert (await account_of(app, "U0RENEW")).refresh_token_expires_at is not None

    fake_google.consent = Consent(email="u0renew@gmail.com")  # this time, until revoked
    status, _, _ = await visit(browser, owner_link(app, fake_slack, "U0RENEW"))

    assert status == 200
    account = await account_of(app, "U0RENEW")
    assert account.status is Status.HEALTHY and account.refresh_token_expires_at is None
