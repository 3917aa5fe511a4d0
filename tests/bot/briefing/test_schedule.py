"""The daily runs inside `serve`: scheduled in BRIEFING_TIMEZONE, started at start-up when missed within the
grace period or left unfinished, and fired by APScheduler on time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web

from bot.appkeys import SCHEDULE, SERVICES
from bot.briefing.run import Kind
from bot.briefing.schedule import Schedule
from bot.config import Settings
from bot.errors import ConfigError
from tests.fakes.google import FakeGoogle
from tests.fakes.slack import FakeSlack
from tests.helpers import Serve, dms, eventually, healthy

SEOUL = ZoneInfo("Asia/Seoul")


def at(hour: int, minute: int, day: int = 21) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=SEOUL)


async def finished_runs(app: web.Application) -> list[str]:
    rows = await app[SERVICES].pool.fetch(
        "SELECT kind FROM briefing_runs WHERE finished_at IS NOT NULL ORDER BY id"
    )
    return [row["kind"] for row in rows]


def test_times_are_read_in_the_briefing_time_zone(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(PREFLIGHT_TIME="07:30", BRIEFING_TIME="off", BRIEFING_MISFIRE_GRACE="2h")
    assert settings.preflight_time == time(7, 30) and settings.briefing_time is None
    assert settings.briefing_misfire_grace == timedelta(hours=2)
    defaults = make_settings(PREFLIGHT_TIME=None, BRIEFING_TIME=None)
    assert (defaults.preflight_time, defaults.briefing_time) == (time(8), time(9))


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("BRIEFING_TIME", "9am", "BRIEFING_TIME='9am' is not a time of day: set HH:MM"),
        ("PREFLIGHT_TIME", "25:00", "PREFLIGHT_TIME='25:00' is not a time of day"),
        ("BRIEFING_TIME", "09:00+09:00", "in BRIEFING_TIMEZONE"),
        ("ADMIN_CHANNEL_ID", "#admins", "ADMIN_CHANNEL_ID='#admins' is not a Slack channel ID"),
    ],
)
def test_wrong_times_and_channels_name_the_variable_and_the_fix(
    make_settings: Callable[..., Settings], name: str, value: str, words: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        make_settings(**{name: value})
    assert words in str(raised.value)


async def test_the_runs_are_scheduled_at_their_times_in_seoul(
    serve: Serve, make_settings: Callable[..., Settings]
) -> None:
    app = await serve()
    assert not app[SCHEDULE].scheduler.running  # both set to off in the tests' environment
    schedule = Schedule(make_settings(PREFLIGHT_TIME="08:00", BRIEFING_TIME="09:00"), app[SERVICES].briefing)
    await schedule.start(now=at(3, 0))  # nothing due at 03:00
    try:
        upcoming = schedule.next_runs()
        assert sorted(upcoming) == ["gmail-reconnect-briefing", "gmail-reconnect-preflight"]
        for job, hour in (("gmail-reconnect-preflight", 8), ("gmail-reconnect-briefing", 9)):
            local = upcoming[job].astimezone(SEOUL)
            assert (local.hour, local.minute, local.second) == (hour, 0, 0)
        job = schedule.scheduler.get_job("gmail-reconnect-briefing")
        assert job is not None and job.misfire_grace_time == 3600 and job.coalesce
    finally:
        await schedule.stop()
    assert not schedule.scheduler.running
    assert await finished_runs(app) == []


async def test_the_log_says_when_the_runs_are_due_and_apscheduler_adds_nothing_at_info(
    serve: Serve, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    app = await serve()
    schedule = Schedule(make_settings(PREFLIGHT_TIME="08:00", BRIEFING_TIME="09:00"), app[SERVICES].briefing)
    await schedule.start(now=at(3, 0))
    await schedule.stop()

    ours = [record.getMessage() for record in caplog.records if record.name == "bot.briefing.schedule"]
    assert sorted(line.split(":")[0] for line in ours if line.startswith("Next")) == [
        "Next the briefing run",
        "Next the preflight run",
    ]
    apscheduler = [r.getMessage() for r in caplog.records if r.name.startswith("apscheduler")]
    assert apscheduler == []  # "Adding job tentatively", "Scheduler started", … are INFO


async def test_what_is_due_at_start_up(serve: Serve, make_settings: Callable[..., Settings]) -> None:
    app = await serve()
    schedule = Schedule(make_settings(PREFLIGHT_TIME="08:00", BRIEFING_TIME="09:00"), app[SERVICES].briefing)

    assert await schedule.due(at(7, 59)) == []
    assert await schedule.due(at(8, 59)) == [Kind.PREFLIGHT]  # restarted during the preflight's grace hour
    assert await schedule.due(at(9, 30)) == [Kind.BRIEFING]  # the preflight's hour has passed
    assert await schedule.due(at(10, 30)) == []  # too late for a 9am briefing

    # A run that began today and did not finish (the process was killed) is finished whenever the bot returns.
    runs = app[SERVICES].briefing.runs
    await runs.begin("briefing", at(10, 30).date())
    await app[SERVICES].pool.execute(
        "INSERT INTO briefing_run_items (run_id, account_id) SELECT id, 1 FROM briefing_runs"
    )
    assert await schedule.due(at(15, 0)) == [Kind.BRIEFING]
    assert await schedule.due(at(15, 0, day=22)) == []  # but not the next day
    await app[SERVICES].pool.execute("UPDATE briefing_runs SET finished_at = now()")
    assert await schedule.due(at(9, 30)) == []  # finished: never again that day


async def test_serve_runs_the_briefing_when_its_time_comes(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    now = datetime.now(SEOUL)
    soon = now + timedelta(seconds=3)
    if soon.date() != now.date():
        pytest.skip("too close to midnight in Seoul for a same-day schedule")
    app = await serve(BRIEFING_TIME=f"{soon:%H:%M:%S}")
    fake_slack.add_user("U0OK")
    await healthy(app, fake_google, "U0OK")
    assert app[SCHEDULE].next_runs()["gmail-reconnect-briefing"] <= soon + timedelta(seconds=1)

    await eventually(lambda: len(dms(fake_slack, "U0OK")) == 1, seconds=15)
    await eventually_finished(app, ["briefing"])


async def test_serve_catches_up_on_a_briefing_missed_within_the_grace_period(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle, make_settings: Callable[..., Settings]
) -> None:
    now = datetime.now(SEOUL)
    earlier = now - timedelta(minutes=5)
    if earlier.date() != now.date():
        pytest.skip("too close to midnight in Seoul for a same-day schedule")
    first = await serve()  # the accounts exist before the bot (re)starts
    fake_slack.add_user("U0OK")
    await healthy(first, fake_google, "U0OK")

    app = await serve(BRIEFING_TIME=f"{earlier:%H:%M:%S}")

    await eventually(lambda: len(dms(fake_slack, "U0OK")) == 1, seconds=15)
    await eventually_finished(app, ["briefing"])


async def eventually_finished(app: web.Application, kinds: list[str], seconds: float = 15) -> None:
    for _ in range(int(seconds / 0.05)):
        if await finished_runs(app) == kinds:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the runs {kinds} did not finish in time: {await finished_runs(app)}")


async def test_a_shutdown_mid_run_gives_the_accounts_back(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle, make_settings: Callable[..., Settings]
) -> None:
    app = await serve()
    for n in range(4):
        fake_slack.add_user(f"U0SLOW{n}")
        await healthy(app, fake_google, f"U0SLOW{n}")
    fake_google.gmail_delay = 30  # every fetch hangs until the shutdown
    schedule = Schedule(make_settings(), app[SERVICES].briefing)
    schedule._spawn(Kind.BRIEFING)
    await eventually_claimed(app, 4)

    await schedule.stop()

    states = await app[SERVICES].pool.fetch("SELECT state, claimed_by FROM briefing_run_items")
    assert [(row["state"], row["claimed_by"]) for row in states] == [("pending", None)] * 4
    assert await finished_runs(app) == []
    fake_google.gmail_delay = 0
    report = await app[SERVICES].briefing.run(Kind.BRIEFING)  # the restarted bot finishes it at once
    assert len(report.accounts) == 4 and await finished_runs(app) == ["briefing"]


async def eventually_claimed(app: web.Application, count: int) -> None:
    for _ in range(200):
        claimed = await app[SERVICES].pool.fetchval(
            "SELECT count(*) FROM briefing_run_items WHERE state = 'claimed'"
        )
        if claimed == count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{count} accounts were not claimed in time")
