"""What each step of the consent flow answers the browser with, and how long a started step stays valid."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from bot.reconnect.identity import SlackIdentity

# A state (Slack's sign-in or Google's consent) must come back within this long.
STATE_TTL = timedelta(minutes=10)


@dataclass(frozen=True)
class Answer:
    """What to send the browser: a redirect to `location`, or the page `page` with its parameters; and an
    identity Slack just verified, for the browser to remember."""

    page: str
    status: int = 200
    location: str | None = field(default=None, repr=False)
    params: dict[str, Any] = field(default_factory=dict)
    identity: SlackIdentity | None = None
