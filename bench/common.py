"""What the benchmarks share: a throwaway database, the machine's description, percentiles, and argparse types."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import math
import os
import platform
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from storage import embedded
from storage.migrator import migrate
from storage.pool import connect, describe_dsn


@asynccontextmanager
async def database_server(workdir: Path) -> AsyncIterator[tuple[str, str]]:
    """A server to create throwaway databases in (its URL and a description): DATABASE_URL's, or an embedded
    cluster in `workdir`, deleted on exit."""
    server_url = os.environ.get("DATABASE_URL")
    if server_url:
        yield server_url, f"the server of DATABASE_URL ({describe_dsn(server_url)})"
        return
    cluster = await asyncio.to_thread(embedded.start_server, workdir / "postgres", delete_on_exit=True)
    try:
        yield cluster.get_uri(), "an embedded cluster in a temp dir"
    finally:
        await asyncio.to_thread(cluster.cleanup)


@asynccontextmanager
async def throwaway_database(server_url: str) -> AsyncIterator[str]:
    """A new database on the server, migrated; dropped on exit."""
    name = "bench_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = urlunsplit(urlsplit(server_url)._replace(path="/" + name))
    try:
        conn = await connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield dsn
    finally:
        admin = await asyncpg.connect(server_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def postgres_version(dsn: str) -> str:
    """The server's version, as SHOW server_version gives it."""
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def machine(postgres: str, packages: Iterable[str]) -> dict[str, Any]:
    """Where the figures were measured: Python, platform, CPUs, PostgreSQL and the packages' versions."""
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "postgresql": postgres,
        "packages": {name: importlib.metadata.version(name) for name in packages},
    }


def percentiles(values: Sequence[float]) -> dict[str, float | int]:
    """Count, mean, nearest-rank p50/p90/p99 and max, rounded to 0.01."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0}
    figures: dict[str, float | int] = {"count": len(ordered), "mean": round(sum(ordered) / len(ordered), 2)}
    for name, fraction in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99)):
        figures[name] = round(ordered[max(0, math.ceil(fraction * len(ordered)) - 1)], 2)
    figures["max"] = round(ordered[-1], 2)
    return figures


def positive(value: str) -> int:
    """An argparse type: a whole number of at least 1."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a whole number of at least 1")
    return number
