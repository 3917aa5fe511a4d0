"""The delivery queue's chat.postMessage (bot.slack.poster) against the fake Slack over HTTP, and beside
slack_sdk's own client: the same request, the same errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.pacer import POST_MESSAGE, Pacer
from bot.slack.poster import Poster
from tests.fakes.slack import DEFAULT_BOT_TOKEN, FakeSlack, fake_slack_server

BLOCKS: list[dict[str, Any]] = [
    {"type": "header", "text": {"type": "plain_text", "text": "받은편지함 <b>3</b>"}},
    {"type": "section", "text": {"type": "mrkdwn", "text": "*Subject* & <mailto:a@b.c|a@b.c>"}},
]


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with fake_slack_server() as fake:
        fake.add_user("U0001")
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as opened:
        yield opened


def client_on(base_url: str, session: aiohttp.ClientSession) -> AsyncWebClient:
    return AsyncWebClient(token=DEFAULT_BOT_TOKEN, base_url=base_url, session=session)


async def turn(pacer: Pacer, channel: str) -> float:
    ticket = await pacer.turn(POST_MESSAGE, channel)
    assert ticket is not None
    return ticket


async def test_it_sends_the_request_slack_sdk_sends(session: aiohttp.ClientSession) -> None:
    seen: list[tuple[dict[str, str], Any]] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append((dict(request.headers), json.loads(await request.read())))
        return web.json_response({"ok": True, "channel": "D0001", "ts": "1700000000.000100"})

    app = web.Application()
    app.router.add_post("/api/chat.postMessage", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        client = client_on(f"http://127.0.0.1:{port}/api/", session)
        await client.chat_postMessage(channel="U0001", text="3 unread", blocks=BLOCKS)
        pacer = Pacer(600)
        answered = await Poster(client, pacer).post(
            channel="U0001", text="3 unread", blocks=BLOCKS, ticket=await turn(pacer, "U0001")
        )
    finally:
        await runner.cleanup()

    assert answered["ts"] == "1700000000.000100"
    (sdk_headers, sdk_body), (own_headers, own_body) = seen
    assert own_body == sdk_body
    for name in ("Authorization", "User-Agent", "Content-Type"):
        assert own_headers[name] == sdk_headers[name], name
    assert own_headers["Authorization"] == f"Bearer {DEFAULT_BOT_TOKEN}"


async def test_a_429_waits_out_its_retry_after_and_goes_again_once(
    slack: FakeSlack, session: aiohttp.ClientSession
) -> None:
    pacer = Pacer(600)
    poster = Poster(client_on(slack.base_url, session), pacer)
    slack.rate_limit(POST_MESSAGE, times=1, retry_after=1)

    answered = await poster.post(channel="U0001", text="hi", blocks=BLOCKS, ticket=await turn(pacer, "U0001"))

    refused, taken = slack.calls_to(POST_MESSAGE)
    assert (refused.status, taken.status) == (429, 200)
    assert taken.at >= refused.at + 1.0
    assert pacer.lanes[POST_MESSAGE].limited == 1
    assert [message["text"] for message in slack.messages.values()] == ["hi"]
    assert answered["channel"] == "D0001"


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [({"error": "channel_not_found"}, 200, "channel_not_found"), ({"status": 503}, 503, None)],
)
async def test_a_refusal_raises_the_error_slack_sdks_client_raises(
    slack: FakeSlack, session: aiohttp.ClientSession, failure: dict[str, Any], status: int, code: str | None
) -> None:
    client = client_on(slack.base_url, session)
    pacer = Pacer(600)
    raised: list[SlackApiError] = []
    slack.fail(POST_MESSAGE, times=2, **failure)
    with pytest.raises(SlackApiError) as sdk:
        await client.chat_postMessage(channel="U0001", text="hi", blocks=BLOCKS)
    raised.append(sdk.value)
    with pytest.raises(SlackApiError) as own:
        await Poster(client, pacer).post(
            channel="U0001", text="hi", blocks=BLOCKS, ticket=await turn(pacer, "U0001")
        )
    raised.append(own.value)

    for error in raised:
        assert error.response.status_code == status
        assert error.response.get("error") == code
        assert DEFAULT_BOT_TOKEN not in str(error)
    assert not slack.messages
    assert pacer.lanes[POST_MESSAGE].limited == 0  # a refusal is not a rate limit
