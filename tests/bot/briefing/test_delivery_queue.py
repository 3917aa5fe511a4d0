"""The delivery queue of the runs' Slack messages: one drainer for every replica, handed over when it dies,
nothing lost or doubled, deadlines kept, Slack's refusals told apart from its bad moments, no mail in plain
text at rest, and the queue visible in /metrics and the admin summary."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web

import bot.slack.delivery as delivery_module
from bot.appkeys import SERVICES
from bot.briefing.run import Kind, Result
from bot.slack.delivery import IN_FLIGHT, SlackDelivery, SlackRefusedToken
from bot.slack.pacer import PER_CHANNEL_PER_SECOND, POST_MESSAGE
from storage.crypto import generate_key, is_encrypted
from storage.outbox import DIGEST, Accepted, Message, Outgoing
from storage.prompts import PromptState
from storage.runs import Digest, Done, Run, Runs
from tests.fakes.google import FakeGoogle
from tests.fakes.slack import FakeSlack
from tests.helpers import (
    BASE_ENV,
    Serve,
    cli_process_env,
    delivered,
    dms,
    eventually,
    google_env,
    healthy,
    metric,
    scrape_metrics,
)


def today(app: web.Application) -> datetime:
    return datetime.now(app[SERVICES].settings.briefing_timezone)


async def linked(app: web.Application, slack: FakeSlack, google: FakeGoogle, count: int) -> list[str]:
    slack_ids = [f"U0Q{number:04d}" for number in range(count)]
    for slack_id in slack_ids:
        slack.add_user(slack_id)
        await healthy(app, google, slack_id)
    return slack_ids


async def until(pool: asyncpg.Pool, query: str, wanted: int, seconds: float = 60) -> None:
    """Wait until `query` (a count) reaches `wanted`."""
    for _ in range(int(seconds / 0.02)):
        if await pool.fetchval(query) >= wanted:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{query!r} did not reach {wanted} in time")


async def queued_by_hand(
    app: web.Application, slack_ids: list[str], *, not_after: datetime | None
) -> tuple[Runs, Run]:
    """A run whose items are claimed (worker N the Nth), then recorded done with their digests queued, as a run's
    workers do."""
    runs = Runs(app[SERVICES].accounts)
    outbox = app[SERVICES].outbox
    run = await runs.begin("briefing", today(app).date())
    ids = {account.slack_user_id: account.id for account in await app[SERVICES].accounts.list()}
    for number, slack_id in enumerate(slack_ids):
        claim = await runs.claim(run, worker=number)
        assert claim is not None and claim.account_id == ids[slack_id]
    for number, slack_id in enumerate(slack_ids):
        message = Message(slack_id, f"digest for {slack_id}", [])
        sealed = outbox.seal(message, kind=DIGEST, run_id=run.id, account_id=ids[slack_id])
        done = Done(ids[slack_id], "digest", digest=Digest(slack_id, sealed, not_after))
        recorded, _ = await runs.record_and_claim(run, after=done, worker=number)
        assert recorded
    return runs, run


async def queued_while_stopped(
    app: web.Application, slack: FakeSlack, google: FakeGoogle, count: int
) -> tuple[SlackDelivery, list[str], Run]:
    """`count` linked users whose digests are queued by hand while the process's drainer is stopped."""
    delivery = app[SERVICES].delivery
    await delivery.stop()
    slack_ids = await linked(app, slack, google, count)
    _, run = await queued_by_hand(app, slack_ids, not_after=None)
    return delivery, slack_ids, run


