"""The admin's registry of every account (seed 004's GET /senders), as a table or JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from bot.token_health import effective_status
from storage.models import Account
from storage.scopes import Capability

_COLUMNS = ("SLACK ID", "USER ID", "EMAIL", "STATUS", "READ", "SEND", "EXPIRY (UTC)", "LAST REFRESH", "CAUSE")


def account_summary(account: Account, required: Iterable[Capability]) -> dict[str, Any]:
    """One account as plain data: what an admin needs, never a token."""
    status, cause = effective_status(account, required)
    return {
        "slack_user_id": account.slack_user_id,
        "user_id": account.user_id,
        "email": account.email,
        "status": str(status),
        "status_checked": account.last_checked_at is not None,
        "cause": cause,
        "can_read": Capability.READ in account.capabilities,
        "can_send": Capability.SEND in account.capabilities,
        "scopes": account.scopes,
        "expiry": _iso(account.expiry),
        "last_refresh_at": _iso(account.last_refresh_at),
        "last_checked_at": _iso(account.last_checked_at),
        "refresh_token_issued_at": _iso(account.refresh_token_issued_at),
        "robing_id": account.robing_id,
    }


def render_json(accounts: list[Account], required: Iterable[Capability]) -> str:
    """The registry as a JSON array."""
    required = list(required)
    return json.dumps([account_summary(a, required) for a in accounts], ensure_ascii=False, indent=2)


def render_table(accounts: list[Account], required: Iterable[Capability]) -> str:
    """The registry as an aligned text table, one account a line."""
    required = list(required)
    rows = [
        (
            a.slack_user_id or "-",
            a.user_id,
            a.email or "-",
            summary["status"],
            "yes" if summary["can_read"] else "no",
            "yes" if summary["can_send"] else "no",
            _short(a.expiry),
            _short(a.last_refresh_at),
            summary["cause"] or "",
        )
        for a in accounts
        for summary in [account_summary(a, required)]
    ]
    if not rows:
        return "No accounts."
    widths = [max(len(str(row[i])) for row in [_COLUMNS, *rows]) for i in range(len(_COLUMNS) - 1)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row[:-1], widths, strict=True))
        + "  "
        + row[-1]
        for row in [_COLUMNS, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _short(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "-"
