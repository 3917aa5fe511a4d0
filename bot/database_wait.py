"""Riding out a database outage: work that meets one waits, with backoff, until the database answers again.

Every worker of a process shares one DatabaseWait: the first to meet the outage probes the database (one log
line per attempt, naming what waits), the others wait for that probe, and all carry on within one backoff step
of the database coming back. Patience bounds how long one outage is waited for; None waits for as long as it
takes (a scheduled run), a duration gives up with DatabaseUnavailable (a command someone waits for).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from bot.errors import GmailReconnectError
from storage.errors import DATABASE_OUTAGE

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_DELAY = 0.5  # seconds before the first probe
MAX_DELAY = 10.0  # the longest pause between probes: how late after the database is back the work carries on


class DatabaseUnavailable(GmailReconnectError):
    """The database stayed out of reach for longer than the patience allowed."""


class DatabaseWait:
    """Runs database work through outages, probing the database with backoff while it is out of reach."""

    def __init__(
        self,
        probe: Callable[[], Awaitable[object]],
        *,
        where: str,
        patience: timedelta | None = None,
        max_delay: float = MAX_DELAY,
    ) -> None:
        self.probe = probe
        self.where = where  # the database, as an operator knows it (never with its password)
        self.patience = patience
        self.max_delay = max_delay
        self._since: float | None = None  # when the outage began, if one is on
        self._back: asyncio.Future[None] | None = None  # the probe in progress, that the others wait for
        self.outages = 0

    async def call(self, what: str, action: Callable[[], Awaitable[T]]) -> T:
        """`action()`, again and again once the database is back, until it gets through the outage."""
        while True:
            try:
                result = await action()
            except DATABASE_OUTAGE as error:
                await self.until_back(what, error)
                continue
            if self._back is None:
                self._since = None  # through: the next outage is a new one, with all its patience
            return result

    async def until_back(self, what: str, error: BaseException) -> None:
        """Wait until the database answers a probe (raises DatabaseUnavailable when patience runs out)."""
        if self._since is None:
            self._since = time.monotonic()
            self.outages += 1
        if self._back is None:
            self._back = asyncio.get_running_loop().create_future()
            probing = self._probe_until_back(what, error, self._since)
            task = asyncio.create_task(probing, name="database wait")
            task.add_done_callback(self._settle)
        await asyncio.shield(self._back)

    def _settle(self, task: asyncio.Task[None]) -> None:
        back, self._back = self._back, None
        if back is None or back.done():
            return
        if task.cancelled():
            back.cancel()
        elif (failure := task.exception()) is not None:
            back.set_exception(failure)
            back.exception()  # every waiter may be gone already: retrieved, so asyncio does not warn
        else:
            back.set_result(None)

    async def _probe_until_back(self, what: str, error: BaseException, since: float) -> None:
        delay, attempt, cause = FIRST_DELAY, 0, error
        while True:
            waited = time.monotonic() - since
            if self.patience is not None and waited + delay > self.patience.total_seconds():
                raise DatabaseUnavailable(
                    f"{self.where} stayed out of reach for {waited:.0f} s while {what} "
                    f"({type(cause).__name__}: {cause}); gave up after {attempt} attempts. Start the database "
                    "(or fix the network to it) and run the command again: what was done stays done."
                ) from cause
            attempt += 1
            log.warning(
                "Waiting for %s, out of reach while %s (%s: %s): attempt %d in %.1f s",
                self.where,
                what,
                type(cause).__name__,
                cause,
                attempt,
                delay,
            )
            # Jitter: replicas that lost the database together do not all come back in the same instant.
            await asyncio.sleep(delay * random.uniform(0.8, 1.0))
            try:
                await self.probe()
            except DATABASE_OUTAGE as failure:
                cause = failure
                delay = min(delay * 2, self.max_delay)
                continue
            log.warning(
                "Back: %s answers again after %.1f s; carrying on", self.where, time.monotonic() - since
            )
            return
