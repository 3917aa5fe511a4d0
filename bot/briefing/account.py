"""One account's part of a run: check it, refresh what a refresh can heal, ask the user where only they can
fix it, and (in digest mode) fetch the email part of the 9am briefing and post it."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.google.client import GoogleClient
from bot.google.errors import Failure, GoogleError
from bot.google.gmail import Gmail, UnreadMail
from bot.google.health import (
    Cause,
    effective_cause,
    effective_status,
    granted_access_ending,
    testing_expiry_near,
)
from bot.google.scopes import Capability, capabilities_of
from bot.google.token_service import Outcome, TokenService
from bot.metrics import Metrics
from bot.slack.blocks.digest import digest_blocks
from bot.slack.client import SlackUsers
from bot.slack.prompter import Delivery, Prompter, PromptQueue
from storage import audit
from storage.accounts import Accounts
from storage.causes import CauseCode
from storage.models import Account, Status, StoredTokens
from storage.outbox import Message
from storage.runs import Fetch, Result

log = logging.getLogger(__name__)

UNREAD_QUERY = "is:unread newer_than:1d"
ACTOR = "briefing"


class Kind(enum.StrEnum):
    """Which run: the early check (prompts only) or the briefing itself."""

    PREFLIGHT = "preflight"
    BRIEFING = "briefing"


class RunQueue(PromptQueue, Protocol):
    """Where a run sends an account's messages: the delivery queue (bot.briefing.run.RunMessages)."""

    async def queue(self, message: Message) -> None:
        """Queue the digest (raises when this process must not send it)."""


@dataclass(frozen=True)
class AccountReport:
    """One account's line of the run report."""

    account: Account
    result: Result
    status: Status
    detail: str | None = None
    messages: int | None = None
    fetch: Fetch | None = None  # how the briefing fetch went, when Gmail was asked


