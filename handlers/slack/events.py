"""Events: the App Home tab shows the same status card as /gmail-status."""

from __future__ import annotations

from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.services import Services
from bot.slack.blocks.status import home_view
from bot.slack.mrkdwn import Mrkdwn
from handlers.slack.status_view import status_view


def register(bolt: Any, services: Services) -> None:
    """Add the event listeners."""

    async def on_app_home_opened(
        event: dict[str, Any], client: AsyncWebClient, context: dict[str, Any]
    ) -> None:
        await app_home_opened(services, event=event, client=client, team_id=context.get("team_id"))

    bolt.event("app_home_opened")(on_app_home_opened)


async def app_home_opened(
    services: Services, *, event: dict[str, Any], client: AsyncWebClient, team_id: str | None
) -> None:
    """Publish the user's status card on their Home tab (the Messages tab needs nothing)."""
    if event.get("tab", "home") != "home":
        return
    await refresh_home(services, client, event["user"], team_id)


async def refresh_home(
    services: Services,
    client: AsyncWebClient,
    slack_user_id: str,
    team_id: str | None,
    *,
    notice: Mrkdwn | None = None,
) -> None:
    """Publish the user's current status card on their Home tab."""
    locale = await services.users.locale(slack_user_id)
    view = await status_view(services, slack_user_id, team_id, notice=notice)
    await client.views_publish(user_id=slack_user_id, view=home_view(view, locale))
