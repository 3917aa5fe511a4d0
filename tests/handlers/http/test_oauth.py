"""The consent flow through the real application over real HTTP, against the local fake Google."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from yarl import URL

from bot.appkeys import SERVICES
from bot.google.token_service import Outcome
from bot.reconnect.hooks import Reconnected
from bot.reconnect.links import Purpose
from bot.reconnect.paths import CALLBACK_PATH
from storage import audit
from storage.models import Status
from tests.fakes.google import FakeGoogle
from tests.fakes.slack import FakeSlack
from tests.helpers import READONLY, SEND, Serve, follow_until, load_legacy_seed, owner_link, visit


async def location(browser: aiohttp.ClientSession, url: str) -> str:
    """Open a URL that must redirect, and return where to."""
    async with browser.get(url, allow_redirects=False) as response:
        assert response.status == 302, await response.text()
        return response.headers["Location"]


async def to_callback(browser: aiohttp.ClientSession, link: str) -> str:
    """Start from the link, sign in with Slack and answer Google's consent screen: the callback URL, not yet
    opened."""
    return await follow_until(browser, link, lambda url: urlsplit(url).path == CALLBACK_PATH)


async def to_google(browser: aiohttp.ClientSession, link: str, fake_google: FakeGoogle) -> str:
    """Start from the link and sign in with Slack: Google's consent URL, not yet opened."""
    return await follow_until(browser, link, lambda url: url.startswith(fake_google.auth_uri))


async def audit_actions(app: web.Application, slack_user_id: str) -> list[str]:
    return [event.action for event in await audit.recent(app[SERVICES].pool, slack_user_id=slack_user_id)]


async def test_a_new_user_connects_and_the_tokens_are_stored(
    serve: Serve, fake_slack: FakeSlack, browser: aiohttp.ClientSession, fake_google: FakeGoogle
) -> None:
    app = await serve()
    events: list[Reconnected] = []

    async def record(event: Reconnected) -> None:
        events.append(event)

    app[SERVICES].hooks.register(record)
    fake_google.consent.email = "New.User@gmail.com"

    status, page, _ = await visit(browser, owner_link(app, fake_slack, "U0NEW", slack_team_id="T0TEAM"))

    assert status == 200
    assert "Gmail이 연결되었습니다" in page and "new.user@gmail.com" in page
    assert 'href="slack://open?team=T0TEAM"' in page
    account = await app[SERVICES].accounts.find_by_slack_id("U0NEW")
    assert account is not None
    assert (account.user_id, account.email, account.status) == ("U0NEW", "new.user@gmail.com", Status.HEALTHY)
    assert {READONLY, SEND} <= set(account.scopes)
    assert account.refresh_token_issued_at is not None and account.expiry is not None
    tokens = await app[SERVICES].accounts.read_tokens(account.id)
    assert tokens is not None and tokens.refresh_token in fake_google.issued_secrets
    assert "tokens.reconnected" in await audit_actions(app, "U0NEW")
    await app[SERVICES].hooks.drain()
    assert [(e.slack_user_id, e.email, e.account.id) for e in events] == [
        ("U0NEW", "new.user@gmail.com", account.id)
    ]
    for secret in fake_google.issued_secrets:
        assert secret not in page


async def test_the_consent_request_asks_for_offline_access_every_scope_and_pkce(
    serve: Serve,
    fake_slack: FakeSlack,
    browser: aiohttp.ClientSession,
    fake_google: FakeGoogle,
    database_url: str,
) -> None:
    await load_legacy_seed(database_url)
    app = await serve()

    google_url = await to_google(browser, owner_link(app, fake_slack, "U091UNVE41M"), fake_google)

    query = {key: values[0] for key, values in parse_qs(urlsplit(google_url).query).items()}
    assert google_url.startswith(fake_google.auth_uri)
    assert query["access_type"] == "offline"
    assert query["prompt"] == "consent"
    assert query["include_granted_scopes"] == "true"
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert set(query["scope"].split()) == {"openid", "email", READONLY, SEND}
    assert query["login_hint"] == "heejae@gmail.com"
    assert query["redirect_uri"] == app[SERVICES].reconnect.settings.oauth_redirect_uri
    assert len(query["state"]) >= 43  # 32 random bytes, base64url
    async with app[SERVICES].pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT state_hash, code_verifier FROM oauth_states WHERE provider = 'google'"
        )
    assert row["state_hash"] != query["state"].encode()  # only a hash is kept


