"""Briefing run records: each (kind, day) runs once, its accounts shared among replicas and resumed after a crash.

An account's item is claimed before it is processed and marked done after; a claim older than
`stale_after` belongs to a process that died, and is claimed again.
"""

from __future__ import annotations

import enum
import os
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import asyncpg

from storage.accounts import Accounts
from storage.locks import lock_run_summary
from storage.models import Account, StoredTokens
from storage.rows import ACCOUNT_COLUMNS

DEFAULT_STALE_AFTER = timedelta(minutes=10)
# How often a process that ran out of accounts to claim looks again while others finish theirs.
DEFAULT_POLL_INTERVAL = 1.0


class Result(enum.StrEnum):
    """What a run did for one account (briefing_run_items.outcome)."""

    DIGEST = "digest"  # healthy; the email part of the briefing was posted
    CHECKED = "checked"  # healthy; nothing to post (preflight, or BRIEFING_MODE=check)
    PROMPTED = "prompted"  # only the user can fix it: the Reconnect Gmail DM was sent or updated
    SNOOZED = "snoozed"  # only the user can fix it, and they asked to be reminded tomorrow
    UNAVAILABLE = "unavailable"  # Google could not be asked now: nothing changed, nobody was prompted
    SKIPPED = "skipped"  # disconnected on purpose
    FAILED = "failed"  # Slack refused a message, or an answer could not be understood


# Outcomes of accounts that needed their user: a reconnection later that day makes up for them.
NEEDED_THE_USER = (Result.PROMPTED, Result.SNOOZED)


@dataclass(frozen=True)
class Run:
    """One scheduled run."""

    id: int
    kind: str
    day: date
    finished: bool
    created: bool = False  # begun by this call (the first process to start it)


@dataclass(frozen=True)
class Claim:
    """An account of a run, claimed by this process, read along with its row in the same statement."""

    account_id: int
    account: Account | None  # None: the row was deleted after the run began
    stored: StoredTokens | None
    slack_locale: str | None = None  # the user's language as stored by SlackLocales, if still fresh


@dataclass(frozen=True)
class Fetch:
    """How an account's briefing fetch went: "ok" with the unread count, or why not."""

    result: str
    messages: int | None


@dataclass(frozen=True)
class Done:
    """What happened to one account of a run (`needed_user`: only its user could fix it)."""

    account_id: int
    outcome: str
    detail: str | None = None
    needed_user: bool = False
    fetch: Fetch | None = None


# One round trip per account: mark the account just handled ($4, if any) done, with its fetch on its row,
# and claim the next one, read along with its row, tokens and fresh stored language. A claim older
# than stale_after ($3) belongs to a process that died; the account being marked done is never the one
# claimed (were its own claim stale, both updates would hit one row in one statement).
_RECORD_AND_CLAIM = f"""
WITH fetched AS (
        UPDATE gmail_tokens
           SET last_fetch_at = now(), last_fetch_result = $8, last_fetch_messages = $9
         WHERE id = $4 AND $8::text IS NOT NULL),
     finished AS (
        UPDATE briefing_run_items
           SET state = 'done', outcome = $5, detail = $6, needed_user = $7, finished_at = now()
         WHERE run_id = $1 AND account_id = $4),
     claimed AS (
        UPDATE briefing_run_items AS item
           SET state = 'claimed', claimed_by = $2, claimed_at = now()
          FROM (SELECT run_id, account_id FROM briefing_run_items
                 WHERE run_id = $1 AND account_id IS DISTINCT FROM $4
                   AND (state = 'pending' OR (state = 'claimed' AND claimed_at < now() - $3::interval))
                 ORDER BY account_id
                 LIMIT 1
                 FOR UPDATE SKIP LOCKED) AS next
         WHERE item.run_id = next.run_id AND item.account_id = next.account_id
     RETURNING item.account_id)
SELECT claimed.account_id AS claimed_id, g.token_data, l.locale AS slack_locale, {ACCOUNT_COLUMNS}
  FROM claimed
  LEFT JOIN gmail_tokens AS g ON g.id = claimed.account_id
  LEFT JOIN slack_locales AS l ON l.slack_user_id = g.metadata->>'slack_user_id' AND l.fresh_until > now()
"""


