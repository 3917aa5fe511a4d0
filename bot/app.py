"""The composition root: one function builds the whole aiohttp application from Settings."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from bot.appkeys import BOLT, SCHEDULE, SERVICES, SOCKET_MODE
from bot.briefing.schedule import Schedule
from bot.config import Settings
from bot.database import apply_migrations, resolve_database_url
from bot.errors import ConfigError
from bot.services import build_services, http_sessions, pool_size
from bot.slack.client import create_bolt_app
from bot.slack.socket_mode import SocketMode
from bot.webhooks.sender import RetryPolicy, running_sender
from handlers import register_routes, register_slack
from handlers.http.errors import error_middleware
from storage.pool import close_pool, create_pool, describe_dsn

log = logging.getLogger(__name__)

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


def create_app(settings: Settings) -> web.Application:
    """The web application: routes, middlewares and every long-lived resource as a cleanup context."""
    problems = settings.missing_for_serve()
    if settings.secret_key is None:
        problems.append("SECRET_KEY is not set: it signs the reconnect links (see `gmail-reconnect serve`).")
    if problems:
        raise ConfigError(problems)
    app = web.Application(middlewares=[error_middleware])
    app.cleanup_ctx.append(_services(settings))
    app.cleanup_ctx.append(_slack_delivery)  # before the schedule: its runs wait for their messages' delivery
    app.cleanup_ctx.append(_schedule)
    app.cleanup_ctx.append(_webhook_sender)
    if settings.slack_app_token is not None:
        app.cleanup_ctx.append(_socket_mode)
    register_routes(app)
    return app


def _services(settings: Settings) -> CleanupContext:
    async def services(app: web.Application) -> AsyncIterator[None]:
        """The database (migrated), the HTTP sessions, the services on them, and Bolt with its listeners."""
        dsn = await resolve_database_url(settings)
        await apply_migrations(settings, dsn)
        pool = await create_pool(dsn, max_size=pool_size(settings))
        log.info("Connected to %s", describe_dsn(dsn))
        try:
            async with http_sessions(settings) as sessions:
                built = build_services(settings, pool, sessions, dsn=dsn)
                bolt = create_bolt_app(settings, client=built.slack)
                register_slack(bolt, built)
                app[SERVICES], app[BOLT] = built, bolt
                yield
                await built.hooks.drain()
        finally:
            await close_pool(pool)

    return services


async def _schedule(app: web.Application) -> AsyncIterator[None]:
    schedule = Schedule(app[SERVICES].settings, app[SERVICES].briefing)
    app[SCHEDULE] = schedule
    await schedule.start()
    yield
    await schedule.stop()


async def _webhook_sender(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    settings = services.settings
    async with running_sender(
        services.webhooks,
        services.webhook_deliveries,
        answer_within=settings.webhook_timeout,
        policy=RetryPolicy(base=settings.webhook_retry_base, window=settings.webhook_retry_window),
        metrics=services.metrics,
    ):
        yield


async def _slack_delivery(app: web.Application) -> AsyncIterator[None]:
    # Every replica drains the Slack delivery queue when it holds the lock, and takes over when the holder stops.
    async with app[SERVICES].delivery.running():
        yield


async def _socket_mode(app: web.Application) -> AsyncIterator[None]:
    # With SLACK_APP_TOKEN, Slack's requests arrive over a WebSocket. Connecting is left to a background task:
    # OAuth, the API, /metrics and the health checks are served whether Slack takes the token or not.
    token = app[SERVICES].settings.slack_app_token
    assert token is not None
    socket_mode = SocketMode(app[BOLT], token.reveal())
    app[SOCKET_MODE] = socket_mode
    socket_mode.start()
    yield
    await socket_mode.stop()
