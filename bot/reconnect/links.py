"""Reconnect links: signed, expiring tokens that name a Slack user and a purpose, carried in Slack messages.

A link token is a value sealed by `bot.reconnect.signing` under a key of its own. Opening a link consumes
nothing (Slack and browsers prefetch URLs); each visit starts a fresh OAuth state, and a link that completed a
reconnection starts no other. Signing is deterministic, so the same claims give the same link.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from bot.config import Settings
from bot.errors import ConfigError, GmailReconnectError
from bot.reconnect.paths import START_PATH
from bot.reconnect.signing import Sealer

_KEY_LABEL = b"gmail-reconnect link token v1"


class Purpose(enum.StrEnum):
    """What a link allows: reconnect the same Google account, or switch to a different one."""

    RECONNECT = "reconnect"
    SWITCH = "switch"


class LinkError(GmailReconnectError):
    """A link token that cannot be used; `expired` tells a stale link from a damaged one."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True)
class LinkClaims:
    """Who a link is for, what it allows, and until when."""

    slack_user_id: str
    slack_team_id: str | None
    purpose: Purpose
    expires_at: datetime
    link_id: str

    def state_fields(self) -> dict[str, Any]:
        """What an OAuth state started from this link keeps of it (OAuthStates.create's link arguments)."""
        return {
            "slack_user_id": self.slack_user_id,
            "slack_team_id": self.slack_team_id,
            "purpose": str(self.purpose),
            "link_id": self.link_id,
            "link_expires_at": self.expires_at,
        }


class LinkSigner:
    """Signs and verifies link tokens with a key derived from SECRET_KEY."""

    def __init__(self, secret_key: str, *, public_base_url: str, ttl: timedelta) -> None:
        self._sealer = Sealer(secret_key, _KEY_LABEL)
        self.public_base_url = public_base_url
        self.ttl = ttl

    def new_claims(
        self,
        slack_user_id: str,
        *,
        slack_team_id: str | None = None,
        purpose: Purpose = Purpose.RECONNECT,
        now: datetime | None = None,
    ) -> LinkClaims:
        """Claims for a new link, expiring after LINK_TTL."""
        issued = now or datetime.now(UTC)
        return LinkClaims(
            slack_user_id=slack_user_id,
            slack_team_id=slack_team_id,
            purpose=purpose,
            expires_at=(issued + self.ttl).replace(microsecond=0),
            link_id=secrets.token_urlsafe(12),
        )

    def sign(self, claims: LinkClaims) -> str:
        """The token for these claims."""
        payload = {
            "u": claims.slack_user_id,
            "t": claims.slack_team_id,
            "p": str(claims.purpose),
            "e": int(claims.expires_at.timestamp()),
            "i": claims.link_id,
        }
        return self._sealer.seal(payload)

    def verify(self, token: str, *, now: datetime | None = None) -> LinkClaims:
        """The claims of a genuine, unexpired token; LinkError otherwise."""
        if not token.strip().partition(".")[2]:
            raise LinkError("The link is incomplete.")
        try:
            payload = self._sealer.open(token)
        except ValueError:
            raise LinkError("The link is damaged or was not issued by this bot.") from None
        try:
            claims = LinkClaims(
                slack_user_id=str(payload["u"]),
                slack_team_id=str(payload["t"]) if payload.get("t") else None,
                purpose=Purpose(payload["p"]),
                expires_at=datetime.fromtimestamp(int(payload["e"]), UTC),
                link_id=str(payload["i"]),
            )
        except (KeyError, TypeError, ValueError):
            raise LinkError("The link is damaged or was not issued by this bot.") from None
        if claims.expires_at <= (now or datetime.now(UTC)):
            raise LinkError("The link has expired.", expired=True)
        return claims

    def url(self, claims: LinkClaims) -> str:
        """The absolute URL that starts the consent flow for these claims."""
        return f"{self.public_base_url}{START_PATH}?{urlencode({'t': self.sign(claims)})}"

    def new_url(
        self, slack_user_id: str, *, slack_team_id: str | None = None, purpose: Purpose = Purpose.RECONNECT
    ) -> str:
        """A fresh link for a Slack user: what Slack messages carry behind their Reconnect Gmail button."""
        return self.url(self.new_claims(slack_user_id, slack_team_id=slack_team_id, purpose=purpose))


def link_signer(settings: Settings) -> LinkSigner:
    """The signer of these settings' links (SECRET_KEY, PUBLIC_BASE_URL, LINK_TTL); ConfigError without a key."""
    if settings.secret_key is None:
        raise ConfigError(["SECRET_KEY is not set: it signs the Reconnect Gmail links."])
    return LinkSigner(
        settings.secret_key.reveal(), public_base_url=settings.public_base_url, ttl=settings.link_ttl
    )