async def test_one_drainer_sends_for_every_replica(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    first, second = await serve(), await serve()
    slack_ids = await linked(first, fake_slack, fake_google, 60)
    await eventually(lambda: first[SERVICES].delivery.holding or second[SERVICES].delivery.holding)
    holder, other = (first, second) if first[SERVICES].delivery.holding else (second, first)

    reports = await asyncio.gather(
        first[SERVICES].briefing.run(Kind.BRIEFING), second[SERVICES].briefing.run(Kind.BRIEFING)
    )

    # Each returned with every digest delivered, whichever process sent it: the other sent none.
    assert sorted(line.account.slack_user_id for report in reports for line in report.accounts) == slack_ids
    assert [len(dms(fake_slack, slack_id)) for slack_id in slack_ids] == [1] * len(slack_ids)
    assert not other[SERVICES].delivery.holding
    assert other[SERVICES].pacer.lanes.get(POST_MESSAGE) is None or (
        other[SERVICES].pacer.lanes[POST_MESSAGE].accepted == 0
    )
    assert holder[SERVICES].pacer.lanes[POST_MESSAGE].accepted == len(slack_ids)
    states = await first[SERVICES].pool.fetch("SELECT state, count(*) AS n FROM slack_outbox GROUP BY state")
    assert {row["state"]: row["n"] for row in states} == {"sent": len(slack_ids)}


async def test_a_killed_drainer_hands_over_and_doubles_at_most_what_it_had_in_flight(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle, migrated_url: str, tmp_path: Path
) -> None:
    app = await serve(BRIEFING_LEASE="2s")
    if (today(app) + timedelta(minutes=2)).date() != today(app).date():
        pytest.skip("too close to midnight in Seoul: the takeover would begin the next day's run")
    survivor = app[SERVICES].delivery
    await survivor.stop()  # the process about to be killed takes the lock
    slack_ids = await linked(app, fake_slack, fake_google, 40)
    fake_slack.delay = 0.1  # Slack takes its time: messages are in flight when the kill comes
    env = cli_process_env(
        {
            **BASE_ENV,
            **google_env(fake_google),
            "DATABASE_URL": migrated_url,
            "SLACK_API_URL": fake_slack.base_url,
            "GMAIL_RECONNECT_DATA_DIR": str(tmp_path / "data"),
            "BRIEFING_LEASE": "2s",
        }
    )
    doomed = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run-briefing", env=env, cwd=tmp_path, stderr=asyncio.subprocess.DEVNULL
    )
    pool = app[SERVICES].pool
    await until(pool, "SELECT count(*) FROM slack_outbox WHERE state = 'sent'", 10)
    doomed.send_signal(signal.SIGKILL)
    await doomed.wait()
    left_sending = {
        row["account_id"]
        for row in await pool.fetch("SELECT account_id FROM slack_outbox WHERE state = 'sending'")
    }
    assert len(left_sending) <= IN_FLIGHT

    survivor.abandoned_after = timedelta(seconds=1)  # no Slack call of the dead process is still on its way
    report = await app[SERVICES].briefing.run(Kind.BRIEFING)

    posts = {slack_id: len(dms(fake_slack, slack_id)) for slack_id in slack_ids}
    assert min(posts.values()) == 1  # nobody went without
    ids = {account.slack_user_id: account.id for account in await app[SERVICES].accounts.list()}
    doubled = {ids[slack_id] for slack_id, n in posts.items() if n > 1}
    assert doubled <= left_sending and max(posts.values()) <= 2  # only a message in flight may be doubled
    resent = await pool.fetchval("SELECT count(*) FROM slack_outbox WHERE resent")
    assert resent == len(left_sending)
    assert metric(await scrape_metrics(app), "gmail_reconnect_slack_queue_resent_total") == resent
    assert await pool.fetchval("SELECT count(*) FROM slack_outbox WHERE state <> 'sent'") == 0
    assert await pool.fetchval("SELECT finished_at IS NOT NULL FROM briefing_runs")
    assert report.accounts or not await pool.fetchval(
        "SELECT count(*) FROM briefing_run_items WHERE claimed_by LIKE $1",
        f"{app[SERVICES].runs.claim_prefix}%",
    )


async def test_a_digest_that_cannot_arrive_by_its_deadline_is_dropped(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve()
    delivery = app[SERVICES].delivery
    await delivery.stop()
    late, on_time = await linked(app, fake_slack, fake_google, 2)
    _, run = await queued_by_hand(app, [late], not_after=datetime.now(UTC) - timedelta(seconds=1))
    ids = {account.slack_user_id: account.id for account in await app[SERVICES].accounts.list()}

    delivery.start()
    await delivery.wait_for(run.id)

    assert dms(fake_slack, late) == []
    pool = app[SERVICES].pool
    item = await pool.fetchrow(
        "SELECT outcome, detail FROM briefing_run_items WHERE account_id = $1", ids[late]
    )
    assert item["outcome"] == str(Result.LATE) and "BRIEFING_DEADLINE" in item["detail"]
    assert await pool.fetchval("SELECT state FROM slack_outbox") == "dropped"
    audited = await pool.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'briefing.digest_dropped' AND account_id = $1",
        ids[late],
    )
    assert audited == 1
    samples = await scrape_metrics(app)
    assert metric(samples, "gmail_reconnect_digests_dropped_total") == 1
    assert metric(samples, "gmail_reconnect_slack_queue_finished_total", state="dropped") == 1
    # The digest was queued with the account's record ("digest", done): the drop's "late" replaced it.
    assert (
        await pool.fetchval("SELECT state FROM briefing_run_items WHERE account_id = $1", ids[late]) == "done"
    )
    assert on_time  # the other account is not part of this run's queue


