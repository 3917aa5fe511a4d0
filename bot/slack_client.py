"""The Slack side: the Bolt app with its Web API client, and each user's language and email from Slack."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import asyncpg
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.i18n import LOCALES
from storage.slack_locales import SlackLocales

log = logging.getLogger(__name__)

PROFILE_TTL_SECONDS = 24 * 3600
SLACK_TIMEOUT_SECONDS = 30
USER_AGENT = "gmail-reconnect"


def create_bolt_app(settings: Settings) -> AsyncApp:
    """A single-workspace Bolt app whose client calls SLACK_API_URL and retries 429s and server errors."""
    if settings.slack_signing_secret is None:
        raise ValueError("the Slack app needs SLACK_SIGNING_SECRET")
    return AsyncApp(
        client=create_web_client(settings),
        signing_secret=settings.slack_signing_secret.reveal(),
        name="gmail-reconnect",
    )


def create_web_client(settings: Settings) -> AsyncWebClient:
    """The Web API client on SLACK_API_URL, retrying connection errors, 429s (after Retry-After) and 5xx."""
    if settings.slack_bot_token is None:
        raise ValueError("the Slack client needs SLACK_BOT_TOKEN")
    return AsyncWebClient(
        token=settings.slack_bot_token.reveal(),
        base_url=settings.slack_api_url,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=3),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ],
    )


@dataclass(frozen=True)
class SlackProfile:
    """What the bot needs to know of a Slack user: their language, and their profile email if Slack gives it."""

    locale: str
    email: str | None


class SlackUsers:
    """Slack users' profiles from users.info, cached for a day; DEFAULT_LOCALE when Slack cannot tell.

    With `stored`, each user's language is also kept in the database for about a week (SlackLocales), so that
    restarts, replicas and the daily run need not ask Slack again for every user.
    """

    def __init__(
        self, client: AsyncWebClient, default_locale: str, *, stored: SlackLocales | None = None
    ) -> None:
        self.client = client
        self.default_locale = default_locale
        self.stored = stored
        self._cache: dict[str, tuple[float, SlackProfile]] = {}
        self._languages: dict[str, tuple[float, str]] = {}  # from the database, without the rest of a profile
        self._not_stored: set[str] = set()  # users the database was just found to have no fresh language for

    async def locale(self, slack_user_id: str) -> str:
        """The language to speak to this user in (ko or en)."""
        now = time.monotonic()
        cached = self._cache.get(slack_user_id)
        if cached is not None and cached[0] > now:
            return cached[1].locale
        known = self._languages.get(slack_user_id)
        if known is not None and known[0] > now:
            return known[1]
        if self.stored is not None and slack_user_id not in self._not_stored:
            try:
                slack_locale = await self.stored.get(slack_user_id)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
                log.warning("The stored language of %s could not be read: %s", slack_user_id, error)
                slack_locale = None
            if slack_locale is not None:
                return self._keep(slack_user_id, slack_locale)
        return (await self.profile(slack_user_id)).locale

    def remember(self, slack_user_id: str, slack_locale: str | None) -> str | None:
        """Keep what the database said of the user's language, read along with something else: Slack's form
        (e.g. ko-KR), kept for a day, or None when it has none fresh (the next lookup asks Slack at once).
        Returns the language to speak, if known."""
        if slack_locale is None:
            self._not_stored.add(slack_user_id)
            return None
        return self._keep(slack_user_id, slack_locale)

    def _keep(self, slack_user_id: str, slack_locale: str) -> str:
        language = self._language(slack_locale)
        self._languages[slack_user_id] = (time.monotonic() + PROFILE_TTL_SECONDS, language)
        return language

    def _language(self, slack_locale: str) -> str:
        language = slack_locale.lower().split("-")[0]
        return language if language in LOCALES else self.default_locale

    async def email(self, slack_user_id: str) -> str | None:
        """The email of the user's Slack profile (needs users:read.email), or None."""
        return (await self.profile(slack_user_id)).email

    async def profile(self, slack_user_id: str) -> SlackProfile:
        """The user's profile, from the cache or users.info."""
        cached = self._cache.get(slack_user_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        try:
            response = await self.client.users_info(user=slack_user_id, include_locale=True)
        except SlackApiError as error:
            log.warning(
                "users.info failed for %s (%s); using %s",
                slack_user_id,
                error.response.get("error"),
                self.default_locale,
            )
            return SlackProfile(self.default_locale, None)  # not cached: the next request asks again
        user = response["user"]
        slack_locale = str(user.get("locale") or "")
        email = str((user.get("profile") or {}).get("email") or "") or None
        profile = SlackProfile(self._language(slack_locale), email)
        self._cache[slack_user_id] = (time.monotonic() + PROFILE_TTL_SECONDS, profile)
        self._not_stored.discard(slack_user_id)
        if self.stored is not None:
            try:
                await self.stored.put(slack_user_id, slack_locale)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
                log.warning("The language of %s could not be stored: %s", slack_user_id, error)
        return profile
