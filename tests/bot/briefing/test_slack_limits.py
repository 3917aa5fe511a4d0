"""The briefing run against a fake Slack that enforces Slack's rate limits: every message delivered, once."""

from __future__ import annotations

import asyncio
from collections import Counter

from aiohttp import web

from bot.appkeys import SERVICES
from bot.briefing.run import Kind, Result
from bot.slack.pacer import POST_MESSAGE
from tests.fakes.google import FakeGoogle
from tests.fakes.slack import FakeSlack, dm_channel_id
from tests.helpers import Serve, healthy

# The fake's clock and the pacers run this many times faster than Slack's, so 600 posts a minute is 200 a second.
SPEED = 20


def sped_up(app: web.Application) -> None:
    """Run the app's pacer at SPEED (before it paced anything)."""
    pacer = app[SERVICES].pacer
    assert not pacer.lanes
    pacer.speed = SPEED


async def linked(app: web.Application, slack: FakeSlack, google: FakeGoogle, count: int) -> list[str]:
    users = [f"U0LIM{number:04d}" for number in range(count)]
    for number, user in enumerate(users):
        slack.add_user(user, locale="en-US")
        await healthy(app, google, user, expiring=number % 10 == 9)
        if number % 10 == 9:  # the grant was revoked: the Reconnect Gmail DM
            google.revoke_refresh_token(f"1//{user}")
    return users


def posts_by_channel(slack: FakeSlack) -> Counter[str]:
    return Counter(message["channel"] for message in slack.messages.values())


async def test_nothing_is_lost_or_doubled_under_slacks_limits(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve(SLACK_POST_RATE="1200")  # told ten times the cap: it finds the real one
    sped_up(app)
    users = await linked(app, fake_slack, fake_google, 200)
    limits = fake_slack.enforce_limits(posts_per_minute=120, burst=20, speed=SPEED)

    report = await app[SERVICES].briefing.run(Kind.BRIEFING)

    assert Counter(line.result for line in report.accounts) == {Result.DIGEST: 180, Result.PROMPTED: 20}
    assert posts_by_channel(fake_slack) == {dm_channel_id(user): 1 for user in users}
    assert limits.refused[POST_MESSAGE] > 0  # the cap was met, and waited out


async def test_two_instances_share_one_cap_and_lose_nothing(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    first, second = await serve(), await serve()
    sped_up(first)
    sped_up(second)
    users = await linked(first, fake_slack, fake_google, 200)
    fake_slack.enforce_limits(posts_per_minute=600, burst=20, speed=SPEED)
    # Each starts at the cap: together they are twice over it until their pacers find the share left to them.
    for app in (first, second):
        app[SERVICES].pacer.post_rate_per_minute = 600

    reports = await asyncio.gather(
        first[SERVICES].briefing.run(Kind.BRIEFING), second[SERVICES].briefing.run(Kind.BRIEFING)
    )

    handled = [line.account.slack_user_id for report in reports for line in report.accounts]
    assert sorted(handled) == users
    assert all(report.accounts for report in reports)  # both took part
    assert posts_by_channel(fake_slack) == {dm_channel_id(user): 1 for user in users}
