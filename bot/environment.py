"""Settings read from the environment (and an optional .env), each variable checked, every problem collected
so the user sees all of them at once, each naming the variable and what to set."""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.config import (
    DEFAULT_BRIEFING_LEASE,
    DEFAULT_DATABASE_WAIT,
    DEFAULT_IDENTITY_TTL,
    DEFAULT_LINK_TTL,
    DEFAULT_MISFIRE_GRACE,
    DEFAULT_SLACK_POST_RATE,
    DEFAULT_TIMEZONE,
    DEFAULT_WEBHOOK_RETRY_BASE,
    DEFAULT_WEBHOOK_RETRY_WINDOW,
    DEFAULT_WEBHOOK_TIMEOUT,
    IDENTITY_CHECKS,
    SECRET_KEY_FILE,
    SLACK_OIDC_AUTHORIZE_URL,
    SLACK_OIDC_JWKS_URL,
    Secret,
    Settings,
)
from bot.errors import ConfigError
from bot.google.endpoints import (
    GMAIL_API_URL,
    GOOGLE_AUTH_URI,
    GOOGLE_CERTS_URI,
    GOOGLE_REVOKE_URI,
    GOOGLE_RISC_API_URL,
    GOOGLE_RISC_CONFIG_URI,
    GOOGLE_TOKEN_URI,
    GOOGLE_USERINFO_URI,
)
from bot.google.scopes import Capability, capabilities_of
from bot.i18n import LOCALES
from bot.slack.ids import SLACK_CHANNEL_ID, is_user_id
from storage.crypto import KeyFormatError, parse_keys
from storage.scopes import normalize_scopes


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of a .env file (KEY=VALUE lines), or {} when it does not exist."""
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {key: value for key, value in dotenv_values(path).items() if value is not None}


def load_settings(environ: Mapping[str, str] | None = None, env_file: Path | None = None) -> Settings:
    """Build Settings from the environment, with `.env` values underneath; raise ConfigError listing every problem."""
    env = dict(read_env_file(env_file if env_file is not None else Path(".env")))
    env.update(os.environ if environ is None else environ)
    reader = _Reader(env)
    settings = reader.build()
    if reader.problems:
        raise ConfigError(reader.problems)
    return settings


SLACK_API_URL = "https://slack.com/api/"
DEFAULT_SCOPES = (
    "openid",
    "email",
    "https://www.googleapis.com/auth/gmail.readonly",
    "https://www.googleapis.com/auth/gmail.send",
)
MIN_SECRET_KEY_LENGTH = 32
# What a value copied from .env.example or a guide looks like when nobody filled it in: "xoxb-...", "<token>",
# "your-client-id", "changeme". No real token, secret, ID or URL contains any of these.
_PLACEHOLDER = re.compile(r"\.\.\.|…|<[^>]*>|^your[-_ ]|^change[-_ ]?me$", re.IGNORECASE)
BRIEFING_MODES = ("digest", "check")
# A digest of the 9am briefing is not worth posting at noon: by default it is dropped two hours after.
DEADLINE_AFTER = timedelta(hours=2)
_DURATION = re.compile(r"(\d+)\s*([smhd]?)")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class _Reader:
    """Reads and checks one variable at a time, collecting problems so the user sees all of them at once."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self.env.get(name, "").strip()
        if _PLACEHOLDER.search(value):
            return default  # e.g. .env.example's SLACK_BOT_TOKEN=xoxb-...: not a value anyone set
        return value or default

    def secret(self, name: str) -> Secret | None:
        value = self.text(name)
        return Secret(value) if value else None

    def url(self, name: str, default: str, *, trailing_slash: bool = False) -> str:
        value = self.text(name, default) or default
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.problems.append(f"{name}={value!r} is not an http(s) URL: set it like {default!r}.")
        elif parts.scheme == "http" and not is_loopback(parts.hostname):
            self.problems.append(
                f"{name} uses plain http:// for {parts.hostname!r}: use https://, "
                "(http:// is accepted only for localhost / 127.0.0.1 / ::1, e.g. for local test servers)."
            )
        elif parts.username or parts.password:
            self.problems.append(f"{name} must not carry a user name or password in the URL.")
        if trailing_slash and not value.endswith("/"):
            value += "/"
        return value

    def path(self, name: str) -> Path | None:
        value = self.text(name)
        return Path(value).expanduser() if value else None

    def port(self) -> int:
        return self.integer("PORT", 8080, 1, 65535, what="a port number")

    def integer(self, name: str, default: int, low: int, high: int, *, what: str = "a number") -> int:
        value = self.text(name, str(default)) or str(default)
        if not value.isdigit() or not low <= int(value) <= high:
            self.problems.append(f"{name}={value!r} is not {what}: set a whole number from {low} to {high}.")
            return default
        return int(value)

    def build(self) -> Settings:
        data_dir = Path(self.text("GMAIL_RECONNECT_DATA_DIR", "./.gmail-reconnect") or ".").expanduser()
        database_url = self.database_url()
        client_id, client_secret, auth_uri, token_uri = self.google_client()
        public_base_url = self.url("PUBLIC_BASE_URL", "http://localhost:8080").rstrip("/")
        briefing_time = self.time_of_day("BRIEFING_TIME", time(9, 0))
        if urlsplit(public_base_url).path not in ("",):
            self.problems.append(
                f"PUBLIC_BASE_URL={public_base_url!r} must be a bare origin such as https://bot.example.com "
                "(no path): the bot serves /oauth/google/callback and /slack/events at its root."
            )
        return Settings(
            data_dir=data_dir,
            database_url=database_url,
            secret_key=self.secret_key(data_dir, database_url),
            slack_bot_token=self.prefixed_secret("SLACK_BOT_TOKEN", "xoxb-", "the Bot User OAuth Token"),
            slack_signing_secret=self.secret("SLACK_SIGNING_SECRET"),
            slack_app_token=self.prefixed_secret("SLACK_APP_TOKEN", "xapp-", "an App-Level Token"),
            slack_api_url=self.url("SLACK_API_URL", SLACK_API_URL, trailing_slash=True),
            google_client_id=client_id,
            google_client_secret=client_secret,
            google_auth_uri=self.url("GOOGLE_AUTH_URI", auth_uri),
            google_token_uri=self.url("GOOGLE_TOKEN_URI", token_uri),
            google_revoke_uri=self.url("GOOGLE_REVOKE_URI", GOOGLE_REVOKE_URI),
            google_userinfo_uri=self.url("GOOGLE_USERINFO_URI", GOOGLE_USERINFO_URI),
            google_certs_uri=self.url("GOOGLE_CERTS_URI", GOOGLE_CERTS_URI),
            gmail_api_url=self.url("GMAIL_API_URL", GMAIL_API_URL, trailing_slash=True),
            google_scopes=self.scopes(),
            public_base_url=public_base_url,
            host=self.text("HOST", "0.0.0.0") or "0.0.0.0",  # noqa: S104 - a server listens on all interfaces by default
            port=self.port(),
            token_encryption_keys=self.encryption_keys(),
            log_level=self.log_level(),
            link_ttl=self.duration("LINK_TTL", DEFAULT_LINK_TTL),
            default_locale=self.choice("DEFAULT_LOCALE", LOCALES, "ko"),
            google_testing_mode=self.flag("GOOGLE_OAUTH_TESTING_MODE"),
            admin_slack_user_ids=self.slack_ids("ADMIN_SLACK_USER_IDS"),
            briefing_timezone=self.timezone("BRIEFING_TIMEZONE", DEFAULT_TIMEZONE),
            briefing_mode=self.choice("BRIEFING_MODE", BRIEFING_MODES, "digest"),
            briefing_max_messages=self.integer("BRIEFING_MAX_MESSAGES", 10, 1, 100),
            briefing_concurrency=self.integer("BRIEFING_CONCURRENCY", 32, 1, 512),
            preflight_time=self.time_of_day("PREFLIGHT_TIME", time(8, 0)),
            briefing_time=briefing_time,
            briefing_misfire_grace=self.duration("BRIEFING_MISFIRE_GRACE", DEFAULT_MISFIRE_GRACE),
            briefing_deadline=self.deadline(briefing_time),
            briefing_lease=self.duration("BRIEFING_LEASE", DEFAULT_BRIEFING_LEASE),
            database_wait=self.duration("DATABASE_WAIT", DEFAULT_DATABASE_WAIT),
            admin_channel_id=self.channel_id("ADMIN_CHANNEL_ID"),
            slack_client_id=self.text("SLACK_CLIENT_ID"),
            slack_client_secret=self.secret("SLACK_CLIENT_SECRET"),
            slack_oidc_authorize_url=self.url("SLACK_OIDC_AUTHORIZE_URL", SLACK_OIDC_AUTHORIZE_URL),
            slack_oidc_jwks_url=self.url("SLACK_OIDC_JWKS_URL", SLACK_OIDC_JWKS_URL),
            identity_check=self.choice("IDENTITY_CHECK", IDENTITY_CHECKS, "slack"),
            identity_ttl=self.duration("IDENTITY_TTL", DEFAULT_IDENTITY_TTL),
            google_risc_config_uri=self.url("GOOGLE_RISC_CONFIG_URI", GOOGLE_RISC_CONFIG_URI),
            google_risc_api_url=self.url("GOOGLE_RISC_API_URL", GOOGLE_RISC_API_URL, trailing_slash=True),
            google_risc_service_account_file=self.path("GOOGLE_RISC_SERVICE_ACCOUNT_FILE"),
            slack_post_rate=self.integer(
                "SLACK_POST_RATE", DEFAULT_SLACK_POST_RATE, 1, 100_000, what="messages a minute"
            ),
            webhook_timeout=self.duration("WEBHOOK_TIMEOUT", DEFAULT_WEBHOOK_TIMEOUT),
            webhook_retry_base=self.duration("WEBHOOK_RETRY_BASE", DEFAULT_WEBHOOK_RETRY_BASE),
            webhook_retry_window=self.duration("WEBHOOK_RETRY_WINDOW", DEFAULT_WEBHOOK_RETRY_WINDOW),
        )

    def database_url(self) -> Secret | None:
        value = self.text("DATABASE_URL")
        if value is None:
            return None
        shape = "set it like postgresql://USER:PASSWORD@HOST:5432/DATABASE, or unset it to use the embedded PostgreSQL"
        try:
            parts = urlsplit(value)
            port = parts.port  # ValueError for a port that is not a number from 0 to 65535
        except ValueError as error:
            # The message of a bad port or bracket never holds the password; the URL itself is not shown.
            self.problems.append(f"DATABASE_URL cannot be read ({error}): {shape}.")
            return None
        if parts.scheme not in ("postgres", "postgresql"):
            self.problems.append(f"DATABASE_URL is not a PostgreSQL URL: {shape}.")
        elif port == 0:
            self.problems.append(f"DATABASE_URL has port 0: {shape}.")
        return Secret(value)

    def prefixed_secret(self, name: str, prefix: str, what: str) -> Secret | None:
        value = self.secret(name)
        if value is not None and not value.reveal().startswith(prefix):
            self.problems.append(f"{name} does not start with {prefix!r}: set it to {what} ({prefix}…).")
        return value

    def secret_key(self, data_dir: Path, database_url: Secret | None) -> Secret | None:
        value = self.secret("SECRET_KEY")
        if value is not None:
            if len(value.reveal()) < MIN_SECRET_KEY_LENGTH:
                self.problems.append(
                    f"SECRET_KEY is shorter than {MIN_SECRET_KEY_LENGTH} characters: set a long random value, "
                    'e.g. the output of python -c "import secrets; print(secrets.token_urlsafe(48))".'
                )
            return value
        if database_url is not None:
            self.problems.append(
                "SECRET_KEY is not set: it is required with DATABASE_URL (every replica must share it); "
                'set it to the output of python -c "import secrets; print(secrets.token_urlsafe(48))".'
            )
            return None
        stored = data_dir / SECRET_KEY_FILE
        return Secret(stored.read_text().strip()) if stored.is_file() else None

    def google_client(self) -> tuple[str | None, Secret | None, str, str]:
        client_id = self.text("GOOGLE_CLIENT_ID")
        client_secret = self.secret("GOOGLE_CLIENT_SECRET")
        auth_uri, token_uri = GOOGLE_AUTH_URI, GOOGLE_TOKEN_URI
        secrets_file = self.text("GOOGLE_CLIENT_SECRETS_FILE")
        if secrets_file:
            client = self.client_secrets_file(Path(secrets_file).expanduser())
            if client:
                client_id = client_id or client.get("client_id")
                if client_secret is None and client.get("client_secret"):
                    client_secret = Secret(client["client_secret"])
                auth_uri = client.get("auth_uri") or auth_uri
                token_uri = client.get("token_uri") or token_uri
        return client_id, client_secret, auth_uri, token_uri

    def client_secrets_file(self, path: Path) -> dict[str, str] | None:
        try:
            document = json.loads(path.read_text())
        except FileNotFoundError:
            self.problems.append(
                f"GOOGLE_CLIENT_SECRETS_FILE={str(path)!r} does not exist: set the path of credentials.json."
            )
            return None
        except (OSError, ValueError) as error:
            self.problems.append(
                f"GOOGLE_CLIENT_SECRETS_FILE={str(path)!r} cannot be read as JSON ({type(error).__name__}): "
                "download it again from Google Cloud Console → APIs & Services → Credentials."
            )
            return None
        if isinstance(document, dict) and "web" not in document and "installed" in document:
            self.problems.append(
                f"GOOGLE_CLIENT_SECRETS_FILE={str(path)!r} is a 'Desktop app' client ('installed'), which cannot "
                "send users back to PUBLIC_BASE_URL: create an OAuth client of type 'Web application' and "
                "download its JSON."
            )
            return None
        client = document.get("web") if isinstance(document, dict) else None
        if not isinstance(client, dict) or not client.get("client_id"):
            self.problems.append(
                f"GOOGLE_CLIENT_SECRETS_FILE={str(path)!r} has no 'web' client with a client_id: "
                "create an OAuth client of type 'Web application' and download its JSON."
            )
            return None
        return {key: str(value) for key, value in client.items() if isinstance(value, str)}

    def scopes(self) -> tuple[str, ...]:
        value = self.text("GOOGLE_SCOPES")
        scopes = tuple(normalize_scopes(value.replace(",", " ").split())) if value else DEFAULT_SCOPES
        if Capability.READ not in capabilities_of(scopes):
            self.problems.append(
                "GOOGLE_SCOPES grants no way to read mail, which the briefing needs: include "
                "https://www.googleapis.com/auth/gmail.readonly (or unset GOOGLE_SCOPES for the default)."
            )
        return scopes

    def encryption_keys(self) -> tuple[bytes, ...]:
        try:
            return tuple(parse_keys(self.text("TOKEN_ENCRYPTION_KEYS", "") or ""))
        except KeyFormatError as error:
            self.problems.append(str(error))
            return ()

    def duration(self, name: str, default: timedelta) -> timedelta:
        value = self.text(name)
        if value is None:
            return default
        match = _DURATION.fullmatch(value.lower())
        if match is None or int(match.group(1)) == 0:
            self.problems.append(
                f"{name}={value!r} is not a duration: set a whole number with a unit, e.g. 7d, 36h, 90m or 600s."
            )
            return default
        return timedelta(seconds=int(match.group(1)) * _DURATION_UNITS[match.group(2)])

    def choice(self, name: str, allowed: tuple[str, ...], default: str) -> str:
        value = (self.text(name, default) or default).lower()
        if value not in allowed:
            self.problems.append(f"{name}={value!r} is not supported: set one of {', '.join(allowed)}.")
            return default
        return value

    def slack_ids(self, name: str) -> frozenset[str]:
        values = [v.strip() for v in (self.text(name, "") or "").replace(" ", ",").split(",") if v.strip()]
        wrong = [v for v in values if not is_user_id(v)]
        if wrong:
            self.problems.append(
                f"{name} has {', '.join(map(repr, wrong))}, which are not Slack user IDs: list IDs like U0123ABCD "
                "(Slack profile → ⋮ → Copy member ID), separated by commas."
            )
        return frozenset(v for v in values if v not in wrong)

    def time_of_day(self, name: str, default: time) -> time | None:
        value = (self.text(name) or "").lower()
        if not value:
            return default
        if value == "off":
            return None
        try:
            parsed = time.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is not None:
            self.problems.append(
                f"{name}={value!r} is not a time of day: set HH:MM in BRIEFING_TIMEZONE (e.g. "
                f"{default:%H:%M}), or off to not schedule it."
            )
            return default
        return parsed

    def deadline(self, briefing_time: time | None) -> time | None:
        """BRIEFING_DEADLINE, by default DEADLINE_AFTER the briefing's time (09:00 when it is not scheduled)."""
        later = datetime.combine(date.min, briefing_time or time(9, 0)) + DEADLINE_AFTER
        default = later.time() if later.date() == date.min else time(23, 59)
        return self.time_of_day("BRIEFING_DEADLINE", default)

    def channel_id(self, name: str) -> str | None:
        value = self.text(name)
        if value is not None and not SLACK_CHANNEL_ID.fullmatch(value):
            self.problems.append(
                f"{name}={value!r} is not a Slack channel ID: set an ID like C0123ABCD (channel name → "
                "About → Channel ID at the bottom), and invite the bot to that channel."
            )
            return None
        return value

    def timezone(self, name: str, default: str) -> ZoneInfo:
        value = self.text(name, default) or default
        try:
            return ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            self.problems.append(
                f"{name}={value!r} is not a time zone: set an IANA name such as Asia/Seoul or Europe/Berlin."
            )
            return ZoneInfo(default)

    def flag(self, name: str) -> bool:
        value = (self.text(name, "false") or "false").lower()
        if value not in ("true", "false", "1", "0", "yes", "no"):
            self.problems.append(f"{name}={value!r} is not a yes/no value: set true or false.")
            return False
        return value in ("true", "1", "yes")

    def log_level(self) -> str:
        value = (self.text("LOG_LEVEL", "INFO") or "INFO").upper()
        if value not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            self.problems.append(f"LOG_LEVEL={value!r} is not a level: set DEBUG, INFO, WARNING or ERROR.")
            return "INFO"
        return value


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses, the only hosts plain http:// is accepted for."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
