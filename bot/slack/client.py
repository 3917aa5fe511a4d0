"""The Slack side: the Bolt app with its Web API client, and each user's language and email from Slack."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import asyncpg
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.errors import ConfigError
from bot.i18n import LOCALES
from bot.slack.paced_client import PacedRateLimitRetryHandler, PacedWebClient
from bot.slack.pacer import Pacer
from storage.slack_locales import SlackLocales

log = logging.getLogger(__name__)

PROFILE_TTL_SECONDS = 24 * 3600
# users.list is rate-limited at Tier 2 (about 20 calls a minute), users.info at Tier 4 (about 100): a page of
# LIST_PAGE_SIZE members is worth reading when it may hold PAGE_WORTH of the users wanted, and below
# PRIME_AT_LEAST users wanted, users.info one at a time is the cheaper way.
LIST_PAGE_SIZE = 200
PAGE_WORTH = 5
PRIME_AT_LEAST = 20
# What a database that cannot be reached raises: the stored languages are only a shortcut past Slack.
DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
SLACK_TIMEOUT_SECONDS = 30
USER_AGENT = "gmail-reconnect"


def create_bolt_app(settings: Settings, *, client: AsyncWebClient) -> AsyncApp:
    """A single-workspace Bolt app on `client` (see create_web_client). Requests reach it already verified
    with SLACK_SIGNING_SECRET (handlers.slack.verification), so Bolt does not check them again."""
    if settings.slack_signing_secret is None:
        raise ConfigError(settings.missing_for_serve())
    # Bolt reads SLACK_BOT_TOKEN from the process environment when it is given no token, and then warns on
    # every start that this token is unused beside `client`. The token comes from Settings, inside `client`,
    # so Bolt is built with that variable out of its sight.
    # SLACK_CLIENT_ID and SLACK_CLIENT_SECRET (Sign in with Slack's credentials) would turn Bolt into a
    # multi-workspace app that looks up an installation for every request and finds none.
    with _hidden_from_environment("SLACK_BOT_TOKEN", "SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET"):
        return AsyncApp(
            client=client,
            signing_secret=settings.slack_signing_secret.reveal(),
            name="gmail-reconnect",
            # POST /slack/events verifies each request before Bolt reads it (handlers.slack.verification), and
            # Socket Mode is not signed: Bolt's own check would only repeat it, and log the body when it fails.
            request_verification_enabled=False,
        )


@contextmanager
def _hidden_from_environment(*names: str) -> Iterator[None]:
    values = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(values)


def create_web_client(settings: Settings, *, pacer: Pacer | None = None) -> PacedWebClient:
    """The Web API client on SLACK_API_URL: every call in the pacer's turn (one pacer per process, at
    SLACK_POST_RATE unless given), 429s waited out and retried until Slack takes them, connection errors and 5xx
    retried twice."""
    if settings.slack_bot_token is None:
        raise ConfigError(settings.missing_for_serve())
    pacer = pacer or Pacer(settings.slack_post_rate)
    return PacedWebClient(
        pacer=pacer,
        token=settings.slack_bot_token.reveal(),
        base_url=settings.slack_api_url,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            PacedRateLimitRetryHandler(pacer),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ],
    )


@dataclass(frozen=True)
class SlackProfile:
    """What the bot needs to know of a Slack user: their language, their profile email if Slack gives it, and
    the name people know them by."""

    locale: str
    email: str | None
    name: str | None = None


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
        self._languages: dict[str, tuple[float, str]] = {}  # from users.info, users.list or the database
        self._not_stored: set[str] = set()  # users the database was just found to have no fresh language for
        # The users a running prime() looks for: each event is set once the user is found, or the prime ended.
        self._sought: dict[str, asyncio.Event] = {}

    async def locale(self, slack_user_id: str) -> str:
        """The language to speak to this user in (ko or en)."""
        known = self._languages.get(slack_user_id)
        if known is not None and known[0] > time.monotonic():
            return known[1]
        if self.stored is not None and slack_user_id not in self._not_stored:
            try:
                slack_locale = await self.stored.get(slack_user_id)
            except DATABASE_ERRORS as error:
                log.warning("The stored language of %s could not be read: %s", slack_user_id, error)
                slack_locale = None
            if slack_locale is not None:
                return self._keep(slack_user_id, slack_locale)
        return (await self.profile(slack_user_id)).locale

    async def prime(
        self,
        slack_user_ids: Collection[str],
        *,
        found: Callable[[list[str]], Awaitable[None]] | None = None,
    ) -> int:
        """Learn the languages of many users at once from users.list, instead of a users.info call each, and
        store them page by page (then `found` is told whom each page held); returns how many were found. It
        reads pages until it has found them all, or has read one page per PAGE_WORTH users wanted; with fewer
        than PRIME_AT_LEAST wanted it does nothing. While it reads, `listed` waits for the users it seeks."""
        wanted = set(slack_user_ids)
        if len(wanted) < PRIME_AT_LEAST:
            return 0
        # Before the first await: a worker that asks for one of these users from now on waits for the pages.
        seeking = {user_id: self._sought.setdefault(user_id, asyncio.Event()) for user_id in wanted}
        learned = 0
        cursor = ""
        try:
            for _ in range(math.ceil(len(wanted) / PAGE_WORTH)):
                try:
                    response = await self.client.users_list(
                        limit=LIST_PAGE_SIZE, include_locale=True, cursor=cursor or None
                    )
                except SlackApiError as error:
                    log.warning(
                        "users.list failed (%s): the other languages come from users.info",
                        error.response.get("error"),
                    )
                    break
                page: list[tuple[str, str]] = []
                for member in response.get("members") or []:
                    user_id = str(member.get("id") or "")
                    if user_id in wanted:
                        wanted.discard(user_id)
                        slack_locale = str(member.get("locale") or "")
                        self._keep(user_id, slack_locale)
                        self._found(user_id, seeking)
                        page.append((user_id, slack_locale))
                learned += len(page)
                if page:
                    await self._store_page(page, found)
                cursor = str((response.get("response_metadata") or {}).get("next_cursor") or "")
                if not wanted or not cursor:
                    break
        finally:
            # Done, failed or cancelled: whoever is still sought is left to the stored language or users.info.
            for user_id in list(seeking):
                self._found(user_id, seeking)
        return learned

    def _found(self, user_id: str, seeking: dict[str, asyncio.Event]) -> None:
        event = seeking.pop(user_id)
        event.set()
        if self._sought.get(user_id) is event:
            del self._sought[user_id]

    async def _store_page(
        self, page: list[tuple[str, str]], found: Callable[[list[str]], Awaitable[None]] | None
    ) -> None:
        """Keep a page's languages in the database at once, so that replicas and the run's claims see them."""
        if self.stored is not None:
            try:
                await self.stored.put_many(page)
            except DATABASE_ERRORS as error:
                log.warning("The languages from users.list could not be stored: %s", error)
        if found is not None:
            await found([user_id for user_id, _ in page])

    async def worth_listing(self) -> list[str]:
        """The users linked to an account whose language is not stored, or no longer fresh, when there are
        enough of them (PRIME_AT_LEAST) for prime() to read users.list; else none."""
        if self.stored is None:
            return []
        wanted = await self.stored.linked_without()
        return wanted if len(wanted) >= PRIME_AT_LEAST else []

    async def listed(self, slack_user_id: str) -> None:
        """Return once a running prime() of this process has found the user, or has ended; at once when none
        is looking for them."""
        sought = self._sought.get(slack_user_id)
        if sought is not None:
            await sought.wait()

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

    async def name(self, slack_user_id: str) -> str | None:
        """The user's display name (else real name) in Slack, or None."""
        return (await self.profile(slack_user_id)).name

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
        details = user.get("profile") or {}
        email = str(details.get("email") or "") or None
        name = str(details.get("display_name") or details.get("real_name") or user.get("name") or "") or None
        profile = SlackProfile(self._keep(slack_user_id, slack_locale), email, name)
        self._cache[slack_user_id] = (time.monotonic() + PROFILE_TTL_SECONDS, profile)
        self._not_stored.discard(slack_user_id)
        if self.stored is not None:
            try:
                await self.stored.put(slack_user_id, slack_locale)
            except DATABASE_ERRORS as error:
                log.warning("The language of %s could not be stored: %s", slack_user_id, error)
        return profile
