"""The daily runs inside `serve`: the preflight at PREFLIGHT_TIME and the briefing at BRIEFING_TIME, in
BRIEFING_TIMEZONE, on APScheduler's AsyncIOScheduler.

Every replica schedules both; the run records make each run happen once, its accounts shared among the
replicas that start it. A run the bot was down for is started when it comes back, if that is within
BRIEFING_MISFIRE_GRACE of its time, and a run that began today and did not finish (the process was killed)
is finished whenever the bot comes back that day.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, time, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from bot.briefing.run import Briefing, Kind
from bot.config import Settings
from bot.slack.delivery import SlackRefusedToken

log = logging.getLogger(__name__)


class Schedule:
    """Starts the preflight and briefing runs on time, and stops them cleanly on shutdown."""

    def __init__(self, settings: Settings, briefing: Briefing) -> None:
        self.settings = settings
        self.briefing = briefing
        self.scheduler = AsyncIOScheduler(
            timezone=settings.briefing_timezone,
            job_defaults={
                "misfire_grace_time": int(settings.briefing_misfire_grace.total_seconds()),
                "coalesce": True,
                "max_instances": 1,
            },
        )
        self._running: set[asyncio.Task[None]] = set()

    @property
    def times(self) -> dict[Kind, time]:
        """The scheduled runs and their time of day (a run set to off is left out)."""
        planned = {Kind.PREFLIGHT: self.settings.preflight_time, Kind.BRIEFING: self.settings.briefing_time}
        return {kind: at for kind, at in planned.items() if at is not None}

    async def start(self, now: datetime | None = None) -> None:
        """Schedule the runs (needs the running event loop), and start any run that is due now."""
        if not self.times:
            log.info("PREFLIGHT_TIME and BRIEFING_TIME are off: no run is scheduled in this process")
            return
        zone = self.settings.briefing_timezone
        for kind, at in self.times.items():
            self.scheduler.add_job(
                self._run,
                CronTrigger(hour=at.hour, minute=at.minute, second=at.second, timezone=zone),
                args=[kind],
                id=f"gmail-reconnect-{kind}",
                name=f"the {kind} run",
                replace_existing=True,
            )
        self.scheduler.start()
        for job in self.scheduler.get_jobs():
            log.info("Next %s: %s", job.name, job.next_run_time.isoformat())
        for kind in await self.due(now or datetime.now(UTC)):
            log.info("Starting the %s run now: it was due while the bot was down, or did not finish", kind)
            self._spawn(kind)

    async def due(self, now: datetime) -> list[Kind]:
        """The runs to start at start-up: missed within the grace period, or begun today and not finished."""
        local = now.astimezone(self.settings.briefing_timezone)
        due = []
        for kind, at in self.times.items():
            planned = datetime.combine(local.date(), at, tzinfo=self.settings.briefing_timezone)
            run = await self.briefing.runs.find(str(kind), local.date())
            if run is not None and run.finished:
                continue
            missed = planned <= local < planned + self.settings.briefing_misfire_grace
            if missed or run is not None:
                due.append(kind)
        return due

    async def stop(self) -> None:
        """Stop scheduling and cancel runs in progress; their unfinished accounts go back to the run."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
            await asyncio.sleep(0)  # AsyncIOScheduler shuts down in its next turn of the event loop
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)

    def next_runs(self) -> dict[str, datetime]:
        """When each scheduled run fires next."""
        return {job.id: job.next_run_time for job in self.scheduler.get_jobs()}

    async def _run(self, kind: Kind) -> None:
        task = self._spawn(kind)
        await asyncio.shield(task)

    def _spawn(self, kind: Kind) -> asyncio.Task[None]:
        task = asyncio.create_task(self._safely(kind), name=f"gmail-reconnect {kind} run")
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    async def _safely(self, kind: Kind) -> None:
        started = datetime.now(UTC)
        try:
            report = await self.briefing.run(kind)
        except asyncio.CancelledError:
            log.info("The %s run was stopped by the shutdown; it resumes when the bot starts again", kind)
            raise
        except SlackRefusedToken as error:  # said when it was found (bot.slack.delivery); the queue waits
            log.error("The %s run ended before its messages were delivered: %s", kind, error)
            return
        except Exception:  # the scheduler must keep going tomorrow
            log.exception("The %s run failed", kind)
            return
        took = datetime.now(UTC) - started
        if report.already_finished:
            log.info("The %s run of today had already finished", kind)
        else:
            log.info(
                "The %s run handled %d accounts here in %.1f s: %s",
                kind,
                len(report.accounts),
                took / timedelta(seconds=1),
                {str(result): n for result, n in report.counts.items()},
            )
