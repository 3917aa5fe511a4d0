"""A briefing run over a row whose tokens cannot be decrypted: the user gets the Reconnect Gmail DM with the
unreadable cause, the row is marked once, and the other accounts get their digest."""

from __future__ import annotations

import pytest

from bot.appkeys import SERVICES
from bot.briefing.run import Kind, Result
from bot.google.token_service import Outcome
from storage import audit
from storage.models import Status
from tests.fakes.google import FakeGoogle
from tests.fakes.slack import FakeSlack
from tests.helpers import UNREADABLE_CASES, Serve, block_text, dms, healthy, make_unreadable

VICTIM, OTHER, BYSTANDER = "U0VICTIM", "U0OTHER", "U0BYSTANDER"
ADMIN_CHANNEL = "C0ADMINS"


@pytest.mark.parametrize("case", UNREADABLE_CASES)
async def test_the_run_asks_the_user_to_reconnect_instead_of_failing_silently(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle, case: str
) -> None:
    keys, reason = UNREADABLE_CASES[case]
    app = await serve(TOKEN_ENCRYPTION_KEYS=keys, ADMIN_CHANNEL_ID=ADMIN_CHANNEL, DEFAULT_LOCALE="en")
    fake_slack.channels.add(ADMIN_CHANNEL)
    for slack_id in (VICTIM, OTHER, BYSTANDER):
        fake_slack.add_user(slack_id, locale="en-US")
        await healthy(app, fake_google, slack_id)
    await make_unreadable(app[SERVICES].pool, case, VICTIM, other_user_id=OTHER)

    report = await app[SERVICES].briefing.run(Kind.BRIEFING)

    results = {line.account.slack_user_id: (line.result, line.status) for line in report.accounts}
    assert results[VICTIM] == (Result.PROMPTED, Status.UNREADABLE)
    assert results[BYSTANDER] == (Result.DIGEST, Status.HEALTHY)
    # Swapped between two rows, both are unreadable; otherwise the other row is untouched.
    assert results[OTHER] == (
        (Result.PROMPTED, Status.UNREADABLE) if case == "swapped_rows" else (Result.DIGEST, Status.HEALTHY)
    )
    victim = await app[SERVICES].accounts.find_by_slack_id(VICTIM)
    assert victim is not None and victim.status is Status.UNREADABLE
    assert victim.status_cause is not None and reason in victim.status_cause
    (dm,) = dms(fake_slack, VICTIM)
    text = block_text(dm["blocks"])
    assert "Your Gmail needs reconnecting" in text
    assert "The bot can no longer decrypt your stored Gmail connection" in text
    assert "TOKEN_ENCRYPTION_KEYS" not in text  # the user is told what to do, the operator's words stay out
    assert "Reconnect Gmail" in str(dm["blocks"])

    ((_, summary),) = [(where, m) for (where, _), m in fake_slack.messages.items() if where == ADMIN_CHANNEL]
    admin = block_text(summary["blocks"])
    unreadable = 2 if case == "swapped_rows" else 1
    assert f"🔒 Stored connection unreadable: *{unreadable}*" in admin
    assert (
        f"<@{VICTIM}> · u0victim@gmail.com · *Stored connection unreadable*: The stored tokens cannot"
        in admin
    )

    # Read again (by the API, a nudge): still needs the user, and the change was audited once.
    again = await app[SERVICES].tokens.access(victim.id)
    assert again.outcome is Outcome.NEEDS_USER and again.cause == victim.status_cause
    changes = [
        event.details
        for event in await audit.recent(app[SERVICES].pool, slack_user_id=VICTIM)
        if event.action == "status.changed"
    ]
    assert [(d["from"], d["to"]) for d in changes] == [("healthy", "unreadable")]
    for secret in fake_google.issued_secrets:
        assert secret not in str(fake_slack.calls) and secret not in (victim.status_cause or "")
