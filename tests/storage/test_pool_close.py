"""Closing the pool never waits forever for a connection that a stopped task still holds."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from storage import pool as pools
from storage.pool import close_pool, create_pool


async def test_a_connection_never_given_back_is_closed_after_the_timeout(
    migrated_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(pools, "CLOSE_TIMEOUT_SECONDS", 0.5)
    pool = await create_pool(migrated_url, min_size=1, max_size=2)
    held = await pool.acquire()  # never released, as by a task cancelled at the wrong moment

    await asyncio.wait_for(close_pool(pool), 5)

    with pytest.raises(asyncpg.InterfaceError):  # the held connection was closed with the pool
        await held.fetchval("SELECT 1")
    with pytest.raises(asyncpg.InterfaceError):
        await pool.acquire()
    assert "still in use" in caplog.text


async def test_a_pool_whose_connections_were_given_back_closes_at_once(migrated_url: str) -> None:
    pool = await create_pool(migrated_url, min_size=1, max_size=2)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT 1") == 1

    await asyncio.wait_for(close_pool(pool), 5)

    assert pool._closed  # asyncpg has no public "closed" for a pool
