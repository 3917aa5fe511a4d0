"""Events: the App Home tab shows the same status card as /gmail-status."""

from __future__ import annotations

from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.blocks.status import home_view
from handlers.slack import Deps


def register(bolt: Any, deps: Deps) -> None:
    """Add the event listeners."""

    async def on_app_home_opened(
        event: dict[str, Any], client: AsyncWebClient, context: dict[str, Any]
    ) -> None:
        await app_home_opened(deps, event=event, client=client, team_id=context.get("team_id"))

    bolt.event("app_home_opened")(on_app_home_opened)


async def app_home_opened(
    deps: Deps, *, event: dict[str, Any], client: AsyncWebClient, team_id: str | None
) -> None:
    """Publish the user's status card on their Home tab (the Messages tab needs nothing)."""
    if event.get("tab", "home") != "home":
        return
    await refresh_home(deps, client, event["user"], team_id)


async def refresh_home(
    deps: Deps, client: AsyncWebClient, slack_user_id: str, team_id: str | None, *, notice: str | None = None
) -> None:
    """Publish the user's current status card on their Home tab."""
    locale = await deps.users.locale(slack_user_id)
    view = await deps.status_view(slack_user_id, team_id, notice=notice)
    await client.views_publish(user_id=slack_user_id, view=home_view(view, locale))
