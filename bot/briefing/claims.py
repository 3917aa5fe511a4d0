"""This process's share of a run's accounts, claimed and recorded a batch at a time.

A run's workers hand each account they handled to RunClaims and take their next one from it. One statement
(storage.runs.Runs.record_and_claim_many) records every account handed in since the last one, queues their
digests, and claims a batch more: a round trip per batch of accounts instead of one per account. The accounts
claimed and not yet taken by a worker are held like those the workers have (their leases are renewed), for no
longer than the workers take to handle a batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from bot.briefing.account import AccountReport, Kind
from bot.database_wait import DatabaseWait
from storage.runs import Claim, Done, Run, Runs

log = logging.getLogger(__name__)

# How many accounts a statement claims at least. The workers free up one by one, so a statement records about as
# many as it claimed the time before; more workers waiting at once are all served by one statement.
CLAIM_BATCH = 8
# An account handed in is recorded (and its digest queued) within this time, whether a worker needs a claim or not.
RECORD_WITHIN_SECONDS = 0.2


class RunClaims:
    """The claims of one pass of a run's workers over its accounts, and the records of those they handled."""

    def __init__(
        self,
        runs: Runs,
        run: Run,
        kind: Kind,
        wait: DatabaseWait,
        *,
        held: set[int],
        reports: list[AccountReport],
        batch: int = CLAIM_BATCH,
    ) -> None:
        self.runs = runs
        self.run = run
        self.kind = kind
        self.wait = wait
        self.held = held  # the accounts this process holds (claimed, not recorded): their leases are renewed
        self.reports = reports  # each handled account's report, once its record is written
        self.batch = batch
        self.claimer = runs.new_worker()
        self._ready: deque[Claim] = deque()
        self._handled: list[tuple[Done, AccountReport | None]] = []
        self._waiting = 0
        self._lock = asyncio.Lock()
        self._left = True  # the last statement found as many accounts to claim as it asked for
        self._timer: asyncio.TimerHandle | None = None  # records what was handed in, if no claim does first
        self._recording: asyncio.Task[None] | None = None

    async def next(self, handled: Done | None = None, report: AccountReport | None = None) -> Claim | None:
        """Hand in the account just handled (recorded within RECORD_WITHIN_SECONDS, by the next statement; its
        report counts once it is) and take the next account to handle: None once none is left to claim and every
        account handed in is recorded."""
        if handled is not None:
            self._handled.append((handled, report))
            if self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(RECORD_WITHIN_SECONDS, self._record_soon)
        self._waiting += 1
        try:
            while not self._ready:
                async with self._lock:
                    if self._ready:
                        continue  # claimed by the statement this worker waited for
                    if not self._left and not self._handled:
                        return None
                    await self._record_and_claim(max(self.batch, self._waiting) if self._left else 0)
            return self._ready.popleft()
        finally:
            self._waiting -= 1

    def close(self) -> None:
        """Stop recording in the background (the workers are gone)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._recording is not None:
            self._recording.cancel()

    def _record_soon(self) -> None:
        self._timer = None
        self._recording = asyncio.create_task(self._record_handed_in(), name=f"{self.kind} run records")

    async def _record_handed_in(self) -> None:
        """Record what was handed in, without claiming more: the workers may all be busy a while (waiting for
        a user's language, say), and the digests are queued only with their records."""
        async with self._lock:
            if not self._handled:
                return
            try:
                await self._record_and_claim(0)
            except Exception as error:  # the next claim records them, and meets the error itself
                log.debug(
                    "The handled accounts of the %s run were left to the next claim: %r", self.kind, error
                )

    async def _record_and_claim(self, count: int) -> None:
        handled, self._handled = self._handled, []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        dones = [done for done, _ in handled]
        try:
            recorded, claims = await self.wait.call(
                f"claiming the next accounts of the {self.kind} run",
                lambda: self.runs.record_and_claim_many(
                    self.run, dones, count=count, worker=self.claimer, held=self.held
                ),
            )
        except BaseException:
            self._handled[:0] = handled  # not recorded: they go with the next statement
            raise
        for done, report in handled:
            self.held.discard(done.account_id)  # recorded: no longer this process's to renew
            if done.account_id not in recorded:
                log.warning(
                    "Account %s of the %s run was not recorded here: another process took it over (its lease had "
                    "lapsed)",
                    done.account_id,
                    self.kind,
                )
            elif report is not None:
                self.reports.append(report)
        self.held.update(claim.account_id for claim in claims)
        self._ready.extend(claims)
        if len(claims) < count:
            self._left = False
