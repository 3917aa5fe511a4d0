"""Button clicks. Link buttons open the consent page in the browser; Slack still sends the click, which must be
acknowledged, or Slack shows a warning next to the button."""

from __future__ import annotations

from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck

from bot.blocks import RECONNECT_ACTION, SWITCH_ACTION
from handlers.slack import Deps


def register(bolt: Any, deps: Deps) -> None:
    """Add the button listeners."""
    bolt.action(RECONNECT_ACTION)(link_button)
    bolt.action(SWITCH_ACTION)(link_button)


async def link_button(ack: AsyncAck) -> None:
    """A Reconnect / Connect / Use a different account click: the browser does the rest."""
    await ack()
