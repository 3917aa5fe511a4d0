"""The webhook outbox in PostgreSQL: which status changes become events, that they commit or roll back with
the change, and that concurrent claims never take the same delivery."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import pytest

from storage.accounts import Accounts
from storage.models import Status, TokenGrant
from storage.webhook_deliveries import WebhookDeliveries
from storage.webhooks import EVENTS, Event, Webhooks, event_of

H, U, D = Status.HEALTHY, Status.UNKNOWN, Status.DISCONNECTED


@pytest.mark.parametrize(
    ("before", "after", "event"),
    [
        (H, H, None),
        (U, H, None),  # a first check is not a restoration
        (H, U, None),
        (H, Status.EXPIRED, Event.BROKEN),
        (U, Status.MISSING, Event.BROKEN),
        (H, Status.INSUFFICIENT_SCOPE, Event.BROKEN),
        (Status.EXPIRED, Status.REVOKED, None),  # broken already
        (Status.REVOKED, H, Event.RESTORED),
        (D, H, Event.RESTORED),
        (H, D, Event.DISCONNECTED),
        (Status.REVOKED, D, Event.DISCONNECTED),
        (D, Status.MISSING, None),
    ],
)
def test_which_changes_are_events(before: Status, after: Status, event: Event | None) -> None:
    assert event_of(before, after) is event


def test_every_status_that_needs_the_user_breaks_a_working_connection() -> None:
    for status in Status:
        if status.needs_user:
            assert event_of(H, status) is Event.BROKEN and event_of(status, H) is Event.RESTORED


async def seeded(accounts: Accounts, pool: asyncpg.Pool, slack_id: str) -> int:
    account = await accounts.store_tokens(
        grant=TokenGrant("ya29.a", "1//r", None, []), actor="test", slack_user_id=slack_id
    )
    return account.id


async def queued(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM webhook_deliveries"))


async def test_an_event_rolls_back_with_its_status_change(accounts: Accounts, pool: asyncpg.Pool) -> None:
    await Webhooks(pool, None).add("https://svc.example/hooks", events=EVENTS, actor="test")
    account_id = await seeded(accounts, pool, "U0ROLL")

    with pytest.raises(RuntimeError):
        async with pool.acquire() as conn, conn.transaction():
            await accounts.set_status(account_id, status=Status.REVOKED, cause="x", actor="test", conn=conn)
            assert await conn.fetchval("SELECT count(*) FROM webhook_deliveries") == 1
            raise RuntimeError("the change fails after the status was written")

    assert await queued(pool) == 0
    await accounts.set_status(account_id, status=Status.REVOKED, cause="x", actor="test")
    assert await queued(pool) == 1


async def test_only_subscribed_and_enabled_webhooks_get_an_event(
    accounts: Accounts, pool: asyncpg.Pool
) -> None:
    webhooks = Webhooks(pool, None)
    await webhooks.add("https://a.example/hooks", events=[Event.DISCONNECTED], actor="test")
    both, _ = await webhooks.add("https://b.example/hooks", events=EVENTS, actor="test")
    gone, _ = await webhooks.add("https://c.example/hooks", events=EVENTS, actor="test")
    await webhooks.disable(gone.id, reason="410", actor="test")
    account_id = await seeded(accounts, pool, "U0SUB")

    await accounts.set_status(account_id, status=Status.EXPIRED, cause="x", actor="test")

    rows = await pool.fetch("SELECT webhook_id, event_type FROM webhook_deliveries")
    assert [(row["webhook_id"], row["event_type"]) for row in rows] == [(both.id, "connection.broken")]


async def test_concurrent_claims_never_share_a_delivery(accounts: Accounts, pool: asyncpg.Pool) -> None:
    await Webhooks(pool, None).add("https://svc.example/hooks", events=EVENTS, actor="test")
    for n in range(30):
        account_id = await seeded(accounts, pool, f"U0CLAIM{n:02d}")
        await accounts.set_status(account_id, status=Status.REVOKED, cause="x", actor="test")
    deliveries = WebhookDeliveries(pool)

    batches = await asyncio.gather(
        *(deliveries.claim(limit=4, lease=timedelta(minutes=1)) for _ in range(10))
    )

    claimed = [delivery.id for batch in batches for delivery in batch]
    assert len(claimed) == len(set(claimed)) == 30
    assert await deliveries.claim(limit=10, lease=timedelta(minutes=1)) == []  # leased, not due


async def test_list_and_remove_never_show_the_secret(pool: asyncpg.Pool) -> None:
    webhooks = Webhooks(pool, None)
    webhook, secret = await webhooks.add("https://svc.example/hooks", events=EVENTS, actor="test")

    assert secret not in repr(await webhooks.list())
    removed = await webhooks.remove(webhook.id, actor="test")
    assert secret not in repr(removed) and await webhooks.list() == []
    details = await pool.fetchval("SELECT string_agg(details::text, ' ') FROM audit_log")
    assert secret not in details


async def test_finished_deliveries_are_pruned_and_pending_ones_kept(
    accounts: Accounts, pool: asyncpg.Pool
) -> None:
    await Webhooks(pool, None).add("https://svc.example/hooks", events=EVENTS, actor="test")
    for slack_id in ("U0DONE", "U0WAIT"):
        account_id = await seeded(accounts, pool, slack_id)
        await accounts.set_status(account_id, status=Status.REVOKED, cause="x", actor="test")
    deliveries = WebhookDeliveries(pool)
    done, _ = await deliveries.claim(limit=2, lease=timedelta(minutes=1))
    await deliveries.delivered(done, result="HTTP 204")

    assert await deliveries.prune(older_than=timedelta(days=30)) == 0
    assert await deliveries.prune(older_than=timedelta(0)) == 1
    assert await pool.fetchval("SELECT state FROM webhook_deliveries") == "pending"
