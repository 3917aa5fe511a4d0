"""The admin's registry of every account (what a sender registry's GET /senders lists), as a table or JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

from bot.google.health import account_summary
from bot.google.scopes import Capability
from storage.models import Account

_COLUMNS = ("SLACK ID", "USER ID", "EMAIL", "STATUS", "READ", "SEND", "EXPIRY (UTC)", "LAST REFRESH", "CAUSE")


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
            _cause(summary),
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


def _cause(summary: dict[str, object]) -> str:
    """The code, then the words that came with it."""
    code, detail = summary["cause"], summary["cause_detail"]
    return " ".join(str(part) for part in (code, f"({detail})" if detail else None) if part)


def _short(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "-"
