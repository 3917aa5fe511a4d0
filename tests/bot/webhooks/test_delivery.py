"""Webhooks end to end: status changes made by the real application (the briefing, the consent flow, the
Disconnect button) reach a receiver over HTTP, signed, at least once, and retried when it fails."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from datetime import timedelta

import aiohttp
import pytest
from aiohttp import web

from bot.appkeys import SERVICES
from bot.briefing.run import Kind
from bot.metrics import Metrics
from bot.slack.blocks.elements import DISCONNECT_ACTION
from bot.webhooks.sender import RetryPolicy, WebhookSender
from storage import audit
from storage.crypto import generate_key
from storage.models import Account, Status
from storage.webhooks import EVENTS, Event, Webhook
from tests.fakes.google import FakeGoogle
from tests.fakes.slack import FakeSlack, ephemeral_actions_body, slash_command_body
from tests.fakes.webhooks import FakeReceiver, fake_receiver
from tests.helpers import (
    Serve,
    buttons,
    eventually,
    healthy,
    metric,
    owner_link,
    post,
    scrape_metrics,
    settled,
    visit,
)

# Retries within seconds rather than minutes; the policy's shape is the same.
FAST = {"WEBHOOK_RETRY_BASE": "1s", "WEBHOOK_TIMEOUT": "1s"}


@pytest.fixture
async def receiver() -> AsyncIterator[FakeReceiver]:
    async with fake_receiver() as fake:
        yield fake


async def subscribe(
    app: web.Application, receiver: FakeReceiver, events: Iterable[Event] = EVENTS
) -> Webhook:
    """Add a webhook for the receiver, as `webhook add` does, and give the receiver its secret."""
    webhook, secret = await app[SERVICES].webhooks.add(receiver.url, events=events, actor="test")
    receiver.secret = secret
    return webhook


async def outbox(app: web.Application) -> list[dict[str, object]]:
    rows = await app[SERVICES].pool.fetch(
        "SELECT event_type, state, attempts, last_result FROM webhook_deliveries ORDER BY id"
    )
    return [dict(row) for row in rows]


async def finished(app: web.Application, count: int) -> list[dict[str, object]]:
    """The outbox once it holds `count` deliveries and none is pending: the sender has recorded every result
    (a receiver sees a delivery before the sender hears its answer)."""
    for _ in range(400):
        rows = await outbox(app)
        if len(rows) == count and all(row["state"] != "pending" for row in rows):
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"the outbox did not settle: {await outbox(app)}")


async def test_a_revoked_token_found_by_the_briefing_sends_one_signed_broken_event(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle, receiver: FakeReceiver
) -> None:
    app = await serve()
    webhook = await subscribe(app, receiver)
    fake_slack.add_user("U0GONE")
    account = await healthy(app, fake_google, "U0GONE", expiring=True)
    fake_google.revoke_refresh_token("1//U0GONE")

    await app[SERVICES].briefing.run(Kind.BRIEFING, only=["U0GONE"])

    await eventually(lambda: len(receiver.accepted) == 1, seconds=10)
    (delivery,) = receiver.received
    after = await app[SERVICES].accounts.get(account.id)
    assert after.status.needs_user
    assert delivery.signed and delivery.headers["Content-Type"] == "application/json"
    assert delivery.headers["X-Gmail-Reconnect-Event"] == "connection.broken"
    assert delivery.headers["User-Agent"].startswith("gmail-reconnect-webhooks/")
    assert delivery.payload == {
        "id": delivery.event_id,
        "type": "connection.broken",
        "occurred_at": after.status_changed_at.isoformat().replace("+00:00", "Z")
        if after.status_changed_at
        else None,
        "slack_user_id": "U0GONE",
        "user_id": "U0GONE",
        "email": "u0gone@gmail.com",
        "status": str(after.status),
        "cause": "refresh_token_revoked",
        "cause_detail": "Google answered HTTP 400 (invalid_grant: Token has been expired or revoked.)",
    }
    for secret in {*fake_google.issued_secrets, receiver.secret or "-"}:
        assert secret not in delivery.body.decode()
    assert await finished(app, 1) == [
        {"event_type": "connection.broken", "state": "delivered", "attempts": 1, "last_result": "HTTP 204"}
    ]
    listed = {w.id: w for w in await app[SERVICES].webhooks.list()}[webhook.id]
    assert (listed.last_result, listed.pending, listed.failed) == ("HTTP 204", 0, 0)


async def test_nothing_is_sent_while_a_connection_stays_healthy(
    serve: Serve, fake_google: FakeGoogle, receiver: FakeReceiver
) -> None:
    app = await serve()
    await subscribe(app, receiver)
    account = await healthy(app, fake_google, "U0FINE", expiring=True)  # unknown → healthy: a first check
    accounts = app[SERVICES].accounts
    for _ in range(3):
        await accounts.set_status(account.id, status=Status.HEALTHY, cause=None, actor="test")
    access = await app[SERVICES].tokens.access(account.id, force_refresh=True)  # stored healthy again
    assert access.ok
    await accounts.set_status(account.id, status=Status.UNKNOWN, cause=None, actor="test")
    await accounts.set_status(account.id, status=Status.HEALTHY, cause=None, actor="test")
    assert await outbox(app) == []

    await accounts.set_status(account.id, status=Status.EXPIRED, cause="invalid_grant", actor="test")
    await accounts.set_status(
        account.id, status=Status.REVOKED, cause="revoked", actor="test"
    )  # still broken

    await eventually(lambda: len(receiver.accepted) == 1, seconds=10)
    assert [item.payload["type"] for item in receiver.received] == ["connection.broken"]
    assert len(await outbox(app)) == 1


async def expired(app: web.Application, fake_google: FakeGoogle, slack_id: str) -> Account:
    account = await healthy(app, fake_google, slack_id)
    return await app[SERVICES].accounts.set_status(
        account.id, status=Status.EXPIRED, cause="invalid_grant", actor="test"
    )


async def test_a_reconnection_through_the_consent_flow_sends_restored(
    serve: Serve,
    fake_slack: FakeSlack,
    fake_google: FakeGoogle,
    browser: aiohttp.ClientSession,
    receiver: FakeReceiver,
) -> None:
    app = await serve()
    await subscribe(app, receiver)
    await expired(app, fake_google, "U0BACK")
    await eventually(lambda: len(receiver.accepted) == 1, seconds=10)
    fake_google.consent.email = "u0back@gmail.com"

    status, page, _ = await visit(browser, owner_link(app, fake_slack, "U0BACK"))

    assert status == 200, page
    await eventually(lambda: len(receiver.accepted) == 2, seconds=10)
    broken, restored = (item.payload for item in receiver.accepted)
    assert (broken["type"], restored["type"]) == ("connection.broken", "connection.restored")
    assert restored["status"] == "healthy" and restored["slack_user_id"] == "U0BACK"
    assert (restored["cause"], restored["cause_detail"]) == (None, None)  # a working connection has no cause
    assert broken["id"] != restored["id"]


async def test_the_disconnect_button_sends_disconnected(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle, receiver: FakeReceiver
) -> None:
    app = await serve()
    await subscribe(app, receiver, [Event.DISCONNECTED])
    fake_slack.add_user("U0BYE", locale="en-US")
    await healthy(app, fake_google, "U0BYE")
    await post(app, slash_command_body(user_id="U0BYE"))
    (card,) = await settled(fake_slack, "chat.postEphemeral")
    value = buttons(card.args["blocks"])[DISCONNECT_ACTION]["value"]

    await post(
        app,
        ephemeral_actions_body(
            DISCONNECT_ACTION, user_id="U0BYE", value=value, response_url=fake_slack.response_url("U0BYE")
        ),
    )

    await eventually(lambda: len(receiver.accepted) == 1, seconds=10)
    (delivery,) = receiver.accepted
    assert delivery.payload["type"] == "connection.disconnected"
    assert (delivery.payload["status"], delivery.payload["cause"]) == ("disconnected", "disconnected_by_user")
    assert delivery.payload["cause_detail"] == "Disconnected by slack:U0BYE."


async def test_a_receiver_that_fails_twice_gets_the_event_on_the_third_attempt_with_the_same_id(
    serve: Serve, fake_google: FakeGoogle, receiver: FakeReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = await serve(**FAST)
    webhook = await subscribe(app, receiver)
    receiver.fail(500, times=2)

    await expired(app, fake_google, "U0FLAKY")

    await eventually(lambda: len(receiver.accepted) == 1, seconds=15)
    first, second, third = receiver.received
    assert [item.status for item in receiver.received] == [500, 500, 204]
    assert first.event_id == second.event_id == third.event_id == third.payload["id"]
    assert first.body == second.body == third.body
    assert [item.headers["X-Gmail-Reconnect-Attempt"] for item in receiver.received] == ["1", "2", "3"]
    assert all(item.signed for item in receiver.received)
    await finished(app, 1)
    samples = await scrape_metrics(app)
    assert metric(samples, "gmail_reconnect_webhook_attempts_total", outcome="rejected") == 2
    assert metric(samples, "gmail_reconnect_webhook_attempts_total", outcome="delivered") == 1
    labels = {"webhook_id": str(webhook.id)}
    assert metric(samples, "gmail_reconnect_webhook_deliveries", state="pending", **labels) == 0
    assert metric(samples, "gmail_reconnect_webhook_deliveries", state="failed", **labels) == 0
    secret = receiver.secret
    assert secret is not None
    assert not [record for record in caplog.records if secret in record.getMessage()]


async def test_a_receiver_that_does_not_answer_in_time_gets_it_again(
    serve: Serve, fake_google: FakeGoogle, receiver: FakeReceiver
) -> None:
    app = await serve(**FAST)
    await subscribe(app, receiver)
    receiver.stall()

    await expired(app, fake_google, "U0SLOW")

    await eventually(lambda: len(receiver.accepted) == 1, seconds=15)
    assert [item.status for item in receiver.received] == [0, 204]
    samples = await scrape_metrics(app)
    assert metric(samples, "gmail_reconnect_webhook_attempts_total", outcome="timeout") == 1


async def test_a_delivery_still_refused_after_the_retry_window_fails_and_is_audited(
    serve: Serve, fake_google: FakeGoogle, receiver: FakeReceiver
) -> None:
    app = await serve(**FAST, WEBHOOK_RETRY_WINDOW="2s")
    webhook = await subscribe(app, receiver)
    receiver.fail(503, times=100)

    await expired(app, fake_google, "U0DOWN")

    (row,) = await finished(app, 1)
    assert row["state"] == "failed" and row["last_result"] == "HTTP 503"
    assert not receiver.accepted and 2 <= len(receiver.received) <= 3
    (event,) = [e for e in await audit.recent(app[SERVICES].pool) if e.action == "webhook.delivery_failed"]
    assert event.details["webhook_id"] == webhook.id and event.details["last_result"] == "HTTP 503"
    samples = await scrape_metrics(app)
    labels = {"webhook_id": str(webhook.id)}
    assert metric(samples, "gmail_reconnect_webhook_deliveries", state="failed", **labels) == 1


async def test_410_gone_disables_the_webhook(
    serve: Serve, fake_google: FakeGoogle, receiver: FakeReceiver
) -> None:
    app = await serve(**FAST)
    webhook = await subscribe(app, receiver)
    receiver.fail(410)
    account = await expired(app, fake_google, "U0GONE")

    await eventually(lambda: len(receiver.received) == 1, seconds=10)

    async def disabled() -> bool:
        return any(w.disabled_at for w in await app[SERVICES].webhooks.list())

    for _ in range(200):
        if await disabled():
            break
        await asyncio.sleep(0.05)
    (listed,) = await app[SERVICES].webhooks.list()
    assert listed.id == webhook.id and listed.disabled_reason == "the receiver answered 410 Gone"
    assert listed.failed == 1 and listed.last_result == "disabled: the receiver answered 410 Gone"
    await app[SERVICES].accounts.set_status(account.id, status=Status.HEALTHY, cause=None, actor="test")
    assert len(await outbox(app)) == 1  # nothing more is queued for it
    assert "webhook.disabled" in [e.action for e in await audit.recent(app[SERVICES].pool)]


async def test_two_senders_on_one_database_deliver_each_event_once(
    serve: Serve, fake_google: FakeGoogle, receiver: FakeReceiver
) -> None:
    first, second = await serve(), await serve()
    await subscribe(first, receiver)
    accounts = [await healthy(first, fake_google, f"U0MANY{n:02d}") for n in range(40)]

    await asyncio.gather(
        *(
            first[SERVICES].accounts.set_status(a.id, status=Status.REVOKED, cause="revoked", actor="test")
            for a in accounts
        )
    )

    await eventually(lambda: len(receiver.accepted) == 40, seconds=20)
    assert len(receiver.received) == 40
    assert len({item.event_id for item in receiver.received}) == 40
    assert {row["attempts"] for row in await finished(first, 40)} == {1}
    sent = [
        metric(await scrape_metrics(app), "gmail_reconnect_webhook_attempts_total", outcome="delivered")
        for app in (first, second)
    ]
    assert sum(sent) == 40


async def test_with_encryption_on_the_secret_is_sealed_and_still_signs(
    serve: Serve, fake_google: FakeGoogle, receiver: FakeReceiver
) -> None:
    app = await serve(TOKEN_ENCRYPTION_KEYS=generate_key())
    await subscribe(app, receiver)
    stored = await app[SERVICES].pool.fetchval("SELECT secret FROM webhooks")
    assert stored.startswith("v1:") and receiver.secret not in stored

    await expired(app, fake_google, "U0SEALED")

    await eventually(lambda: len(receiver.accepted) == 1, seconds=10)


async def test_a_sender_woken_as_it_is_stopped_stops(serve: Serve) -> None:
    # The sender's loop waits to be woken; a wake in the very turn of the stop (a send that ends as it is
    # cancelled wakes it) used to lose the cancellation on Python 3.11, and stop() waited for ever.
    services = (await serve())[SERVICES]
    async with aiohttp.ClientSession() as session:
        sender = WebhookSender(
            services.webhooks,
            services.webhook_deliveries,
            session,
            timeout=timedelta(seconds=1),
            policy=RetryPolicy(),
            metrics=Metrics(),
        )
        sender.start()
        await asyncio.sleep(0.5)  # it looked for due deliveries, found none, and waits

        sender.wake()
        await asyncio.wait_for(sender.stop(), 10)
