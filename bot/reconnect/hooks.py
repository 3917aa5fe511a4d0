"""Reconnection hooks: async callbacks (the Slack layer registers one) told when a user's Gmail is connected.

Hooks run in the background, after the success page is sent: a slow or failing Slack never holds up, or
breaks, the page the user is looking at. A failing hook is logged with its traceback and does not stop others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from storage.models import Account, Status

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reconnected:
    """A user connected (or reconnected) their Gmail through the consent flow."""

    slack_user_id: str
    slack_team_id: str | None
    account: Account
    email: str | None
    previous_status: Status | None
    purpose: str
    link_id: str | None


Hook = Callable[[Reconnected], Awaitable[None]]


class ReconnectHooks:
    """The registered hooks, and the background tasks running them."""

    def __init__(self) -> None:
        self._hooks: list[Hook] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def register(self, hook: Hook) -> None:
        """Call `hook` after every successful connection."""
        self._hooks.append(hook)

    def fire(self, event: Reconnected) -> None:
        """Start every hook for `event` in the background."""
        for hook in self._hooks:
            task = asyncio.create_task(self._run(hook, event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the hooks already started (at shutdown, and in tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    @staticmethod
    async def _run(hook: Hook, event: Reconnected) -> None:
        try:
            await hook(event)
        except Exception:
            log.exception(
                "A reconnection hook (%s) failed for Slack user %s",
                getattr(hook, "__qualname__", hook),
                event.slack_user_id,
            )
