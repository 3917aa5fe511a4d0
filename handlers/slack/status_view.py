"""The status card's content for one Slack user: their account, its status, fresh links, and a row to offer."""

from __future__ import annotations

from bot.google.health import effective_cause, effective_status
from bot.google.scopes import Capability, missing_capabilities
from bot.reconnect.links import Purpose
from bot.services import Services
from bot.slack.blocks.status import StatusView
from bot.slack.mrkdwn import Mrkdwn
from storage.models import Account, Status


async def status_view(
    services: Services, slack_user_id: str, slack_team_id: str | None, *, notice: Mrkdwn | None = None
) -> StatusView:
    """What /gmail-status and the App Home show this user now."""
    account = await services.accounts.find_by_slack_id(slack_user_id)
    status, code = Status.MISSING, None
    missing: tuple[Capability, ...] = ()
    if account is not None:
        required = services.settings.required_capabilities
        status, _ = effective_status(account, required)
        code, _ = effective_cause(account, required)
        if account.has_refresh_token:
            missing = tuple(missing_capabilities(account.scopes, required))
    links = services.links
    return StatusView(
        account=account,
        status=status,
        code=code,
        reconnect_url=links.new_url(slack_user_id, slack_team_id=slack_team_id),
        switch_url=links.new_url(slack_user_id, slack_team_id=slack_team_id, purpose=Purpose.SWITCH),
        offer=None if account is not None else await linkable_account(services, slack_user_id),
        notice=notice,
        zone=services.settings.briefing_timezone,
        missing=missing,
    )


async def linkable_account(services: Services, slack_user_id: str) -> Account | None:
    """The one unlinked row whose email is this user's Slack profile email (none if zero or several)."""
    email = await services.users.email(slack_user_id)
    if not email:
        return None
    found = await services.accounts.find_unlinked_by_email(email)
    return found[0] if len(found) == 1 else None
