"""The admin summary over real rows, posted to the fake Slack: each cause in the admin's language, the fleet's
patterns (tokens dying 7 days after consent, users reconnecting again and again), and Slack's limits however
many accounts need attention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from bot.appkeys import SERVICES
from bot.briefing.run import Kind
from bot.i18n import text
from storage.models import Status
from tests.fakes.google import FakeGoogle
from tests.fakes.slack import MAX_BLOCKS_TEXT, MAX_MESSAGE_BLOCKS, MAX_SECTION_TEXT, FakeSlack
from tests.helpers import Serve, block_text, healthy

ADMIN_CHANNEL = "C0ADMINS"


def summaries(fake: FakeSlack) -> list[dict[str, Any]]:
    return [message for (channel, _), message in sorted(fake.messages.items()) if channel == ADMIN_CHANNEL]


async def broken_after(
    app: web.Application,
    slack: FakeSlack,
    google: FakeGoogle,
    slack_id: str,
    *,
    consent_age: timedelta,
    by_row: bool = True,
) -> None:
    """A linked member whose consent was `consent_age` ago, and whose refresh token Google now refuses
    (invalid_grant). `by_row`: the age is on refresh_token_issued_at, else only on metadata.connected_at."""
    slack.add_user(slack_id)
    account = await healthy(app, google, slack_id, expiring=True)
    consented = datetime.now(UTC) - consent_age
    await app[SERVICES].pool.execute(
        """UPDATE gmail_tokens
              SET refresh_token_issued_at = $2,
                  metadata = metadata || jsonb_build_object('connected_at', $3::text)
            WHERE id = $1""",
        account.id,
        consented if by_row else None,
        consented.isoformat(timespec="seconds"),
    )
    google.revoke_refresh_token(f"1//{slack_id}")


@pytest.mark.parametrize("locale", ["en", "ko"])
async def test_tokens_dying_a_week_after_consent_say_the_consent_screen_is_in_testing(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle, locale: str
) -> None:
    app = await serve(ADMIN_CHANNEL_ID=ADMIN_CHANNEL, DEFAULT_LOCALE=locale)
    fake_slack.channels.add(ADMIN_CHANNEL)
    await broken_after(app, fake_slack, fake_google, "U0WEEK1", consent_age=timedelta(days=7, hours=2))
    await broken_after(
        app, fake_slack, fake_google, "U0WEEK2", consent_age=timedelta(days=6, hours=3), by_row=False
    )
    await broken_after(app, fake_slack, fake_google, "U0OLD", consent_age=timedelta(days=60))
    fake_slack.add_user("U0OK")
    await healthy(app, fake_google, "U0OK")

    await app[SERVICES].briefing.run(Kind.BRIEFING)

    (summary,) = summaries(fake_slack)
    shown = block_text(summary["blocks"])
    assert text(locale, "slack.summary.outcome.prompted", count=3) in shown
    assert text(locale, "slack.pattern.testing_mode", count=2, broken=3) in shown
    assert "Publish the app" in shown if locale == "en" else "앱을 게시하세요" in shown
    # Each account's cause in the admin's language, not Google's English.
    assert shown.count(text(locale, "cause.refresh_token_revoked")) == 3
    assert "Token has been expired or revoked" not in shown


async def test_one_death_a_week_after_consent_among_many_broken_says_nothing(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve(ADMIN_CHANNEL_ID=ADMIN_CHANNEL, DEFAULT_LOCALE="en")
    fake_slack.channels.add(ADMIN_CHANNEL)
    await broken_after(app, fake_slack, fake_google, "U0WEEK", consent_age=timedelta(days=7))
    for n in range(5):  # 1 of 6 is under 20%
        await broken_after(app, fake_slack, fake_google, f"U0OLD{n}", consent_age=timedelta(days=30 + n))
    await broken_after(app, fake_slack, fake_google, "U0NEW", consent_age=timedelta(days=2))

    await app[SERVICES].briefing.run(Kind.BRIEFING)

    (summary,) = summaries(fake_slack)
    shown = block_text(summary["blocks"])
    assert "*7 need attention*" in shown
    assert "Testing" not in shown and "🧪" not in shown


async def test_a_user_who_reconnects_again_and_again_is_named(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    app = await serve(ADMIN_CHANNEL_ID=ADMIN_CHANNEL, DEFAULT_LOCALE="ko")
    fake_slack.channels.add(ADMIN_CHANNEL)
    for slack_id in ("U0LOOP", "U0TWICE"):
        fake_slack.add_user(slack_id)
        await healthy(app, fake_google, slack_id)
    now = datetime.now(UTC)
    reconnections = [
        *(("U0LOOP", now - timedelta(days=days)) for days in (0, 2, 4, 6)),
        *(("U0TWICE", now - timedelta(days=days)) for days in (1, 3)),
        *(("U0LONGAGO", now - timedelta(days=days)) for days in (8, 9, 10)),  # three, but not this week
    ]
    await app[SERVICES].pool.executemany(
        """INSERT INTO audit_log (occurred_at, actor, action, slack_user_id, details)
           VALUES ($2, 'slack:' || $1, 'tokens.reconnected', $1, '{}')""",
        reconnections,
    )

    await app[SERVICES].briefing.run(Kind.BRIEFING)

    (summary,) = summaries(fake_slack)
    shown = block_text(summary["blocks"])
    named = text("ko", "slack.pattern.reconnected_times", who="<@U0LOOP>", count=4)
    assert text("ko", "slack.pattern.reconnecting", days=7, who=named) in shown
    assert "U0TWICE" not in shown and "U0LONGAGO" not in shown


async def test_the_summary_of_500_broken_accounts_stays_within_slacks_limits(
    serve: Serve, fake_slack: FakeSlack
) -> None:
    app = await serve(ADMIN_CHANNEL_ID=ADMIN_CHANNEL, DEFAULT_LOCALE="en")
    fake_slack.channels.add(ADMIN_CHANNEL)
    pool = app[SERVICES].pool
    long_detail = "The stored tokens cannot be decrypted: <key k9> & more. " * 20
    await pool.executemany(
        """INSERT INTO gmail_tokens (user_id, metadata, status, status_cause, status_cause_code)
           VALUES ($1, $2, $3, $4, $5)""",
        [
            (
                f"bulk-{n:03d}",
                {"slack_user_id": f"UBULK{n:03d}", "email": f"{'x' * 200}{n}@example.com"},
                # Causes whose detail is shown, at its longest: the most text a row can have.
                str(Status.UNREADABLE if n % 2 else Status.EXPIRED),
                long_detail,
                "tokens_unreadable" if n % 2 else "client_rejected",
            )
            for n in range(500)
        ],
    )
    # Reconnecting again and again, 30 of them: named up to a point, then "…and N more".
    await pool.executemany(
        """INSERT INTO audit_log (actor, action, slack_user_id, details)
           VALUES ('slack:' || $1, 'tokens.reconnected', $1, '{}')""",
        [(f"UBULK{n:03d}",) for n in range(30) for _ in range(3)],
    )
    services = app[SERVICES]
    run = await services.runs.begin("briefing", datetime.now(UTC).date())
    await pool.execute(  # as a run that asked each of them to reconnect leaves its items
        """UPDATE briefing_run_items SET state = 'done', outcome = 'prompted', needed_user = true,
                  finished_at = now()
            WHERE run_id = $1""",
        run.id,
    )

    assert await services.summary.queue(run)
    await services.delivery.wait_for(run.id)  # serve's drainer posts it

    (summary,) = summaries(fake_slack)  # the strict fake took it (no msg_blocks_too_long, no invalid_blocks)
    blocks = summary["blocks"]
    assert len(blocks) <= MAX_MESSAGE_BLOCKS
    sections = [block["text"]["text"] for block in blocks if block["type"] == "section"]
    assert all(len(section) <= MAX_SECTION_TEXT for section in sections)
    assert len(block_text(blocks)) <= MAX_BLOCKS_TEXT
    shown = "\n".join(sections)
    listed = sum(line.startswith("• <@UBULK") for line in shown.split("\n"))
    assert 0 < listed <= 40
    assert text("en", "slack.admin.more", count=500 - listed) in shown
    assert text("en", "slack.pattern.more", count=20) in shown
    assert "&lt;key k9&gt; &amp; more" in shown and "<key k9>" not in shown  # the detail, escaped
    assert await pool.fetchval("SELECT summary_ts FROM briefing_runs WHERE id = $1", run.id) is not None
