"""What the accounts that need attention show together, for the admin's summaries: Google ending tokens about 7
days after consent (an OAuth app left in Testing), and users who reconnect again and again."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

import asyncpg

from bot.google.health import effective_cause, effective_status
from bot.google.scopes import Capability
from storage import audit
from storage.causes import INVALID_GRANT_CODES, CauseCode
from storage.models import Account, Status

# An invalid_grant this long after consent is what Google's 7-day limit on a Testing app's tokens looks like.
TESTING_DEATH_AGE = (timedelta(days=6), timedelta(days=8))
# Enough such deaths to say so: this many, or this share of the connections that are broken.
TESTING_DEATHS_AT_LEAST = 2
TESTING_DEATHS_SHARE = 0.2
# A user who reconnected this many times within the window keeps losing the connection to something.
RECONNECT_WINDOW = timedelta(days=7)
RECONNECTS_AT_LEAST = 3


class Attention(NamedTuple):
    """An account that needed (or needs) its user, with its status now and why."""

    account: Account
    status: Status
    code: CauseCode | None
    detail: str | None


def attention_of(account: Account, required: Iterable[Capability]) -> Attention:
    """The account with its effective status and cause."""
    required = list(required)
    status, _ = effective_status(account, required)
    code, detail = effective_cause(account, required)
    return Attention(account, status, code, detail)


@dataclass(frozen=True)
class FleetPatterns:
    """What several accounts show together; empty when nothing stands out."""

    testing_deaths: int = 0  # invalid_grant about 7 days after consent, counted only when enough to say so
    broken: int = 0  # of how many connections that need their user
    reconnecting: list[tuple[str, int]] = field(
        default_factory=list
    )  # (Slack user, reconnections), most first
    window_days: int = RECONNECT_WINDOW.days

    def __bool__(self) -> bool:
        return bool(self.testing_deaths or self.reconnecting)


async def fleet_patterns(
    pool: asyncpg.Pool | asyncpg.Connection, attention: list[Attention], *, now: datetime
) -> FleetPatterns:
    """The patterns among `attention` (those still needing their user) and in the last week's reconnections."""
    broken = [item for item in attention if item.status.needs_user]
    deaths = sum(1 for item in broken if died_of_testing_limit(item))
    enough = deaths >= TESTING_DEATHS_AT_LEAST or (
        deaths > 0 and deaths >= TESTING_DEATHS_SHARE * len(broken)
    )
    reconnecting = await audit.frequent(
        pool, action="tokens.reconnected", since=now - RECONNECT_WINDOW, at_least=RECONNECTS_AT_LEAST
    )
    return FleetPatterns(
        testing_deaths=deaths if enough else 0, broken=len(broken), reconnecting=reconnecting
    )


def died_of_testing_limit(item: Attention) -> bool:
    """Google refused the refresh token (invalid_grant) 6 to 8 days after it was issued."""
    consented = consented_at(item.account)
    failed = item.account.status_changed_at
    if item.code not in INVALID_GRANT_CODES or consented is None or failed is None:
        return False
    shortest, longest = TESTING_DEATH_AGE
    return shortest <= failed - consented <= longest


def consented_at(account: Account) -> datetime | None:
    """When the refresh token was issued: recorded on the row, else the metadata's connected_at."""
    if account.refresh_token_issued_at is not None:
        return account.refresh_token_issued_at
    connected = account.metadata.get("connected_at")
    try:
        moment = datetime.fromisoformat(connected) if isinstance(connected, str) else None
    except ValueError:
        return None
    return moment if moment is not None and moment.tzinfo is not None else None
