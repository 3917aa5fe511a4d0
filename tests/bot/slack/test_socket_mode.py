"""Socket Mode over real HTTP and a real WebSocket to the fake Slack: the web server never waits for Slack, a
wrong app token or an unreachable Slack is named in one line per attempt, retried with backoff, and every
resource is closed on shutdown."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from bot.app import create_app
from bot.appkeys import SOCKET_MODE
from bot.config import Settings
from bot.slack.socket_mode import LAST_RETRY_SECONDS, SocketMode, retry_delay
from tests.fakes.google import FakeGoogle
from tests.fakes.slack import FakeSlack, app_home_opened, event_body
from tests.helpers import eventually, free_port, google_env, settled

APP_TOKEN = "xapp-1-A0APP-1-test-app-level-token"
WRONG_APP_TOKEN = "xapp-1-A0APP-1-a-token-slack-never-issued"
ADA = "U0ADA"


@asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[tuple[TestServer, SocketMode, float]]:
    """The application on its PORT, its Socket Mode, and how long it took until /healthz answered 200."""
    began = time.monotonic()
    server = TestServer(create_app(settings), host="127.0.0.1", port=settings.port)
    await server.start_server()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{settings.port}/healthz") as response,
        ):
            assert response.status == 200
        yield server, server.app[SOCKET_MODE], time.monotonic() - began
    finally:
        await server.close()


@pytest.fixture
def socket_settings(
    migrated_url: str, fake_google: FakeGoogle, fake_slack: FakeSlack, make_settings: Callable[..., Settings]
) -> Callable[..., Settings]:
    """Settings for a served application in Socket Mode, on the fakes, with overrides."""

    def make(**env: str) -> Settings:
        port = free_port()
        return make_settings(
            **{
                "DATABASE_URL": migrated_url,
                "PORT": str(port),
                "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
                "SLACK_API_URL": fake_slack.base_url,
                **google_env(fake_google),
                **env,
            }
        )

    return make


def socket_mode_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "bot.slack.socket_mode"]


def delays(records: list[logging.LogRecord]) -> list[float]:
    return [float(re.findall(r"retrying in ([\d.]+) s", record.getMessage())[0]) for record in records]


def assert_closed(socket_mode: SocketMode) -> None:
    assert socket_mode.handler is not None
    client = socket_mode.handler.client
    assert client.closed and client.aiohttp_client_session.closed
    assert socket_mode._task is not None and socket_mode._task.done()
    assert client.message_processor.done()


def assert_no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert [record.getMessage() for record in caplog.records if record.exc_info] == []
    assert "Unclosed" not in caplog.text and "asynchronous generator" not in caplog.text


def test_the_delays_double_from_one_second_to_a_minute_with_jitter() -> None:
    for failures, top in ((1, 1.0), (2, 2.0), (3, 4.0), (7, LAST_RETRY_SECONDS), (5000, LAST_RETRY_SECONDS)):
        for _ in range(50):
            assert 0.75 * top <= retry_delay(failures) <= top


async def test_a_wrong_app_token_leaves_the_web_server_up_and_names_slack_app_token(
    socket_settings: Callable[..., Settings], fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    settings = socket_settings(SLACK_APP_TOKEN=WRONG_APP_TOKEN)
    async with served(settings) as (_, socket_mode, took):
        assert took < 5
        calls = await settled(fake_slack, "apps.connections.open", 3)
        assert [call.token for call in calls[:3]] == [WRONG_APP_TOKEN] * 3
        first_gap, second_gap = calls[1].at - calls[0].at, calls[2].at - calls[1].at
        assert 0.7 < first_gap < second_gap  # 1 s, then 2 s, each less up to a quarter
        assert not socket_mode.connected.is_set()
    assert_closed(socket_mode)

    lines = socket_mode_lines(caplog)[:2]
    assert all(
        "apps.connections.open answered invalid_auth: SLACK_APP_TOKEN is not a valid app-level token (xapp-…) "
        "with connections:write" in record.getMessage()
        for record in lines
    ), [record.getMessage() for record in lines]
    assert delays(lines)[0] < delays(lines)[1]
    assert_no_tracebacks(caplog)
    assert WRONG_APP_TOKEN not in caplog.text


async def test_an_unreachable_slack_leaves_the_web_server_up_and_names_slack_api_url(
    socket_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/api/"
    async with served(socket_settings(SLACK_APP_TOKEN=APP_TOKEN, SLACK_API_URL=closed)) as (
        _,
        socket_mode,
        took,
    ):
        assert took < 5
        await eventually(lambda: len(socket_mode_lines(caplog)) >= 2, seconds=10)
    assert_closed(socket_mode)

    lines = socket_mode_lines(caplog)
    assert all(
        f"Slack's Web API at SLACK_API_URL ({closed}) could not be reached" in r.getMessage() for r in lines
    )
    assert delays(lines)[0] < delays(lines)[1]
    assert_no_tracebacks(caplog)
    assert APP_TOKEN not in caplog.text


async def test_with_the_right_app_token_events_arrive_over_the_websocket(
    socket_settings: Callable[..., Settings], fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    fake_slack.app_token = APP_TOKEN
    fake_slack.add_user(ADA, locale="en-US")
    async with served(socket_settings(SLACK_APP_TOKEN=APP_TOKEN)) as (_, socket_mode, _took):
        await asyncio.wait_for(socket_mode.connected.wait(), 10)
        await eventually(lambda: fake_slack.open_sockets == 1)
        envelope_id = await fake_slack.send_envelope(json.loads(event_body(app_home_opened(ADA))))
        await eventually(lambda: {"envelope_id": envelope_id} in fake_slack.socket_replies)
        [published] = await settled(fake_slack, "views.publish")
        assert published.args["user_id"] == ADA
    assert_closed(socket_mode)
    await eventually(lambda: fake_slack.open_sockets == 0)
    assert fake_slack.socket_connections == 1
    assert [r.getMessage() for r in socket_mode_lines(caplog)] == ["Connected to Slack in Socket Mode"]
    assert_no_tracebacks(caplog)
    assert APP_TOKEN not in caplog.text


async def test_an_event_redelivered_over_the_websocket_is_acknowledged_and_not_run_again(
    socket_settings: Callable[..., Settings], fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    fake_slack.app_token = APP_TOKEN
    fake_slack.add_user(ADA, locale="en-US")
    event = json.loads(event_body(app_home_opened(ADA)))
    async with served(socket_settings(SLACK_APP_TOKEN=APP_TOKEN)) as (_, socket_mode, _took):
        await asyncio.wait_for(socket_mode.connected.wait(), 10)
        await eventually(lambda: fake_slack.open_sockets == 1)
        first = await fake_slack.send_envelope(event)
        await settled(fake_slack, "views.publish")
        # Slack's redelivery: the same event in a new envelope. Its ack comes once Bolt has dispatched it.
        again = await fake_slack.send_envelope(event, retry_attempt=1, retry_reason="timeout")
        await eventually(lambda: {"envelope_id": again} in fake_slack.socket_replies)

        assert {"envelope_id": first} in fake_slack.socket_replies
        assert len(fake_slack.calls_to("views.publish")) == 1
    (line,) = [r.getMessage() for r in caplog.records if r.name == "handlers.slack.redelivery"]
    assert line.startswith(f"Event {event['event_id']} delivered again (retry 1)")
    assert_no_tracebacks(caplog)
