"""The Slack side: the Bolt app with its Web API client, and each user's language from their Slack locale."""

from __future__ import annotations

import logging
import time

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

LOCALE_TTL_SECONDS = 24 * 3600


def create_bolt_app(settings: Settings) -> AsyncApp:
    """A single-workspace Bolt app whose client calls SLACK_API_URL and retries 429s and server errors."""
    if settings.slack_bot_token is None or settings.slack_signing_secret is None:
        raise ValueError("the Slack app needs SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET")
    client = AsyncWebClient(
        token=settings.slack_bot_token.reveal(),
        base_url=settings.slack_api_url,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=3),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ],
    )
    return AsyncApp(
        client=client, signing_secret=settings.slack_signing_secret.reveal(), name="gmail-reconnect"
    )


class Locales:
    """Each Slack user's language (ko or en) from users.info, cached for a day; DEFAULT_LOCALE otherwise."""

    def __init__(self, client: AsyncWebClient, default: str) -> None:
        self.client = client
        self.default = default
        self._cache: dict[str, tuple[float, str]] = {}

    async def of(self, slack_user_id: str) -> str:
        """The language to speak to this user in."""
        cached = self._cache.get(slack_user_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        locale = self.default
        try:
            response = await self.client.users_info(user=slack_user_id, include_locale=True)
            language = str(response["user"].get("locale") or "").lower().split("-")[0]
            locale = language if language in LOCALES else self.default
        except SlackApiError as error:
            log.warning(
                "users.info failed for %s (%s); using %s", slack_user_id, error.response.get("error"), locale
            )
            return locale  # not cached: the next request asks again
        self._cache[slack_user_id] = (time.monotonic() + LOCALE_TTL_SECONDS, locale)
        return locale
