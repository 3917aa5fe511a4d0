"""The composition root: one function builds the whole aiohttp application from Settings."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from bot.appkeys import ACCOUNTS, POOL, SETTINGS
from bot.config import Settings
from bot.database import apply_migrations, resolve_database_url, token_codec
from handlers import health
from handlers.errors import error_middleware
from storage.accounts import Accounts
from storage.pool import create_pool, describe_dsn

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> web.Application:
    """The web application: routes, middlewares and every long-lived resource as a cleanup context."""
    app = web.Application(middlewares=[error_middleware])
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_database)
    health.register(app)
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    dsn = await resolve_database_url(settings)
    await apply_migrations(settings, dsn)
    pool = await create_pool(dsn)
    log.info("Connected to %s", describe_dsn(dsn))
    app[POOL] = pool
    app[ACCOUNTS] = Accounts(pool, token_codec(settings))
    yield
    await pool.close()
