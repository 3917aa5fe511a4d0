"""The asyncpg connection pool with JSONB codecs, and a description of a DSN that never shows its password."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import orjson

log = logging.getLogger(__name__)


def json_text(value: object) -> str:
    """A value as JSON text, keys that are not strings written as strings (as json.dumps does)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    # orjson, not json: a run reads and writes a JSON column or two per account, and orjson does it in a
    # fraction of the CPU.
    for type_name in ("jsonb", "json"):
        await conn.set_type_codec(type_name, encoder=json_text, decoder=orjson.loads, schema="pg_catalog")


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections read and write JSON columns as Python objects."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        command_timeout=60,
        reset=_keep_session,
    )
    assert pool is not None
    return pool


# How long closing a pool waits for its connections to be given back before it closes them anyway.
CLOSE_TIMEOUT_SECONDS = 10.0


async def close_pool(pool: asyncpg.Pool) -> None:
    """Close the pool, giving connections still in use CLOSE_TIMEOUT_SECONDS to be given back, then closing
    them: a shutdown never waits forever for a task that was stopped while it held one."""
    try:
        await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT_SECONDS)
    except TimeoutError:
        log.warning(
            "Database connections were still in use %.0f s after shutdown began: closed anyway",
            CLOSE_TIMEOUT_SECONDS,
        )
        pool.terminate()


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to reset when a connection returns to the pool: every advisory lock taken on a pooled
    connection is transaction-scoped, and nothing sets session state. (asyncpg still rolls back a transaction
    left open.) Its default reset query would cost a round trip on every release."""


async def connect(dsn: str, **kwargs: Any) -> asyncpg.Connection:
    """One connection outside the pool (for work that holds a session lock), with the same codecs."""
    conn = await asyncpg.connect(dsn, **kwargs)
    await _init_connection(conn)
    return conn


@asynccontextmanager
async def transaction(
    pool: asyncpg.Pool, conn: asyncpg.Connection | None
) -> AsyncIterator[asyncpg.Connection]:
    """A transaction on `conn` (nested in the caller's, if it has one), or on a connection from `pool`."""
    if conn is not None:
        async with conn.transaction():
            yield conn
        return
    async with pool.acquire() as acquired, acquired.transaction():
        yield acquired


def describe_dsn(dsn: str) -> str:
    """'database NAME on HOST' for messages, e.g. to spot a service pointed at auth_db instead of main_db."""
    parts = urlsplit(dsn)
    database = parts.path.lstrip("/") or "(default)"
    host = parts.hostname or "the local socket"
    if parts.port:
        host += f":{parts.port}"
    return f"database {database!r} on {host}"
