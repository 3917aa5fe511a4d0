"""The fake Slack's rate limits over real HTTP: token buckets per method, 1/s per channel, 429 with Retry-After."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack import DEFAULT_BOT_TOKEN, FakeSlack, fake_slack_server
from tests.fakes.slack_limits import Bucket, SlackLimits


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with fake_slack_server() as fake:
        for number in range(40):
            fake.add_user(f"U{number:04d}")
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession, slack: FakeSlack, method: str, **args: str
) -> aiohttp.ClientResponse:
    headers = {"Authorization": f"Bearer {DEFAULT_BOT_TOKEN}"}
    async with http.post(slack.base_url + method, data=args, headers=headers) as response:
        await response.read()
        return response


async def test_limits_are_off_unless_asked(slack: FakeSlack, http: aiohttp.ClientSession) -> None:
    statuses = [
        (await post(http, slack, "chat.postMessage", channel="U0001", text="hi")).status for _ in range(30)
    ]
    assert statuses == [200] * 30
    assert slack.limits is None


async def test_the_workspace_cap_allows_a_burst_then_answers_429_with_retry_after(
    slack: FakeSlack, http: aiohttp.ClientSession
) -> None:
    clock = Clock()
    limits = slack.enforce_limits(posts_per_minute=600, burst=20, clock=clock)
    statuses = []
    for number in range(25):
        statuses.append(
            (await post(http, slack, "chat.postMessage", channel=f"U{number:04d}", text="x")).status
        )
    assert statuses == [200] * 20 + [429] * 5
    refused = await post(http, slack, "chat.postMessage", channel="U0030", text="x")
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "1"
    async with http.post(
        slack.base_url + "chat.postMessage",
        data={"channel": "U0031", "text": "x"},
        headers={"Authorization": f"Bearer {DEFAULT_BOT_TOKEN}"},
    ) as response:
        assert await response.json() == {"ok": False, "error": "ratelimited"}
    assert limits.refused["chat.postMessage"] == 7
    clock.now += 0.1  # 600 a minute: one more token every tenth of a second
    assert (await post(http, slack, "chat.postMessage", channel="U0032", text="x")).status == 200
    assert (await post(http, slack, "chat.postMessage", channel="U0033", text="x")).status == 429
    # Only the accepted posts are messages.
    assert len(slack.messages) == 21


async def test_one_post_a_second_per_channel(slack: FakeSlack, http: aiohttp.ClientSession) -> None:
    clock = Clock()
    slack.enforce_limits(clock=clock)
    assert (await post(http, slack, "chat.postMessage", channel="U0001", text="1")).status == 200
    # The user's id and their DM's id are the same channel.
    assert (await post(http, slack, "chat.postMessage", channel="D0001", text="2")).status == 429
    assert (await post(http, slack, "chat.postMessage", channel="U0002", text="3")).status == 200
    clock.now += 1.0
    assert (await post(http, slack, "chat.postMessage", channel="D0001", text="4")).status == 200


async def test_tiered_methods_have_buckets_of_their_own(
    slack: FakeSlack, http: aiohttp.ClientSession
) -> None:
    clock = Clock()
    slack.enforce_limits(clock=clock, tiers={"users.list": (20, 3), "users.info": (100, 2)})
    assert [(await post(http, slack, "users.list")).status for _ in range(4)] == [200, 200, 200, 429]
    assert [(await post(http, slack, "users.info", user="U0001")).status for _ in range(3)] == [200, 200, 429]
    # The posts' bucket is untouched by the others.
    assert (await post(http, slack, "chat.postMessage", channel="U0001", text="x")).status == 200
    refused = await post(http, slack, "users.list")
    assert refused.headers["Retry-After"] == "3"  # 20 a minute: 3 s to the next call
    clock.now += 3.0
    assert (await post(http, slack, "users.list")).status == 200


async def test_the_documented_tiers_by_default() -> None:
    limits = SlackLimits()
    assert limits.tiers["chat.update"][0] == 50
    assert limits.tiers["users.list"][0] == 20
    assert limits.tiers["users.info"][0] == 100
    assert limits.tiers["views.publish"][0] == 100


async def test_a_faster_clock_scales_rates_and_retry_after(
    slack: FakeSlack, http: aiohttp.ClientSession
) -> None:
    clock = Clock()
    slack.enforce_limits(posts_per_minute=600, burst=1, speed=100, clock=clock)
    assert (await post(http, slack, "chat.postMessage", channel="U0001", text="x")).status == 200
    refused = await post(http, slack, "chat.postMessage", channel="U0002", text="x")
    assert refused.headers["Retry-After"] == "0.0100"  # one second of Slack's, at 100 times the speed
    clock.now += 0.0011  # a little over a tenth of a second of Slack's
    assert (await post(http, slack, "chat.postMessage", channel="U0003", text="x")).status == 200


async def test_slack_sdk_sees_ratelimited(slack: FakeSlack, http: aiohttp.ClientSession) -> None:
    slack.enforce_limits(burst=1, clock=Clock())
    client = AsyncWebClient(token=DEFAULT_BOT_TOKEN, base_url=slack.base_url, session=http, retry_handlers=[])
    await client.chat_postMessage(channel="U0001", text="x")
    with pytest.raises(SlackApiError) as raised:
        await client.chat_postMessage(channel="U0002", text="x")
    assert raised.value.response.status_code == 429
    assert raised.value.response["error"] == "ratelimited"
    assert raised.value.response.headers["Retry-After"] == "1"


def test_a_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    bucket = Bucket(rate=2.0, burst=3)
    assert bucket.wait(0.0) == 0
    for _ in range(3):
        bucket.take(0.0)
    assert bucket.wait(0.0) == pytest.approx(0.5)
    assert bucket.wait(10.0) == 0
    assert bucket.tokens == 3
