"""The memory of what Slack already sent, against a real PostgreSQL: each request and each event is taken once,
also by two callers at the same moment, and expired rows are deleted without being asked."""

from __future__ import annotations

import asyncio
import hashlib
import time

import asyncpg

from storage.slack_deliveries import EVENT_KEPT_FOR, REQUEST_KEPT_FOR, SlackDeliveries


def key(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


async def rows(pool: asyncpg.Pool, table: str) -> int:
    count: int = await pool.fetchval(f"SELECT count(*) FROM {table}")
    return count


async def test_a_request_is_taken_once_and_kept_for_its_window(pool: asyncpg.Pool) -> None:
    deliveries, now = SlackDeliveries(pool), int(time.time())

    assert await deliveries.first_request(key("a"), timestamp=now) is True
    assert await deliveries.first_request(key("a"), timestamp=now) is False
    assert await deliveries.first_request(key("b"), timestamp=now) is True

    kept = await pool.fetchval(
        "SELECT expires_at - to_timestamp($1) FROM slack_request_replays WHERE request_hash = $2",
        now,
        key("a"),
    )
    assert kept == REQUEST_KEPT_FOR


async def test_of_callers_at_the_same_moment_exactly_one_takes_a_request(pool: asyncpg.Pool) -> None:
    # Two replicas: one repository each, on one database.
    replicas = [SlackDeliveries(pool), SlackDeliveries(pool)]
    now = int(time.time())

    taken = await asyncio.gather(
        *(replicas[n % 2].first_request(key("same"), timestamp=now) for n in range(10))
    )

    assert sorted(taken) == [False] * 9 + [True]


async def test_an_event_is_taken_once_and_kept_for_an_hour(pool: asyncpg.Pool) -> None:
    deliveries = SlackDeliveries(pool)

    taken = await asyncio.gather(*(deliveries.first_event("Ev0001") for _ in range(5)))

    assert sorted(taken) == [False] * 4 + [True]
    assert await deliveries.first_event("Ev0002") is True
    kept = await pool.fetchval(
        "SELECT expires_at - now() FROM slack_events_handled WHERE event_id = 'Ev0001'"
    )
    assert EVENT_KEPT_FOR - kept < EVENT_KEPT_FOR / 60


async def test_expired_rows_are_deleted_as_requests_come_in(pool: asyncpg.Pool) -> None:
    long_ago = int(time.time()) - 3600
    await SlackDeliveries(pool).first_request(key("old"), timestamp=long_ago)
    await pool.execute(
        "INSERT INTO slack_events_handled (event_id, expires_at) VALUES ('EvOLD', now() - interval '1 second')"
    )
    assert (await rows(pool, "slack_request_replays"), await rows(pool, "slack_events_handled")) == (1, 1)

    # A process that has not purged yet does so with the first request it remembers.
    assert await SlackDeliveries(pool).first_request(key("new"), timestamp=int(time.time())) is True

    assert await rows(pool, "slack_request_replays") == 1 and await rows(pool, "slack_events_handled") == 0
    assert await pool.fetchval("SELECT request_hash FROM slack_request_replays") == key("new")
    # What expired is forgotten: its timestamp is past Slack's window, so the signature check refuses it anyway.
    assert await SlackDeliveries(pool).first_request(key("old"), timestamp=long_ago) is True


async def test_purge_keeps_what_has_not_expired(pool: asyncpg.Pool) -> None:
    deliveries = SlackDeliveries(pool)
    await deliveries.first_request(key("live"), timestamp=int(time.time()))
    await deliveries.first_event("EvLIVE")

    assert await deliveries.purge() == 0
    assert await deliveries.first_request(key("live"), timestamp=int(time.time())) is False
    assert await deliveries.first_event("EvLIVE") is False
