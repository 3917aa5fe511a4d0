"""The briefing run over every linked account (what it does for each one: bot.briefing.account).

A scheduled run (kind and day) happens once: its accounts are claimed through run records, so replicas share
the work and a run restarted after a crash finishes without redoing what was done. Claims are leases that a
heartbeat renews while the process lives; a dead process's accounts are taken over once its leases lapse. A
database outage is waited out (bot.database_wait) and the run carries on where it was. A dry run changes and
sends nothing; it says what would happen.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

import asyncpg

from bot.briefing.account import AccountBriefing, AccountReport, Kind, RunQueue
from bot.briefing.claims import RunClaims
from bot.briefing.summary import RunSummary
from bot.config import Settings
from bot.database_wait import DatabaseUnavailable, DatabaseWait
from bot.google.scopes import Capability
from bot.google.token_service import TokenService
from bot.metrics import Metrics
from bot.slack.client import SlackUsers
from bot.slack.delivery import SlackDelivery
from storage.accounts import Accounts
from storage.errors import DATABASE_OUTAGE
from storage.models import Account, StoredTokens
from storage.outbox import DIGEST, Message, Queueing, SlackOutbox
from storage.runs import Claim, Digest, Done, Post, Result, Run, Runs

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """This process's lease on an account lapsed and another process took the account over."""


@dataclass
class RunMessages:
    """An account's messages as a run sends them: into the delivery queue, once each, while this process holds
    the account (LeaseLost: another process took it over, and queues them itself). The digest is queued with the
    record of the account (storage.runs), in the statement that claims the worker's next one."""

    outbox: SlackOutbox
    runs: Runs
    run: Run
    account_id: int
    deadline: datetime | None
    digest: Digest | None = None

    async def queue(self, message: Message) -> None:
        """Seal the digest, to be queued with the account's record for the drainer to send by the deadline."""
        sealed = self.outbox.seal(message, kind=DIGEST, run_id=self.run.id, account_id=self.account_id)
        self.digest = Digest(message.channel, sealed, self.deadline)

    async def queue_prompt(self, message: Message, *, prompt_id: int, conn: asyncpg.Connection) -> None:
        """Queue the Reconnect Gmail DM, in the transaction that opened its prompt."""
        queued = await self.outbox.queue_prompt(
            conn,
            prompt_id=prompt_id,
            message=message,
            run_id=self.run.id,
            account_id=self.account_id,
            claim_prefix=self.runs.claim_prefix,
        )
        if queued is Queueing.NOT_HELD:
            raise LeaseLost(self.account_id)


# What stops an account's handling without being the account's fault (its outcome is not recorded as failed).
NOT_THE_ACCOUNTS: tuple[type[BaseException], ...] = (*DATABASE_OUTAGE, DatabaseUnavailable, LeaseLost)


@dataclass
class RunReport:
    """What a run did (or, dry, would do)."""

    kind: Kind
    dry_run: bool
    accounts: list[AccountReport] = field(default_factory=list)
    already_finished: bool = False

    @property
    def counts(self) -> dict[Result, int]:
        """How many accounts ended in each result."""
        return dict(Counter(report.result for report in self.accounts))


