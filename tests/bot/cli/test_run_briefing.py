"""`run-briefing` as an admin or a cron job runs it, while the database is out of reach: it waits for it, saying
what it waits for, and gives up after DATABASE_WAIT with exit 75 and a message that says what to do; while Slack
refuses the bot's token: it ends with exit 2 and the fix, and leaves its messages queued."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from bot.appkeys import SERVICES
from bot.cli.commands import EXIT_CONFIG, EXIT_UNAVAILABLE
from bot.slack.delivery import TOKEN_REFUSED_WAIT
from tests.fakes.google import FakeGoogle
from tests.fakes.slack import FakeSlack
from tests.helpers import BASE_ENV, DatabaseProxy, Serve, cli_process_env, dms, google_env, healthy


@pytest.fixture
async def proxy(migrated_url: str) -> AsyncIterator[DatabaseProxy]:
    line = DatabaseProxy(migrated_url)
    await line.start()
    yield line
    await line.cut()


def cli_env(
    proxy: DatabaseProxy, fake_google: FakeGoogle, fake_slack: FakeSlack, tmp_path: Path, **more: str
) -> dict[str, str]:
    return cli_process_env(
        {
            **BASE_ENV,
            **google_env(fake_google),
            "DATABASE_URL": proxy.url,
            "SLACK_API_URL": fake_slack.base_url,
            "GMAIL_RECONNECT_DATA_DIR": str(tmp_path / "data"),
            **more,
        }
    )


async def linked(serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle, n: int) -> web.Application:
    app = await serve()  # on the database itself, not through the proxy the command uses
    for i in range(n):
        fake_slack.add_user(f"U0CRON{i:02d}")
        await healthy(app, fake_google, f"U0CRON{i:02d}")
    return app


async def start_run_briefing(env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "run-briefing",
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_run_briefing_waits_for_the_database_and_then_runs(
    serve: Serve, proxy: DatabaseProxy, fake_slack: FakeSlack, fake_google: FakeGoogle, tmp_path: Path
) -> None:
    app = await linked(serve, fake_slack, fake_google, 3)
    await proxy.cut()

    process = await start_run_briefing(cli_env(proxy, fake_google, fake_slack, tmp_path), tmp_path)
    assert process.stderr is not None
    first = await asyncio.wait_for(process.stderr.readline(), timeout=60)  # it starts, finds none, and waits
    await proxy.start()
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)

    assert process.returncode == 0, stderr.decode()
    waits = [line for line in (first + stderr).decode().splitlines() if "Waiting for database '" in line]
    assert waits and all(
        "(DATABASE_URL), out of reach while starting the briefing run" in line for line in waits
    )
    assert f"on 127.0.0.1:{proxy.port} (DATABASE_URL)" in waits[0]
    assert stdout.decode().strip().splitlines()[-1] == "3 accounts (digest 3)"
    assert [len(dms(fake_slack, f"U0CRON{i:02d}")) for i in range(3)] == [1, 1, 1]
    assert await app[SERVICES].pool.fetchval("SELECT finished_at IS NOT NULL FROM briefing_runs")


async def test_run_briefing_rides_out_an_outage_in_the_middle_of_the_run(
    serve: Serve, proxy: DatabaseProxy, fake_slack: FakeSlack, fake_google: FakeGoogle, tmp_path: Path
) -> None:
    await linked(serve, fake_slack, fake_google, 30)
    fake_google.gmail_delay = 0.05
    env = cli_env(proxy, fake_google, fake_slack, tmp_path, BRIEFING_CONCURRENCY="2")

    process = await start_run_briefing(env, tmp_path)
    for _ in range(600):
        if len(fake_slack.calls_to("chat.postMessage")) >= 5:
            break
        await asyncio.sleep(0.05)
    await proxy.cut()
    await asyncio.sleep(2)
    await proxy.start()
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)

    assert process.returncode == 0, stderr.decode()
    assert "Waiting for the database, out of reach while" in stderr.decode()
    assert stdout.decode().strip().splitlines()[-1] == "30 accounts (digest 30)"
    assert [len(dms(fake_slack, f"U0CRON{i:02d}")) for i in range(30)] == [1] * 30


async def test_run_briefing_gives_up_after_database_wait(
    serve: Serve, proxy: DatabaseProxy, fake_slack: FakeSlack, fake_google: FakeGoogle, tmp_path: Path
) -> None:
    await linked(serve, fake_slack, fake_google, 1)
    await proxy.cut()

    process = await start_run_briefing(
        cli_env(proxy, fake_google, fake_slack, tmp_path, DATABASE_WAIT="3s"), tmp_path
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)

    assert process.returncode == EXIT_UNAVAILABLE
    last = stderr.decode().strip().splitlines()[-1]
    assert last.startswith("gmail-reconnect: database '") and "(DATABASE_URL) stayed out of reach for" in last
    assert "run the command again: what was done stays done" in last
    assert "Traceback" not in stderr.decode()
    assert fake_slack.calls_to("chat.postMessage") == []


async def test_run_briefing_that_slack_refuses_the_token_ends_with_the_fix_and_leaves_the_queue(
    serve: Serve, proxy: DatabaseProxy, fake_slack: FakeSlack, fake_google: FakeGoogle, tmp_path: Path
) -> None:
    app = await linked(serve, fake_slack, fake_google, 2)
    await app[SERVICES].delivery.stop()  # the command's own drainer is the one refused
    fake_slack.fail("chat.postMessage", error="invalid_auth", times=1000)
    env = cli_env(proxy, fake_google, fake_slack, tmp_path)

    process = await start_run_briefing(env, tmp_path)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=90)

    # It ends, says why and what to do, and keeps the messages for when the token works (it used to wait for
    # ever, and a scheduled run held up the next day's).
    assert process.returncode == EXIT_CONFIG, stderr.decode()
    last = stderr.decode().strip().splitlines()[-1]
    assert last.startswith("gmail-reconnect: Slack refused the bot's token (invalid_auth): 2 messages")
    assert "Fix SLACK_BOT_TOKEN" in last
    assert "Traceback" not in stderr.decode() and BASE_ENV["SLACK_BOT_TOKEN"] not in stderr.decode()
    states = await app[SERVICES].pool.fetch("SELECT state FROM slack_outbox")
    assert [row["state"] for row in states] == ["queued", "queued"]

    # Fixed: the next run-briefing finds the run finished and delivers what was left, without the minute
    # (TOKEN_REFUSED_WAIT) that a message refused for the token waits before it is tried again.
    fake_slack.heal("chat.postMessage")
    again = await start_run_briefing(env, tmp_path)
    stdout, stderr = await asyncio.wait_for(
        again.communicate(), timeout=TOKEN_REFUSED_WAIT.total_seconds() - 15
    )
    assert again.returncode == 0, stderr.decode()
    assert "already finished" in stdout.decode()
    assert [len(dms(fake_slack, f"U0CRON{i:02d}")) for i in range(2)] == [1, 1]