class Runs:
    """Repository over briefing_runs and briefing_run_items."""

    def __init__(
        self,
        accounts: Accounts,
        *,
        stale_after: timedelta = DEFAULT_STALE_AFTER,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> None:
        self.pool = accounts.pool
        self.stale_after = stale_after
        self.poll_interval = poll_interval
        # A restarted container keeps its host name and often its pid: the suffix tells incarnations apart.
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"

    async def begin(self, kind: str, day: date) -> Run:
        """The run of `kind` on `day`, created with an item per linked account if it is new."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """INSERT INTO briefing_runs (kind, day) VALUES ($1, $2)
                   ON CONFLICT (kind, day) DO UPDATE SET kind = EXCLUDED.kind
                   RETURNING id, kind, day, finished_at IS NOT NULL AS finished, xmax = 0 AS created""",
                kind,
                day,
            )
            if row["created"]:
                await conn.execute(
                    """INSERT INTO briefing_run_items (run_id, account_id)
                       SELECT $1, id FROM gmail_tokens WHERE coalesce(metadata->>'slack_user_id', '') <> ''
                       ON CONFLICT DO NOTHING""",
                    row["id"],
                )
        if row["created"]:
            # Fresh statistics, so the planner uses the claim index for a table that was empty until now.
            await self.pool.execute("ANALYZE briefing_run_items")
        return Run(row["id"], row["kind"], row["day"], row["finished"], row["created"])

    async def find(self, kind: str, day: date) -> Run | None:
        """The run of `kind` on `day`, if it has begun."""
        row = await self.pool.fetchrow(
            """SELECT id, kind, day, finished_at IS NOT NULL AS finished FROM briefing_runs
                WHERE kind = $1 AND day = $2""",
            kind,
            day,
        )
        return Run(row["id"], row["kind"], row["day"], row["finished"]) if row else None

    async def claim(self, run: Run, *, after: Done | None = None) -> Claim | None:
        """The next account of the run for this process to handle, with its row, tokens and stored language,
        or None when none is left to claim; `after` (the account just handled) is recorded in the same
        statement."""
        row = await self.pool.fetchrow(_RECORD_AND_CLAIM, *self._arguments(run, after))
        if row is None:
            return None
        if row["id"] is None:
            return Claim(row["claimed_id"], None, None)
        account, stored = Accounts.from_row(row)
        return Claim(row["claimed_id"], account, stored, row["slack_locale"])

    def _arguments(self, run: Run, done: Done | None) -> tuple[Any, ...]:
        fetch = done.fetch if done is not None else None
        return (
            run.id,
            self.worker,
            self.stale_after,
            done.account_id if done is not None else None,
            done.outcome if done is not None else None,
            done.detail if done is not None else None,
            done.needed_user if done is not None else False,
            fetch.result if fetch is not None else None,
            fetch.messages if fetch is not None else None,
        )

    async def release(self, run: Run) -> None:
        """Give back the claims this process will not complete (it is shutting down), for another to take."""
        await self.pool.execute(
            """UPDATE briefing_run_items SET state = 'pending', claimed_by = NULL, claimed_at = NULL
                WHERE run_id = $1 AND state = 'claimed' AND claimed_by = $2""",
            run.id,
            self.worker,
        )

    async def finish(self, run: Run) -> bool:
        """Mark the run finished if every item is done; True only for the one caller that finished it."""
        return bool(
            await self.pool.fetchval(
                """UPDATE briefing_runs SET finished_at = now()
                    WHERE id = $1 AND finished_at IS NULL
                      AND NOT EXISTS (SELECT 1 FROM briefing_run_items WHERE run_id = $1 AND state <> 'done')
                RETURNING true""",
                run.id,
            )
        )

    async def unfinished(self, run: Run) -> int:
        """How many of the run's accounts are not done yet."""
        return int(
            await self.pool.fetchval(
                "SELECT count(*) FROM briefing_run_items WHERE run_id = $1 AND state <> 'done'", run.id
            )
        )

    async def take_missed(self, kind: str, day: date, account_id: int) -> tuple[Run, str] | None:
        """The run of that day in which this account needed its user, and the outcome it had there; the
        item is marked as made up for, so that only one caller gets it."""
        row = await self.pool.fetchrow(
            """WITH missed AS (
                   SELECT item.run_id, item.account_id, item.outcome, run.finished_at IS NOT NULL AS finished
                     FROM briefing_run_items AS item JOIN briefing_runs AS run ON run.id = item.run_id
                    WHERE run.kind = $1 AND run.day = $2 AND item.account_id = $3
                      AND item.state = 'done' AND item.outcome = ANY($4::text[])
                      FOR UPDATE OF item)
               UPDATE briefing_run_items AS item
                  SET outcome = 'digest', detail = 'posted after the reconnection', finished_at = now()
                 FROM missed
                WHERE item.run_id = missed.run_id AND item.account_id = missed.account_id
            RETURNING item.run_id, missed.outcome, missed.finished""",
            kind,
            day,
            account_id,
            list(NEEDED_THE_USER),
        )
        if row is None:
            return None
        return Run(row["run_id"], kind, day, row["finished"]), row["outcome"]

    async def give_back(self, run: Run, account_id: int, *, outcome: str, detail: str) -> None:
        """Undo `take_missed` when the email part could not be posted after all."""
        await self.pool.execute(
            """UPDATE briefing_run_items SET outcome = $3, detail = $4
                WHERE run_id = $1 AND account_id = $2""",
            run.id,
            account_id,
            outcome,
            detail,
        )

    async def needed_user(self, run: Run) -> list[int]:
        """The accounts that only their user could fix when the run handled them."""
        rows = await self.pool.fetch(
            """SELECT account_id FROM briefing_run_items WHERE run_id = $1 AND needed_user
                ORDER BY account_id""",
            run.id,
        )
        return [row["account_id"] for row in rows]

    @asynccontextmanager
    async def summary_locked(self, run: Run) -> AsyncIterator[asyncpg.Connection]:
        """A transaction holding the run's summary lock: one edit of its admin summary at a time."""
        async with self.pool.acquire() as conn, conn.transaction():
            await lock_run_summary(conn, run.id)
            yield conn

    async def record_summary(self, run: Run, *, channel: str, ts: str) -> None:
        """Where the run's admin summary was posted."""
        await self.pool.execute(
            "UPDATE briefing_runs SET summary_channel = $2, summary_ts = $3 WHERE id = $1",
            run.id,
            channel,
            ts,
        )

    async def summaries_with(self, day: date, account_id: int) -> list[tuple[Run, str, str]]:
        """That day's runs whose admin summary lists this account, with where each summary is."""
        rows = await self.pool.fetch(
            """SELECT run.id, run.kind, run.day, run.finished_at IS NOT NULL AS finished,
                      run.summary_channel, run.summary_ts
                 FROM briefing_runs AS run JOIN briefing_run_items AS item ON item.run_id = run.id
                WHERE run.day = $1 AND item.account_id = $2 AND item.needed_user
                  AND run.summary_ts IS NOT NULL
                ORDER BY run.id""",
            day,
            account_id,
        )
        return [
            (Run(r["id"], r["kind"], r["day"], r["finished"]), r["summary_channel"], r["summary_ts"])
            for r in rows
        ]

    async def statuses(self, run: Run) -> dict[str, int]:
        """How many of the run's accounts are in each status now."""
        rows = await self.pool.fetch(
            """SELECT g.status, count(*) AS n
                 FROM briefing_run_items AS item JOIN gmail_tokens AS g ON g.id = item.account_id
                WHERE item.run_id = $1 GROUP BY g.status""",
            run.id,
        )
        return {row["status"]: row["n"] for row in rows}

    async def outcomes(self, run: Run) -> dict[str, int]:
        """How many accounts of the run ended in each outcome."""
        rows = await self.pool.fetch(
            """SELECT outcome, count(*) AS n FROM briefing_run_items
                WHERE run_id = $1 AND state = 'done' GROUP BY outcome""",
            run.id,
        )
        return {row["outcome"]: row["n"] for row in rows}
