"""The users' languages in a run: the process that begins it reads users.list beside its workers, which claim
the accounts whose language is known first, so the delivery queue fills while the pages are still read."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from bot.appkeys import SERVICES
from bot.briefing.run import Kind, Result
from bot.i18n import text
from bot.slack.client import LIST_PAGE_SIZE, PRIME_AT_LEAST
from storage.slack_locales import SlackLocales
from tests.fakes.google import FakeGoogle
from tests.fakes.slack import FakeSlack
from tests.helpers import Serve, block_text, dms, eventually, healthy

NO_MAIL = {locale: text(locale, "slack.digest.none") for locale in ("ko", "en")}
# The pacer's clock runs this many times faster than Slack's: users.list (Tier 2) gives a page every 0.3 s.
SPEED = 10


async def served(serve: Serve, **env: str) -> web.Application:
    app = await serve(**env)
    app[SERVICES].pacer.speed = SPEED
    return app


async def unknown_and_known(
    app: web.Application, fake_slack: FakeSlack, fake_google: FakeGoogle, *, unknown: int, known: int
) -> tuple[list[str], list[str]]:
    """Linked users whose language is not stored (every other one in English), listed after a page of other
    members, and then users whose language an earlier run stored: their accounts come after the others'."""
    for n in range(LIST_PAGE_SIZE):
        fake_slack.add_user(f"U0OTHER{n:03d}")
    unknown_ids = [f"U0NEW{n:03d}" for n in range(unknown)]
    known_ids = [f"U0OLD{n:03d}" for n in range(known)]
    for n, slack_id in enumerate(unknown_ids):
        fake_slack.add_user(slack_id, locale="en-US" if n % 2 else "ko-KR")
    for slack_id in unknown_ids + known_ids:
        await healthy(app, fake_google, slack_id)
    for slack_id in known_ids:
        fake_slack.add_user(slack_id, locale="en-US")
        await SlackLocales(app[SERVICES].pool).put(slack_id, "en-US")
    return unknown_ids, known_ids


def in_their_language(fake_slack: FakeSlack, unknown_ids: list[str]) -> bool:
    return all(
        NO_MAIL["en" if n % 2 else "ko"] in block_text(dms(fake_slack, slack_id)[0]["blocks"])
        for n, slack_id in enumerate(unknown_ids)
    )


async def pending_flags(app: web.Application) -> int:
    return int(
        await app[SERVICES].pool.fetchval("SELECT count(*) FROM briefing_run_items WHERE language_pending")
    )


async def test_digests_go_out_while_users_list_is_read_and_the_users_found_later_get_theirs(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await served(serve, BRIEFING_CONCURRENCY="2")
    unknown_ids, known_ids = await unknown_and_known(
        app, fake_slack, fake_google, unknown=PRIME_AT_LEAST, known=3
    )
    second_page = fake_slack.hold("users.list", after=1)  # the page with the users wanted is slow to come

    running = asyncio.create_task(app[SERVICES].briefing.run(Kind.BRIEFING))
    try:
        # The accounts whose language is known come first (their ids are the highest): their digests reach
        # Slack while the workers holding the others wait for the page.
        await eventually(lambda: all(dms(fake_slack, slack_id) for slack_id in known_ids), seconds=30)
        assert [call.status for call in fake_slack.calls_to("users.list") if call.status] == [200]
        assert not any(dms(fake_slack, slack_id) for slack_id in unknown_ids)
    finally:
        second_page.set()
    report = await running

    assert {line.result for line in report.accounts} == {Result.DIGEST}
    assert in_their_language(fake_slack, unknown_ids)
    assert fake_slack.calls_to("users.info") == []
    assert await pending_flags(app) == 0
    stored = await app[SERVICES].pool.fetchval("SELECT count(*) FROM slack_locales")
    assert stored == len(unknown_ids) + len(known_ids)


async def test_users_list_failing_midway_leaves_the_rest_to_users_info(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await served(serve)
    # Half the users wanted are on the first page, the others on the second, which fails.
    first_half = [f"U0A{n:03d}" for n in range(PRIME_AT_LEAST // 2)]
    for slack_id in first_half:
        fake_slack.add_user(slack_id, locale="en-US")
    unknown_ids, _ = await unknown_and_known(app, fake_slack, fake_google, unknown=PRIME_AT_LEAST, known=0)
    for slack_id in first_half:
        await healthy(app, fake_google, slack_id)
    second_page = fake_slack.hold("users.list", after=1)
    running = asyncio.create_task(app[SERVICES].briefing.run(Kind.BRIEFING))
    try:
        await eventually(lambda: len(fake_slack.calls_to("users.list")) == 2, seconds=30)
        fake_slack.fail("users.list", error="internal_error")
    finally:
        second_page.set()
    report = await running

    assert {line.result for line in report.accounts} == {Result.DIGEST}
    assert all(NO_MAIL["en"] in block_text(dms(fake_slack, slack_id)[0]["blocks"]) for slack_id in first_half)
    assert in_their_language(fake_slack, unknown_ids)
    asked = sorted(call.args["user"] for call in fake_slack.calls_to("users.info"))
    assert asked == sorted(unknown_ids)  # the first page's users were not asked again
    assert await pending_flags(app) == 0


async def test_a_run_stopped_while_users_list_is_read_leaves_nothing_that_stops_the_next(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await served(serve, BRIEFING_CONCURRENCY="2")
    unknown_ids, known_ids = await unknown_and_known(
        app, fake_slack, fake_google, unknown=PRIME_AT_LEAST, known=3
    )
    gate = fake_slack.hold("users.list", after=1)
    running = asyncio.create_task(app[SERVICES].briefing.run(Kind.BRIEFING))
    try:
        await eventually(lambda: all(dms(fake_slack, slack_id) for slack_id in known_ids), seconds=30)
        await eventually(lambda: len(fake_slack.calls_to("users.list")) == 2, seconds=30)
        running.cancel()  # a shutdown, with two workers waiting for the page
        with pytest.raises(asyncio.CancelledError):
            await running
    finally:
        gate.set()
    assert await pending_flags(app) == 0
    claimed = await app[SERVICES].pool.fetchval(
        "SELECT count(*) FROM briefing_run_items WHERE state = 'claimed'"
    )
    assert claimed == 0  # given back

    # The same process again (a restart would be a new one): the run goes on, without the pages.
    report = await app[SERVICES].briefing.run(Kind.BRIEFING)

    assert sorted(line.account.slack_user_id or "" for line in report.accounts) == sorted(unknown_ids)
    assert in_their_language(fake_slack, unknown_ids)  # from users.info
    assert all(len(dms(fake_slack, slack_id)) == 1 for slack_id in unknown_ids + known_ids)
    assert await app[SERVICES].pool.fetchval("SELECT finished_at IS NOT NULL FROM briefing_runs")
