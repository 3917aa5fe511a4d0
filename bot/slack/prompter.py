"""The Reconnect Gmail DM: sent once per user, edited in place by later reminders, and closed on reconnection.

Used by the briefing run (for every account only the user can fix), by admins' nudges, and by the
reconnection hook, which turns the DM into "Reconnected as x@gmail.com" and posts a short confirmation.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import asyncpg
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.google.health import Cause
from bot.google.scopes import Capability, missing_capabilities
from bot.metrics import Metrics
from bot.reconnect.hooks import Reconnected
from bot.reconnect.links import LinkSigner
from bot.slack.blocks.prompt import PromptView, reconnect_dm, reconnected_confirmation, reconnected_dm
from bot.slack.client import SlackUsers
from bot.slack.ids import slack_actor
from storage.accounts import Accounts
from storage.causes import CauseCode, stored_code
from storage.models import Account, Status
from storage.outbox import Message
from storage.prompts import Prompt, Prompts, PromptState

log = logging.getLogger(__name__)

# chat.update answers these when the old DM is gone or can no longer be edited: post a new one instead.
_MESSAGE_GONE = frozenset(
    {"message_not_found", "cant_update_message", "channel_not_found", "edit_window_closed"}
)


class Delivery(enum.StrEnum):
    """What asking a user to reconnect came to."""

    POSTED = "posted"  # a new DM
    UPDATED = "updated"  # the open prompt's DM, edited in place
    QUEUED = "queued"  # in the delivery queue, whose drainer posts it or edits the open DM
    SNOOZED = "snoozed"  # nothing sent: the user asked to be reminded later
    FAILED = "failed"  # Slack refused (e.g. the user is deactivated); nothing was recorded


class PromptQueue(Protocol):
    """Where a run sends its Reconnect Gmail DMs: the delivery queue (bot.briefing.run.RunMessages)."""

    async def queue_prompt(self, message: Message, *, prompt_id: int, conn: asyncpg.Connection) -> None:
        """Queue the DM of `prompt_id` in the transaction that opened the prompt (raises when this process
        must not send it)."""


@dataclass(frozen=True)
class PromptResult:
    """The outcome of one prompt, with the prompt as stored (None when nothing was recorded)."""

    delivery: Delivery
    prompt: Prompt | None = None
    error: str | None = None


class Prompter:
    """Sends, edits and closes Reconnect Gmail DMs through the Slack Web API."""

    def __init__(
        self,
        *,
        client: AsyncWebClient,
        prompts: Prompts,
        accounts: Accounts,
        links: LinkSigner,
        users: SlackUsers,
        timezone: ZoneInfo,
        metrics: Metrics | None = None,
        required: frozenset[Capability] = frozenset(Capability),
    ) -> None:
        self.required = (
            required  # what a grant must allow (REQUIRED capabilities): the DM names what it lacks
        )
        self.metrics = metrics or Metrics()
        self.client = client
        self.prompts = prompts
        self.accounts = accounts
        self.links = links
        self.users = users
        self.timezone = timezone

    async def send(
        self,
        slack_user_id: str,
        *,
        account: Account | None,
        cause: Cause,
        actor: str,
        slack_team_id: str | None = None,
        respect_snooze: bool = True,
        queue: PromptQueue | None = None,
    ) -> PromptResult:
        """Ask the user to reconnect: edit the open prompt's DM if there is one, else open a DM and post it; with
        a `queue`, the delivery queue does either when the DM's turn comes."""
        result = await self._send(
            slack_user_id,
            account=account,
            cause=cause,
            actor=actor,
            slack_team_id=slack_team_id,
            respect_snooze=respect_snooze,
            queue=queue,
        )
        self.metrics.prompts.labels(str(result.delivery)).inc()
        return result

    async def _send(
        self,
        slack_user_id: str,
        *,
        account: Account | None,
        cause: Cause,
        actor: str,
        slack_team_id: str | None,
        respect_snooze: bool,
        queue: PromptQueue | None,
    ) -> PromptResult:
        locale = await self.users.locale(slack_user_id)
        claims = self.links.new_claims(slack_user_id, slack_team_id=slack_team_id)
        url = self.links.url(claims)
        try:
            async with self.prompts.locked(slack_user_id) as conn:
                current = await self.prompts.open_for(slack_user_id, conn=conn)
                if respect_snooze and current is not None and current.snoozed_at(datetime.now(UTC)):
                    return PromptResult(Delivery.SNOOZED, current)
                prompt = await self.prompts.open(
                    slack_user_id,
                    account_id=account.id if account else None,
                    incident=_incident(account, cause),
                    cause=str(cause),
                    conn=conn,
                )
                view = PromptView(
                    prompt_id=prompt.id,
                    cause=cause,
                    email=account.email if account else None,
                    reconnect_url=url,
                    link_expires_at=claims.expires_at,
                    zone=self.timezone,
                    first_connection=account is None,
                    code=_recorded_code(account, cause),
                    **self._grant_details(account),
                )
                blocks, fallback = reconnect_dm(view, locale)
                if queue is not None:
                    await queue.queue_prompt(
                        Message(slack_user_id, fallback, blocks), prompt_id=prompt.id, conn=conn
                    )
                    log.info("Reconnect Gmail DM for %s queued (%s)", slack_user_id, cause)
                    return PromptResult(Delivery.QUEUED, prompt)
                channel, ts, edited = await self.deliver(prompt, blocks=blocks, text=fallback)
                sent = await self.prompts.record_sent(
                    prompt, channel_id=channel, message_ts=ts, edited=edited, actor=actor, conn=conn
                )
        except SlackApiError as error:
            code = str(error.response.get("error"))
            log.warning(
                "The Reconnect Gmail DM to %s could not be sent: Slack answered %s", slack_user_id, code
            )
            return PromptResult(Delivery.FAILED, error=code)
        log.info("Reconnect Gmail DM %s for %s (%s)", "updated" if edited else "sent", slack_user_id, cause)
        return PromptResult(Delivery.UPDATED if edited else Delivery.POSTED, sent)

    async def snooze(self, prompt_id: int, *, slack_user_id: str, actor: str) -> Prompt | None:
        """Remind me tomorrow: no reminders until the next day starts, and the DM says so."""
        snoozed = await self.prompts.snooze(
            prompt_id, slack_user_id=slack_user_id, until=self.tomorrow(), actor=actor
        )
        if snoozed is None or not snoozed.has_message:
            return snoozed
        locale = await self.users.locale(slack_user_id)
        claims = self.links.new_claims(slack_user_id)
        cause = Cause(snoozed.cause) if snoozed.cause in set(Cause) else Cause.EXPIRED
        account = await self.accounts.get(snoozed.account_id) if snoozed.account_id else None
        view = PromptView(
            prompt_id=snoozed.id,
            cause=cause,
            code=_recorded_code(account, cause),
            email=account.email if account else None,
            reconnect_url=self.links.url(claims),
            link_expires_at=claims.expires_at,
            zone=self.timezone,
            snoozed=True,
            first_connection=snoozed.account_id is None,
            **self._grant_details(account),
        )
        blocks, fallback = reconnect_dm(view, locale)
        await self._edit_quietly(snoozed, blocks=blocks, text=fallback)
        return snoozed

    async def dismiss(self, slack_user_id: str, *, actor: str) -> Prompt | None:
        """Close the user's open prompt without a reconnection (e.g. they disconnected on purpose)."""
        return await self.prompts.close(slack_user_id, state=PromptState.DISMISSED, actor=actor)

    async def reconnected(self, event: Reconnected) -> None:
        """The reconnection hook: the open DM becomes "Reconnected as …", and a confirmation is posted; after a
        grant that lacks a permission, the DM asks for just that instead (at once, snoozed or not)."""
        user = event.slack_user_id
        if event.account.status is Status.INSUFFICIENT_SCOPE:
            await self.send(
                user,
                account=event.account,
                cause=Cause.INSUFFICIENT_SCOPE,
                actor=slack_actor(user),
                slack_team_id=event.slack_team_id,
                respect_snooze=False,
            )
            return
        locale = await self.users.locale(user)
        email = event.email or event.account.email
        async with self.prompts.locked(user) as conn:
            closed = await self.prompts.close(
                user, state=PromptState.RESOLVED, actor=slack_actor(user), conn=conn
            )
        if closed is not None and closed.has_message:
            blocks, fallback = reconnected_dm(email, locale)
            await self._edit_quietly(closed, blocks=blocks, text=fallback)
        # A user ID as the channel posts in the user's DM with the bot.
        await self.client.chat_postMessage(channel=user, text=reconnected_confirmation(email, locale))

    def tomorrow(self, now: datetime | None = None) -> datetime:
        """The start of the next day in the briefing time zone."""
        local = (now or datetime.now(UTC)).astimezone(self.timezone)
        return datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=self.timezone)

    async def deliver(
        self, prompt: Prompt, *, blocks: list[dict[str, Any]], text: str
    ) -> tuple[str, str, bool]:
        """(channel, ts, edited): the open DM edited in place, or a new DM when there is none to edit."""
        if prompt.has_message:
            assert prompt.channel_id is not None and prompt.message_ts is not None
            try:
                await self.client.chat_update(
                    channel=prompt.channel_id, ts=prompt.message_ts, blocks=blocks, text=text
                )
                return prompt.channel_id, prompt.message_ts, True
            except SlackApiError as error:
                if error.response.get("error") not in _MESSAGE_GONE:
                    raise
                log.info("The Reconnect Gmail DM of %s is gone; posting a new one", prompt.slack_user_id)
        # Posted with the user ID as the channel (no conversations.open): Slack answers with the DM's channel
        # ID, which chat.update needs later.
        response = await self.client.chat_postMessage(channel=prompt.slack_user_id, blocks=blocks, text=text)
        return str(response["channel"]), str(response["ts"]), False

    async def _edit_quietly(self, prompt: Prompt, *, blocks: list[dict[str, Any]], text: str) -> None:
        """Edit the prompt's DM; a DM Slack will not edit any more is logged, not raised."""
        assert prompt.channel_id is not None and prompt.message_ts is not None
        try:
            await self.client.chat_update(
                channel=prompt.channel_id, ts=prompt.message_ts, blocks=blocks, text=text
            )
        except SlackApiError as error:
            log.warning(
                "The Reconnect Gmail DM of %s could not be edited (%s)",
                prompt.slack_user_id,
                error.response.get("error"),
            )

    def _grant_details(self, account: Account | None) -> dict[str, Any]:
        """What the DM says of the account's grant: the required permissions it lacks, and when the access the
        user allowed ends (time-based access)."""
        if account is None or not account.has_refresh_token:
            return {}
        return {
            "missing": tuple(missing_capabilities(account.scopes, self.required)),
            "access_ends_at": account.refresh_token_expires_at,
        }


def _incident(account: Account | None, cause: Cause) -> str:
    """What the prompt is about: this account (or none) and why."""
    return f"{account.id if account else 'none'}:{cause}"


def _recorded_code(account: Account | None, cause: Cause) -> CauseCode | None:
    """The account's recorded cause, when the DM is about the status it records (not, say, a warning that a
    working connection ends soon): its words say more precisely what happened."""
    if account is None or Cause.of(account.status) is not cause:
        return None
    return stored_code(account)
