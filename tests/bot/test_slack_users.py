"""Slack users' languages: users.info, then kept in memory and in slack_locales; a database that fails only
costs the lookup its shortcut."""

from __future__ import annotations

import logging

import asyncpg
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack_client import SlackUsers
from storage.pool import create_pool
from storage.slack_locales import SlackLocales
from tests.conftest import BASE_ENV
from tests.fakes.slack import FakeSlack


def client_for(fake: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=BASE_ENV["SLACK_BOT_TOKEN"], base_url=fake.base_url)


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

    with caplog.at_level(logging.WARNING, logger="bot.slack_client"):
        assert await users.locale("U0A") == "en"

    assert len(fake_slack.calls_to("users.info")) == 1
    assert [record.getMessage().split(":")[0] for record in caplog.records] == [
        "The stored language of U0A could not be read",
        "The language of U0A could not be stored",
    ]
