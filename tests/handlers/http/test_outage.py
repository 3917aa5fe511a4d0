"""While the database is down: every surface says it is a short outage and what to do, in the user's language,
serves what it can, and works again by itself when the database is back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from bot.appkeys import SERVICES
from bot.i18n import text
from storage.api_keys import Scope
from tests.fakes.slack import FakeSlack, slash_command_body
from tests.helpers import DatabaseProxy, Serve, call, eventually, post


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[DatabaseProxy]:
    line = DatabaseProxy(database_url)
    await line.start()
    yield line
    await line.cut()


async def serve_through(serve: Serve, proxy: DatabaseProxy) -> web.Application:
    return await serve(DATABASE_URL=proxy.url)


async def test_the_api_answers_503_with_retry_after_and_recovers(serve: Serve, proxy: DatabaseProxy) -> None:
    app = await serve_through(serve, proxy)
    _, key = await app[SERVICES].api_keys.create("skill-email", scopes=[Scope.REGISTRY], actor="test")

    await proxy.cut()
    down = await call(app, "GET", "/api/v1/accounts", key=key)
    await proxy.start()
    back = await call(app, "GET", "/api/v1/accounts", key=key)

    assert down.status == 503 and down.headers["Retry-After"] == "30"
    assert down.json()["error"] == "unavailable" and "Try again in a minute" in down.json()["message"]
    assert back.status == 200


@pytest.mark.parametrize(("accept_language", "locale"), [("ko-KR,ko;q=0.9", "ko"), ("en-US,en;q=0.8", "en")])
async def test_a_consent_link_during_an_outage_is_a_page_with_try_again(
    serve: Serve, proxy: DatabaseProxy, accept_language: str, locale: str
) -> None:
    app = await serve_through(serve, proxy)
    link = app[SERVICES].links.new_url("U0WAITING")

    await proxy.cut()
    async with (
        aiohttp.ClientSession() as browser,
        browser.get(link, headers={"Accept-Language": accept_language}, allow_redirects=False) as response,
    ):
        status, page = response.status, await response.text()
    await proxy.start()

    assert status == 503 and response.headers["Retry-After"] == "30"
    assert text(locale, "page.unavailable.title") in page
    assert "/oauth/google/start?t=" in page  # Try again: the same link
    async with aiohttp.ClientSession() as browser, browser.get(link, allow_redirects=False) as again:
        assert again.status == 302  # on to Google, now that the database is back


async def test_metrics_keep_serving_the_counters(serve: Serve, proxy: DatabaseProxy) -> None:
    app = await serve_through(serve, proxy)
    url = app[SERVICES].links.public_base_url + "/metrics"
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as up:
            assert up.status == 200 and "gmail_reconnect_database_up 1.0" in await up.text()
        await proxy.cut()
        async with session.get(url) as down:
            body = await down.text()
        await proxy.start()

    assert down.status == 200
    assert "gmail_reconnect_database_up 0.0" in body
    assert "gmail_reconnect_refreshes_total" in body  # this process's counters are still there


async def test_gmail_status_during_an_outage_says_so_in_the_users_language(
    serve: Serve, proxy: DatabaseProxy, fake_slack: FakeSlack
) -> None:
    fake_slack.add_user("U0OUTAGE", locale="en-US")
    app = await serve_through(serve, proxy)

    await proxy.cut()
    status, _ = await post(
        app, slash_command_body(user_id="U0OUTAGE", response_url=fake_slack.response_url())
    )
    await eventually(lambda: len(fake_slack.responses) == 1)
    await proxy.start()

    assert status == 200
    assert fake_slack.responses[0]["text"] == text("en", "slack.error.database")
