"""A listener that fails after its ack: the traceback is logged, and the user who asked is told, in their
language, through the request's response URL (or, for an App Home button, in their DM)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.appkeys import BOLT, SERVICES
from bot.i18n import text
from bot.slack.blocks.elements import DISCONNECT_ACTION
from handlers.slack.errors import after_ack
from tests.fakes.slack import FakeSlack, app_home_opened, block_actions_body, event_body, slash_command_body
from tests.helpers import Serve, eventually, post


async def break_the_database(serve: Serve) -> object:
    """The application, with its accounts table gone: every listener that reads an account fails."""
    app = await serve()
    await app[SERVICES].pool.execute("DROP TABLE gmail_tokens CASCADE")
    return app


@pytest.mark.parametrize(("slack_locale", "locale"), [("ko-KR", "ko"), ("en-US", "en")])
async def test_a_failing_command_tells_the_user_in_their_language_and_logs_the_traceback(
    serve: Serve, fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture, slack_locale: str, locale: str
) -> None:
    fake_slack.add_user("U0BROKEN", locale=slack_locale)
    app = await break_the_database(serve)

    status, _ = await post(
        app, slash_command_body(user_id="U0BROKEN", response_url=fake_slack.response_url())
    )

    assert status == 200  # acknowledged before the work that failed
    await eventually(lambda: len(fake_slack.responses) == 1)
    answer = fake_slack.responses[0]
    assert answer["text"] == text(locale, "slack.error.generic")
    assert answer["response_type"] == "ephemeral"
    assert "gmail_tokens" not in answer["text"]  # nothing of the failure itself reaches the user
    failures = [r for r in caplog.records if r.name == "handlers.slack.errors" and r.levelno == logging.ERROR]
    assert failures and failures[0].exc_info is not None
    assert "gmail_tokens" in str(failures[0].exc_info[1])  # the real cause, with its traceback, in the log


async def test_a_failing_app_home_button_is_answered_in_the_dm(serve: Serve, fake_slack: FakeSlack) -> None:
    fake_slack.add_user("U0HOME", locale="en-US")
    app = await break_the_database(serve)

    status, _ = await post(app, block_actions_body(DISCONNECT_ACTION, user_id="U0HOME", value="1"))

    assert status == 200
    await eventually(lambda: bool(fake_slack.calls_to("chat.postMessage")))
    [call] = fake_slack.calls_to("chat.postMessage")
    assert call.args["channel"] == "U0HOME"
    assert call.args["text"] == text("en", "slack.error.generic")


async def test_a_failing_event_is_only_logged(
    serve: Serve, fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    fake_slack.add_user("U0OPEN", locale="en-US")
    app = await break_the_database(serve)

    status, _ = await post(app, event_body(app_home_opened("U0OPEN")), content_type="application/json")

    assert status == 200
    await eventually(
        lambda: any(r.name == "handlers.slack.errors" and r.levelno == logging.ERROR for r in caplog.records)
    )
    assert fake_slack.calls_to("chat.postMessage") == [] and fake_slack.responses == []


async def test_work_that_fails_at_once_after_the_ack_still_answers_slack_200(
    serve: Serve, fake_slack: FakeSlack
) -> None:
    app = await serve()
    bolt, services = app[BOLT], app[SERVICES]

    async def fails_at_once() -> None:
        raise RuntimeError("failed within a millisecond of the ack")

    async def through_after_ack(
        ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient
    ) -> None:
        await after_ack(services, ack=ack, body=command, respond=respond, client=client, work=fails_at_once)

    bolt.command("/through-after-ack")(through_after_ack)
    fake_slack.add_user("U0QUICK", locale="en-US")

    kept, _ = await post(
        app,
        slash_command_body("/through-after-ack", user_id="U0QUICK", response_url=fake_slack.response_url()),
    )

    assert kept == 200
    await eventually(lambda: len(fake_slack.responses) == 1)
    assert fake_slack.responses[0]["text"] == text("en", "slack.error.generic")
