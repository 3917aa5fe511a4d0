"""The composition root: one function builds the whole aiohttp application from Settings."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from bot.appkeys import (
    ACCOUNTS,
    API_KEYS,
    BOLT,
    BRIEFING,
    HOOKS,
    LINKS,
    METRICS,
    POOL,
    PROMPTER,
    RECONNECT,
    SCHEDULE,
    SETTINGS,
    SLACK_USERS,
    TOKENS,
)
from bot.briefing.run import build_briefing, http_sessions
from bot.briefing.schedule import Schedule
from bot.config import Settings
from bot.database import apply_migrations, resolve_database_url, token_codec
from bot.errors import ConfigError
from bot.google.consent import Consent
from bot.google.token_service import build_token_service
from bot.metrics import Metrics
from bot.reconnect.flow import ReconnectFlow
from bot.reconnect.hooks import ReconnectHooks
from bot.reconnect.links import LinkSigner
from bot.slack.client import SlackUsers, create_bolt_app
from handlers import slack
from handlers.http import api, health, metrics, oauth
from handlers.http.errors import error_middleware
from storage.accounts import Accounts
from storage.api_keys import ApiKeys
from storage.oauth_states import OAuthStates
from storage.pool import create_pool, describe_dsn
from storage.slack_locales import SlackLocales

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> web.Application:
    """The web application: routes, middlewares and every long-lived resource as a cleanup context."""
    if settings.secret_key is None:
        raise ConfigError(
            ["SECRET_KEY is not set: it signs the reconnect links (see `gmail-reconnect serve`)."]
        )
    app = web.Application(middlewares=[error_middleware])
    app[SETTINGS] = settings
    app[LINKS] = LinkSigner(
        settings.secret_key.reveal(), public_base_url=settings.public_base_url, ttl=settings.link_ttl
    )
    # Hooks exist before start-up, so the Slack layer can register on them while the app is assembled.
    app[HOOKS] = ReconnectHooks()
    app[METRICS] = Metrics()
    bolt = create_bolt_app(settings)
    app[BOLT] = bolt
    app[SLACK_USERS] = SlackUsers(bolt.client, settings.default_locale)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_services)
    app.cleanup_ctx.append(_schedule)
    if settings.slack_app_token is not None:
        app.cleanup_ctx.append(_socket_mode)
    health.register(app)
    api.register(app)
    metrics.register(app)
    oauth.register(app)
    slack.register(app)
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    dsn = await resolve_database_url(settings)
    await apply_migrations(settings, dsn)
    # The briefing's workers may each hold one (a refresh or prompt lock); the rest serve Slack and OAuth.
    pool = await create_pool(dsn, max_size=min(settings.briefing_concurrency, 32) + 8)
    log.info("Connected to %s", describe_dsn(dsn))
    app[POOL] = pool
    app[ACCOUNTS] = Accounts(pool, token_codec(settings))
    app[API_KEYS] = ApiKeys(pool)
    app[SLACK_USERS].stored = SlackLocales(pool)
    yield
    await pool.close()


async def _services(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    # Slack's client gets its own long-lived session: without one, slack_sdk opens a connection per call.
    async with http_sessions(settings) as (session, slack_session):
        app[BOLT].client.session = slack_session
        accounts = app[ACCOUNTS]
        tokens = build_token_service(settings, accounts, session, metrics=app[METRICS])
        app[TOKENS] = tokens
        app[RECONNECT] = ReconnectFlow(
            settings,
            accounts=accounts,
            states=OAuthStates(app[POOL], accounts.codec.cipher),
            links=app[LINKS],
            consent=Consent(settings),
            google=tokens.google,
            hooks=app[HOOKS],
        )
        app[BRIEFING] = build_briefing(
            settings,
            accounts=accounts,
            tokens=tokens,
            client=app[BOLT].client,
            users=app[SLACK_USERS],
            links=app[LINKS],
            metrics=app[METRICS],
        )
        app[PROMPTER] = app[BRIEFING].prompter
        yield
        await app[HOOKS].drain()


async def _schedule(app: web.Application) -> AsyncIterator[None]:
    schedule = Schedule(app[SETTINGS], app[BRIEFING])
    app[SCHEDULE] = schedule
    await schedule.start()
    yield
    await schedule.stop()


async def _socket_mode(app: web.Application) -> AsyncIterator[None]:
    # With SLACK_APP_TOKEN, Slack's requests arrive over a WebSocket; the web server still serves OAuth and health.
    from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler

    token = app[SETTINGS].slack_app_token
    assert token is not None
    handler = AsyncSocketModeHandler(app[BOLT], token.reveal())
    await handler.connect_async()
    log.info("Connected to Slack in Socket Mode")
    yield
    await handler.close_async()