async def test_slack_refusing_one_digest_fails_that_account_only(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve(ADMIN_CHANNEL_ID="C0ADMINS")
    slack_ids = await linked(app, fake_slack, fake_google, 5)
    fake_slack.fail("chat.postMessage", error="channel_not_found")

    report = await app[SERVICES].briefing.run(Kind.BRIEFING)

    assert {line.result for line in report.accounts} == {Result.DIGEST}  # queued, as far as the workers knew
    posts = [len(dms(fake_slack, slack_id)) for slack_id in slack_ids]
    assert sorted(posts) == [0, 1, 1, 1, 1]
    outcomes = await app[SERVICES].runs.outcomes(await app[SERVICES].runs.find("briefing", today(app).date()))
    assert outcomes == {str(Result.DIGEST): 4, str(Result.FAILED): 1}
    detail = await app[SERVICES].pool.fetchval(
        "SELECT detail FROM briefing_run_items WHERE outcome = 'failed'"
    )
    assert detail == "Slack answered channel_not_found"
    summary = fake_slack.calls_to("chat.postMessage")[-1].args
    assert summary["channel"] == "C0ADMINS" and "1" in str(summary["blocks"])


async def test_a_momentary_slack_failure_is_sent_again(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve()
    slack_ids = await linked(app, fake_slack, fake_google, 3)
    fake_slack.fail("chat.postMessage", error="service_unavailable")  # 5xx are retried by slack_sdk itself

    await app[SERVICES].briefing.run(Kind.BRIEFING)

    assert [len(dms(fake_slack, slack_id)) for slack_id in slack_ids] == [1, 1, 1]
    attempts = await app[SERVICES].pool.fetch("SELECT attempts, state FROM slack_outbox ORDER BY attempts")
    assert [(row["attempts"], row["state"]) for row in attempts] == [(1, "sent"), (1, "sent"), (2, "sent")]


async def test_a_run_that_slack_refuses_the_token_ends_and_its_messages_wait_for_the_fix(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle, caplog: pytest.LogCaptureFixture
) -> None:
    app = await serve()
    delivery = app[SERVICES].delivery
    delivery.token_refused_wait = timedelta(seconds=0.3)
    slack_ids = await linked(app, fake_slack, fake_google, 3)
    fake_slack.fail("chat.postMessage", error="missing_scope", times=1000)

    with (
        caplog.at_level(logging.ERROR, logger="bot.slack.delivery"),
        pytest.raises(SlackRefusedToken) as refused,
    ):
        await app[SERVICES].briefing.run(
            Kind.BRIEFING
        )  # as serve's scheduler runs it: it must not wait for ever

    assert refused.value.code == "missing_scope" and refused.value.waiting == 3
    run_id = await app[SERVICES].pool.fetchval("SELECT id FROM briefing_runs")
    await until(
        app[SERVICES].pool, "SELECT count(*) FROM slack_outbox WHERE attempts >= 2 AND state = 'queued'", 3
    )
    said = [r.getMessage() for r in caplog.records if "refused the bot's token" in r.getMessage()]
    assert len(said) == 1  # one line, not one per message and attempt
    fake_slack.heal("chat.postMessage")  # the missing scope added

    await until(
        app[SERVICES].pool, f"SELECT count(*) FROM slack_outbox WHERE run_id = {run_id} AND state = 'sent'", 3
    )

    assert [len(dms(fake_slack, slack_id)) for slack_id in slack_ids] == [1, 1, 1]


async def test_the_queue_keeps_no_mail_in_plain_text_when_encryption_is_on(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve(TOKEN_ENCRYPTION_KEYS=generate_key())
    (slack_id,) = await linked(app, fake_slack, fake_google, 1)
    fake_google.add_message(
        f"{slack_id.lower()}@gmail.com", sender="cfo@example.com", subject="Layoffs list Q3", snippet="draft"
    )

    await app[SERVICES].briefing.run(Kind.BRIEFING)

    assert "Layoffs list Q3" in str(dms(fake_slack, slack_id)[0])
    stored = await app[SERVICES].pool.fetchval("SELECT message FROM slack_outbox")
    assert is_encrypted(stored) and "Layoffs" not in stored
    # Moved to another row, a sealed message does not open there.
    await app[SERVICES].pool.execute(
        "UPDATE slack_outbox SET account_id = account_id + 1000, state = 'queued'"
    )
    await app[SERVICES].delivery.wait_for(
        await app[SERVICES].pool.fetchval("SELECT run_id FROM slack_outbox")
    )
    assert await app[SERVICES].pool.fetchval("SELECT state FROM slack_outbox") == "failed"
    assert len(dms(fake_slack, slack_id)) == 1


async def test_senders_that_slack_answers_together_record_and_take_in_one_statement(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve()
    delivery, slack_ids, run = await queued_while_stopped(app, fake_slack, fake_google, 12)
    takes: list[tuple[int, int]] = []  # (messages asked for, messages recorded), one per statement
    take = delivery.outbox.take

    async def counted(conn: asyncpg.Connection, **kwargs: Any) -> list[Outgoing]:
        takes.append((kwargs["count"], len(kwargs["accepted"])))
        return await take(conn, **kwargs)

    delivery.outbox.take = counted  # type: ignore[method-assign]
    delivery.start()
    await delivery.wait_for(run.id)

    assert [len(dms(fake_slack, slack_id)) for slack_id in slack_ids] == [1] * 12
    # The drain's first take is one for every sender (none starts alone), so its posts can go together.
    assert takes[0] == (IN_FLIGHT, 0)
    # The pacer lets the senders' posts go together; they are recorded, and the next ones taken, together.
    assert max(asked for asked, _ in takes) == IN_FLIGHT
    assert max(recorded for _, recorded in takes) >= 2
    assert len(takes) < 12
    pool = app[SERVICES].pool
    rows = await pool.fetch("SELECT state, ts FROM slack_outbox")
    assert {row["state"] for row in rows} == {"sent"} and all(row["ts"] for row in rows)
    posted = await pool.fetch("SELECT posted_ts FROM briefing_run_items")
    assert sorted(row["posted_ts"] for row in posted) == sorted(row["ts"] for row in rows)


async def test_a_message_waiting_for_its_channel_does_not_hold_up_recording_the_others(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Long enough that a take which waited for the held-back sender would come after that sender's post.
    monkeypatch.setattr(delivery_module, "GATHER_SECONDS", 5.0)
    app = await serve(SLACK_POST_RATE="6000")  # the workspace's pace holds nobody back: only the channel's
    # A first take for IN_FLIGHT users, then one for three more and the first user's second message.
    delivery, slack_ids, _ = await queued_while_stopped(app, fake_slack, fake_google, IN_FLIGHT + 3)
    outbox, pool = app[SERVICES].outbox, app[SERVICES].pool
    first = slack_ids[0]
    # A second message for the first user: taken once the first is recorded, it waits about a second for the
    # user's channel, while the last three users' digests go.
    await pool.execute(
        """INSERT INTO slack_outbox (run_id, account_id, kind, channel, message, priority)
           VALUES (NULL, NULL, 'summary', $1, $2, 1)""",
        first,
        outbox.seal(Message(first, "again", []), kind="summary", run_id=None, account_id=None),
    )
    recorded_at: dict[str, float] = {}
    take = outbox.take

    async def timed(conn: asyncpg.Connection, **kwargs: Any) -> list[Outgoing]:
        taken = await take(conn, **kwargs)
        for one in kwargs["accepted"]:
            recorded_at[one.message.message.channel] = time.monotonic()
        return taken

    outbox.take = timed  # type: ignore[method-assign]
    delivery.start()
    await until(pool, "SELECT count(*) FROM slack_outbox WHERE state = 'sent'", IN_FLIGHT + 4)

    posts = [call for call in fake_slack.calls_to("chat.postMessage") if call.args["channel"] == first]
    assert [call.args["text"] for call in posts] == [f"digest for {first}", "again"]
    assert posts[1].at - posts[0].at >= 1 / PER_CHANNEL_PER_SECOND - 0.05
    # The three posted beside the held-back one were recorded as soon as Slack answered them, not once it went.
    assert all(recorded_at[slack_id] < posts[1].at for slack_id in slack_ids[IN_FLIGHT:])


async def test_a_take_gives_no_two_messages_to_one_channel_and_records_all_it_is_given(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve()
    _, slack_ids, _ = await queued_while_stopped(app, fake_slack, fake_google, 4)
    outbox, pool = app[SERVICES].outbox, app[SERVICES].pool
    first, second, third, fourth = slack_ids
    # A second message for the first user, queued after the others (a summary, as it is sealed).
    await pool.execute(
        """INSERT INTO slack_outbox (run_id, account_id, kind, channel, message, priority)
           VALUES (NULL, NULL, 'summary', $1, $2, 1)""",
        first,
        outbox.seal(Message(first, "again", []), kind="summary", run_id=None, account_id=None),
    )
    async with pool.acquire() as conn:
        taken = await outbox.take(conn, count=10, busy={second})

        # In queue order, one per channel, none to the busy one.
        assert [message.message.channel for message in taken] == [first, third, fourth]
        accepted = [Accepted(message, f"1.{number}") for number, message in enumerate(taken)]
        again = await outbox.take(conn, count=10, accepted=accepted)

    assert [message.message.channel for message in again] == [second, first]
    assert again[1].message.text == "again"
    sent = await pool.fetch("SELECT channel, ts FROM slack_outbox WHERE state = 'sent'")
    assert {row["channel"]: row["ts"] for row in sent} == {first: "1.0", third: "1.1", fourth: "1.2"}
    posted = await pool.fetch(
        """SELECT g.metadata->>'slack_user_id' AS slack_id, i.posted_ts FROM briefing_run_items AS i
             JOIN gmail_tokens AS g ON g.id = i.account_id WHERE i.posted_ts IS NOT NULL"""
    )
    assert {row["slack_id"]: row["posted_ts"] for row in posted} == {
        first: "1.0",
        third: "1.1",
        fourth: "1.2",
    }


async def test_a_message_that_cannot_be_read_is_failed_and_the_queue_goes_on(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve()
    delivery, slack_ids, run = await queued_while_stopped(app, fake_slack, fake_google, 3)
    pool = app[SERVICES].pool
    broken = await pool.fetchval("SELECT min(id) FROM slack_outbox")
    await pool.execute("""UPDATE slack_outbox SET message = '{"text": "half a row"' WHERE id = $1""", broken)

    delivery.start()
    await delivery.wait_for(run.id)

    row = await pool.fetchrow("SELECT state, error FROM slack_outbox WHERE id = $1", broken)
    assert (row["state"], row["error"]) == ("failed", "the message could not be read: JSONDecodeError")
    assert [len(dms(fake_slack, slack_id)) for slack_id in slack_ids] == [0, 1, 1]
    assert delivery.started  # the drainer carries on


async def test_metrics_show_the_queue_depth_and_lag(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve()
    delivery, _, run = await queued_while_stopped(app, fake_slack, fake_google, 3)
    await asyncio.sleep(0.3)

    waiting = await scrape_metrics(app)
    assert metric(waiting, "gmail_reconnect_slack_queue_depth") == 3
    assert metric(waiting, "gmail_reconnect_slack_queue_lag_seconds") >= 0.3

    delivery.start()
    await delivery.wait_for(run.id)
    done = await scrape_metrics(app)
    assert metric(done, "gmail_reconnect_slack_queue_depth") == 0
    assert metric(done, "gmail_reconnect_slack_queue_lag_seconds") == 0
    assert metric(done, "gmail_reconnect_slack_queue_finished_total", state="sent") == 3
    assert metric(done, "gmail_reconnect_slack_queue_delivered_seconds_count") == 3


async def test_the_admin_summary_says_how_long_delivery_took(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve(ADMIN_CHANNEL_ID="C0ADMINS", DEFAULT_LOCALE="en")
    await linked(app, fake_slack, fake_google, 4)

    await app[SERVICES].briefing.run(Kind.BRIEFING)

    summary = fake_slack.calls_to("chat.postMessage")[-1].args
    assert summary["channel"] == "C0ADMINS"
    assert "4 messages delivered in" in str(summary["blocks"])


async def queued_prompt(app: web.Application, slack_id: str, text: str) -> int:
    """A Reconnect Gmail DM put in the queue outside a run (as a security event does): its prompt's id."""
    prompts = app[SERVICES].prompts
    async with prompts.locked(slack_id) as conn:
        prompt = await prompts.open(
            slack_id, account_id=None, incident="none:missing", cause="missing", conn=conn
        )
        await app[SERVICES].outbox.queue_prompt(
            conn,
            prompt_id=prompt.id,
            message=Message(slack_id, text, [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]),
        )
    return prompt.id


async def test_the_runs_reconnect_dms_go_through_the_queue_first_and_are_recorded(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve()
    healthy_ids = await linked(app, fake_slack, fake_google, 3)
    fake_slack.add_user("U0QBROKEN")
    await healthy(app, fake_google, "U0QBROKEN")
    fake_google.revoke_refresh_token("1//U0QBROKEN")
    await app[SERVICES].pool.execute(
        "UPDATE gmail_tokens SET expiry = now() - interval '1 minute' WHERE metadata->>'slack_user_id' = 'U0QBROKEN'"
    )

    await app[SERVICES].briefing.run(Kind.PREFLIGHT)

    rows = await app[SERVICES].pool.fetch("SELECT kind, state, prompt_id FROM slack_outbox")
    assert [(row["kind"], row["state"]) for row in rows] == [("prompt", "sent")]
    prompt = await app[SERVICES].prompts.get(rows[0]["prompt_id"])
    assert prompt is not None and prompt.has_message and prompt.sent_count == 1
    assert len(dms(fake_slack, "U0QBROKEN")) == 1 and all(dms(fake_slack, i) == [] for i in healthy_ids)
    # The briefing edits that DM (queued again, sent as chat.update), and posts the digests.
    await app[SERVICES].briefing.run(Kind.BRIEFING)
    assert len(dms(fake_slack, "U0QBROKEN")) == 1
    assert [call.args["ts"] for call in fake_slack.calls_to("chat.update")] == [prompt.message_ts]
    assert (await app[SERVICES].prompts.get(prompt.id)).sent_count == 2  # type: ignore[union-attr]
    samples = await scrape_metrics(app)
    assert metric(samples, "gmail_reconnect_prompts_total", delivery="queued") == 2
    assert metric(samples, "gmail_reconnect_prompts_total", delivery="posted") == 1
    assert metric(samples, "gmail_reconnect_prompts_total", delivery="updated") == 1


async def test_a_queued_dm_is_dropped_once_its_user_reconnected(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve()
    delivery = app[SERVICES].delivery
    await delivery.stop()
    fake_slack.add_user("U0QLATE")
    await queued_prompt(app, "U0QLATE", "Reconnect Gmail, please")
    await app[SERVICES].prompts.close("U0QLATE", state=PromptState.RESOLVED, actor="test")

    delivery.start()
    await delivered(app)

    assert dms(fake_slack, "U0QLATE") == []
    assert await app[SERVICES].pool.fetchval("SELECT state FROM slack_outbox") == "dropped"


async def test_two_queued_dms_for_one_user_make_one_message_edited_in_place(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve()
    delivery = app[SERVICES].delivery
    await delivery.stop()
    fake_slack.add_user("U0QTWICE")
    first = await queued_prompt(app, "U0QTWICE", "first reminder")
    second = await queued_prompt(app, "U0QTWICE", "second reminder")
    assert first == second  # one open prompt per user

    delivery.start()
    await delivered(app)

    (message,) = dms(fake_slack, "U0QTWICE")
    assert "second reminder" in str(message)
    prompt = await app[SERVICES].prompts.get(first)
    assert prompt is not None and prompt.sent_count == 2
    assert [call.args["text"] for call in fake_slack.calls_to("chat.update")] == ["second reminder"]


def test_waiting_for_a_run_looks_at_the_queue_less_often_while_many_messages_are_left() -> None:
    look = delivery_module._next_look
    poll = 0.25
    # A few left: each look may be the last one's.
    assert look(delivery_module.FEW_LEFT, 100, 10.0, poll) == poll
    # Many left but none gone yet: no pace to go by.
    assert look(500, 0, 10.0, poll) == delivery_module.MANY_LEFT_POLL_SECONDS
    # 200 went in 10 s (20 a second): 100 left take 5 s, looked at again after a quarter of that.
    assert look(100, 200, 10.0, poll) == pytest.approx(1.25)
    # 10,000 left at that pace take over 8 minutes, yet the wait is never longer than LONGEST_POLL_SECONDS.
    assert look(10_000, 200, 10.0, poll) == delivery_module.LONGEST_POLL_SECONDS
    # A pace so quick that the rest take a moment: no shorter than MANY_LEFT_POLL_SECONDS.
    assert look(100, 10_000, 10.0, poll) == delivery_module.MANY_LEFT_POLL_SECONDS
