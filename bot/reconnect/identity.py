"""Who a browser is in Slack: proven by Sign in with Slack, then remembered in a signed cookie.

The cookie holds the Slack user and team and an expiry (IDENTITY_TTL), sealed under a key of its own, so it
cannot be made or altered without SECRET_KEY and is never mistaken for a link. It only lets a browser skip
Slack's sign-in for the user it names; for anyone else the flow asks Slack again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.config import Settings
from bot.errors import ConfigError
from bot.reconnect.signing import Sealer

IDENTITY_COOKIE = "gmail_reconnect_identity"
_KEY_LABEL = b"gmail-reconnect identity cookie v1"


@dataclass(frozen=True)
class SlackIdentity:
    """A Slack user in a workspace, as Slack's sign-in named them."""

    slack_user_id: str
    slack_team_id: str | None

    def is_owner_of(self, slack_user_id: str, slack_team_id: str | None) -> bool:
        """True when this is that user (and, where the link names a team, in that team)."""
        return self.slack_user_id == slack_user_id and (
            slack_team_id is None or self.slack_team_id == slack_team_id
        )


class IdentityCookie:
    """Issues and reads the signed cookie that remembers a verified identity in the browser."""

    def __init__(self, secret_key: str, *, ttl: timedelta) -> None:
        self._sealer = Sealer(secret_key, _KEY_LABEL)
        self.ttl = ttl

    def issue(self, identity: SlackIdentity, *, now: datetime | None = None) -> str:
        """The cookie value remembering `identity` for IDENTITY_TTL."""
        expires = (now or datetime.now(UTC)) + self.ttl
        return self._sealer.seal(
            {"u": identity.slack_user_id, "t": identity.slack_team_id, "e": int(expires.timestamp())}
        )

    def read(self, value: str | None, *, now: datetime | None = None) -> SlackIdentity | None:
        """The identity a genuine, unexpired cookie names; None for anything else."""
        if not value:
            return None
        try:
            payload = self._sealer.open(value)
            expires = int(payload["e"])
            identity = SlackIdentity(str(payload["u"]), str(payload["t"]) if payload.get("t") else None)
        except (KeyError, TypeError, ValueError):
            return None
        if expires <= (now or datetime.now(UTC)).timestamp():
            return None
        return identity


def identity_cookie(settings: Settings) -> IdentityCookie:
    """The identity cookie of these settings (SECRET_KEY, IDENTITY_TTL); ConfigError without a key."""
    if settings.secret_key is None:
        raise ConfigError(
            ["SECRET_KEY is not set: it signs the cookie that remembers who signed in with Slack."]
        )
    return IdentityCookie(settings.secret_key.reveal(), ttl=settings.identity_ttl)