async def test_the_browser_binding_cookie_is_http_only_and_lax(
    serve: Serve, fake_slack: FakeSlack, browser: aiohttp.ClientSession
) -> None:
    app = await serve()
    async with browser.get(owner_link(app, fake_slack, "U0COOKIE"), allow_redirects=False) as response:
        cookie = response.cookies["gmail_reconnect_binding"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/oauth/"
    assert not cookie["secure"]  # PUBLIC_BASE_URL is http://127.0.0.1 here; https deployments get Secure


async def test_a_legacy_row_is_reconnected_in_place(
    serve: Serve,
    fake_slack: FakeSlack,
    browser: aiohttp.ClientSession,
    fake_google: FakeGoogle,
    database_url: str,
) -> None:
    await load_legacy_seed(database_url)
    app = await serve()
    before = await app[SERVICES].accounts.find_by_slack_id("U0HAPPYBELL")
    assert before is not None and not before.has_refresh_token and before.is_equipped
    fake_google.consent.email = "goeun2dc@gmail.com"

    status, _, _ = await visit(browser, owner_link(app, fake_slack, "U0HAPPYBELL"))

    after = await app[SERVICES].accounts.find_by_slack_id("U0HAPPYBELL")
    assert status == 200 and after is not None
    assert (after.id, after.user_id, after.robing_id) == (before.id, before.user_id, before.robing_id)
    assert after.status is Status.HEALTHY and after.has_refresh_token and after.is_equipped
    assert after.metadata["username"] == "happybell80"  # other metadata is kept
    async with app[SERVICES].pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM gmail_tokens") == 6


async def test_reconnecting_keeps_the_old_refresh_token_when_google_sends_none(
    serve: Serve,
    fake_slack: FakeSlack,
    browser: aiohttp.ClientSession,
    fake_google: FakeGoogle,
    database_url: str,
) -> None:
    await load_legacy_seed(database_url)
    app = await serve()
    fake_google.consent.email = "heejae@gmail.com"
    fake_google.omit_refresh_token = True

    status, _, _ = await visit(browser, owner_link(app, fake_slack, "U091UNVE41M"))

    account = await app[SERVICES].accounts.find_by_slack_id("U091UNVE41M")
    assert status == 200 and account is not None and account.status is Status.HEALTHY
    tokens = await app[SERVICES].accounts.read_tokens(account.id)
    assert tokens is not None
    assert tokens.refresh_token == "1//heejae-refresh"
    assert tokens.access_token in fake_google.issued_secrets
    async with app[SERVICES].pool.acquire() as conn:
        config = await conn.fetchval("SELECT oauth_config FROM gmail_tokens WHERE id = $1", account.id)
    # The row now names our client; it kept the legacy shape (with a secret) that old readers expect.
    assert (
        config["client_id"] == fake_google.client_id and config["client_secret"] == fake_google.client_secret
    )


async def test_no_refresh_token_from_google_and_none_stored_is_refused(
    serve: Serve, fake_slack: FakeSlack, browser: aiohttp.ClientSession, fake_google: FakeGoogle
) -> None:
    app = await serve()
    fake_google.omit_refresh_token = True

    status, page, _ = await visit(browser, owner_link(app, fake_slack, "U0NORT"), **{"Accept-Language": "en"})

    assert status == 502 and "did not grant lasting access" in page
    assert await app[SERVICES].accounts.find_by_slack_id("U0NORT") is None


async def test_an_unlinked_row_with_the_same_email_is_adopted_not_duplicated(
    serve: Serve,
    fake_slack: FakeSlack,
    browser: aiohttp.ClientSession,
    fake_google: FakeGoogle,
    database_url: str,
) -> None:
    await load_legacy_seed(database_url)
    app = await serve()
    fake_google.consent.email = "cdctfm@gmail.com"

    status, _, _ = await visit(browser, owner_link(app, fake_slack, "U0CDCTFM"))

    account = await app[SERVICES].accounts.find_by_slack_id("U0CDCTFM")
    assert status == 200 and account is not None
    assert account.user_id == "69ae4ea9-a15f-5110-9f5d-6568e380fcfb"
    async with app[SERVICES].pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM gmail_tokens") == 6


async def test_cancel_at_google_changes_nothing(
    serve: Serve,
    fake_slack: FakeSlack,
    browser: aiohttp.ClientSession,
    fake_google: FakeGoogle,
    database_url: str,
) -> None:
    await load_legacy_seed(database_url)
    app = await serve()
    fake_google.consent.deny = True
    link = owner_link(app, fake_slack, "U091UNVE41M")

    status, page, _ = await visit(browser, link)

    assert status == 200 and "아무것도 변경되지 않았습니다" in page
    assert f'href="{link.replace("&", "&amp;")}"' in page  # "try again" is the same link
    assert fake_google.calls_to("/token") == []
    account = await app[SERVICES].accounts.find_by_slack_id("U091UNVE41M")
    assert account is not None and account.status is Status.UNKNOWN
    tokens = await app[SERVICES].accounts.read_tokens(account.id)
    assert tokens is not None and tokens.access_token == "ya29.heejae-access"


async def test_a_different_google_account_is_refused_and_a_switch_link_offered(
    serve: Serve,
    fake_slack: FakeSlack,
    browser: aiohttp.ClientSession,
    fake_google: FakeGoogle,
    database_url: str,
) -> None:
    await load_legacy_seed(database_url)
    app = await serve()
    fake_google.consent.email = "someone.else@gmail.com"

    status, page, _ = await visit(browser, owner_link(app, fake_slack, "U091UNVE41M"))

    assert status == 409
    assert "heejae@gmail.com" in page and "someone.else@gmail.com" in page
    account = await app[SERVICES].accounts.find_by_slack_id("U091UNVE41M")
    assert account is not None and account.email == "heejae@gmail.com"
    tokens = await app[SERVICES].accounts.read_tokens(account.id)
    assert tokens is not None and tokens.refresh_token == "1//heejae-refresh"

    # "Use this account instead" is a switch link for the same user; following it replaces the mailbox.
    switch_url = page.split('class="button primary" href="')[1].split('"')[0].replace("&amp;", "&")
    assert app[SERVICES].links.verify(parse_qs(urlsplit(switch_url).query)["t"][0]).purpose is Purpose.SWITCH
    fake_google.consent.email = "someone.else@gmail.com"
    status, page, _ = await visit(browser, switch_url)

    switched = await app[SERVICES].accounts.find_by_slack_id("U091UNVE41M")
    assert status == 200 and switched is not None
    assert (switched.id, switched.email) == (account.id, "someone.else@gmail.com")


async def test_a_replayed_state_stores_nothing_twice(
    serve: Serve, fake_slack: FakeSlack, browser: aiohttp.ClientSession, fake_google: FakeGoogle
) -> None:
    app = await serve()
    callback = await to_callback(browser, owner_link(app, fake_slack, "U0REPLAY"))
    first, _, _ = await visit(browser, callback)

    # The same browser reloading the page is told it is connected; nothing is exchanged again.
    again, page, _ = await visit(browser, callback)
    assert (first, again) == (200, 200) and "이미" in page
    assert len(fake_google.calls_to("/token")) == 1

    # Another browser replaying the URL gets a refusal.
    async with aiohttp.ClientSession() as stranger:
        status, page, _ = await visit(stranger, callback)
    assert status == 403 and "같은 브라우저" in page
    assert len(fake_google.calls_to("/token")) == 1


async def test_a_replayed_state_of_a_failed_flow_is_refused(
    serve: Serve, fake_slack: FakeSlack, browser: aiohttp.ClientSession, fake_google: FakeGoogle
) -> None:
    app = await serve()
    fake_google.consent.deny = True
    callback = await to_callback(browser, owner_link(app, fake_slack, "U0REPLAY2"))
    await visit(browser, callback)

    status, page, _ = await visit(browser, callback)

    assert status == 400 and "이미 사용된 로그인" in page


async def test_a_tampered_state_is_refused(
    serve: Serve, fake_slack: FakeSlack, browser: aiohttp.ClientSession, fake_google: FakeGoogle
) -> None:
    app = await serve()
    callback = await to_callback(browser, owner_link(app, fake_slack, "U0TAMPER"))
    state = parse_qs(urlsplit(callback).query)["state"][0]
    tampered = callback.replace(f"state={state}", f"state={state[:-2]}xx")

    status, page, _ = await visit(browser, tampered)

    assert status == 400 and "유효하지 않은 로그인" in page
    assert fake_google.calls_to("/token") == []
    assert await app[SERVICES].accounts.find_by_slack_id("U0TAMPER") is None
    # The genuine state was not used up by the forgery.
    status, _, _ = await visit(browser, callback)
    assert status == 200


async def test_an_expired_state_is_refused_with_the_same_link_to_retry(
    serve: Serve, fake_slack: FakeSlack, browser: aiohttp.ClientSession, fake_google: FakeGoogle
) -> None:
    app = await serve()
    link = owner_link(app, fake_slack, "U0SLOW")
    callback = await to_callback(browser, link)
    async with app[SERVICES].pool.acquire() as conn:
        await conn.execute("UPDATE oauth_states SET expires_at = now() - interval '1 second'")

    status, page, _ = await visit(browser, callback, **{"Accept-Language": "en"})

    assert status == 400 and "took too long" in page and "Nothing was changed" in page
    assert f'href="{link.replace("&", "&amp;")}"' in page
    assert fake_google.calls_to("/token") == []
    assert await app[SERVICES].accounts.find_by_slack_id("U0SLOW") is None


@pytest.mark.parametrize("cookie", [None, "x" * 43])
async def test_a_missing_or_wrong_cookie_is_refused_without_using_the_state(
    serve: Serve,
    fake_slack: FakeSlack,
    browser: aiohttp.ClientSession,
    fake_google: FakeGoogle,
    cookie: str | None,
) -> None:
    app = await serve()
    callback = await to_callback(browser, owner_link(app, fake_slack, "U0COOKIE"))
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
        if cookie:
            other.cookie_jar.update_cookies({"gmail_reconnect_binding": cookie}, response_url=URL(callback))
        status, page, _ = await visit(other, callback)

    assert status == 403 and "같은 브라우저" in page
    assert fake_google.calls_to("/token") == []
    status, _, _ = await visit(browser, callback)
    assert status == 200


async def test_fifty_concurrent_callbacks_with_one_state_store_once(
    serve: Serve, fake_slack: FakeSlack, browser: aiohttp.ClientSession, fake_google: FakeGoogle
) -> None:
    app = await serve()
    callback = await to_callback(browser, owner_link(app, fake_slack, "U0RACE"))

    results = await asyncio.gather(*(visit(browser, callback) for _ in range(50)))

    statuses = sorted(status for status, _, _ in results)
    connected = [page for status, page, _ in results if "Gmail이 연결되었습니다" in page]
    assert len(connected) == 1
    assert all(status in (200, 400) for status in statuses)
    assert len(fake_google.calls_to("/token")) == 1
    assert (await audit_actions(app, "U0RACE")).count("tokens.reconnected") == 1


async def test_opening_a_link_uses_nothing_up(
    serve: Serve, fake_slack: FakeSlack, browser: aiohttp.ClientSession, fake_google: FakeGoogle
) -> None:
    app = await serve()
    link = owner_link(app, fake_slack, "U0PREFETCH")
    async with aiohttp.ClientSession() as unfurler:  # Slack's unfurler or a browser prefetch
        for _ in range(3):
            async with unfurler.get(link, allow_redirects=False) as response:
                assert response.status == 302

    status, page, _ = await visit(browser, link)

    assert status == 200 and "Gmail이 연결되었습니다" in page


async def test_a_link_that_already_reconnected_says_so(
    serve: Serve, fake_slack: FakeSlack, browser: aiohttp.ClientSession, fake_google: FakeGoogle
) -> None:
    app = await serve()
    link = owner_link(app, fake_slack, "U0TWICE")
    fake_google.consent.email = "twice@gmail.com"
    await visit(browser, link)

    async with browser.get(link, allow_redirects=False, headers={"Accept-Language": "en"}) as response:
        page = await response.text()
        status = response.status

    assert status == 200 and "already connected" in page and "twice@gmail.com" in page
    assert len(fake_google.calls_to("/o/oauth2/auth")) == 1


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", "링크가 완전하지 않습니다"),
        ("?t=garbage", "사용할 수 없는 링크"),
        ("?t=a.b", "사용할 수 없는 링크"),
    ],
)
async def test_bad_links_get_a_clear_page(
    serve: Serve, browser: aiohttp.ClientSession, query: str, expected: str
) -> None:
    app = await serve()
    base = app[SERVICES].links.public_base_url

    status, page, _ = await visit(browser, f"{base}/oauth/google/start{query}")

    assert status == 400 and expected in page and "/gmail-status" in page


