"""What follows a reconnection in Slack: the DM resolved and a confirmation, today's missed briefing, the
admin summaries, and the App Home redrawn."""

from __future__ import annotations

from bot.reconnect.hooks import Reconnected
from bot.services import Services
from handlers.slack.events import refresh_home


async def after_reconnection(services: Services, event: Reconnected) -> None:
    """The reconnection hook, in order: "Reconnected as …" and its confirmation, then today's missed email
    (so the DM reads in order), the admin summaries that listed the user, and the App Home."""
    await services.prompter.reconnected(event)
    await services.briefing.reconnected(event.account)
    await refresh_home(services, services.slack, event.slack_user_id, event.slack_team_id)