class Briefing:
    """Runs the preflight and the briefing over every linked account."""

    def __init__(
        self,
        *,
        settings: Settings,
        accounts: Accounts,
        tokens: TokenService,
        one: AccountBriefing,
        users: SlackUsers,
        runs: Runs,
        summary: RunSummary,
        metrics: Metrics,
        delivery: SlackDelivery,
    ) -> None:
        self.metrics = metrics
        self.delivery = delivery
        self.settings = settings
        self.summary = summary
        self.accounts = accounts
        self.tokens = tokens
        self.one = one
        self.users = users
        self.runs = runs

    async def run(
        self,
        kind: Kind,
        *,
        dry_run: bool = False,
        only: Collection[str] | None = None,
        patience: timedelta | None = None,
    ) -> RunReport:
        """Run `kind` now: today's scheduled run (once), or for the Slack users in `only`, or dry.

        A scheduled run rides out database outages: it waits for the database (for at most `patience`, or for
        as long as it takes) and carries on where it was. It returns once its messages are delivered, or raises
        SlackRefusedToken when Slack refuses the bot's token (they stay queued for the fix) rather than wait
        for ever."""
        report = RunReport(kind, dry_run)
        if dry_run or only:
            wanted = set(only or ())
            linked = [a for a in await self.accounts.list() if a.slack_user_id]
            chosen = [a for a in linked if not wanted or a.slack_user_id in wanted]
            report.accounts = await self._each(
                chosen, lambda account: self._process_and_record(account, kind, dry_run=dry_run)
            )
            return report
        wait = DatabaseWait(self.runs.ping, where="the database", patience=patience)
        # A refusal of the bot's token since the run began ends its wait for delivery.
        delivered = partial(self._deliver, wait=wait, since=asyncio.get_running_loop().time())
        day = datetime.now(self.settings.briefing_timezone).date()
        run = await wait.call(f"beginning the {kind} run", lambda: self.runs.begin(str(kind), day))
        if run.finished:
            # Finished by a process that may have stopped before its messages went out, or before it posted the
            # summary: whatever is left of either is done here.
            report.already_finished = True
            async with self.delivery.running():
                await delivered(run)
                await self._summarise(run, delivered, left_over=True)
            return report
        started = time.monotonic()
        # The run's messages are sent by whichever process drains the queue: this one too, if it is alone.
        async with self.delivery.running():
            report.accounts, finished_here = await self._claimed(run, kind, wait)
            await delivered(run)
            self.metrics.run_seconds.labels(str(kind)).observe(time.monotonic() - started)
            for result, n in report.counts.items():
                self.metrics.run_accounts.labels(str(kind), str(result)).inc(n)
            if finished_here:
                outcomes = await wait.call("reading the outcomes", lambda: self.runs.outcomes(run))
                log.info("The %s run of %s finished: %s", kind, day, outcomes)
                await self._summarise(run, delivered)
        return report

    async def _deliver(self, run: Run, *, wait: DatabaseWait, since: float) -> None:
        """Return once the run's queued messages are delivered (or dropped, or failed), by whichever process."""
        await wait.call(
            f"delivering the {run.kind} run's messages", lambda: self.delivery.wait_for(run.id, since=since)
        )

    async def _claimed(self, run: Run, kind: Kind, wait: DatabaseWait) -> tuple[list[AccountReport], bool]:
        """This process's share of the run, and whether it was the one to finish the run."""
        reports: list[AccountReport] = []
        held: set[int] = set()  # the accounts this process's workers hold: their leases are renewed

        async def worker(claims: RunClaims) -> None:
            # Each account handled is handed in with the next claim, recorded (and its digest queued) by the
            # statement that claims the next batch: its report counts once the record is written.
            handled: Done | None = None
            handled_report: AccountReport | None = None
            while True:
                claim = await claims.next(handled, handled_report)
                handled, handled_report = None, None
                if claim is None:
                    return
                try:
                    # An outage while the account is handled: the account is handled again once the database
                    # is back, since its digest was not queued (it is queued with the record).
                    handled_report, digest = await wait.call(
                        f"handling account {claim.account_id}",
                        partial(self._claimed_one, run, claim, kind),
                    )
                except LeaseLost:
                    log.warning(
                        "Account %s of the %s run was taken over by another process while the database was out "
                        "of reach here: left to it",
                        claim.account_id,
                        kind,
                    )
                    held.discard(claim.account_id)
                    continue
                handled = self._done(claim, handled_report, digest)

        # The process that began the run learns the users' languages from users.list beside the workers: they
        # claim the accounts whose language is known first, and the Slack queue fills from the start.
        languages = await self._learn_languages(run) if run.created else None
        heartbeat = asyncio.create_task(self._renew_leases(run, held), name=f"{kind} run leases")
        try:
            while True:
                try:
                    claims = RunClaims(self.runs, run, kind, wait, held=held, reports=reports)
                    # return_exceptions: a shutdown waits for every worker to stop before going on.
                    outcomes = await asyncio.gather(
                        *(worker(claims) for _ in range(self.settings.briefing_concurrency)),
                        return_exceptions=True,
                    )
                except asyncio.CancelledError:
                    claims.close()
                    # Shutting down: give back what this process claimed and did not finish, rather than
                    # leave it to lapse.
                    await self._release(run)
                    raise
                claims.close()
                for outcome in outcomes:
                    if isinstance(outcome, BaseException):
                        raise outcome
                if await wait.call("finishing the run", lambda: self.runs.finish(run)):
                    return reports, True
                remaining = await wait.call("counting the accounts left", lambda: self.runs.unfinished(run))
                if remaining == 0:
                    return reports, False  # another process finished it a moment ago
                # Other processes hold the last claims: wait for them to finish, or for a dead one's leases to
                # lapse and its accounts to be claimed here.
                log.info("The %s run waits for %d accounts claimed by other processes", kind, remaining)
                await asyncio.sleep(self.runs.poll_interval)
        finally:
            heartbeat.cancel()
            if languages is not None:
                languages.cancel()  # the accounts are all handled: what it would still learn is not needed
                await asyncio.wait({languages})

    async def _renew_leases(self, run: Run, held: set[int]) -> None:
        """The heartbeat of this process's claims: renewed every third of a lease while its workers live."""
        every = self.runs.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(every)
            holding = set(held)
            try:
                renewed = await self.runs.renew(run, holding)
                # Fewer renewed than held: some were recorded done meanwhile, or lost to another process.
                lost = await self.runs.taken_over(run, holding) if renewed < len(holding) else 0
            except DATABASE_OUTAGE as error:
                log.warning(
                    "The leases on %d accounts of the %s run could not be renewed (%s): another process may "
                    "take them over",
                    len(holding),
                    run.kind,
                    type(error).__name__,
                )
                continue
            if lost:
                log.warning(
                    "%d accounts of the %s run were taken over by another process: their leases had lapsed",
                    lost,
                    run.kind,
                )

    async def _release(self, run: Run) -> None:
        try:
            await asyncio.shield(self.runs.release(run))
        except DATABASE_OUTAGE as error:
            log.warning(
                "The claims of the stopped %s run could not be given back (%s): they lapse within %s",
                run.kind,
                type(error).__name__,
                self.runs.lease,
            )

    @staticmethod
    def _done(claim: Claim, report: AccountReport | None, digest: Digest | None) -> Done:
        if report is None:
            if claim.post in (Post.QUEUED, Post.POSTED):
                return Done(claim.account_id, str(Result.DIGEST), "queued before its process stopped")
            return Done(claim.account_id, str(Result.SKIPPED), "no longer linked to a Slack user")
        return Done(
            claim.account_id,
            str(report.result),
            report.detail,
            needed_user=report.status.needs_user,
            fetch=report.fetch,
            digest=digest,
        )

    async def _claimed_one(
        self, run: Run, claim: Claim, kind: Kind
    ) -> tuple[AccountReport | None, Digest | None]:
        """Process a claimed account: its report, and its digest to queue with its record (if any). No report
        when it was deleted or unlinked since the run began, or when its digest was queued or posted by a process
        that stopped before it could mark the account done."""
        if claim.post in (Post.QUEUED, Post.POSTED):
            log.info(
                "Account %s of the %s run: its digest was queued before a takeover", claim.account_id, kind
            )
            return None, None
        if claim.account is not None and claim.account.slack_user_id:
            if claim.slack_locale is None:
                # The users.list pages that this process reads may have the user's language: wait for them
                # rather than ask users.info (the heartbeat keeps renewing the lease meanwhile).
                await self.users.listed(claim.account.slack_user_id)
            self.users.remember(claim.account.slack_user_id, claim.slack_locale)
            deadline = self.settings.digest_deadline(run.day) if kind is Kind.BRIEFING else None
            post = RunMessages(self.delivery.outbox, self.runs, run, claim.account_id, deadline)
            report = await self._safely(
                claim.account, kind, stored=claim.stored, post=post, deadline=deadline
            )
            return report, post.digest
        log.info("Account %s left the %s run: no longer linked to a Slack user", claim.account_id, kind)
        return None, None

    async def _learn_languages(self, run: Run) -> asyncio.Task[None] | None:
        """For the process that began the run: the languages of the linked users not stored yet (or no longer
        fresh), from users.list pages rather than a users.info call per user, learned by a task beside the
        workers. Their accounts are marked pending first, so that the accounts whose language is known are
        claimed first; each page unmarks the users it found, and the end of the task whoever is left."""
        try:
            wanted = await self.users.worth_listing()
            if wanted:
                await self.runs.languages_pending(run, wanted)
        except Exception:  # only a shortcut: the run asks users.info instead
            log.exception("The users' languages could not be learned from users.list")
            return None
        if not wanted:
            return None
        return asyncio.create_task(self._list_languages(run, wanted), name=f"{run.kind} run languages")

    async def _list_languages(self, run: Run, wanted: list[str]) -> None:
        try:
            found = await self.users.prime(wanted, found=partial(self._languages_known, run))
        except Exception:  # only a shortcut: the run asks users.info for whoever is left
            log.exception("The users' languages could not be learned from users.list")
        else:
            if found:
                log.info("Learned the language of %d users from users.list", found)
        finally:
            await self._languages_known(run, None)

    async def _languages_known(self, run: Run, slack_user_ids: list[str] | None) -> None:
        """Unmark these users' accounts (None: every one left) as waiting for their language."""
        try:
            await self.runs.languages_known(run, slack_user_ids)
        except DATABASE_OUTAGE as error:  # their accounts are still claimed, only after the others
            log.warning(
                "The accounts of the %s run whose language users.list gave could not be told apart (%s)",
                run.kind,
                type(error).__name__,
            )

    async def _summarise(
        self, run: Run, delivered: Callable[[Run], Awaitable[None]], *, left_over: bool = False
    ) -> None:
        """Queue the admin summary, once the run's messages are delivered (it says how that went), and wait for
        it too. One process queues it: the finisher, or (left over) one that found the run finished without it."""
        try:
            queued = await self.summary.queue(run, left_over=left_over)
        except Exception:  # the run is done; a summary that fails must not make it look failed
            log.exception("The admin summary of the %s run could not be queued", run.kind)
            return
        if queued:
            await delivered(run)

    async def reconnected(self, account: Account) -> None:
        """After a reconnection: post the email part the user missed today (once), and edit the admin
        summaries that listed them."""
        if self.settings.briefing_mode == "digest" and account.slack_user_id:
            await self._make_up(account)
        await self.summary.reconnected(account)

    async def _make_up(self, account: Account) -> None:
        day = datetime.now(self.settings.briefing_timezone).date()
        taken = await self.runs.take_missed(str(Kind.BRIEFING), day, account.id)
        if taken is None:
            return  # today's briefing has not run yet, or it reached this user, or this was made up already
        run, before = taken
        access = await self.tokens.access(account)
        report = None
        if access.allows(Capability.READ) and access.access_token is not None:
            report = await self.one.fetch(access.account, access.access_token)
            await self._record_fetch(account, report)
        if report is None or report.result is not Result.DIGEST:
            log.warning("Today's missed briefing for %s could not be posted", account.slack_user_id)
            await self.runs.give_back(
                run, account.id, outcome=before, detail="could not be posted after the reconnection"
            )
            return
        log.info("Posted today's missed briefing to %s after the reconnection", account.slack_user_id)

    async def _each(
        self, accounts: list[Account], process: Callable[[Account], Awaitable[AccountReport]]
    ) -> list[AccountReport]:
        limit = asyncio.Semaphore(self.settings.briefing_concurrency)

        async def one(account: Account) -> AccountReport:
            async with limit:
                return await process(account)

        return list(await asyncio.gather(*(one(account) for account in accounts)))

    async def _process_and_record(self, account: Account, kind: Kind, *, dry_run: bool) -> AccountReport:
        """process(), outside a scheduled run: the fetch is recorded on its own, not with a run's item."""
        report = await self.one.process(account, kind, dry_run=dry_run)
        await self._record_fetch(account, report)
        return report

    async def _record_fetch(self, account: Account, report: AccountReport | None) -> None:
        if report is not None and report.fetch is not None:
            await self.accounts.record_fetch(
                account.id, result=report.fetch.result, messages=report.fetch.messages
            )

    async def _safely(
        self,
        account: Account,
        kind: Kind,
        *,
        stored: StoredTokens | None = None,
        post: RunQueue | None = None,
        deadline: datetime | None = None,
    ) -> AccountReport:
        try:
            return await self.one.process(account, kind, stored=stored, post=post, deadline=deadline)
        except NOT_THE_ACCOUNTS:
            raise  # not this account's fault: the run waits for the database, or leaves the account
        except Exception as error:  # one account's surprise must not stop the run for everyone else
            log.exception("The %s run failed for account %s", kind, account.id)
            return AccountReport(account, Result.FAILED, account.status, f"{type(error).__name__}")