async def test_an_expired_link_says_so(
    serve: Serve, fake_slack: FakeSlack, browser: aiohttp.ClientSession
) -> None:
    app = await serve(LINK_TTL="1s")
    link = owner_link(app, fake_slack, "U0OLD")
    await asyncio.sleep(1.1)

    status, page, _ = await visit(browser, link, **{"Accept-Language": "en"})

    assert status == 400 and "This link has expired" in page


async def test_a_callback_without_state_explains_itself(serve: Serve, browser: aiohttp.ClientSession) -> None:
    app = await serve()
    status, page, _ = await visit(browser, app[SERVICES].reconnect.settings.oauth_redirect_uri + "?code=abc")
    assert status == 400 and "Slack에서 시작해 주세요" in page


@pytest.mark.parametrize(
    ("failure", "status", "text"),
    [
        ({"status": 503, "times": 1}, 503, "Google is not answering right now"),
        ({"status": 502, "times": 1, "body": "<html><body>Bad gateway</body></html>"}, 503, "not answering"),
        ({"status": 400, "times": 1, "error": "invalid_grant"}, 400, "no longer valid"),
        ({"status": 400, "times": 1, "error": "invalid_request"}, 502, "could not be used"),
    ],
)
async def test_token_endpoint_failures_become_pages_and_store_nothing(
    serve: Serve,
    fake_slack: FakeSlack,
    browser: aiohttp.ClientSession,
    fake_google: FakeGoogle,
    failure: dict[str, object],
    status: int,
    text: str,
) -> None:
    app = await serve()
    link = owner_link(app, fake_slack, "U0FAIL")
    callback = await to_callback(browser, link)
    fake_google.fail_token(**failure)  # type: ignore[arg-type]

    got, page, _ = await visit(browser, callback, **{"Accept-Language": "en"})

    assert (got, text in page) == (status, True)
    assert "Try again" in page and "Traceback" not in page
    assert await app[SERVICES].accounts.find_by_slack_id("U0FAIL") is None


