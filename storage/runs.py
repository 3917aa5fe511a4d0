"""Briefing run records: each (kind, day) runs once, its accounts shared among replicas and resumed after a crash.

An account's item is claimed before it is processed and marked done after; a claim older than
`stale_after` belongs to a process that died, and is claimed again.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import date, timedelta

import asyncpg

DEFAULT_STALE_AFTER = timedelta(minutes=10)


@dataclass(frozen=True)
class Run:
    """One scheduled run."""

    id: int
    kind: str
    day: date
    finished: bool


class Runs:
    """Repository over briefing_runs and briefing_run_items."""

    def __init__(self, pool: asyncpg.Pool, *, stale_after: timedelta = DEFAULT_STALE_AFTER) -> None:
        self.pool = pool
        self.stale_after = stale_after
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

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
        return Run(row["id"], row["kind"], row["day"], row["finished"])

    async def claim(self, run: Run) -> int | None:
        """The next account of the run for this process to handle, or None when none is left to claim."""
        return await self.pool.fetchval(
            """UPDATE briefing_run_items AS item
                  SET state = 'claimed', claimed_by = $2, claimed_at = now()
                 FROM (SELECT run_id, account_id FROM briefing_run_items
                        WHERE run_id = $1
                          AND (state = 'pending' OR (state = 'claimed' AND claimed_at < now() - $3::interval))
                        ORDER BY account_id
                        LIMIT 1
                        FOR UPDATE SKIP LOCKED) AS next
                WHERE item.run_id = next.run_id AND item.account_id = next.account_id
            RETURNING item.account_id""",
            run.id,
            self.worker,
            self.stale_after,
        )

    async def done(self, run: Run, account_id: int, *, outcome: str, detail: str | None) -> None:
        """Record what happened to one account of the run."""
        await self.pool.execute(
            """UPDATE briefing_run_items SET state = 'done', outcome = $3, detail = $4, finished_at = now()
                WHERE run_id = $1 AND account_id = $2""",
            run.id,
            account_id,
            outcome,
            detail,
        )

    async def finish(self, run: Run) -> bool:
        """Mark the run finished if every item is done; True when it is."""
        return bool(
            await self.pool.fetchval(
                """UPDATE briefing_runs SET finished_at = coalesce(finished_at, now())
                    WHERE id = $1
                      AND NOT EXISTS (SELECT 1 FROM briefing_run_items WHERE run_id = $1 AND state <> 'done')
                RETURNING true""",
                run.id,
            )
        )

    async def outcomes(self, run: Run) -> dict[str, int]:
        """How many accounts of the run ended in each outcome."""
        rows = await self.pool.fetch(
            """SELECT outcome, count(*) AS n FROM briefing_run_items
                WHERE run_id = $1 AND state = 'done' GROUP BY outcome""",
            run.id,
        )
        return {row["outcome"]: row["n"] for row in rows}
