"""Settings: typed, read once (by bot.environment), passed in, never imported as a global; secrets never print."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from bot.errors import ConfigError
from bot.google.endpoints import GOOGLE_RISC_API_URL, GOOGLE_RISC_CONFIG_URI
from bot.google.scopes import Capability, capabilities_of
from bot.reconnect.paths import CALLBACK_PATH, SLACK_CALLBACK_PATH

SECRET_KEY_FILE = "secret_key"
DEFAULT_LINK_TTL = timedelta(days=3)
# How long a browser that signed in with Slack is remembered, so that a returning user reconnects in one click.
DEFAULT_IDENTITY_TTL = timedelta(days=30)
IDENTITY_CHECKS = ("slack", "off")
SLACK_OIDC_AUTHORIZE_URL = "https://slack.com/openid/connect/authorize"
SLACK_OIDC_JWKS_URL = "https://slack.com/openid/connect/keys"
# A run that could not start on time (the bot was down at 09:00) still starts this long after.
DEFAULT_MISFIRE_GRACE = timedelta(hours=1)
# A run's claim on an account is a lease its process renews every third of this; a lapsed one is taken over.
DEFAULT_BRIEFING_LEASE = timedelta(seconds=60)
# How long a command (run-briefing) waits for a database out of reach before it gives up.
DEFAULT_DATABASE_WAIT = timedelta(minutes=5)
DEFAULT_TIMEZONE = "Asia/Seoul"
# Messages a minute the pacer starts at: within the "several hundred a minute" Slack documents for a workspace;
# it adapts to the workspace's real cap from there.
DEFAULT_SLACK_POST_RATE = 300
# Webhooks: how long a receiver has to answer, the first wait before a retry (doubling), and how long to retry.
DEFAULT_WEBHOOK_TIMEOUT = timedelta(seconds=10)
DEFAULT_WEBHOOK_RETRY_BASE = timedelta(seconds=10)
DEFAULT_WEBHOOK_RETRY_WINDOW = timedelta(hours=24)


class Secret:
    """A string that never prints: repr, str and f-strings show a mask; `reveal()` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret value, for the one place that needs it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and secrets.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Settings:
    """Every setting of the bot; built by `load_settings`, passed in, never imported as a global."""

    data_dir: Path
    database_url: Secret | None
    secret_key: Secret | None
    slack_bot_token: Secret | None
    slack_signing_secret: Secret | None
    slack_app_token: Secret | None
    slack_api_url: str
    google_client_id: str | None
    google_client_secret: Secret | None
    google_auth_uri: str
    google_token_uri: str
    google_revoke_uri: str
    google_userinfo_uri: str
    google_certs_uri: str
    gmail_api_url: str
    google_scopes: tuple[str, ...]
    public_base_url: str
    host: str
    port: int
    token_encryption_keys: tuple[bytes, ...] = field(repr=False)
    log_level: str
    link_ttl: timedelta = DEFAULT_LINK_TTL
    default_locale: str = "ko"
    google_testing_mode: bool = False
    admin_slack_user_ids: frozenset[str] = frozenset()
    briefing_timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo(DEFAULT_TIMEZONE))
    briefing_mode: str = "digest"
    briefing_max_messages: int = 10
    briefing_concurrency: int = 32
    preflight_time: time | None = time(8, 0)
    briefing_time: time | None = time(9, 0)
    briefing_misfire_grace: timedelta = DEFAULT_MISFIRE_GRACE
    # After this time of day (in BRIEFING_TIMEZONE) a digest of that day's briefing is dropped, not posted.
    briefing_deadline: time | None = time(11, 0)
    briefing_lease: timedelta = DEFAULT_BRIEFING_LEASE
    database_wait: timedelta = DEFAULT_DATABASE_WAIT
    admin_channel_id: str | None = None
    slack_client_id: str | None = None
    slack_client_secret: Secret | None = None
    slack_oidc_authorize_url: str = SLACK_OIDC_AUTHORIZE_URL
    slack_oidc_jwks_url: str = SLACK_OIDC_JWKS_URL
    identity_check: str = "slack"
    identity_ttl: timedelta = DEFAULT_IDENTITY_TTL
    google_risc_config_uri: str = GOOGLE_RISC_CONFIG_URI
    google_risc_api_url: str = GOOGLE_RISC_API_URL
    google_risc_service_account_file: Path | None = None
    slack_post_rate: int = DEFAULT_SLACK_POST_RATE
    webhook_timeout: timedelta = DEFAULT_WEBHOOK_TIMEOUT
    webhook_retry_base: timedelta = DEFAULT_WEBHOOK_RETRY_BASE
    webhook_retry_window: timedelta = DEFAULT_WEBHOOK_RETRY_WINDOW

    @property
    def uses_embedded_database(self) -> bool:
        """True when no DATABASE_URL is set and the bot runs its own PostgreSQL in the data dir."""
        return self.database_url is None

    @property
    def oauth_redirect_uri(self) -> str:
        """The Google OAuth redirect URI that must be registered on the OAuth client."""
        return self.public_base_url + CALLBACK_PATH

    @property
    def slack_redirect_uri(self) -> str:
        """The Sign in with Slack redirect URL that must be listed in the Slack app's OAuth & Permissions."""
        return self.public_base_url + SLACK_CALLBACK_PATH

    @property
    def checks_identity(self) -> bool:
        """True unless IDENTITY_CHECK=off: a link opens Google's consent only for the Slack user it names."""
        return self.identity_check != "off"

    @property
    def required_capabilities(self) -> frozenset[Capability]:
        """What a connection must be able to do, judged from the scopes the bot asks for."""
        return capabilities_of(self.google_scopes)

    def digest_deadline(self, day: date) -> datetime | None:
        """When the briefing of `day` stops posting digests (BRIEFING_DEADLINE), or None when it never does."""
        if self.briefing_deadline is None:
            return None
        return datetime.combine(day, self.briefing_deadline, tzinfo=self.briefing_timezone)

    def is_admin(self, slack_user_id: str) -> bool:
        """True for the users listed in ADMIN_SLACK_USER_IDS."""
        return slack_user_id in self.admin_slack_user_ids

    def missing_for_serve(self) -> list[str]:
        """Problems that stop `serve` (settings other commands do without), one line each."""
        problems = []
        if self.slack_bot_token is None:
            problems.append("SLACK_BOT_TOKEN is not set: set it to the app's Bot User OAuth Token (xoxb-…).")
        if self.slack_signing_secret is None:
            problems.append(
                "SLACK_SIGNING_SECRET is not set: set it to the Signing Secret from the app's Basic Information."
            )
        if self.google_client_id is None or self.google_client_secret is None:
            problems.append(
                "GOOGLE_CLIENT_ID / GOOGLE_CLIENT_SECRET are not set: set both, or set "
                "GOOGLE_CLIENT_SECRETS_FILE to the credentials.json of a Google OAuth client of type "
                "'Web application'."
            )
        if self.checks_identity and (self.slack_client_id is None or self.slack_client_secret is None):
            problems.append(
                "SLACK_CLIENT_ID / SLACK_CLIENT_SECRET are not set: set both to the Client ID and Client Secret "
                "from the Slack app's Basic Information, so that a reconnect link opens only for the person it "
                "was sent to (Sign in with Slack); or set IDENTITY_CHECK=off to skip that check (then anyone a "
                "link is forwarded to can attach their own mailbox)."
            )
        return problems

    def identity_warning(self) -> str | None:
        """The warning `serve` and `doctor` give on every start while IDENTITY_CHECK=off."""
        if self.checks_identity:
            return None
        return (
            "IDENTITY_CHECK=off: reconnect links are not tied to the person they were sent to, so anyone a link "
            "is forwarded to can attach their own mailbox to that person's account. Set SLACK_CLIENT_ID and "
            "SLACK_CLIENT_SECRET and remove IDENTITY_CHECK to check with Sign in with Slack."
        )

    def require_for_serve(self) -> None:
        """Raise ConfigError naming every setting `serve` needs and does not have."""
        problems = self.missing_for_serve()
        if problems:
            raise ConfigError(problems)

    def secret_values(self) -> list[str]:
        """Every secret's value, so the log filter can mask them wherever they appear."""
        values = [
            s.reveal()
            for s in (
                self.secret_key,
                self.slack_bot_token,
                self.slack_signing_secret,
                self.slack_app_token,
                self.google_client_secret,
                self.slack_client_secret,
            )
            if s is not None
        ]
        if self.database_url is not None:
            password = urlsplit(self.database_url.reveal()).password
            if password:
                values.append(password)
        return values


def ensure_secret_key(settings: Settings) -> Settings:
    """For the embedded default: create SECRET_KEY in the data dir once (mode 0600) and return settings with it."""
    if settings.secret_key is not None:
        return settings
    path = settings.data_dir / SECRET_KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(48) + "\n")
    return replace(settings, secret_key=Secret(path.read_text().strip()))
