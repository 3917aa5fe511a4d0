"""Admin commands: `/gmail-status all` (every account's health, "Nudge all unhealthy") and `nudge @user`.

Only the users in ADMIN_SLACK_USER_IDS may use them; others get a polite refusal. Every admin action, and
every refusal, goes to the audit log.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from slack_bolt.context.respond.async_respond import AsyncRespond

from bot.fleet import Attention, attention_of, fleet_patterns
from bot.google.health import Cause, effective_status, granted_access_ending, testing_expiry_near
from bot.google.token_service import Outcome
from bot.services import Services
from bot.slack.blocks.admin import Overview, admin_overview
from bot.slack.blocks.elements import NUDGE_ALL_ACTION
from bot.slack.blocks.status import notice_blocks
from bot.slack.ids import mentioned_user, slack_actor
from bot.slack.mrkdwn import Mrkdwn, slack_text
from bot.slack.prompter import Delivery
from handlers.slack.errors import acknowledging
from storage import audit
from storage.models import Account, Status

VERBS = frozenset({"all", "nudge"})
NUDGE_CONCURRENCY = 8

Answer = tuple[list[dict[str, Any]], str]


def register(bolt: Any, services: Services) -> None:
    """Add the admin buttons."""

    bolt.action(NUDGE_ALL_ACTION)(acknowledging(services, nudge_all))


async def answer(services: Services, user_id: str, verb: str, arguments: list[str], locale: str) -> Answer:
    """The answer to `/gmail-status all` or `/gmail-status nudge …` (or a refusal for non-admins)."""
    if not services.settings.is_admin(user_id):
        await _audit(services, user_id, "admin.refused", command=verb)
        return _line(slack_text(locale, "slack.admin.refused", argument=verb))
    if verb == "all":
        overview = await health_overview(services)
        await _audit(services, user_id, "admin.overview_viewed", attention=len(overview.attention))
        return admin_overview(overview, locale), slack_text(
            locale, "slack.admin.title", total=sum(overview.counts.values())
        )
    return await nudge(services, user_id, arguments, locale)


async def health_overview(services: Services) -> Overview:
    """Counts by status (as the stored data shows it) and the accounts only their users can fix."""
    counts: Counter[Status] = Counter()
    attention: list[Attention] = []
    for account in await services.accounts.list():
        item = attention_of(account, services.settings.required_capabilities)
        counts[item.status] += 1
        if item.status.needs_user:
            attention.append(item)
    nudgeable = sum(1 for item in attention if item.account.slack_user_id)
    return Overview(
        counts=dict(counts),
        attention=attention,
        nudgeable=nudgeable,
        patterns=await fleet_patterns(services.pool, attention, now=datetime.now(UTC)),
    )


async def nudge(services: Services, admin_id: str, arguments: list[str], locale: str) -> Answer:
    """Send one user the Reconnect Gmail DM now (checking with Google first when the stored status is good)."""
    target = mentioned_user(arguments[0]) if len(arguments) == 1 else None
    if target is None:
        return _line(slack_text(locale, "slack.admin.nudge_usage"))
    account = await services.accounts.find_by_slack_id(target)
    cause, reason = await _cause_for(services, account)
    if cause is None:
        await _audit(services, admin_id, "admin.nudged", target=target, delivery="not_sent", reason=reason)
        if reason == "unavailable":
            return _line(slack_text(locale, "slack.admin.nudge_unavailable", user=target))
        assert account is not None
        return _line(slack_text(locale, "slack.admin.nudge_healthy", user=target, email=account.email or "-"))
    result = await services.prompter.send(
        target, account=account, cause=cause, actor=slack_actor(admin_id), respect_snooze=False
    )
    await _audit(
        services,
        admin_id,
        "admin.nudged",
        target=target,
        cause=str(cause),
        delivery=str(result.delivery),
        **({"slack_error": result.error} if result.error else {}),
    )
    label = slack_text(locale, f"slack.label.{cause}")
    if result.delivery is Delivery.FAILED:
        return _line(slack_text(locale, "slack.admin.nudge_failed", user=target, error=result.error))
    key = "slack.admin.nudge_updated" if result.delivery is Delivery.UPDATED else "slack.admin.nudge_posted"
    return _line(slack_text(locale, key, user=target, label=label))


async def _cause_for(services: Services, account: Account | None) -> tuple[Cause | None, str]:
    """Why this user should reconnect; (None, reason) when they should not be asked now."""
    if account is None:
        return Cause.MISSING, "no_account"
    status, _ = effective_status(account, services.settings.required_capabilities)
    cause = Cause.of(status)
    if cause is not None:
        return cause, "stored_status"
    access = await services.tokens.access(account)
    if access.outcome is Outcome.UNAVAILABLE:
        return None, "unavailable"
    if not access.ok:
        return Cause.of(access.account.status) or Cause.EXPIRED, "checked"
    if services.settings.google_testing_mode and testing_expiry_near(access.account, datetime.now(UTC)):
        return Cause.TESTING_EXPIRY, "checked"
    if granted_access_ending(access.account, datetime.now(UTC)):
        return Cause.ACCESS_ENDING, "checked"
    return None, "healthy"


async def nudge_all(services: Services, *, body: dict[str, Any], respond: AsyncRespond, **_: Any) -> None:
    """Nudge all unhealthy: every linked user who must reconnect gets the DM (snoozed users are skipped)."""
    admin_id = body["user"]["id"]
    locale = await services.users.locale(admin_id)
    if not services.settings.is_admin(admin_id):
        await _audit(services, admin_id, "admin.refused", command="nudge-all")
        line = slack_text(locale, "slack.admin.refused", argument="all")
        await respond(
            text=line, blocks=notice_blocks(line), response_type="ephemeral", replace_original=False
        )
        return
    overview = await health_overview(services)
    limit = asyncio.Semaphore(NUDGE_CONCURRENCY)

    async def one(account: Account, status: Status) -> Delivery:
        assert account.slack_user_id is not None
        async with limit:
            result = await services.prompter.send(
                account.slack_user_id,
                account=account,
                cause=Cause.of(status) or Cause.EXPIRED,
                actor=slack_actor(admin_id),
            )
        return result.delivery

    deliveries = Counter(
        await asyncio.gather(
            *(one(item.account, item.status) for item in overview.attention if item.account.slack_user_id)
        )
    )
    # Sent here and now, never queued: the admin reads the outcome at once.
    counts = {
        str(delivery): deliveries.get(delivery, 0) for delivery in Delivery if delivery is not Delivery.QUEUED
    }
    unlinked = len(overview.attention) - overview.nudgeable
    await _audit(services, admin_id, "admin.nudged_all", unlinked=unlinked, **counts)
    line = slack_text(locale, "slack.admin.nudge_all_done", unlinked=unlinked, **counts)
    await respond(text=line, blocks=notice_blocks(line), response_type="ephemeral", replace_original=False)


def _line(line: Mrkdwn) -> Answer:
    return notice_blocks(line), line


async def _audit(services: Services, slack_user_id: str, action: str, **details: Any) -> None:
    """Record what a Slack user did (admin actions, refusals) in the audit log."""
    await audit.append(
        services.pool,
        actor=slack_actor(slack_user_id),
        action=action,
        slack_user_id=slack_user_id,
        details=details,
    )