async def test_a_slow_google_gives_a_page_not_a_hang(
    serve: Serve, fake_slack: FakeSlack, browser: aiohttp.ClientSession, fake_google: FakeGoogle
) -> None:
    app = await serve()
    app[SERVICES].reconnect.consent.timeout = 0.3
    callback = await to_callback(browser, owner_link(app, fake_slack, "U0SLOWG"))
    fake_google.token_delay = 1.0

    status, page, _ = await visit(browser, callback, **{"Accept-Language": "en"})

    assert status == 503 and "not answering" in page
    assert await app[SERVICES].accounts.find_by_slack_id("U0SLOWG") is None


async def test_the_email_comes_from_userinfo_when_there_is_no_id_token(
    serve: Serve, fake_slack: FakeSlack, browser: aiohttp.ClientSession, fake_google: FakeGoogle
) -> None:
    app = await serve()
    fake_google.omit_id_token = True
    fake_google.consent.email = "via.userinfo@gmail.com"

    status, _, _ = await visit(browser, owner_link(app, fake_slack, "U0USERINFO"))

    account = await app[SERVICES].accounts.find_by_slack_id("U0USERINFO")
    assert status == 200 and account is not None and account.email == "via.userinfo@gmail.com"
    assert len(fake_google.calls_to("/v1/userinfo")) == 1


