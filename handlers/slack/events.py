"""Events: the App Home tab shows the same status card as /gmail-status."""

from __future__ import annotations

from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks import home_view
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
    user_id = event["user"]
    locale = await deps.locales.of(user_id)
    view = await deps.status_view(user_id, team_id)
    await client.views_publish(user_id=user_id, view=home_view(view, locale))
