"""The briefing run against the fake Google and the fake Slack, on the real application's services."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta

import pytest
from aiohttp import web

from bot.appkeys import SERVICES
from bot.briefing.run import Kind, Result
from bot.config import Settings
from bot.i18n import text
from bot.slack.client import PRIME_AT_LEAST
from storage.causes import CauseCode
from storage.models import Status
from storage.runs import Done, Runs
from storage.slack_locales import SlackLocales
from tests.fakes.google import FakeGoogle
from tests.fakes.slack import FakeSlack
from tests.helpers import Serve, block_text, dms, healthy, load_legacy_seed

SEED_SLACK_IDS = {"U0HAPPYBELL", "U0EAGLE0914", "U091UNVE41M"}  # legacy rows linked to Slack


async def audit_count(app: web.Application) -> int:
    return int(await app[SERVICES].pool.fetchval("SELECT count(*) FROM audit_log"))


async def test_a_run_over_legacy_and_healthy_accounts(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle, database_url: str
) -> None:
    await load_legacy_seed(database_url)
    app = await serve()
    for slack_id in [*SEED_SLACK_IDS, "U0FRESH", "U0STALE", "U0GONE"]:
        fake_slack.add_user(slack_id, locale="en-US")
    await healthy(app, fake_google, "U0FRESH")
    await healthy(app, fake_google, "U0STALE", expiring=True)
    await healthy(app, fake_google, "U0GONE", expiring=True)
    fake_google.revoke_refresh_token("1//U0GONE")
    fake_google.add_message(
        "u0fresh@gmail.com", sender="Kim <kim@example.com>", subject="Q4 <plan>", snippet="Hi"
    )
    fake_google.add_message(
        "u0fresh@gmail.com", sender="Lee", subject="Old", snippet="x", age=timedelta(days=3)
    )
    fake_google.add_message("u0stale@gmail.com", sender="Park", subject="Read", snippet="y", unread=False)

    report = await app[SERVICES].briefing.run(Kind.BRIEFING)

    results = {line.account.slack_user_id: line.result for line in report.accounts}
    assert results == {
        "U0FRESH": Result.DIGEST,
        "U0STALE": Result.DIGEST,
        "U0GONE": Result.PROMPTED,
        **{slack_id: Result.PROMPTED for slack_id in SEED_SLACK_IDS},
    }
    fresh = block_text(dms(fake_slack, "U0FRESH")[0]["blocks"])
    assert "(1)" in fresh and "Q4 &lt;plan&gt;" in fresh and "Kim &lt;kim@example.com&gt;" in fresh
    assert "Old" not in fresh  # older than a day
    assert "No unread mail" in block_text(dms(fake_slack, "U0STALE")[0]["blocks"])
    stale = await app[SERVICES].accounts.find_by_slack_id("U0STALE")
    assert stale is not None and stale.last_refresh_at is not None and stale.expiry is not None
    assert stale.expiry > datetime.now(UTC) + timedelta(minutes=30)  # refreshed before the fetch
    assert (stale.last_fetch_result, stale.last_fetch_messages) == ("ok", 0)
    gone = await app[SERVICES].accounts.find_by_slack_id("U0GONE")
    assert gone is not None and gone.status is Status.EXPIRED
    assert "Your Gmail needs reconnecting" in block_text(dms(fake_slack, "U0GONE")[0]["blocks"])
    assert "No Gmail token is stored" in block_text(dms(fake_slack, "U0HAPPYBELL")[0]["blocks"])
    heejae = await app[SERVICES].accounts.find_by_slack_id(
        "U091UNVE41M"
    )  # legacy: tokens Google does not know
    assert heejae is not None and heejae.status.needs_user
    for slack_id in [*SEED_SLACK_IDS, "U0FRESH", "U0STALE", "U0GONE"]:
        assert len(dms(fake_slack, slack_id)) == 1, slack_id
    for secret in fake_google.issued_secrets:
        assert secret not in str(fake_slack.calls)

    again = await app[SERVICES].briefing.run(Kind.BRIEFING)

    assert again.already_finished and again.accounts == []
    assert len(fake_slack.calls_to("chat.postMessage")) == 2 + 4  # two digests, four prompts: nothing more


async def test_a_dry_run_changes_and_sends_nothing(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle, database_url: str
) -> None:
    await load_legacy_seed(database_url)
    app = await serve()
    await healthy(app, fake_google, "U0STALE", expiring=True)
    before = await audit_count(app)

    report = await app[SERVICES].briefing.run(Kind.BRIEFING, dry_run=True)

    results = {line.account.slack_user_id: line.result for line in report.accounts}
    assert results["U0STALE"] is Result.CHECKED
    assert results["U0HAPPYBELL"] is Result.PROMPTED and results["U0EAGLE0914"] is Result.PROMPTED
    assert results["U091UNVE41M"] is Result.CHECKED  # stored tokens: only Google can tell
    assert all(line.detail for line in report.accounts)
    assert fake_slack.calls == [] and fake_google.calls == []
    assert await audit_count(app) == before
    assert await app[SERVICES].pool.fetchval("SELECT count(*) FROM briefing_runs") == 0
    assert await app[SERVICES].pool.fetchval("SELECT count(*) FROM reconnect_prompts") == 0


async def test_transient_google_failures_flip_nothing_and_prompt_nobody(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve()
    for slack_id in ("U0A", "U0B", "U0C"):
        fake_slack.add_user(slack_id)
        await healthy(app, fake_google, slack_id, expiring=True)
    fake_google.fail_token(503, times=9)  # three accounts × three attempts

    report = await app[SERVICES].briefing.run(Kind.BRIEFING)

    assert {line.result for line in report.accounts} == {Result.UNAVAILABLE}
    assert fake_slack.calls_to("chat.postMessage") == []
    for account in await app[SERVICES].accounts.list():
        assert account.status is Status.HEALTHY


async def test_gmail_refusing_the_token_or_the_scope_prompts_the_user(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve()
    fake_slack.add_user("U0A", locale="en-US")
    account = await healthy(app, fake_google, "U0A")
    fake_google.fail_gmail(401)
    fake_google.fail_token(400, error="invalid_grant")  # and the refresh that follows says the grant is dead

    report = await app[SERVICES].briefing.run(Kind.BRIEFING, only=["U0A"])

    assert [line.result for line in report.accounts] == [Result.PROMPTED]
    after = await app[SERVICES].accounts.get(account.id)
    assert (
        after.status is Status.EXPIRED
        and after.last_fetch_result
        == "Gmail answered HTTP 401 (Request had invalid authentication credentials.)"
    )

    await app[SERVICES].accounts.set_status(account.id, status=Status.HEALTHY, cause=None, actor="test")
    fake_google.fail_gmail(403)
    await app[SERVICES].briefing.run(Kind.BRIEFING, only=["U0A"])

    refused = await app[SERVICES].accounts.get(account.id)
    assert refused.status is Status.INSUFFICIENT_SCOPE
    assert refused.status_cause_code is CauseCode.SCOPE_MISSING_READ  # the briefing could not read
    (prompt,) = dms(fake_slack, "U0A")  # the same DM, edited
    assert (
        "The bot cannot read your mail: your Gmail is connected, but without “View your email messages"
        in block_text(prompt["blocks"])
    )


async def test_two_runners_at_once_process_each_account_once(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve()
    slack_ids = [f"U0USER{n:02d}" for n in range(12)]
    for slack_id in slack_ids:
        fake_slack.add_user(slack_id)
        await healthy(app, fake_google, slack_id)
    fake_google.gmail_delay = 0.02

    first, second = await asyncio.gather(
        app[SERVICES].briefing.run(Kind.BRIEFING), app[SERVICES].briefing.run(Kind.BRIEFING)
    )

    processed = [line.account.slack_user_id for line in first.accounts + second.accounts]
    assert sorted(processed) == slack_ids
    assert all(len(dms(fake_slack, slack_id)) == 1 for slack_id in slack_ids)


async def test_a_run_killed_halfway_finishes_without_a_second_dm(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve()
    slack_ids = [f"U0USER{n:02d}" for n in range(6)]
    for slack_id in slack_ids:
        fake_slack.add_user(slack_id)
        await healthy(app, fake_google, slack_id)
    # The first process: it handled three accounts, claimed a fourth, and died.
    dead = Runs(app[SERVICES].accounts)
    run = await dead.begin("briefing", datetime.now(app[SERVICES].briefing.settings.briefing_timezone).date())
    handled = None
    for _ in range(3):
        claim = await dead.claim(run, after=handled)
        assert claim is not None and claim.account is not None and claim.stored is not None
        handled = Done(claim.account_id, "digest")
    crashed = await dead.claim(run, after=handled)  # records the third as done, as a worker does
    assert crashed is not None
    await app[SERVICES].pool.execute(
        "UPDATE briefing_run_items SET claimed_at = now() - interval '1 hour' WHERE account_id = $1",
        crashed.account_id,
    )

    report = await app[SERVICES].briefing.run(Kind.BRIEFING)

    done_before = {a.slack_user_id for a in await app[SERVICES].accounts.list()} - {
        line.account.slack_user_id for line in report.accounts
    }
    assert len(report.accounts) == 3 and len(done_before) == 3
    assert crashed.account_id in {line.account.id for line in report.accounts}
    for slack_id in slack_ids:
        assert len(dms(fake_slack, slack_id)) == (0 if slack_id in done_before else 1)
    assert await app[SERVICES].pool.fetchval(
        "SELECT finished_at IS NOT NULL FROM briefing_runs WHERE id = $1", run.id
    )


async def test_accounts_removed_or_unlinked_after_the_run_began_are_skipped(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve()
    for slack_id in ("U0KEPT", "U0GONE", "U0UNLINKED"):
        fake_slack.add_user(slack_id)
        await healthy(app, fake_google, slack_id)
    runs = Runs(app[SERVICES].accounts)
    run = await runs.begin("briefing", datetime.now(app[SERVICES].briefing.settings.briefing_timezone).date())
    # After the run's items were made: one row deleted by hand, one unlinked from its Slack user.
    await app[SERVICES].pool.execute("DELETE FROM gmail_tokens WHERE metadata->>'slack_user_id' = 'U0GONE'")
    await app[SERVICES].pool.execute(
        """UPDATE gmail_tokens SET metadata = metadata - 'slack_user_id'
            WHERE metadata->>'slack_user_id' = 'U0UNLINKED'"""
    )

    report = await app[SERVICES].briefing.run(Kind.BRIEFING)

    assert [line.account.slack_user_id for line in report.accounts] == ["U0KEPT"]
    assert await runs.outcomes(run) == {"digest": 1, "skipped": 2}
    assert await app[SERVICES].pool.fetchval(
        "SELECT finished_at IS NOT NULL FROM briefing_runs WHERE id = $1", run.id
    )
    assert dms(fake_slack, "U0GONE") == [] and dms(fake_slack, "U0UNLINKED") == []


async def test_the_run_reads_each_users_stored_language_along_with_the_account(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve()
    fake_slack.add_user("U0KNOWN", locale="ko-KR")
    fake_slack.add_user("U0NEW", locale="en-US")
    for slack_id in ("U0KNOWN", "U0NEW"):
        await healthy(app, fake_google, slack_id)
    # An earlier users.info gave English for U0KNOWN, still fresh: the run does not ask Slack again.
    await SlackLocales(app[SERVICES].pool).put("U0KNOWN", "en-US")

    await app[SERVICES].briefing.run(Kind.BRIEFING)

    assert [call.args["user"] for call in fake_slack.calls_to("users.info")] == ["U0NEW"]
    for slack_id in ("U0KNOWN", "U0NEW"):
        assert "No unread mail" in block_text(dms(fake_slack, slack_id)[0]["blocks"])
    stored = await app[SERVICES].pool.fetch("SELECT slack_user_id, locale FROM slack_locales ORDER BY 1")
    assert [tuple(row) for row in stored] == [("U0KNOWN", "en-US"), ("U0NEW", "en-US")]


async def test_the_process_that_begins_a_run_learns_the_languages_from_users_list(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve()
    slack_ids = [f"U0LANG{n:02d}" for n in range(PRIME_AT_LEAST)]
    for slack_id in slack_ids:
        fake_slack.add_user(slack_id, locale="en-US")
        await healthy(app, fake_google, slack_id)

    await app[SERVICES].briefing.run(Kind.BRIEFING)

    assert fake_slack.calls_to("users.info") == [] and len(fake_slack.calls_to("users.list")) == 1
    for slack_id in slack_ids:  # in English, as Slack's users.list said
        assert "No unread mail" in block_text(dms(fake_slack, slack_id)[0]["blocks"])
    assert await app[SERVICES].pool.fetchval("SELECT count(*) FROM slack_locales") == len(slack_ids)


async def test_the_preflight_refreshes_and_prompts_but_posts_no_email(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve()
    fake_slack.add_user("U0OK")
    fake_slack.add_user("U0GONE")
    await healthy(app, fake_google, "U0OK", expiring=True)
    await healthy(app, fake_google, "U0GONE", expiring=True)
    fake_google.revoke_refresh_token("1//U0GONE")
    fake_google.add_message("u0ok@gmail.com", sender="Kim", subject="Hello", snippet="Hi")

    report = await app[SERVICES].briefing.run(Kind.PREFLIGHT)

    results = {line.account.slack_user_id: line.result for line in report.accounts}
    assert results == {"U0OK": Result.CHECKED, "U0GONE": Result.PROMPTED}
    assert dms(fake_slack, "U0OK") == [] and len(dms(fake_slack, "U0GONE")) == 1
    assert fake_google.calls_to("/gmail/v1/users/me/messages") == []


def _minutes_from_now(app: web.Application, minutes: int) -> str:
    """A time of day `minutes` from now in BRIEFING_TIMEZONE, HH:MM (the test skips where that is another day)."""
    zone = app[SERVICES].settings.briefing_timezone
    now = datetime.now(zone)
    then = now + timedelta(minutes=minutes)
    if then.date() != now.date():
        pytest.skip("too close to midnight in BRIEFING_TIMEZONE for a deadline on the same day")
    return f"{then:%H:%M}"


async def test_a_digest_past_the_deadline_is_dropped_counted_and_audited(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    probe = await serve()
    app = await serve(BRIEFING_DEADLINE=_minutes_from_now(probe, -2), ADMIN_CHANNEL_ID="C0ADMINS")
    fake_slack.add_user("U0LATE", locale="en-US")
    await healthy(app, fake_google, "U0LATE")

    report = await app[SERVICES].briefing.run(Kind.BRIEFING)

    assert [line.result for line in report.accounts] == [Result.LATE]
    assert dms(fake_slack, "U0LATE") == []  # no "9am" briefing at noon
    assert fake_google.calls_to("/gmail/v1/users/me/messages") == []  # nor its mail read for nothing
    actions = await app[SERVICES].pool.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'briefing.digest_dropped'"
    )
    assert actions == 1
    (summary,) = [c for c in fake_slack.calls_to("chat.postMessage") if c.args["channel"] == "C0ADMINS"]
    assert text("ko", "slack.summary.outcome.late", count=1) in block_text(summary.args["blocks"])
    metrics = app[SERVICES].metrics
    assert metrics.registry.get_sample_value("gmail_reconnect_digests_dropped_total") == 1


async def test_a_digest_before_the_deadline_is_posted_and_off_means_never_dropped(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle, make_settings: Callable[..., Settings]
) -> None:
    probe = await serve()
    app = await serve(BRIEFING_DEADLINE=_minutes_from_now(probe, 30))
    fake_slack.add_user("U0ONTIME")
    await healthy(app, fake_google, "U0ONTIME")

    report = await app[SERVICES].briefing.run(Kind.BRIEFING)

    assert [line.result for line in report.accounts] == [Result.DIGEST]
    assert make_settings(BRIEFING_DEADLINE="off").digest_deadline(datetime.now(UTC).date()) is None
    # Unset, it follows BRIEFING_TIME (the test settings set it off).
    assert make_settings(BRIEFING_TIME="22:30", BRIEFING_DEADLINE=None).briefing_deadline == time(23, 59)
    assert make_settings(BRIEFING_TIME="08:15", BRIEFING_DEADLINE=None).briefing_deadline == time(10, 15)
    assert make_settings(BRIEFING_DEADLINE=None).briefing_deadline == time(11, 0)


async def test_the_workers_claim_and_record_their_accounts_a_batch_per_statement(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = await serve(BRIEFING_CONCURRENCY="4")
    slack_ids = [f"U0BATCH{n:02d}" for n in range(40)]
    for slack_id in slack_ids:
        fake_slack.add_user(slack_id)
        await healthy(app, fake_google, slack_id)
    runs = app[SERVICES].briefing.runs
    statements: list[tuple[int, int]] = []  # (accounts recorded, accounts asked for) of each statement
    batch = runs.record_and_claim_many

    async def counted(run, handled, *, count, worker, held=()):  # type: ignore[no-untyped-def]
        statements.append((len(handled), count))
        return await batch(run, handled, count=count, worker=worker, held=held)

    monkeypatch.setattr(runs, "record_and_claim_many", counted)
    report = await app[SERVICES].briefing.run(Kind.BRIEFING)

    assert [line.result for line in report.accounts] == [Result.DIGEST] * 40
    assert all(len(dms(fake_slack, slack_id)) == 1 for slack_id in slack_ids)
    assert sum(recorded for recorded, _ in statements) == 40  # each account recorded once
    assert len(statements) <= 40 // 4  # one statement for several accounts, not one each
    assert max(recorded for recorded, _ in statements) >= 4