async def test_the_email_of_a_verified_id_token_is_used_without_userinfo(
    serve: Serve, fake_slack: FakeSlack, browser: aiohttp.ClientSession, fake_google: FakeGoogle
) -> None:
    app = await serve()
    fake_google.consent.email = "signed@gmail.com"

    status, _, _ = await visit(browser, owner_link(app, fake_slack, "U0SIGNED"))

    account = await app[SERVICES].accounts.find_by_slack_id("U0SIGNED")
    assert status == 200 and account is not None and account.email == "signed@gmail.com"
    assert [call.status for call in fake_google.calls_to("/oauth2/v1/certs")] == [200]
    assert fake_google.calls_to("/v1/userinfo") == []


def _forged(fake: FakeGoogle) -> None:
    fake.id_token_key = "unknown"


def _unsigned(fake: FakeGoogle) -> None:
    fake.id_token_key = "none"


def _claims(**claims: object) -> Callable[[FakeGoogle], None]:
    def change(fake: FakeGoogle) -> None:
        fake.id_token_claims = {**fake.id_token_claims, **claims}

    return change


def _certs_down(fake: FakeGoogle) -> None:
    fake.fail_certs(500)


UNTRUSTED = {
    "signed by another key": _forged,
    "alg none": _unsigned,
    "wrong audience": _claims(aud="another-client.apps.googleusercontent.com"),
    "wrong issuer": _claims(iss="https://accounts.google.com.example"),
    "expired": _claims(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600),
    "certs endpoint down": _certs_down,
}


