"""The admin summary of each run: one message in ADMIN_CHANNEL_ID with counts by status and the accounts
that need their user, sent through the delivery queue once the run's other messages are delivered, and edited as
those users reconnect ("3 → 1 need attention", then "resolved")."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.fleet import attention_of, fleet_patterns
from bot.slack.blocks.admin import RunSummaryView, run_summary
from storage.accounts import Accounts
from storage.models import Account, Status
from storage.outbox import Message, SlackOutbox
from storage.runs import Run, Runs

log = logging.getLogger(__name__)


class RunSummary:
    """Posts and edits the admin summaries; does nothing when ADMIN_CHANNEL_ID is not set."""

    def __init__(
        self,
        *,
        settings: Settings,
        client: AsyncWebClient,
        accounts: Accounts,
        runs: Runs,
        outbox: SlackOutbox,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self.client = client
        self.accounts = accounts
        self.runs = runs

    async def queue(self, run: Run, *, left_over: bool = False) -> bool:
        """Queue the summary of a run whose messages were delivered (it says how that went), if this process is
        the one to post it: the process that finished the run, or (`left_over`) one that found it finished and
        unposted. Whether it did. The drainer posts it and records where (for the edits)."""
        channel = self.settings.admin_channel_id
        if channel is None:
            return False
        blocks, fallback = run_summary(await self._view(run), self.settings.default_locale)
        return await self.outbox.queue_summary(
            run_id=run.id, message=Message(channel, fallback, blocks), left_over=left_over
        )

    async def reconnected(self, account: Account) -> None:
        """Edit today's summaries that list this account, now that it works again."""
        today = datetime.now(self.settings.briefing_timezone).date()
        for run, channel, ts in await self.runs.summaries_with(today, account.id):
            # Two reconnections at once: the second edit waits, then draws both.
            async with self.runs.summary_locked(run):
                blocks, fallback = run_summary(await self._view(run), self.settings.default_locale)
                try:
                    await self.client.chat_update(channel=channel, ts=ts, blocks=blocks, text=fallback)
                except SlackApiError as error:
                    log.warning(
                        "The admin summary of the %s run could not be edited: Slack answered %s",
                        run.kind,
                        error.response.get("error"),
                    )

    async def _view(self, run: Run) -> RunSummaryView:
        needed = await self.runs.needed_user(run)
        required = self.settings.required_capabilities
        attention = [attention_of(account, required) for account in await self.accounts.list(ids=needed)]
        outcomes = await self.runs.outcomes(run)
        delivery = await self.outbox.run_delivery(run.id)
        last_sent = None
        if delivery.last_sent_at is not None:
            last_sent = f"{delivery.last_sent_at.astimezone(self.settings.briefing_timezone):%H:%M:%S}"
        return RunSummaryView(
            kind=run.kind,
            day=run.day.isoformat(),
            total=sum(outcomes.values()),
            outcomes=outcomes,
            counts={Status(name): n for name, n in (await self.runs.statuses(run)).items()},
            attention=attention,
            delivery=delivery,
            last_sent=last_sent,
            patterns=await fleet_patterns(self.accounts.pool, attention, now=datetime.now(UTC)),
        )
