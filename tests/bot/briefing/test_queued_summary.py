"""The admin summary goes through the delivery queue: queued once, by the process that takes it, in the same
transaction; posted by whichever drainer holds the queue, even after the process that queued it stopped; Slack's
bad moments waited out; where it went recorded for the edits that follow the users' reconnections."""

from __future__ import annotations

import logging
from datetime import datetime

import pytest
from aiohttp import web

from bot.appkeys import SERVICES
from bot.briefing.run import Kind
from storage.crypto import generate_key, is_encrypted
from storage.runs import Run
from tests.fakes.google import FakeGoogle
from tests.fakes.slack import FakeSlack
from tests.helpers import Serve, dms, healthy

ADMINS = "C0ADMINS"


def today(app: web.Application) -> datetime:
    return datetime.now(app[SERVICES].settings.briefing_timezone)


def summaries(slack: FakeSlack) -> list[dict[str, object]]:
    return [call.args for call in slack.calls_to("chat.postMessage") if call.args.get("channel") == ADMINS]


async def finished_run(app: web.Application) -> Run:
    """Today's briefing run, finished without a summary (as a process that stopped right after leaves it)."""
    services = app[SERVICES]
    run = await services.runs.begin("briefing", today(app).date())
    await services.pool.execute(
        """UPDATE briefing_run_items SET state = 'done', outcome = 'digest', finished_at = now()
            WHERE run_id = $1""",
        run.id,
    )
    assert await services.runs.finish(run)
    return run


async def test_the_summary_is_queued_once_and_where_it_went_is_recorded(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve(ADMIN_CHANNEL_ID=ADMINS, DEFAULT_LOCALE="en")
    fake_slack.channels.add(ADMINS)
    for slack_id in ("U0S0001", "U0S0002"):
        fake_slack.add_user(slack_id)
        await healthy(app, fake_google, slack_id)

    await app[SERVICES].briefing.run(Kind.BRIEFING)

    (posted,) = summaries(fake_slack)
    assert "2 messages delivered in" in str(posted["blocks"])  # its own post is not one of the run's messages
    pool = app[SERVICES].pool
    row = await pool.fetchrow("SELECT state, ts, priority FROM slack_outbox WHERE kind = 'summary'")
    assert row["state"] == "sent"
    run = await pool.fetchrow("SELECT id, summary_channel, summary_ts FROM briefing_runs")
    assert (run["summary_channel"], run["summary_ts"]) == (ADMINS, row["ts"])
    # Nobody queues it again: not a process that finds the run finished, not one that took it long ago.
    found = await app[SERVICES].runs.find("briefing", today(app).date())
    assert found is not None
    assert not await app[SERVICES].summary.queue(found, left_over=True)
    await pool.execute("UPDATE briefing_runs SET summary_taken_at = now() - interval '1 hour'")
    assert not await app[SERVICES].summary.queue(found, left_over=True)
    assert len(summaries(fake_slack)) == 1


async def test_a_summary_slack_could_not_take_for_a_moment_is_posted_on_a_later_attempt(
    serve: Serve, fake_slack: FakeSlack
) -> None:
    app = await serve(ADMIN_CHANNEL_ID=ADMINS)
    fake_slack.channels.add(ADMINS)
    run = await finished_run(app)
    # HTTP 200 with ok: false, which slack_sdk does not retry itself.
    fake_slack.fail("chat.postMessage", error="service_unavailable")

    assert await app[SERVICES].summary.queue(run)
    await app[SERVICES].delivery.wait_for(run.id)

    assert len(summaries(fake_slack)) == 2  # refused once, then taken
    row = await app[SERVICES].pool.fetchrow("SELECT state, attempts FROM slack_outbox WHERE kind = 'summary'")
    assert (row["state"], row["attempts"]) == ("sent", 2)
    assert await app[SERVICES].pool.fetchval("SELECT summary_ts FROM briefing_runs") is not None


async def test_a_summary_queued_by_a_process_that_stopped_is_posted_by_the_next(
    serve: Serve, fake_slack: FakeSlack
) -> None:
    stopped = await serve(ADMIN_CHANNEL_ID=ADMINS)
    fake_slack.channels.add(ADMINS)
    await stopped[SERVICES].delivery.stop()  # it queues the summary, then stops before sending it
    run = await finished_run(stopped)
    assert await stopped[SERVICES].summary.queue(run)
    assert summaries(fake_slack) == []

    # The next run-briefing finds the run finished: it delivers what is left, and queues no second summary.
    following = await serve(ADMIN_CHANNEL_ID=ADMINS)
    report = await following[SERVICES].briefing.run(Kind.BRIEFING)

    assert report.already_finished
    assert len(summaries(fake_slack)) == 1
    assert (
        await stopped[SERVICES].pool.fetchval("SELECT count(*) FROM slack_outbox WHERE kind = 'summary'") == 1
    )


async def test_a_summary_the_admin_channel_refuses_is_failed_with_the_fix_and_the_run_ends(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle, caplog: pytest.LogCaptureFixture
) -> None:
    app = await serve(ADMIN_CHANNEL_ID=ADMINS)  # the bot is not in that channel
    fake_slack.add_user("U0S0001")
    await healthy(app, fake_google, "U0S0001")

    with caplog.at_level(logging.WARNING, logger="bot.slack.delivery"):
        report = await app[SERVICES].briefing.run(Kind.BRIEFING)

    assert len(report.accounts) == 1 and len(dms(fake_slack, "U0S0001")) == 1
    row = await app[SERVICES].pool.fetchrow("SELECT state, error FROM slack_outbox WHERE kind = 'summary'")
    assert (row["state"], row["error"]) == ("failed", "Slack answered channel_not_found")
    assert any("invite the bot to that channel" in record.getMessage() for record in caplog.records)
    # The digest's outcome is untouched by its summary's failure.
    outcomes = await app[SERVICES].runs.outcomes(await app[SERVICES].runs.find("briefing", today(app).date()))
    assert outcomes == {"digest": 1}


async def test_with_encryption_on_the_queued_summary_names_nobody_in_plain_text(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve(ADMIN_CHANNEL_ID=ADMINS, TOKEN_ENCRYPTION_KEYS=generate_key())
    fake_slack.channels.add(ADMINS)
    fake_slack.add_user("U0S0009")
    await healthy(app, fake_google, "U0S0009", expiring=True)
    fake_google.revoke_refresh_token("1//U0S0009")  # it needs its user: listed in the summary, with its email

    await app[SERVICES].briefing.run(Kind.BRIEFING)

    (posted,) = summaries(fake_slack)
    assert "u0s0009@gmail.com" in str(posted["blocks"])
    stored = await app[SERVICES].pool.fetchval("SELECT message FROM slack_outbox WHERE kind = 'summary'")
    assert is_encrypted(stored) and "u0s0009" not in stored.lower()