class AccountBriefing:
    """What a run does for one account."""

    def __init__(
        self,
        *,
        settings: Settings,
        accounts: Accounts,
        tokens: TokenService,
        google: GoogleClient,
        gmail: Gmail,
        prompter: Prompter,
        client: AsyncWebClient,
        users: SlackUsers,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.accounts = accounts
        self.tokens = tokens
        self.google = google
        self.gmail = gmail
        self.prompter = prompter
        self.client = client
        self.users = users

    async def process(
        self,
        account: Account,
        kind: Kind,
        *,
        dry_run: bool = False,
        stored: StoredTokens | None = None,
        post: RunQueue | None = None,
        deadline: datetime | None = None,
    ) -> AccountReport:
        """Check one account and act: prompt, refresh, fetch and post (dry: only say what would happen).

        `stored`: the account's token_data, read along with `account`. The fetch is not recorded here: the
        caller records AccountReport.fetch (a run does it as it marks the account done). `post`: where the
        digest goes (the run's delivery queue); without one it is posted at once.
        """
        status, why = effective_status(account, self.settings.required_capabilities)
        if status is Status.DISCONNECTED:
            return AccountReport(account, Result.SKIPPED, status, "disconnected on purpose")
        if status is Status.DISABLED:
            return AccountReport(account, Result.SKIPPED, status, "Google disabled the Google account")
        cause = Cause.of(status)
        # A grant that lacks only some permission still reads mail: the digest goes on while the user is asked.
        reads = status is Status.INSUFFICIENT_SCOPE and _reads(account)
        if cause is not None and not reads:
            if status is not account.status and not dry_run:
                # Never checked, and the stored data already shows it (e.g. a NULL token): record it.
                code, _ = effective_cause(account, self.settings.required_capabilities)
                account = await self.accounts.set_status(
                    account.id, status=status, cause=why, code=code, actor=ACTOR
                )
            return await self._prompt(account, status, cause, dry_run=dry_run, queue=post)
        if dry_run:
            return AccountReport(account, Result.CHECKED, status, "would refresh if needed, then fetch")
        if reads and status is not account.status:
            code, _ = effective_cause(account, self.settings.required_capabilities)
            account = await self.accounts.set_status(
                account.id, status=status, cause=why, code=code, actor=ACTOR
            )
        access = await self.tokens.access(account, stored=stored)
        if access.outcome is Outcome.UNAVAILABLE:
            return AccountReport(account, Result.UNAVAILABLE, account.status, access.cause)
        if not access.allows(Capability.READ):
            return await self._prompt(
                access.account,
                access.account.status,
                Cause.of(access.account.status) or Cause.EXPIRED,
                queue=post,
            )
        warning, now = None, datetime.now(UTC)
        if not access.ok:  # limited: ask for what the grant lacks, and post the digest all the same
            warning = await self._prompt(
                access.account, access.account.status, Cause.INSUFFICIENT_SCOPE, queue=post
            )
        elif self.settings.google_testing_mode and testing_expiry_near(access.account, now):
            warning = await self._prompt(access.account, Status.HEALTHY, Cause.TESTING_EXPIRY, queue=post)
        elif granted_access_ending(access.account, now):
            warning = await self._prompt(access.account, Status.HEALTHY, Cause.ACCESS_ENDING, queue=post)
        if kind is Kind.PREFLIGHT:
            return warning or AccountReport(access.account, Result.CHECKED, Status.HEALTHY)
        assert access.access_token is not None
        report = await self.fetch(access.account, access.access_token, post=post, deadline=deadline)
        # A limited grant's user still needs to act: the run says so, whatever came of the digest.
        return report if access.ok else replace(report, status=access.account.status)

    async def fetch(
        self,
        account: Account,
        access_token: str,
        *,
        post: RunQueue | None = None,
        deadline: datetime | None = None,
    ) -> AccountReport:
        """Fetch the account's unread mail and, in digest mode, queue it for the user (or post it, without a
        queue); after `deadline` (the run's BRIEFING_DEADLINE) the digest is dropped, not posted late."""
        if self.settings.briefing_mode == "digest" and _past(deadline):
            return await self._dropped(account, deadline)
        read = await self._read_mail(account, access_token, queue=post)
        if isinstance(read, AccountReport):
            return read
        account, unread = read
        fetch = Fetch("ok", unread.total)
        if self.settings.briefing_mode != "digest":
            return AccountReport(account, Result.CHECKED, Status.HEALTHY, messages=unread.total, fetch=fetch)
        assert account.slack_user_id is not None
        locale = await self.users.locale(account.slack_user_id)
        blocks, fallback = digest_blocks(unread.messages, unread.total, locale, unreadable=unread.unreadable)
        if _past(deadline):
            return await self._dropped(account, deadline, fetch=fetch)
        if post is not None:
            # A user ID as the channel posts in the user's DM with the bot: no conversations.open round trip.
            await post.queue(Message(account.slack_user_id, fallback, blocks))
            return AccountReport(account, Result.DIGEST, Status.HEALTHY, messages=unread.total, fetch=fetch)
        try:
            posted = await self.client.chat_postMessage(
                channel=account.slack_user_id, blocks=blocks, text=fallback
            )
        except SlackApiError as error:
            return AccountReport(
                account,
                Result.FAILED,
                Status.HEALTHY,
                f"Slack answered {error.response.get('error')}",
                fetch=fetch,
            )
        log.debug("Posted the digest of account %s (ts %s)", account.id, posted.get("ts"))
        return AccountReport(account, Result.DIGEST, Status.HEALTHY, messages=unread.total, fetch=fetch)

    async def _dropped(
        self, account: Account, deadline: datetime | None, *, fetch: Fetch | None = None
    ) -> AccountReport:
        # A "9am briefing" posted at noon would mislead more than it helps; the admin summary counts these.
        assert deadline is not None
        log.warning(
            "The digest for %s was dropped: BRIEFING_DEADLINE (%s) has passed",
            account.slack_user_id,
            f"{deadline:%H:%M %Z}",
        )
        await audit.append(
            self.accounts.pool,
            actor=ACTOR,
            action="briefing.digest_dropped",
            account_id=account.id,
            user_id=account.user_id,
            slack_user_id=account.slack_user_id,
            details={"deadline": deadline.isoformat()},
        )
        if self.metrics is not None:
            self.metrics.digests_dropped.inc()
        detail = f"not delivered by BRIEFING_DEADLINE ({deadline:%H:%M %Z}): dropped"
        return AccountReport(account, Result.LATE, Status.HEALTHY, detail, fetch=fetch)

    async def _read_mail(
        self, account: Account, access_token: str, *, queue: PromptQueue | None
    ) -> tuple[Account, UnreadMail] | AccountReport:
        """The unread mail, or the report of why there is none.

        An access token can die before its stated expiry (a password change, a security event), so a 401 is
        first answered as Google's own clients answer it: one forced refresh, and the fetch again with the new
        token. Only a refresh that fails says the account needs its user; a 401 right after a good refresh is
        reported as what it is, not retried again.
        """
        try:
            return account, await self._unread(access_token)
        except GoogleError as error:
            if error.failure is not Failure.UNAUTHORIZED:
                return replace(
                    await self._fetch_failed(account, error, queue=queue), fetch=Fetch(str(error), None)
                )
            refused = error
        log.info(
            "Gmail refused the access token of account %s before its expiry: refreshing once", account.id
        )
        access = await self.tokens.access(account, force_refresh=True)
        if access.outcome is Outcome.UNAVAILABLE:
            report = AccountReport(account, Result.UNAVAILABLE, account.status, access.cause)
            return replace(report, fetch=Fetch(str(refused), None))
        if not access.allows(Capability.READ) or access.access_token is None:
            cause = Cause.of(access.account.status) or Cause.EXPIRED
            report = await self._prompt(access.account, access.account.status, cause, queue=queue)
            return replace(report, fetch=Fetch(str(refused), None))
        try:
            return access.account, await self._unread(access.access_token)
        except GoogleError as error:
            if error.failure is not Failure.UNAUTHORIZED:
                return replace(
                    await self._fetch_failed(access.account, error, queue=queue),
                    fetch=Fetch(str(error), None),
                )
            detail = f"{error}, right after a successful refresh"
            log.warning("Gmail refused account %s's freshly refreshed access token: %s", account.id, error)
            report = AccountReport(access.account, Result.FAILED, access.account.status, detail)
            return replace(report, fetch=Fetch(detail, None))

    async def _unread(self, access_token: str) -> UnreadMail:
        return await self.google.retrying(
            lambda: self.gmail.unread_mail(
                access_token, query=UNREAD_QUERY, limit=self.settings.briefing_max_messages
            )
        )

    async def _fetch_failed(
        self, account: Account, error: GoogleError, *, queue: PromptQueue | None
    ) -> AccountReport:
        if error.failure is Failure.INSUFFICIENT_SCOPE:
            # The briefing reads mail: Gmail refusing it for the grant's scopes means it cannot read.
            status, cause = Status.INSUFFICIENT_SCOPE, Cause.INSUFFICIENT_SCOPE
        elif error.transient:
            return AccountReport(account, Result.UNAVAILABLE, account.status, str(error))
        else:
            return AccountReport(account, Result.FAILED, account.status, str(error))
        updated = await self.accounts.set_status(
            account.id, status=status, cause=str(error), code=CauseCode.SCOPE_MISSING_READ, actor=ACTOR
        )
        return await self._prompt(updated, status, cause, queue=queue)

    async def _prompt(
        self,
        account: Account,
        status: Status,
        cause: Cause,
        *,
        dry_run: bool = False,
        queue: PromptQueue | None = None,
    ) -> AccountReport:
        if dry_run:
            return AccountReport(
                account, Result.PROMPTED, status, f"would send the Reconnect Gmail DM ({cause})"
            )
        assert account.slack_user_id is not None
        sent = await self.prompter.send(
            account.slack_user_id, account=account, cause=cause, actor=ACTOR, queue=queue
        )
        if sent.delivery is Delivery.SNOOZED:
            return AccountReport(account, Result.SNOOZED, status, str(cause))
        if sent.delivery is Delivery.FAILED:
            return AccountReport(account, Result.FAILED, status, f"Slack answered {sent.error}")
        return AccountReport(account, Result.PROMPTED, status, f"{cause}, DM {sent.delivery}")


def _reads(account: Account) -> bool:
    """Whether the account's stored grant can read mail, which is all the digest needs."""
    return account.has_refresh_token and Capability.READ in capabilities_of(account.scopes)


def _past(deadline: datetime | None) -> bool:
    return deadline is not None and datetime.now(UTC) >= deadline
