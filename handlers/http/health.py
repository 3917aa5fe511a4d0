"""/healthz (the process answers) and /readyz (the database answers and its schema is current)."""

from __future__ import annotations

import logging

import asyncpg
from aiohttp import web

from bot.appkeys import SERVICES
from storage.migrator import pending_migrations

log = logging.getLogger(__name__)


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the event loop runs and answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the database is reachable and every migration is applied."""
    try:
        async with request.app[SERVICES].pool.acquire(timeout=5) as conn:
            pending = await pending_migrations(conn)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        log.warning("Readiness check: the database does not answer (%s)", type(error).__name__)
        return web.json_response({"status": "unavailable", "reason": "database unreachable"}, status=503)
    if pending:
        return web.json_response(
            {"status": "unavailable", "reason": "pending migrations", "pending": [str(m) for m in pending]},
            status=503,
        )
    return web.json_response({"status": "ready"})


def register(app: web.Application) -> None:
    """Add the health routes."""
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
