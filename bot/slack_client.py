"""The Slack side: the Bolt app with its Web API client, and each user's language and email from Slack."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

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
    """Slack users' profiles from users.info, cached for a day; DEFAULT_LOCALE when Slack cannot tell."""

    def __init__(self, client: AsyncWebClient, default_locale: str) -> None:
        self.client = client
        self.default_locale = default_locale
        self._cache: dict[str, tuple[float, SlackProfile]] = {}

    async def locale(self, slack_user_id: str) -> str:
        """The language to speak to this user in (ko or en)."""
        return (await self.profile(slack_user_id)).locale

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
        language = str(user.get("locale") or "").lower().split("-")[0]
        email = str((user.get("profile") or {}).get("email") or "") or None
        profile = SlackProfile(language if language in LOCALES else self.default_locale, email)
        self._cache[slack_user_id] = (time.monotonic() + PROFILE_TTL_SECONDS, profile)
        return profile