@pytest.mark.parametrize("untrusted", UNTRUSTED.values(), ids=UNTRUSTED.keys())
async def test_an_id_token_that_does_not_verify_is_ignored_and_the_email_comes_from_userinfo(
    serve: Serve,
    fake_slack: FakeSlack,
    browser: aiohttp.ClientSession,
    fake_google: FakeGoogle,
    untrusted: Callable[[FakeGoogle], None],
) -> None:
    app = await serve()
    fake_google.consent.email = "mallory@gmail.com"
    fake_google.id_token_claims = {"email": "victim@gmail.com"}  # what the token claims, unlike userinfo
    untrusted(fake_google)

    status, page, _ = await visit(browser, owner_link(app, fake_slack, "U0MALLORY"))

    account = await app[SERVICES].accounts.find_by_slack_id("U0MALLORY")
    assert status == 200 and "mallory@gmail.com" in page and "victim@gmail.com" not in page
    assert account is not None and account.email == "mallory@gmail.com"
    assert len(fake_google.calls_to("/oauth2/v1/certs")) == 1
    assert [call.status for call in fake_google.calls_to("/v1/userinfo")] == [200]


async def test_a_forged_id_token_cannot_pass_for_the_linked_mailbox(
    serve: Serve,
    fake_slack: FakeSlack,
    browser: aiohttp.ClientSession,
    fake_google: FakeGoogle,
    database_url: str,
) -> None:
    await load_legacy_seed(database_url)
    app = await serve()
    fake_google.consent.email = "someone.else@gmail.com"
    fake_google.id_token_key = "unknown"
    fake_google.id_token_claims = {"email": "heejae@gmail.com"}  # the mailbox U091UNVE41M is linked to

    status, page, _ = await visit(browser, owner_link(app, fake_slack, "U091UNVE41M"))

    assert status == 409 and "someone.else@gmail.com" in page
    account = await app[SERVICES].accounts.find_by_slack_id("U091UNVE41M")
    assert account is not None and account.email == "heejae@gmail.com"
    tokens = await app[SERVICES].accounts.read_tokens(account.id)
    assert tokens is not None and tokens.refresh_token == "1//heejae-refresh"


