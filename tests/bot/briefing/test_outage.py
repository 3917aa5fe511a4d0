"""A run that meets a database outage waits for the database and carries on where it was: nothing done twice,
nothing left out, no restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest

from bot.appkeys import SERVICES
from bot.briefing.run import Kind
from bot.briefing.schedule import Schedule
from bot.config import Settings
from bot.database_wait import DatabaseUnavailable
from tests.fakes.google import FakeGoogle
from tests.fakes.slack import FakeSlack
from tests.helpers import DatabaseProxy, Serve, dms, eventually, healthy


@pytest.fixture
async def proxy(migrated_url: str) -> AsyncIterator[DatabaseProxy]:
    line = DatabaseProxy(migrated_url)
    await line.start()
    yield line
    await line.cut()


async def test_a_scheduled_run_carries_on_after_the_database_comes_back(
    serve: Serve,
    proxy: DatabaseProxy,
    fake_slack: FakeSlack,
    fake_google: FakeGoogle,
    make_settings: Callable[..., Settings],
) -> None:
    app = await serve(DATABASE_URL=proxy.url, BRIEFING_CONCURRENCY="4")
    slack_ids = [f"U0OUT{n:03d}" for n in range(40)]
    for slack_id in slack_ids:
        fake_slack.add_user(slack_id)
        await healthy(app, fake_google, slack_id)
    fake_google.gmail_delay = 0.05
    schedule = Schedule(make_settings(), app[SERVICES].briefing)
    running = schedule._spawn(Kind.BRIEFING)
    await eventually(lambda: len(fake_slack.calls_to("chat.postMessage")) >= 10, seconds=30)

    await proxy.cut()
    posted_during = len(fake_slack.calls_to("chat.postMessage"))
    await asyncio.sleep(2)  # the database is out of reach for two seconds
    await proxy.start()
    await eventually(running.done, seconds=60)

    assert running.exception() is None
    assert posted_during < len(slack_ids)  # the outage did fall in the middle of the run
    assert [len(dms(fake_slack, slack_id)) for slack_id in slack_ids] == [1] * len(slack_ids)
    pool = app[SERVICES].pool
    assert await pool.fetchval("SELECT count(*) FROM briefing_run_items WHERE state = 'done'") == len(
        slack_ids
    )
    assert await pool.fetchval("SELECT finished_at IS NOT NULL FROM briefing_runs")
    await schedule.stop()


async def test_a_run_gives_up_once_its_patience_runs_out(
    serve: Serve, proxy: DatabaseProxy, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve(DATABASE_URL=proxy.url)
    fake_slack.add_user("U0WAIT")
    await healthy(app, fake_google, "U0WAIT")
    await proxy.cut()

    with pytest.raises(DatabaseUnavailable, match="stayed out of reach"):
        await app[SERVICES].briefing.run(Kind.BRIEFING, patience=timedelta(seconds=2))
    await proxy.start()
    report = await app[SERVICES].briefing.run(Kind.BRIEFING, patience=timedelta(seconds=2))
    assert [line.account.slack_user_id for line in report.accounts] == ["U0WAIT"]


async def test_a_digest_slack_took_as_the_database_went_is_recorded_once_it_is_back_not_sent_again(
    serve: Serve, proxy: DatabaseProxy, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve(DATABASE_URL=proxy.url)
    delivery = app[SERVICES].delivery
    delivery.abandoned_after = timedelta(seconds=1)  # a message left `sending` would be queued again at once
    slack_id = "U0OUTREC01"
    fake_slack.add_user(slack_id)
    await healthy(app, fake_google, slack_id)
    answer = fake_slack.hold("chat.postMessage")
    running = asyncio.create_task(app[SERVICES].briefing.run(Kind.BRIEFING))
    await eventually(lambda: len(fake_slack.calls_to("chat.postMessage")) == 1, seconds=30)

    # Slack takes the digest just as the database goes: what it answered is recorded once the database is back.
    await proxy.cut()
    answer.set()
    await eventually(lambda: len(dms(fake_slack, slack_id)) == 1, seconds=10)
    await asyncio.sleep(2)  # longer than abandoned_after: nothing may take it for abandoned
    await proxy.start()
    await asyncio.wait_for(running, 60)

    assert len(fake_slack.calls_to("chat.postMessage")) == 1
    pool = app[SERVICES].pool
    row = await pool.fetchrow("SELECT state, ts, resent FROM slack_outbox")
    assert row["state"] == "sent" and row["ts"] == dms(fake_slack, slack_id)[0]["ts"] and not row["resent"]
    assert await pool.fetchval("SELECT posted_ts FROM briefing_run_items") == row["ts"]
