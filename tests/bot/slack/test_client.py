"""Slack users' languages: users.info, then kept in memory and in slack_locales; a database that fails only
costs the lookup its shortcut."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

import asyncpg
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.slack.client import (
    LIST_PAGE_SIZE,
    PAGE_WORTH,
    PRIME_AT_LEAST,
    SlackUsers,
    create_bolt_app,
    create_web_client,
)
from storage.pool import create_pool
from storage.slack_locales import SlackLocales
from tests.fakes.slack import FakeSlack
from tests.helpers import BASE_ENV, eventually


def client_for(fake: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=BASE_ENV["SLACK_BOT_TOKEN"], base_url=fake.base_url)


async def test_bolt_uses_our_client_without_a_warning_when_slack_bot_token_is_in_the_environment(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # As under Docker's --env-file: the token is in the process environment, where Bolt looks for one itself.
    monkeypatch.setenv("SLACK_BOT_TOKEN", BASE_ENV["SLACK_BOT_TOKEN"])
    settings = make_settings()
    client = create_web_client(settings)

    bolt = create_bolt_app(settings, client=client)

    assert bolt.client is client
    assert [r.getMessage() for r in caplog.records if r.name.startswith("slack_bolt")] == []
    assert os.environ["SLACK_BOT_TOKEN"] == BASE_ENV["SLACK_BOT_TOKEN"]


async def test_a_language_read_along_with_an_account_is_used_without_asking_slack(
    fake_slack: FakeSlack, pool: asyncpg.Pool
) -> None:
    fake_slack.add_user("U0KNOWN", locale="ko-KR")
    fake_slack.add_user("U0NEW", locale="en-US")
    users = SlackUsers(client_for(fake_slack), "ko", stored=SlackLocales(pool))

    assert users.remember("U0KNOWN", "en-GB") == "en"
    assert users.remember("U0NEW", None) is None  # the database has none: the next lookup asks Slack at once

    assert await users.locale("U0KNOWN") == "en"
    assert await users.locale("U0NEW") == "en"
    assert [call.args["user"] for call in fake_slack.calls_to("users.info")] == ["U0NEW"]
    assert await pool.fetchval("SELECT locale FROM slack_locales WHERE slack_user_id = 'U0NEW'") == "en-US"


async def test_a_database_that_fails_falls_back_to_slack(
    fake_slack: FakeSlack, migrated_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake_slack.add_user("U0A", locale="en-US")
    closed = await create_pool(migrated_url)
    await closed.close()
    users = SlackUsers(client_for(fake_slack), "ko", stored=SlackLocales(closed))

    with caplog.at_level(logging.WARNING, logger="bot.slack.client"):
        assert await users.locale("U0A") == "en"

    assert len(fake_slack.calls_to("users.info")) == 1
    assert [record.getMessage().split(":")[0] for record in caplog.records] == [
        "The stored language of U0A could not be read",
        "The language of U0A could not be stored",
    ]


async def test_many_languages_are_learned_from_users_list_pages(
    fake_slack: FakeSlack, pool: asyncpg.Pool
) -> None:
    wanted = [f"U0W{n:03d}" for n in range(PRIME_AT_LEAST + 5)]
    for user_id in ["U0OTHER", *wanted]:
        fake_slack.add_user(user_id, locale="en-US")
    users = SlackUsers(client_for(fake_slack), "ko", stored=SlackLocales(pool))

    assert await users.prime(wanted) == len(wanted)

    assert [await users.locale(user_id) for user_id in wanted] == ["en"] * len(wanted)
    assert fake_slack.calls_to("users.info") == []
    (listed,) = fake_slack.calls_to("users.list")
    assert listed.args["include_locale"] in ("1", 1, True, "true")
    stored = await pool.fetch("SELECT slack_user_id FROM slack_locales ORDER BY 1")
    assert [row["slack_user_id"] for row in stored] == wanted  # only the users wanted


async def test_a_few_users_are_left_to_users_info(fake_slack: FakeSlack, pool: asyncpg.Pool) -> None:
    few = [f"U0F{n:02d}" for n in range(PRIME_AT_LEAST - 1)]
    users = SlackUsers(client_for(fake_slack), "ko", stored=SlackLocales(pool))

    assert await users.prime(few) == 0
    assert fake_slack.calls_to("users.list") == []


async def test_paging_stops_when_the_pages_stop_paying_for_themselves(
    fake_slack: FakeSlack, pool: asyncpg.Pool
) -> None:
    # The users wanted come after PAGE_WORTH pages of others: reading on would cost more than users.info.
    for n in range(LIST_PAGE_SIZE * (PRIME_AT_LEAST // PAGE_WORTH)):
        fake_slack.add_user(f"U1{n:05d}")
    wanted = [f"U2{n:05d}" for n in range(PRIME_AT_LEAST)]
    for user_id in wanted:
        fake_slack.add_user(user_id, locale="en-US")
    users = SlackUsers(client_for(fake_slack), "ko", stored=SlackLocales(pool))

    assert await users.prime(wanted) == 0

    assert len(fake_slack.calls_to("users.list")) == PRIME_AT_LEAST // PAGE_WORTH
    assert await users.locale(wanted[0]) == "en"  # from users.info
    assert len(fake_slack.calls_to("users.info")) == 1


async def test_users_list_refused_leaves_the_languages_to_users_info(
    fake_slack: FakeSlack, pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    wanted = [f"U0R{n:02d}" for n in range(PRIME_AT_LEAST)]
    for user_id in wanted:
        fake_slack.add_user(user_id, locale="en-US")
    fake_slack.fail("users.list", error="missing_scope")
    users = SlackUsers(client_for(fake_slack), "ko", stored=SlackLocales(pool))

    with caplog.at_level(logging.WARNING, logger="bot.slack.client"):
        assert await users.prime(wanted) == 0

    assert "users.list failed (missing_scope)" in caplog.text
    assert await users.locale(wanted[0]) == "en"
    assert await pool.fetchval("SELECT count(*) FROM slack_locales") == 1  # the one users.info gave


async def test_each_page_is_stored_and_lets_go_of_its_users_while_the_next_is_read(
    fake_slack: FakeSlack, pool: asyncpg.Pool
) -> None:
    # The first page holds the first half of the users wanted, the second the rest.
    wanted = [f"U0P{n:03d}" for n in range(2 * PRIME_AT_LEAST)]
    for n, user_id in enumerate(wanted[:PRIME_AT_LEAST]):
        fake_slack.add_user(user_id, locale="en-US")
        fake_slack.add_user(f"U1OTHER{n:03d}")
    for n in range(LIST_PAGE_SIZE - 2 * PRIME_AT_LEAST):
        fake_slack.add_user(f"U2OTHER{n:03d}")
    for user_id in wanted[PRIME_AT_LEAST:]:
        fake_slack.add_user(user_id, locale="en-US")
    gate = fake_slack.hold("users.list", after=1)
    users = SlackUsers(client_for(fake_slack), "ko", stored=SlackLocales(pool))
    pages: list[list[str]] = []

    async def found(user_ids: list[str]) -> None:
        pages.append(user_ids)

    priming = asyncio.create_task(users.prime(wanted, found=found))
    on_the_first, on_the_second = (
        asyncio.create_task(users.listed(user)) for user in (wanted[0], wanted[-1])
    )
    await on_the_first
    await eventually(lambda: len(fake_slack.calls_to("users.list")) == 2)
    try:
        stored = await pool.fetch("SELECT slack_user_id FROM slack_locales ORDER BY 1")
        assert [row["slack_user_id"] for row in stored] == wanted[:PRIME_AT_LEAST]
        assert pages == [wanted[:PRIME_AT_LEAST]]
        assert not on_the_second.done()  # its page is not answered yet
        await users.listed("U0NOTWANTED")  # nobody looks for this one: at once
    finally:
        gate.set()

    assert await priming == len(wanted)
    await on_the_second
    assert pages == [wanted[:PRIME_AT_LEAST], wanted[PRIME_AT_LEAST:]]
    assert [await users.locale(user_id) for user_id in wanted] == ["en"] * len(wanted)
    assert fake_slack.calls_to("users.info") == []


async def test_the_users_a_failed_or_cancelled_prime_did_not_find_are_let_go(
    fake_slack: FakeSlack, pool: asyncpg.Pool
) -> None:
    wanted = [f"U0C{n:02d}" for n in range(PRIME_AT_LEAST)]
    for user_id in wanted:
        fake_slack.add_user(user_id, locale="en-US")
    users = SlackUsers(client_for(fake_slack), "ko", stored=SlackLocales(pool))
    fake_slack.fail("users.list", error="internal_error")
    assert await users.prime(wanted) == 0
    await users.listed(wanted[0])
    assert await users.locale(wanted[0]) == "en"  # from users.info
    assert len(fake_slack.calls_to("users.info")) == 1

    gate = fake_slack.hold("users.list")
    priming = asyncio.create_task(users.prime(wanted))
    await eventually(lambda: len(fake_slack.calls_to("users.list")) == 2)
    waiting = asyncio.create_task(users.listed(wanted[1]))
    try:
        priming.cancel()
        with pytest.raises(asyncio.CancelledError):
            await priming
        await waiting
    finally:
        gate.set()
    assert await users.locale(wanted[1]) == "en"  # from users.info
    assert len(fake_slack.calls_to("users.info")) == 2
