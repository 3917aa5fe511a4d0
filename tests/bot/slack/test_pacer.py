"""The pacer: one pace for every Slack call of a process, over real HTTP against the fake Slack's limits."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client import generate_latest
from slack_sdk.web.async_client import AsyncWebClient

from bot.metrics import Metrics
from bot.slack.delivery import IN_FLIGHT
from bot.slack.paced_client import PacedRateLimitRetryHandler, PacedWebClient
from bot.slack.pacer import (
    DECREASE,
    MIN_SHARE,
    POST_BURST,
    POST_MESSAGE,
    Lane,
    Pacer,
    retry_after_seconds,
)
from tests.fakes.slack import DEFAULT_BOT_TOKEN, FakeSlack, fake_slack_server

USERS = [f"U{number:04d}" for number in range(200)]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with fake_slack_server() as fake:
        for user in USERS:
            fake.add_user(user)
        fake.channels.add("C0ADMIN")
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as opened:
        yield opened


def paced(slack: FakeSlack, session: aiohttp.ClientSession, pacer: Pacer) -> PacedWebClient:
    return PacedWebClient(
        pacer=pacer,
        token=DEFAULT_BOT_TOKEN,
        base_url=slack.base_url,
        session=session,
        retry_handlers=[PacedRateLimitRetryHandler(pacer)],
    )


def test_a_429_lowers_the_rate_once_for_the_calls_sent_at_that_pace() -> None:
    clock = Clock()
    lane = Lane(POST_MESSAGE, 10.0, clock=clock)
    lane.on_limited(1.0, ticket=clock.now - 0.1)
    assert lane.rate == pytest.approx(10 * DECREASE)
    assert lane.paused_until == clock.now + 1.0
    # Answers to calls that went before the decrease pause, but do not lower it again.
    lane.on_limited(2.0, ticket=clock.now - 0.05)
    assert lane.rate == pytest.approx(10 * DECREASE)
    assert lane.paused_until == clock.now + 2.0
    clock.now += 3
    lane.on_limited(1.0, ticket=clock.now)
    assert lane.rate == pytest.approx(10 * DECREASE * DECREASE)


def test_the_rate_never_falls_below_its_floor() -> None:
    clock = Clock()
    lane = Lane(POST_MESSAGE, 10.0, clock=clock)
    for _ in range(100):
        clock.now += 1
        lane.on_limited(1.0, ticket=clock.now)
    assert lane.rate == pytest.approx(10 * MIN_SHARE)


def test_accepted_calls_raise_the_rate_back_then_probe_above_it() -> None:
    unlimited = Lane(POST_MESSAGE, 10.0, clock=Clock())
    for _ in range(500):
        unlimited.on_accepted()
    assert unlimited.rate > 20  # a workspace with a higher cap than SLACK_POST_RATE is found
    lane = Lane(POST_MESSAGE, 10.0, clock=Clock())
    lane.on_limited(1.0, ticket=lane.clock())
    assert lane.rate < 10
    for _ in range(20):
        lane.on_accepted()
    # Back to just under the rate that drew the 429, then only slowly above it: each 429 costs a pause.
    assert lane.rate == pytest.approx(9.5, rel=0.05)
    for _ in range(500):
        lane.on_accepted()
    assert 10 < lane.rate < 11


async def test_callers_waiting_for_their_turns_go_together_on_the_tick_grid() -> None:
    lane = Lane(POST_MESSAGE, 20.0, tick=0.1)
    went: list[tuple[float, float]] = []  # (when the call went, its slot)

    async def call() -> None:
        slot = await lane.turn()
        went.append((time.monotonic(), slot))

    await asyncio.gather(*(call() for _ in range(12)))

    slots = sorted(slot for _, slot in went)
    assert slots[-1] - slots[0] == pytest.approx(11 / 20)  # the pace is the rate
    assert all(at >= slot - 0.1 - 0.01 for at, slot in went)  # no call goes more than a tick early
    # 12 calls over 0.55 s wake at most 7 times (once per grid point), not 12.
    wakes = {round(at, 2) for at, _ in went}
    assert len(wakes) <= 7


async def test_posts_go_in_bursts_of_the_delivery_queues_senders() -> None:
    # chat.postMessage's lane lets POST_BURST calls go together: the grid's step is the time they take at the rate.
    lane = Pacer(20 * 60).lane(POST_MESSAGE)
    assert lane is not None and lane.burst == POST_BURST == IN_FLIGHT
    went: list[tuple[float, float]] = []

    async def call() -> None:
        slot = await lane.turn()
        went.append((time.monotonic(), slot))

    await asyncio.gather(*(call() for _ in range(12)))

    slots = sorted(slot for _, slot in went)
    assert slots[-1] - slots[0] == pytest.approx(11 / 20)  # the pace is still the rate
    step = POST_BURST / 20
    assert all(at >= slot - step - 0.01 for at, slot in went)  # none goes more than a step early
    # 12 calls over 0.55 s wake once per step: 3 times (at 0, 0.2 and 0.4 s), each waking up to 4.
    wakes = sorted({round(at, 2) for at, _ in went})
    assert len(wakes) <= 4
    assert max(Counter(round(at, 2) for at, _ in went).values()) <= POST_BURST + 1
    # Other methods go one by one.
    other = Pacer(20 * 60).lane("users.info")
    assert other is not None and other.burst == 1


async def test_no_call_goes_before_a_pause_for_retry_after_ends() -> None:
    # The grid may let a call go a step before its slot, but never before a 429's Retry-After is over.
    lane = Lane(POST_MESSAGE, 2.0, burst=POST_BURST)  # a step of 2 s
    await lane.turn()
    began = time.monotonic()
    lane.on_limited(0.3, ticket=None)

    await lane.turn()

    assert time.monotonic() - began >= 0.3 - 0.01


def test_retry_after_is_read_as_seconds() -> None:
    assert retry_after_seconds("3") == 3
    assert retry_after_seconds("0.0100") == pytest.approx(0.01)
    assert retry_after_seconds(None) == 1
    assert retry_after_seconds("soon") == 1
    assert retry_after_seconds("nan") == 1


async def test_a_429_pauses_every_sender_for_its_retry_after(
    slack: FakeSlack, session: aiohttp.ClientSession
) -> None:
    metrics = Metrics()
    client = paced(slack, session, Pacer(120, metrics=metrics))  # one post every half second
    slack.rate_limit(POST_MESSAGE, times=1, retry_after=1)

    await asyncio.gather(*(client.chat_postMessage(channel=user, text="hi") for user in USERS[:8]))

    calls = slack.calls_to(POST_MESSAGE)
    (limited,) = [call for call in calls if call.status == 429]
    # Posts go in bursts: those that went with the refused one (within a few milliseconds of it) were on their way
    # already; every other call waited out the pause.
    went_with = [call for call in calls if call.status != 429 and call.at - limited.at < 0.1]
    after = [call for call in calls if call not in went_with and call is not limited]
    assert len(went_with) < POST_BURST
    # The refused one went again, and so did all those waiting behind it, each once.
    assert len(after) == 8 - len(went_with)
    assert all(call.at >= limited.at + 1.0 for call in after)
    assert sorted(message["channel"] for message in slack.messages.values()) == sorted(
        "D" + user[1:] for user in USERS[:8]
    )
    shown = generate_latest(metrics.registry).decode()
    assert 'gmail_reconnect_slack_rate_limited_total{method="chat.postMessage"} 1.0' in shown
    assert 'gmail_reconnect_slack_delivery_seconds_count{method="chat.postMessage"} 8.0' in shown
    # All those after it waited out the pause: only those that went with it took less than its second.
    quick = f'gmail_reconnect_slack_delivery_seconds_bucket{{le="0.5",method="chat.postMessage"}} {len(went_with)}.0'
    assert quick in shown


async def test_nothing_is_lost_or_doubled_at_ten_times_the_cap(
    slack: FakeSlack, session: aiohttp.ClientSession
) -> None:
    # The fake's clock and the pacer run 50 times faster: 600 a minute is 500 a second.
    limits = slack.enforce_limits(posts_per_minute=600, burst=20, speed=50)
    client = paced(slack, session, Pacer(6000, speed=50))

    await asyncio.gather(*(client.chat_postMessage(channel=user, text=user) for user in USERS))

    posted = sorted(message["text"] for message in slack.messages.values())
    assert posted == USERS
    assert limits.refused[POST_MESSAGE] > 0  # it found the cap the hard way, and slowed down
    lane = client.pacer.lanes[POST_MESSAGE]
    assert lane.limited == limits.refused[POST_MESSAGE] and lane.limit_hint is not None


async def test_posts_to_one_channel_go_one_a_second(slack: FakeSlack, session: aiohttp.ClientSession) -> None:
    # A burst of two, as Slack allows "short bursts": a late request then costs no 429, five at once would.
    limits = slack.enforce_limits(per_channel_per_second=1, per_channel_burst=2, speed=5)
    client = paced(slack, session, Pacer(600, speed=5))

    await asyncio.gather(*(client.chat_postMessage(channel="C0ADMIN", text=str(n)) for n in range(5)))

    assert limits.refused[POST_MESSAGE] == 0
    assert sorted(message["text"] for message in slack.messages.values()) == ["0", "1", "2", "3", "4"]


async def test_a_listener_client_that_meets_a_429_pauses_the_pacer_too(
    slack: FakeSlack, session: aiohttp.ClientSession
) -> None:
    pacer = Pacer(600)
    # What Bolt builds per request: a plain client with a copy of the retry handlers.
    plain = AsyncWebClient(
        token=DEFAULT_BOT_TOKEN,
        base_url=slack.base_url,
        session=session,
        retry_handlers=[PacedRateLimitRetryHandler(pacer)],
    )
    slack.rate_limit("views.publish", times=2, retry_after=1)

    await plain.views_publish(user_id=USERS[0], view={"type": "home", "blocks": []})

    assert [call.status for call in slack.calls_to("views.publish")] == [429, 429, 200]
    assert pacer.lanes["views.publish"].limited == 2