async def test_a_failing_hook_does_not_break_the_success_page(
    serve: Serve,
    fake_slack: FakeSlack,
    browser: aiohttp.ClientSession,
    fake_google: FakeGoogle,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = await serve()
    calls: list[str] = []

    async def broken(event: Reconnected) -> None:
        raise RuntimeError("Slack is down")

    async def working(event: Reconnected) -> None:
        calls.append(event.slack_user_id)

    app[SERVICES].hooks.register(broken)
    app[SERVICES].hooks.register(working)

    status, _, _ = await visit(browser, owner_link(app, fake_slack, "U0HOOK"))
    await app[SERVICES].hooks.drain()

    assert status == 200 and calls == ["U0HOOK"]
    assert any("reconnection hook" in record.getMessage() and record.exc_info for record in caplog.records)


async def test_pages_follow_accept_language_and_carry_security_headers(
    serve: Serve, browser: aiohttp.ClientSession
) -> None:
    app = await serve()
    url = app[SERVICES].links.public_base_url + "/oauth/google/start"
    async with browser.get(url, headers={"Accept-Language": "en-GB,en;q=0.9"}) as response:
        english, headers = await response.text(), response.headers
    async with browser.get(url, headers={"Accept-Language": "fr-FR"}) as response:
        default = await response.text()

    assert '<html lang="en">' in english and "This link is incomplete" in english
    assert '<html lang="ko">' in default
    assert headers["Cache-Control"] == "no-store" and headers["Referrer-Policy"] == "no-referrer"
    assert "default-src 'none'" in headers["Content-Security-Policy"]


async def test_the_verifier_is_encrypted_when_encryption_is_on(
    serve: Serve, fake_slack: FakeSlack, browser: aiohttp.ClientSession, fake_google: FakeGoogle
) -> None:
    from storage.crypto import generate_key, is_encrypted

    app = await serve(TOKEN_ENCRYPTION_KEYS=generate_key())
    callback = await to_callback(browser, owner_link(app, fake_slack, "U0ENC"))
    async with app[SERVICES].pool.acquire() as conn:
        verifier = await conn.fetchval("SELECT code_verifier FROM oauth_states")
    assert is_encrypted(verifier)

    status, _, _ = await visit(browser, callback)

    assert status == 200
    async with app[SERVICES].pool.acquire() as conn:
        token_data = await conn.fetchval("SELECT token_data FROM gmail_tokens WHERE user_id = 'U0ENC'")
    assert "access_token" not in token_data and is_encrypted(token_data["encrypted"]["refresh_token"])


async def test_with_encryption_on_a_reconnected_legacy_row_holds_no_client_secret(
    serve: Serve,
    fake_slack: FakeSlack,
    browser: aiohttp.ClientSession,
    fake_google: FakeGoogle,
    database_url: str,
) -> None:
    from storage.crypto import generate_key

    await load_legacy_seed(database_url)
    app = await serve(TOKEN_ENCRYPTION_KEYS=generate_key())
    fake_google.consent.email = "heejae@gmail.com"

    status, _, _ = await visit(browser, owner_link(app, fake_slack, "U091UNVE41M"))

    account = await app[SERVICES].accounts.find_by_slack_id("U091UNVE41M")
    assert status == 200 and account is not None
    async with app[SERVICES].pool.acquire() as conn:
        row = await conn.fetchval("SELECT row_to_json(g)::text FROM gmail_tokens g WHERE id = $1", account.id)
    assert fake_google.client_secret not in row and "GOCSPX-legacy" not in row
    # The bot still refreshes the row, with its own client.
    fresh = await app[SERVICES].tokens.access(account.id, force_refresh=True)
    assert fresh.outcome is Outcome.REFRESHED


async def test_old_states_are_forgotten(
    serve: Serve, fake_slack: FakeSlack, browser: aiohttp.ClientSession
) -> None:
    app = await serve()
    pool: asyncpg.Pool = app[SERVICES].pool
    await location(browser, owner_link(app, fake_slack, "U0GC"))
    await pool.execute("UPDATE oauth_states SET expires_at = now() - interval '2 days'")

    await location(browser, owner_link(app, fake_slack, "U0GC"))

    assert await pool.fetchval("SELECT count(*) FROM oauth_states") == 1


async def test_a_database_outage_shows_a_page_not_a_traceback(
    serve: Serve, fake_slack: FakeSlack, browser: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    app = await serve()
    link = owner_link(app, fake_slack, "U0DBDOWN")
    await app[SERVICES].pool.close()

    status, page, _ = await visit(browser, link, **{"Accept-Language": "en"})

    assert status == 503 and "A short outage" in page and "Traceback" not in page
    assert "<html" in page and "U0DBDOWN" not in page
    logged = [record for record in caplog.records if record.name == "handlers.http.errors"]
    assert logged and not any(record.exc_info for record in logged)  # expected: one line, no traceback


async def test_an_unexpected_error_shows_a_page_and_logs_the_traceback(
    serve: Serve, fake_slack: FakeSlack, browser: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    app = await serve()
    link = owner_link(app, fake_slack, "U0BROKEN")
    await app[SERVICES].pool.execute("DROP TABLE oauth_states CASCADE")  # a bug, not an outage

    status, page, _ = await visit(browser, link, **{"Accept-Language": "en"})

    assert status == 500 and "Something went wrong" in page and "Traceback" not in page
    assert "<html" in page and "U0BROKEN" not in page
    assert any(record.exc_info for record in caplog.records if record.name == "handlers.http.errors")
