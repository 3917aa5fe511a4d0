"""The one place that wires the bot's services: `serve`, `run-briefing` and every other command get them here.

`Services` is built from the settings, a database pool and the HTTP sessions. Each service is made on first
use, so a command that never talks to Slack (`accounts`, `link`, …) does without the Slack settings, and one
that does gets a ConfigError naming what is missing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cached_property

import aiohttp
import asyncpg
from slack_sdk.web.async_client import AsyncWebClient

from bot.briefing.account import AccountBriefing
from bot.briefing.run import Briefing
from bot.briefing.summary import RunSummary
from bot.config import Settings
from bot.database import check_schema, resolve_database_url, token_codec
from bot.errors import ConfigError
from bot.google.client import GoogleClient, google_client
from bot.google.consent import Consent
from bot.google.gmail import Gmail
from bot.google.risc import RiscIssuer
from bot.google.token_service import TokenService, build_token_service
from bot.metrics import Metrics
from bot.reconnect.flow import ReconnectFlow
from bot.reconnect.hooks import ReconnectHooks
from bot.reconnect.identity import IdentityCookie, identity_cookie
from bot.reconnect.links import LinkSigner, link_signer
from bot.reconnect.ownership import OwnerCheck
from bot.security_events import SecurityEventResponder
from bot.slack.client import SLACK_TIMEOUT_SECONDS, USER_AGENT, SlackUsers, create_web_client
from bot.slack.delivery import SlackDelivery
from bot.slack.pacer import Pacer
from bot.slack.prompter import Prompter
from bot.slack.sign_in import SlackSignIn
from storage.accounts import Accounts
from storage.api_keys import ApiKeys
from storage.oauth_states import OAuthStates
from storage.outbox import SlackOutbox
from storage.pool import close_pool, connect, create_pool
from storage.prompts import Prompts
from storage.runs import Runs
from storage.security_events import SecurityEvents
from storage.slack_deliveries import SlackDeliveries
from storage.slack_locales import SlackLocales
from storage.webhook_deliveries import WebhookDeliveries
from storage.webhooks import Webhooks

# The server notices a drainer whose host died (no FIN) within about 25 s on TCP, and lets its lock go; on a Unix
# socket they do not apply, and a dead process's socket closes at once anyway.
KEEPALIVES = {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3"}

# Connections beyond the briefing's workers (each may hold one: a refresh or prompt lock) for Slack, OAuth and
# the API; the workers themselves count for at most MAX_POOLED_WORKERS.
SPARE_CONNECTIONS = 8
MAX_POOLED_WORKERS = 32


def pool_size(settings: Settings) -> int:
    """How many pooled database connections a process needs: one per briefing worker, and some to spare (the
    drainer of the Slack delivery queue has one of its own besides)."""
    return min(settings.briefing_concurrency, MAX_POOLED_WORKERS) + SPARE_CONNECTIONS


@dataclass(frozen=True)
class HttpSessions:
    """The long-lived HTTP sessions: one to Google, one to Slack."""

    google: aiohttp.ClientSession
    slack: aiohttp.ClientSession


@asynccontextmanager
async def http_sessions(settings: Settings) -> AsyncIterator[HttpSessions]:
    """Sessions with room for BRIEFING_CONCURRENCY workers: each may fetch all its messages at once (aiohttp's
    default limit of 100 connections throttled that). Slack's client gets its own long-lived session: without
    one, slack_sdk opens a connection per call."""
    google_limit = max(100, settings.briefing_concurrency * (settings.briefing_max_messages + 1))
    slack_limit = max(100, settings.briefing_concurrency * 2)
    async with (
        aiohttp.ClientSession(
            headers={"User-Agent": USER_AGENT}, connector=aiohttp.TCPConnector(limit=google_limit)
        ) as google,
        aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=SLACK_TIMEOUT_SECONDS),
            connector=aiohttp.TCPConnector(limit=slack_limit),
        ) as slack,
    ):
        yield HttpSessions(google, slack)


class Services:
    """Every long-lived service, each built once, on first use, from the settings, the pool and the sessions."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        sessions: HttpSessions,
        *,
        dsn: str,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.dsn = dsn  # for the connections that hold a session lock, outside the pool
        self.sessions = sessions
        self.metrics = metrics or Metrics()
        # The Slack layer registers its hook on these while the application is assembled.
        self.hooks = ReconnectHooks()

    @cached_property
    def accounts(self) -> Accounts:
        """The gmail_tokens repository, encrypting when TOKEN_ENCRYPTION_KEYS is set."""
        return Accounts(self.pool, token_codec(self.settings))

    @cached_property
    def api_keys(self) -> ApiKeys:
        """The API keys of the services that use the tokens."""
        return ApiKeys(self.pool)

    @cached_property
    def webhooks(self) -> Webhooks:
        """The webhooks of the services that use the API, their secrets sealed with TOKEN_ENCRYPTION_KEYS."""
        return Webhooks(self.pool, self.accounts.codec.cipher)

    @cached_property
    def webhook_deliveries(self) -> WebhookDeliveries:
        """The webhook outbox the senders deliver."""
        return WebhookDeliveries(self.pool)

    @cached_property
    def links(self) -> LinkSigner:
        """Signs and checks the Reconnect Gmail links (needs SECRET_KEY)."""
        return link_signer(self.settings)

    @cached_property
    def google(self) -> GoogleClient:
        """Google's token, revocation and userinfo endpoints, with the retry policy."""
        return google_client(self.settings, self.sessions.google)

    @cached_property
    def gmail(self) -> Gmail:
        """The Gmail API calls of the briefing."""
        return Gmail(self.google, api_url=self.settings.gmail_api_url)

    @cached_property
    def tokens(self) -> TokenService:
        """Valid access tokens on demand (needs GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET)."""
        return build_token_service(self.settings, self.accounts, self.google, metrics=self.metrics)

    @cached_property
    def reconnect(self) -> ReconnectFlow:
        """The consent flow, from a Slack link to stored tokens."""
        states = OAuthStates(self.pool, self.accounts.codec.cipher)
        owners = None
        if self.settings.checks_identity:
            owners = OwnerCheck(
                slack=SlackSignIn(self.settings, self.sessions.slack),
                states=states,
                pool=self.pool,
                name_of=self.users.name,
            )
        return ReconnectFlow(
            self.settings,
            accounts=self.accounts,
            states=states,
            links=self.links,
            consent=Consent(self.settings),
            google=self.google,
            hooks=self.hooks,
            owners=owners,
        )

    @cached_property
    def identity_cookie(self) -> IdentityCookie:
        """The signed cookie that remembers who a browser proved to be in Slack (needs SECRET_KEY)."""
        return identity_cookie(self.settings)

    @cached_property
    def pacer(self) -> Pacer:
        """The one pace of this process's Slack calls, starting at SLACK_POST_RATE messages a minute."""
        return Pacer(self.settings.slack_post_rate, metrics=self.metrics)

    @cached_property
    def slack(self) -> AsyncWebClient:
        """Slack's Web API client (needs SLACK_BOT_TOKEN), on the Slack session, in the pacer's turn."""
        client = create_web_client(self.settings, pacer=self.pacer)
        client.session = self.sessions.slack
        return client

    @cached_property
    def outbox(self) -> SlackOutbox:
        """The delivery queue of the runs' Slack messages, sealed with TOKEN_ENCRYPTION_KEYS when it is set."""
        return SlackOutbox(self.pool, self.accounts.codec.cipher)

    @cached_property
    def delivery(self) -> SlackDelivery:
        """This process's drainer of the delivery queue (it sends while it holds the delivery lock)."""
        return SlackDelivery(
            pool=self.pool,
            connect=lambda: connect(self.dsn, server_settings=KEEPALIVES),
            outbox=self.outbox,
            client=self.slack,
            pacer=self.pacer,
            metrics=self.metrics,
            timezone=self.settings.briefing_timezone,
            prompts=self.prompts,
            prompter=lambda: self.prompter,
        )

    @cached_property
    def users(self) -> SlackUsers:
        """Slack users' languages and emails, the languages kept in the database too."""
        return SlackUsers(self.slack, self.settings.default_locale, stored=SlackLocales(self.pool))

    @cached_property
    def slack_deliveries(self) -> SlackDeliveries:
        """What Slack already sent: each signed request and each event is taken once, whichever replica gets it."""
        return SlackDeliveries(self.pool)

    @cached_property
    def prompts(self) -> Prompts:
        """The Reconnect Gmail DMs sent, one open per user."""
        return Prompts(self.pool)

    @cached_property
    def prompter(self) -> Prompter:
        """Sends, edits and closes the Reconnect Gmail DMs."""
        return Prompter(
            client=self.slack,
            prompts=self.prompts,
            accounts=self.accounts,
            links=self.links,
            users=self.users,
            timezone=self.settings.briefing_timezone,
            metrics=self.metrics,
            required=self.settings.required_capabilities,
        )

    @cached_property
    def runs(self) -> Runs:
        """The records of the preflight and briefing runs."""
        return Runs(self.accounts, lease=self.settings.briefing_lease)

    @cached_property
    def summary(self) -> RunSummary:
        """The admin summary of each run."""
        return RunSummary(
            settings=self.settings,
            client=self.slack,
            accounts=self.accounts,
            runs=self.runs,
            outbox=self.outbox,
        )

    @cached_property
    def risc(self) -> RiscIssuer:
        """Checks Google's security event tokens (needs GOOGLE_CLIENT_ID, their audience)."""
        if self.settings.google_client_id is None:
            raise ConfigError(self.settings.missing_for_serve())
        return RiscIssuer(
            self.settings.google_risc_config_uri,
            self.sessions.google,
            audience=self.settings.google_client_id,
        )

    @cached_property
    def security_events(self) -> SecurityEventResponder:
        """Acts on Google's security events: records them, then the DM or the check with Google."""
        return SecurityEventResponder(
            events=SecurityEvents(self.pool),
            accounts=self.accounts,
            tokens=lambda: self.tokens,
            prompter=lambda: self.prompter,
            slack=lambda: self.slack,
            users=lambda: self.users,
            outbox=self.outbox,
        )

    @cached_property
    def briefing(self) -> Briefing:
        """The preflight and the 9am briefing over every linked account."""
        one = AccountBriefing(
            settings=self.settings,
            accounts=self.accounts,
            tokens=self.tokens,
            google=self.google,
            gmail=self.gmail,
            prompter=self.prompter,
            client=self.slack,
            users=self.users,
            metrics=self.metrics,
        )
        return Briefing(
            settings=self.settings,
            accounts=self.accounts,
            tokens=self.tokens,
            one=one,
            users=self.users,
            runs=self.runs,
            summary=self.summary,
            metrics=self.metrics,
            delivery=self.delivery,
        )


def build_services(
    settings: Settings,
    pool: asyncpg.Pool,
    sessions: HttpSessions,
    *,
    dsn: str,
    metrics: Metrics | None = None,
) -> Services:
    """The services of one process, on `pool` and `sessions` (both on the database at `dsn`)."""
    return Services(settings, pool, sessions, dsn=dsn, metrics=metrics)


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Services on a current schema with a pool and sessions of their own, for a command; all close on exit."""
    dsn = await resolve_database_url(settings)
    await check_schema(settings, dsn)
    pool: asyncpg.Pool = await create_pool(dsn, min_size=1, max_size=pool_size(settings))
    try:
        async with http_sessions(settings) as sessions:
            yield build_services(settings, pool, sessions, dsn=dsn)
    finally:
        await close_pool(pool)
