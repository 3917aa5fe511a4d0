"""The reconnect_prompts repository: one open Reconnect Gmail DM per Slack user, and where that DM is.

A prompt is opened when the bot asks a user to reconnect, updated (not duplicated) by later reminders, and
closed when the user reconnects (resolved) or no longer needs it (dismissed). Writes that go with a Slack
message run under `locked(slack_user_id)`, so two processes never send one user two DMs.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from storage import audit
from storage.locks import lock_prompt
from storage.pool import transaction

_COLUMNS = """id, slack_user_id, account_id, incident, cause, state, channel_id, message_ts, snoozed_until,
              sent_count, last_sent_at, created_at, updated_at, resolved_at"""


class PromptState(enum.StrEnum):
    """Where a prompt is in its life."""

    OPEN = "open"
    RESOLVED = "resolved"  # the user reconnected
    DISMISSED = "dismissed"  # no longer needed (the user disconnected, or a newer prompt replaced it)


@dataclass(frozen=True)
class Prompt:
    """One Reconnect Gmail DM."""

    id: int
    slack_user_id: str
    account_id: int | None
    incident: str
    cause: str | None
    state: PromptState
    channel_id: str | None
    message_ts: str | None
    snoozed_until: datetime | None
    sent_count: int
    last_sent_at: datetime | None
    created_at: datetime
    updated_at: datetime
    resolved_at: datetime | None

    @property
    def has_message(self) -> bool:
        """True when the DM was sent and can be edited in place."""
        return bool(self.channel_id and self.message_ts)

    def snoozed_at(self, now: datetime) -> bool:
        """True while the user asked to be reminded later."""
        return self.snoozed_until is not None and self.snoozed_until > now


def _prompt(row: asyncpg.Record) -> Prompt:
    values: dict[str, Any] = dict(row)
    values["state"] = PromptState(values["state"])
    return Prompt(**values)


class Prompts:
    """Repository over reconnect_prompts; every change is audited in the same transaction."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def locked(self, slack_user_id: str) -> AsyncIterator[asyncpg.Connection]:
        """A transaction holding this user's prompt lock: one sender at a time, in every process."""
        async with self.pool.acquire() as conn, conn.transaction():
            await lock_prompt(conn, slack_user_id)
            yield conn

    async def get(self, prompt_id: int, *, conn: asyncpg.Connection | None = None) -> Prompt | None:
        """The prompt with this id, or None."""
        row = await (conn or self.pool).fetchrow(
            f"SELECT {_COLUMNS} FROM reconnect_prompts WHERE id = $1", prompt_id
        )
        return _prompt(row) if row else None

    async def open_for(self, slack_user_id: str, *, conn: asyncpg.Connection | None = None) -> Prompt | None:
        """The user's open prompt, or None."""
        row = await (conn or self.pool).fetchrow(
            f"SELECT {_COLUMNS} FROM reconnect_prompts WHERE slack_user_id = $1 AND state = 'open'",
            slack_user_id,
        )
        return _prompt(row) if row else None

    async def open(
        self,
        slack_user_id: str,
        *,
        account_id: int | None,
        incident: str,
        cause: str,
        conn: asyncpg.Connection,
    ) -> Prompt:
        """The user's open prompt, now about this incident: the existing one updated, or a new one."""
        row = await conn.fetchrow(
            f"""UPDATE reconnect_prompts
                   SET account_id = $2, incident = $3, cause = $4, updated_at = now()
                 WHERE slack_user_id = $1 AND state = 'open'
             RETURNING {_COLUMNS}""",
            slack_user_id,
            account_id,
            incident,
            cause,
        )
        if row is None:
            row = await conn.fetchrow(
                f"""INSERT INTO reconnect_prompts (slack_user_id, account_id, incident, cause)
                    VALUES ($1, $2, $3, $4)
                 RETURNING {_COLUMNS}""",
                slack_user_id,
                account_id,
                incident,
                cause,
            )
        return _prompt(row)

    async def record_sent(
        self,
        prompt: Prompt,
        *,
        channel_id: str,
        message_ts: str,
        edited: bool,
        actor: str,
        conn: asyncpg.Connection,
    ) -> Prompt:
        """Remember where the DM is, count the reminder, and audit it."""
        row = await conn.fetchrow(
            f"""UPDATE reconnect_prompts
                   SET channel_id = $2, message_ts = $3, sent_count = sent_count + 1, last_sent_at = now(),
                       snoozed_until = NULL, updated_at = now()
                 WHERE id = $1
             RETURNING {_COLUMNS}""",
            prompt.id,
            channel_id,
            message_ts,
        )
        sent = _prompt(row)
        await audit.append(
            conn,
            actor=actor,
            action="prompt.updated" if edited else "prompt.sent",
            account_id=sent.account_id,
            slack_user_id=sent.slack_user_id,
            details={"prompt_id": sent.id, "incident": sent.incident, "sent_count": sent.sent_count},
        )
        return sent

    async def snooze(
        self, prompt_id: int, *, slack_user_id: str, until: datetime, actor: str
    ) -> Prompt | None:
        """Hold the user's open prompt's reminders until `until`; None if it is not theirs or not open."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""UPDATE reconnect_prompts SET snoozed_until = $2, updated_at = now()
                     WHERE id = $1 AND slack_user_id = $3 AND state = 'open'
                 RETURNING {_COLUMNS}""",
                prompt_id,
                until,
                slack_user_id,
            )
            if row is None:
                return None
            snoozed = _prompt(row)
            await audit.append(
                conn,
                actor=actor,
                action="prompt.snoozed",
                account_id=snoozed.account_id,
                slack_user_id=snoozed.slack_user_id,
                details={"prompt_id": snoozed.id, "until": until.isoformat()},
            )
            return snoozed

    async def close(
        self, slack_user_id: str, *, state: PromptState, actor: str, conn: asyncpg.Connection | None = None
    ) -> Prompt | None:
        """Close the user's open prompt (resolved or dismissed) and return it; None if there was none."""
        if state is PromptState.OPEN:
            raise ValueError("close() takes resolved or dismissed")
        async with transaction(self.pool, conn) as conn:
            row = await conn.fetchrow(
                f"""UPDATE reconnect_prompts SET state = $2, resolved_at = now(), updated_at = now()
                     WHERE slack_user_id = $1 AND state = 'open'
                 RETURNING {_COLUMNS}""",
                slack_user_id,
                str(state),
            )
            if row is None:
                return None
            closed = _prompt(row)
            await audit.append(
                conn,
                actor=actor,
                action=f"prompt.{state}",
                account_id=closed.account_id,
                slack_user_id=slack_user_id,
                details={
                    "prompt_id": closed.id,
                    "incident": closed.incident,
                    "sent_count": closed.sent_count,
                },
            )
            return closed
