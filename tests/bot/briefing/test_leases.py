"""Claims are leases: renewed while their process lives, taken over once they lapse; a digest is queued once,
with its account's record and under its claim, so a takeover never queues it again; a killed drainer hands the
queue over and doubles at most the messages it had in flight."""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web

from bot.appkeys import SERVICES
from bot.briefing.run import Kind, Result
from storage.outbox import DIGEST, Message
from storage.runs import Digest, Done, Post, Run, Runs
from tests.fakes.google import FakeGoogle
from tests.fakes.slack import FakeSlack
from tests.helpers import BASE_ENV, Serve, cli_process_env, dms, eventually, google_env, healthy


def today(app: web.Application) -> datetime:
    return datetime.now(app[SERVICES].settings.briefing_timezone)


async def accounts_for(
    app: web.Application, fake_slack: FakeSlack, fake_google: FakeGoogle, n: int
) -> list[str]:
    slack_ids = [f"U0LEASE{i:03d}" for i in range(n)]
    for slack_id in slack_ids:
        fake_slack.add_user(slack_id)
        await healthy(app, fake_google, slack_id)
    return slack_ids


async def test_a_claim_is_taken_over_only_once_its_lease_lapsed(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve()
    await accounts_for(app, fake_slack, fake_google, 1)
    alive, other = (Runs(app[SERVICES].accounts, lease=timedelta(minutes=1)) for _ in range(2))
    run = await alive.begin("briefing", today(app).date())
    claim = await alive.claim(run)
    assert claim is not None and claim.post is Post.NONE and not claim.taken_over

    assert await other.claim(run) is None  # its lease runs: the other process leaves it
    assert await alive.renew(run, [claim.account_id]) == 1
    await app[SERVICES].pool.execute(
        "UPDATE briefing_run_items SET lease_until = now() - interval '1 second'"
    )
    taken = await other.claim(run)

    assert taken is not None and taken.account_id == claim.account_id and taken.taken_over
    # The first process, back from its pause: it no longer holds the account, so it neither queues nor records.
    assert await alive.renew(run, [claim.account_id]) == 0
    pool = app[SERVICES].pool
    assert await alive.record_and_claim(run, after=digest(app, run, claim.account_id), worker=0) == (
        False,
        None,
    )
    assert await pool.fetchval("SELECT state FROM briefing_run_items") == "claimed"
    assert await pool.fetchval("SELECT count(*) FROM slack_outbox") == 0
    assert await other.record_and_claim(run, after=digest(app, run, claim.account_id), worker=0) == (
        True,
        None,
    )
    # The same statement again, as after an outage that lost its answer: the record stands as this worker's,
    # written and queued once.
    assert await other.record_and_claim(run, after=digest(app, run, claim.account_id), worker=0) == (
        True,
        None,
    )
    assert await alive.record_and_claim(run, after=digest(app, run, claim.account_id), worker=0) == (
        False,
        None,
    )
    assert await pool.fetchval("SELECT state FROM briefing_run_items") == "done"
    assert await pool.fetchval("SELECT count(*) FROM slack_outbox") == 1


def digest(app: web.Application, run: Run, account_id: int, slack_id: str = "U0LEASE000") -> Done:
    """The record of an account whose digest a worker built, as the run writes it."""
    message = Message(slack_id, "digest", [])
    sealed = app[SERVICES].outbox.seal(message, kind=DIGEST, run_id=run.id, account_id=account_id)
    return Done(account_id, "digest", digest=Digest(slack_id, sealed, None))


async def queued_by_an_earlier_version(
    app: web.Application, run: Run, account_id: int, slack_id: str
) -> None:
    """A digest queued apart from its account's record, as a process of an earlier version queued it."""
    message = Message(slack_id, "digest", [])
    await app[SERVICES].pool.execute(
        """INSERT INTO slack_outbox (run_id, account_id, kind, channel, message, priority)
           VALUES ($1, $2, 'digest', $3, $4, 1)""",
        run.id,
        account_id,
        slack_id,
        app[SERVICES].outbox.seal(message, kind=DIGEST, run_id=run.id, account_id=account_id),
    )


async def test_a_takeover_queues_again_no_digest_that_was_queued(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve()
    await app[SERVICES].delivery.stop()  # the dead process's queue is sent only once the run is taken over
    sent, queued, unqueued = await accounts_for(app, fake_slack, fake_google, 3)
    dead = Runs(app[SERVICES].accounts)
    run = await dead.begin("briefing", today(app).date())
    # The dead process claimed all three and stopped: one digest queued and sent, one queued and not sent yet,
    # one never queued.
    claims = {}
    for number in range(3):
        claim = await dead.claim(run, worker=number)
        assert claim is not None and claim.account is not None
        claims[claim.account.slack_user_id] = claim.account_id
    for slack_id in (sent, queued):
        await queued_by_an_earlier_version(app, run, claims[slack_id], slack_id)
    await app[SERVICES].pool.execute(
        "UPDATE slack_outbox SET state = 'sent', finished_at = now() WHERE account_id = $1", claims[sent]
    )
    await app[SERVICES].pool.execute(
        "UPDATE briefing_run_items SET lease_until = now() - interval '1 second'"
    )

    report = await app[SERVICES].briefing.run(Kind.BRIEFING)

    assert [line.account.slack_user_id for line in report.accounts] == [unqueued]
    assert [len(dms(fake_slack, slack_id)) for slack_id in (sent, queued, unqueued)] == [0, 1, 1]
    rows = await app[SERVICES].pool.fetch("SELECT account_id, state, outcome, detail FROM briefing_run_items")
    by_account = {row["account_id"]: row for row in rows}
    assert {row["state"] for row in rows} == {"done"}
    assert {row["outcome"] for row in rows} == {str(Result.DIGEST)}
    assert by_account[claims[queued]]["detail"] == "queued before its process stopped"
    states = await app[SERVICES].pool.fetch("SELECT state, count(*) AS n FROM slack_outbox GROUP BY state")
    assert {row["state"]: row["n"] for row in states} == {"sent": 3}


async def test_the_heartbeat_keeps_a_slow_accounts_lease(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve(BRIEFING_LEASE="1s", BRIEFING_CONCURRENCY="1")
    slack_ids = await accounts_for(app, fake_slack, fake_google, 2)
    fake_google.gmail_delay = 1.2  # each account takes longer than a lease
    rival = Runs(app[SERVICES].accounts, lease=timedelta(seconds=1))
    running = asyncio.create_task(app[SERVICES].briefing.run(Kind.BRIEFING))
    await eventually(lambda: bool(fake_google.calls), seconds=10)
    run = await rival.begin("briefing", today(app).date())

    taken = []
    while not running.done():
        if (
            claim := await rival.claim(run)
        ) is not None:  # only a lapsed lease (or a pending item) is claimable
            taken.append(claim)
            await rival.release(run)
        await asyncio.sleep(0.1)
    running.result()

    assert all(not claim.taken_over for claim in taken)  # no lease of the live process ever lapsed
    assert [len(dms(fake_slack, slack_id)) for slack_id in slack_ids] == [1, 1]


async def test_a_killed_run_briefing_is_taken_over_within_the_lease(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle, migrated_url: str, tmp_path: Path
) -> None:
    app = await serve(BRIEFING_LEASE="2s")
    if (today(app) + timedelta(minutes=2)).date() != today(app).date():
        pytest.skip("too close to midnight in Seoul: the restart would begin the next day's run")
    slack_ids = await accounts_for(app, fake_slack, fake_google, 40)
    fake_google.gmail_delay = 0.1
    env = cli_process_env(
        {
            **BASE_ENV,
            **google_env(fake_google),
            "DATABASE_URL": migrated_url,
            "SLACK_API_URL": fake_slack.base_url,
            "GMAIL_RECONNECT_DATA_DIR": str(tmp_path / "data"),
            "BRIEFING_LEASE": "2s",
            "BRIEFING_CONCURRENCY": "4",
        }
    )
    doomed = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run-briefing", env=env, cwd=tmp_path, stderr=asyncio.subprocess.DEVNULL
    )
    pool = app[SERVICES].pool
    await until_done(pool, 10)
    doomed.send_signal(signal.SIGKILL)
    await doomed.wait()
    held = await pool.fetch("SELECT account_id, lease_until FROM briefing_run_items WHERE state = 'claimed'")
    assert held  # the kill left claims behind: nobody gave them back

    report = await app[SERVICES].briefing.run(Kind.BRIEFING)

    assert await pool.fetchval("SELECT count(*) FROM briefing_run_items WHERE state <> 'done'") == 0
    assert await pool.fetchval("SELECT finished_at IS NOT NULL FROM briefing_runs")
    posts = {slack_id: len(dms(fake_slack, slack_id)) for slack_id in slack_ids}
    # This process drained the queue all along: the killed one queued what it handled, and nothing twice.
    assert set(posts.values()) == {1}
    taken = await pool.fetch(
        "SELECT account_id, claimed_at FROM briefing_run_items WHERE account_id = ANY($1::int[])",
        [row["account_id"] for row in held],
    )
    lapsed = {row["account_id"]: row["lease_until"] for row in held}
    for row in taken:  # taken over after the dead process's lease lapsed, and well within the old ten minutes
        assert (
            lapsed[row["account_id"]] <= row["claimed_at"] < lapsed[row["account_id"]] + timedelta(seconds=30)
        )
    assert len(report.accounts) >= len(held)


async def until_done(pool: asyncpg.Pool, count: int, seconds: float = 60) -> None:
    """Wait until `count` accounts of the run are done (handled and recorded)."""
    for _ in range(int(seconds / 0.02)):
        if await pool.fetchval("SELECT count(*) FROM briefing_run_items WHERE state = 'done'") >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{count} accounts were not done in time")
