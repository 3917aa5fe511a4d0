"""Sign in with Slack before Google's consent, over real HTTP against the fake Slack and the fake Google: a link
opens Google only in a browser signed in to Slack as its owner; a forwarded link stores nothing."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta
from html import escape
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from yarl import URL

from bot.appkeys import SERVICES
from bot.i18n import text
from bot.reconnect.identity import IDENTITY_COOKIE, SlackIdentity
from bot.reconnect.links import Purpose
from bot.reconnect.paths import CALLBACK_PATH, SLACK_CALLBACK_PATH
from storage import audit
from storage.models import Status
from tests.fakes.google import FakeGoogle
from tests.fakes.slack import TEAM_ID, FakeSlack, slash_command_body
from tests.fakes.slack_oidc import TEAM_ID_CLAIM
from tests.helpers import Serve, healthy, load_legacy_seed, post, visit

OWNER, COLLEAGUE = "U0OWNER", "U0COLLEAGUE"


async def location(browser: aiohttp.ClientSession, url: str) -> str:
    """Open a URL that must redirect, and return where to."""
    async with browser.get(url, allow_redirects=False) as response:
        assert response.status == 302, (response.status, await response.text())
        return response.headers["Location"]


async def google_states(app: web.Application) -> int:
    async with app[SERVICES].pool.acquire() as conn:
        count: int = await conn.fetchval("SELECT count(*) FROM oauth_states WHERE provider = 'google'")
        return count


async def actions(app: web.Application, slack_user_id: str) -> list[str]:
    return [event.action for event in await audit.recent(app[SERVICES].pool, slack_user_id=slack_user_id)]


def google_consents(fake_google: FakeGoogle) -> int:
    return len(fake_google.calls_to("/o/oauth2/auth"))


def slack_sign_ins(fake_slack: FakeSlack) -> int:
    return len(fake_slack.calls_to("openid.connect.token"))


async def assert_refused_before_google(
    app: web.Application, fake_google: FakeGoogle, status: int, page: str, url: str
) -> None:
    assert status == 403, page
    assert "This link is for someone else" in page or "다른 사람에게 보낸 링크입니다" in page
    assert urlsplit(url).path == SLACK_CALLBACK_PATH
    assert google_consents(fake_google) == 0 and await google_states(app) == 0


async def test_the_owner_signs_in_with_slack_then_connects_and_is_remembered(
    serve: Serve, browser: aiohttp.ClientSession, fake_google: FakeGoogle, fake_slack: FakeSlack
) -> None:
    app = await serve()
    fake_slack.sign_in(OWNER)
    fake_google.consent.email = "owner@gmail.com"

    link = app[SERVICES].links.new_url(OWNER, slack_team_id=TEAM_ID)
    to_slack = await location(browser, link)
    query = {key: values[0] for key, values in parse_qs(urlsplit(to_slack).query).items()}
    assert to_slack.startswith(fake_slack.oidc_authorize_url)
    assert (query["scope"], query["response_type"], query["team"]) == ("openid", "code", TEAM_ID)
    assert query["redirect_uri"] == app[SERVICES].settings.slack_redirect_uri
    assert len(query["nonce"]) >= 43 and len(query["state"]) >= 43

    status, page, _ = await visit(browser, to_slack)

    assert status == 200 and "owner@gmail.com" in page, page
    account = await app[SERVICES].accounts.find_by_slack_id(OWNER)
    assert account is not None and account.status is Status.HEALTHY
    assert "tokens.reconnected" in await actions(app, OWNER)
    cookie = next(c for c in browser.cookie_jar if c.key == IDENTITY_COOKIE)
    assert cookie["httponly"] and cookie["path"] == "/oauth/" and cookie["samesite"] == "Lax"
    assert int(cookie["max-age"]) == 30 * 24 * 3600
    assert (slack_sign_ins(fake_slack), google_consents(fake_google)) == (1, 1)

    # Next time (a fresh link, the account broken since) the browser goes straight to Google: one click.
    fake_google.consent.email = "owner@gmail.com"
    await app[SERVICES].accounts.set_status(account.id, status=Status.REVOKED, cause="test", actor="test")
    fake_slack.sign_out()
    google_url = await location(browser, app[SERVICES].links.new_url(OWNER, slack_team_id=TEAM_ID))
    assert google_url.startswith(fake_google.auth_uri)
    status, _, final = await visit(browser, google_url)
    assert status == 200 and urlsplit(final).path == CALLBACK_PATH
    assert (slack_sign_ins(fake_slack), google_consents(fake_google)) == (1, 2)


async def test_a_forwarded_link_of_a_member_without_a_row_stops_before_google(
    serve: Serve, browser: aiohttp.ClientSession, fake_google: FakeGoogle, fake_slack: FakeSlack
) -> None:
    app = await serve()
    fake_slack.add_user(OWNER, name="owner.kim")
    fake_slack.add_user(COLLEAGUE, name="colleague.lee")
    fake_slack.sign_in(COLLEAGUE)  # the colleague clicks the owner's link

    status, page, final = await visit(
        browser, app[SERVICES].links.new_url(OWNER, slack_team_id=TEAM_ID), **{"Accept-Language": "en"}
    )

    await assert_refused_before_google(app, fake_google, status, page, final)
    assert "@owner.kim" in page and "@colleague.lee" in page and "/gmail-status" in page
    assert await app[SERVICES].accounts.find_by_slack_id(OWNER) is None
    assert "identity.mismatch" in await actions(app, OWNER)
    (event,) = [e for e in await audit.recent(app[SERVICES].pool, slack_user_id=OWNER)]
    assert event.actor == f"slack:{COLLEAGUE}" and event.details["signed_in_as"] == COLLEAGUE
    assert not any(c.key == IDENTITY_COOKIE for c in browser.cookie_jar)


async def test_a_forwarded_link_of_a_row_without_an_email_stops_before_google(
    serve: Serve, browser: aiohttp.ClientSession, fake_google: FakeGoogle, fake_slack: FakeSlack
) -> None:
    app = await serve()
    before = await healthy(app, fake_google, OWNER)
    async with app[SERVICES].pool.acquire() as conn:
        await conn.execute("UPDATE gmail_tokens SET metadata = metadata - 'email' WHERE id = $1", before.id)
    before = await app[SERVICES].accounts.get(before.id)
    assert before.email is None
    fake_slack.sign_in(COLLEAGUE)

    status, page, final = await visit(browser, app[SERVICES].links.new_url(OWNER))

    await assert_refused_before_google(app, fake_google, status, page, final)
    assert await app[SERVICES].accounts.get(before.id) == before


async def test_a_forwarded_switch_link_stops_before_google(
    serve: Serve, browser: aiohttp.ClientSession, fake_google: FakeGoogle, fake_slack: FakeSlack
) -> None:
    app = await serve()
    before = await healthy(app, fake_google, OWNER)
    fake_slack.sign_in(COLLEAGUE)
    switch = app[SERVICES].links.new_url(OWNER, purpose=Purpose.SWITCH)

    status, page, final = await visit(browser, switch)

    await assert_refused_before_google(app, fake_google, status, page, final)
    after = await app[SERVICES].accounts.find_by_slack_id(OWNER)
    assert after is not None and (after.email, after.status) == (before.email, Status.HEALTHY)
    assert await app[SERVICES].accounts.read_tokens(after.id) == await app[SERVICES].accounts.read_tokens(
        before.id
    )


async def test_a_forwarded_link_cannot_adopt_the_colleagues_unlinked_row(
    serve: Serve,
    browser: aiohttp.ClientSession,
    fake_google: FakeGoogle,
    fake_slack: FakeSlack,
    database_url: str,
) -> None:
    await load_legacy_seed(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        unlinked = await conn.fetchrow(
            "SELECT id, metadata->>'email' AS email FROM gmail_tokens "
            "WHERE coalesce(metadata->>'slack_user_id', '') = '' AND metadata->>'email' IS NOT NULL LIMIT 1"
        )
    finally:
        await conn.close()
    assert unlinked is not None
    app = await serve()
    fake_slack.sign_in(COLLEAGUE)
    fake_google.consent.email = unlinked["email"]

    status, page, final = await visit(browser, app[SERVICES].links.new_url(OWNER))

    await assert_refused_before_google(app, fake_google, status, page, final)
    row = await app[SERVICES].accounts.get(unlinked["id"])
    assert row.slack_user_id is None


async def test_the_owner_can_still_switch_accounts(
    serve: Serve, browser: aiohttp.ClientSession, fake_google: FakeGoogle, fake_slack: FakeSlack
) -> None:
    app = await serve()
    account = await healthy(app, fake_google, OWNER)
    fake_slack.sign_in(OWNER)
    fake_google.consent.email = "second@gmail.com"

    status, page, _ = await visit(browser, app[SERVICES].links.new_url(OWNER, purpose=Purpose.SWITCH))

    switched = await app[SERVICES].accounts.find_by_slack_id(OWNER)
    assert status == 200, page
    assert switched is not None and (switched.id, switched.email) == (account.id, "second@gmail.com")


async def test_a_remembered_colleague_is_asked_to_sign_in_again_not_let_through(
    serve: Serve, browser: aiohttp.ClientSession, fake_google: FakeGoogle, fake_slack: FakeSlack
) -> None:
    app = await serve()
    fake_slack.sign_in(COLLEAGUE)
    fake_google.consent.email = "colleague@gmail.com"
    status, _, _ = await visit(browser, app[SERVICES].links.new_url(COLLEAGUE))
    assert status == 200 and any(c.key == IDENTITY_COOKIE for c in browser.cookie_jar)

    # The same browser (remembered as the colleague) opens the owner's link: Slack is asked again.
    to_slack = await location(browser, app[SERVICES].links.new_url(OWNER))
    assert to_slack.startswith(fake_slack.oidc_authorize_url)
    status, page, final = await visit(browser, to_slack)
    assert status == 403 and urlsplit(final).path == SLACK_CALLBACK_PATH, page
    assert await app[SERVICES].accounts.find_by_slack_id(OWNER) is None


async def test_a_forged_identity_cookie_is_ignored(
    serve: Serve, browser: aiohttp.ClientSession, fake_slack: FakeSlack
) -> None:
    app = await serve()
    genuine = app[SERVICES].identity_cookie.issue(SlackIdentity(COLLEAGUE, TEAM_ID))
    body, _, signature = genuine.partition(".")
    forged = _renamed(body, OWNER) + "." + signature
    expired = app[SERVICES].identity_cookie.issue(
        SlackIdentity(OWNER, TEAM_ID), now=datetime.now(UTC) - timedelta(days=31)
    )
    url = app[SERVICES].links.new_url(OWNER)
    for value in (forged, expired, "garbage", genuine + "x", genuine):
        browser.cookie_jar.update_cookies({IDENTITY_COOKIE: value}, response_url=URL(_url(app)))
        assert (await location(browser, url)).startswith(fake_slack.oidc_authorize_url), value


@pytest.mark.parametrize(
    ("tamper", "why"),
    [
        ({"aud": "another-slack-app"}, "issued to another app"),
        ({"nonce": "not-this-sign-in"}, "another sign-in's nonce"),
        ({"nonce": None}, "no nonce"),
        ({"iss": "https://evil.example"}, "another issuer"),
        ({"exp": 1_000_000_000}, "expired"),
        ({"https://slack.com/user_id": None}, "no user"),
    ],
)
async def test_an_id_token_that_does_not_check_out_names_no_one(
    serve: Serve,
    browser: aiohttp.ClientSession,
    fake_google: FakeGoogle,
    fake_slack: FakeSlack,
    tamper: dict[str, object],
    why: str,
) -> None:
    app = await serve()
    fake_slack.sign_in(OWNER)
    fake_slack.oidc_tamper_next(**tamper)

    status, page, final = await visit(
        browser, app[SERVICES].links.new_url(OWNER), **{"Accept-Language": "en"}
    )

    assert status == 502 and escape(text("en", "page.sign_in_failed.title")) in page, why
    assert urlsplit(final).path == SLACK_CALLBACK_PATH
    assert google_consents(fake_google) == 0 and not any(c.key == IDENTITY_COOKIE for c in browser.cookie_jar)


async def test_an_id_token_signed_with_an_unpublished_key_names_no_one(
    serve: Serve, browser: aiohttp.ClientSession, fake_google: FakeGoogle, fake_slack: FakeSlack
) -> None:
    app = await serve()
    fake_slack.sign_in(OWNER)
    fake_slack.oidc_sign_next_with_unknown_key()

    status, page, _ = await visit(browser, app[SERVICES].links.new_url(OWNER))

    assert status in (502, 503) and google_consents(fake_google) == 0, page
    assert await app[SERVICES].accounts.find_by_slack_id(OWNER) is None


async def test_the_same_user_in_another_workspace_is_not_the_owner(
    serve: Serve, browser: aiohttp.ClientSession, fake_google: FakeGoogle, fake_slack: FakeSlack
) -> None:
    app = await serve()
    fake_slack.sign_in(OWNER, team_id="T0OTHERTEAM")

    status, page, _ = await visit(browser, app[SERVICES].links.new_url(OWNER, slack_team_id=TEAM_ID))

    # Slack asks the browser to sign in to the link's workspace; the flow goes no further.
    assert status == 200 and google_consents(fake_google) == 0, page
    assert fake_slack.oidc_authorize_requests[-1]["team"] == TEAM_ID
    assert await app[SERVICES].accounts.find_by_slack_id(OWNER) is None


async def test_cancel_on_slacks_screen_changes_nothing_and_offers_a_retry(
    serve: Serve, browser: aiohttp.ClientSession, fake_google: FakeGoogle, fake_slack: FakeSlack
) -> None:
    app = await serve()
    fake_slack.sign_in(OWNER)
    fake_slack.oidc_deny_next()
    link = app[SERVICES].links.new_url(OWNER)

    status, page, _ = await visit(browser, link, **{"Accept-Language": "en"})

    assert status == 200 and escape(text("en", "page.sign_in_denied.body")) in page
    assert link.replace("&", "&amp;") in page  # Try again
    assert google_consents(fake_google) == 0


async def test_slacks_callback_is_used_once_and_only_in_its_browser(
    serve: Serve, browser: aiohttp.ClientSession, fake_slack: FakeSlack
) -> None:
    app = await serve()
    fake_slack.sign_in(OWNER)
    callback = await location(browser, await location(browser, app[SERVICES].links.new_url(OWNER)))
    assert urlsplit(callback).path == SLACK_CALLBACK_PATH

    async with aiohttp.ClientSession() as other_browser, other_browser.get(callback) as response:
        assert response.status == 403  # no binding cookie: another browser
    async with browser.get(callback, allow_redirects=False) as response:
        assert response.status == 302  # the right browser goes on to Google
    async with browser.get(callback, allow_redirects=False) as response:
        assert response.status == 400  # and only once
    assert slack_sign_ins(fake_slack) == 1


async def test_a_state_of_one_provider_is_unknown_to_the_other(
    serve: Serve, browser: aiohttp.ClientSession, fake_slack: FakeSlack
) -> None:
    app = await serve()
    fake_slack.sign_in(OWNER)
    slack_callback = await location(browser, await location(browser, app[SERVICES].links.new_url(OWNER)))
    state = parse_qs(urlsplit(slack_callback).query)["state"][0]

    status, _, _ = await visit(browser, f"{_url(app)}{CALLBACK_PATH}?state={state}&code=4/0x")

    assert status == 400  # Google's callback does not know Slack's states
    async with browser.get(slack_callback, allow_redirects=False) as response:
        assert response.status == 302  # and the Slack state was not used up by that


async def test_slack_down_at_the_sign_in_says_so(
    serve: Serve, browser: aiohttp.ClientSession, fake_google: FakeGoogle, fake_slack: FakeSlack
) -> None:
    app = await serve()
    fake_slack.sign_in(OWNER)
    fake_slack.fail("openid.connect.token", status=503, times=5)

    status, page, _ = await visit(browser, app[SERVICES].links.new_url(OWNER), **{"Accept-Language": "en"})

    assert status == 503 and escape(text("en", "page.slack_unavailable.title")) in page
    assert google_consents(fake_google) == 0


async def test_a_link_that_reconnected_starts_no_other_flow(
    serve: Serve, browser: aiohttp.ClientSession, fake_google: FakeGoogle, fake_slack: FakeSlack
) -> None:
    app = await serve()
    fake_slack.sign_in(OWNER)
    fake_google.consent.email = "owner@gmail.com"
    link = app[SERVICES].links.new_url(OWNER)
    assert (await visit(browser, link))[0] == 200

    status, page, _ = await visit(browser, link, **{"Accept-Language": "en"})
    assert status == 200 and "already connected" in page.lower() and "owner@gmail.com" in page

    account = await app[SERVICES].accounts.find_by_slack_id(OWNER)
    assert account is not None
    await app[SERVICES].accounts.set_status(account.id, status=Status.REVOKED, cause="test", actor="test")
    status, page, _ = await visit(browser, link, **{"Accept-Language": "en"})
    assert status == 400 and "This link was already used" in page
    assert google_consents(fake_google) == 1

    # Someone else holding the used link learns nothing about the mailbox.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as stranger:
        await app[SERVICES].accounts.set_status(account.id, status=Status.HEALTHY, cause=None, actor="test")
        status, page, _ = await visit(stranger, link)
        assert status == 400 and "owner@gmail.com" not in page


async def test_with_identity_check_off_a_link_goes_straight_to_google(
    serve: Serve, browser: aiohttp.ClientSession, fake_google: FakeGoogle, fake_slack: FakeSlack
) -> None:
    app = await serve(IDENTITY_CHECK="off", SLACK_CLIENT_ID=None, SLACK_CLIENT_SECRET=None)

    google_url = await location(browser, app[SERVICES].links.new_url(OWNER))

    assert google_url.startswith(fake_google.auth_uri) and slack_sign_ins(fake_slack) == 0
    assert app[SERVICES].settings.identity_warning() is not None


async def test_the_slash_command_works_with_the_sign_in_credentials_in_the_environment(
    serve: Serve, fake_slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Bolt turns itself into a multi-workspace app when it sees these two variables.
    monkeypatch.setenv("SLACK_CLIENT_ID", "fake-slack-client-id")
    monkeypatch.setenv("SLACK_CLIENT_SECRET", "fake-slack-client-secret")
    app = await serve()

    status, body = await post(app, slash_command_body("/gmail-status", user_id=OWNER))

    assert status == 200 and "installation" not in body.lower(), body
    assert os.environ["SLACK_CLIENT_ID"] == "fake-slack-client-id"  # given back after Bolt was built


def _renamed(body: str, slack_user_id: str) -> str:
    """A cookie's payload with another user in it (its signature no longer matches)."""
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["u"] = slack_user_id
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _url(app: web.Application) -> str:
    return app[SERVICES].settings.public_base_url


async def test_an_id_token_from_another_workspace_is_not_the_owner(
    serve: Serve, browser: aiohttp.ClientSession, fake_google: FakeGoogle, fake_slack: FakeSlack
) -> None:
    app = await serve()
    fake_slack.sign_in(OWNER)
    fake_slack.oidc_tamper_next(**{TEAM_ID_CLAIM: "T0OTHERTEAM"})

    status, page, final = await visit(browser, app[SERVICES].links.new_url(OWNER, slack_team_id=TEAM_ID))

    await assert_refused_before_google(app, fake_google, status, page, final)


async def test_markup_in_slack_names_is_escaped_on_the_refusal_page(
    serve: Serve, browser: aiohttp.ClientSession, fake_slack: FakeSlack
) -> None:
    app = await serve()
    fake_slack.add_user(OWNER, name='<script>alert("owner")</script>')
    fake_slack.add_user(COLLEAGUE, name="<img src=x onerror=alert(1)>")
    fake_slack.sign_in(COLLEAGUE)

    status, page, _ = await visit(browser, app[SERVICES].links.new_url(OWNER))

    assert status == 403
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;" in page and "&lt;img src=x onerror=alert(1)&gt;" in page
