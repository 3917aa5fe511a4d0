"""Briefing run records: each (kind, day) runs once, its accounts shared among replicas and resumed after a crash.

An account's item is claimed before it is processed and marked done after. A claim is a lease that its process
renews while it lives (Runs.renew, every lease / 3); a lease that lapsed belongs to a process that died or lost
the database, and any replica takes the account over. Its digest goes into the delivery queue (storage.outbox)
in the statement that marks it done, under its claim, so a takeover never queues it again; the queue records when
Slack took it.
"""

from __future__ import annotations

import enum
import itertools
import os
import secrets
import socket
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg

from storage.accounts import Accounts
from storage.locks import lock_run_summary
from storage.models import Account, StoredTokens
from storage.outbox import DIGEST, DIGEST_PRIORITY, NOTIFY_CHANNEL
from storage.rows import ACCOUNT_COLUMNS

DEFAULT_LEASE = timedelta(seconds=60)
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
    LATE = "late"  # healthy, but its digest could not go out by BRIEFING_DEADLINE: dropped, not posted late


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


class Post(enum.StrEnum):
    """Where an account's digest stood when its item was claimed."""

    NONE = "none"  # never queued nor marked: certainly not sent
    QUEUED = "queued"  # in the delivery queue (storage.outbox), which sends it once
    IN_FLIGHT = "in flight"  # marked, not recorded: Slack may have accepted it before its process stopped
    POSTED = "posted"  # recorded: Slack accepted it


@dataclass(frozen=True)
class Claim:
    """An account of a run, claimed by this process, read along with its row in the same statement."""

    account_id: int
    account: Account | None  # None: the row was deleted after the run began
    stored: StoredTokens | None
    slack_locale: str | None = None  # the user's language as stored by SlackLocales, if still fresh
    post: Post = Post.NONE
    taken_over: bool = False  # the lease of another process (or of a lost statement of this one) had lapsed


@dataclass(frozen=True)
class Fetch:
    """How an account's briefing fetch went: "ok" with the unread count, or why not."""

    result: str
    messages: int | None


@dataclass(frozen=True)
class Digest:
    """An account's digest for the delivery queue: its channel, the message as storage.outbox seals it, and the
    time after which it is dropped rather than posted late."""

    channel: str
    sealed: str
    not_after: datetime | None


@dataclass(frozen=True)
class Done:
    """What happened to one account of a run (`needed_user`: only its user could fix it), and its digest to
    queue, if any."""

    account_id: int
    outcome: str
    detail: str | None = None
    needed_user: bool = False
    fetch: Fetch | None = None
    digest: Digest | None = None


# One round trip for a batch of accounts: mark the accounts just handled ($6-$14, one array element each) done,
# with their fetch on their rows and their digests (if any) queued for the drainer, and claim up to $5 more with a
# lease of $3, read along with their rows, tokens and fresh stored languages. A digest is queued with its record,
# so a digest in the queue is never that of an account still open: a takeover neither queues it again nor loses
# it. The accounts whose user's language is still being learned (language_pending) come last, in account order
# like the others (the claim index serves that order). Claimable: a pending item, one whose lease lapsed, or one
# that this very claimer ($2) claimed without learning it (the answer was lost in an outage): claimed by $2 but
# neither among those it knows it holds ($4) nor among those it records. An account being marked done is never
# claimed (both updates would hit one row in one statement), and it is marked done (and its digest queued) only
# while this claimer still holds it: once its lease lapsed and another process took it over, the record is the
# other's to write. One row always comes back, with the accounts recorded: those it marks done and those this
# claimer had marked done already (a repeat of a statement whose answer was lost in an outage finds its own record,
# which it neither writes again nor queues twice; the finished rows are not visible to the statement's own reads);
# each claimed account comes in a row of its own (NULL claimed_id: none was claimed).
_RECORD_AND_CLAIM = f"""
WITH handled AS (
        SELECT * FROM unnest($6::int[], $7::text[], $8::text[], $9::bool[], $10::text[], $11::int[], $12::text[],
                             $13::text[], $14::timestamptz[])
                   AS d(account_id, outcome, detail, needed_user, fetch_result, fetch_messages, channel, sealed,
                        not_after)),
     fetched AS (
        UPDATE gmail_tokens AS g
           SET last_fetch_at = now(), last_fetch_result = d.fetch_result, last_fetch_messages = d.fetch_messages
          FROM handled AS d
         WHERE g.id = ANY($6::int[]) AND g.id = d.account_id AND d.fetch_result IS NOT NULL),
     finished AS (
        UPDATE briefing_run_items AS item
           SET state = 'done', needed_user = d.needed_user, finished_at = now(), language_pending = false,
               -- The delivery queue may have said already that a message failed or came too late.
               outcome = CASE WHEN d.outcome = 'digest' AND item.outcome IN ('failed', 'late') THEN item.outcome
                              ELSE d.outcome END,
               detail = CASE WHEN d.outcome = 'digest' AND item.outcome IN ('failed', 'late') THEN item.detail
                             ELSE d.detail END
          FROM handled AS d
         WHERE item.run_id = $1 AND item.account_id = ANY($6::int[]) AND item.account_id = d.account_id
           AND item.state = 'claimed' AND item.claimed_by = $2
     RETURNING item.run_id, item.account_id),
     queued AS (
        INSERT INTO slack_outbox (run_id, account_id, kind, channel, message, not_after, priority)
        SELECT f.run_id, f.account_id, '{DIGEST}', d.channel, d.sealed, d.not_after, {DIGEST_PRIORITY}
          FROM finished AS f JOIN handled AS d ON d.account_id = f.account_id
         WHERE d.sealed IS NOT NULL
            ON CONFLICT (run_id, account_id, kind) DO NOTHING
     RETURNING id),
     told AS (SELECT pg_notify('{NOTIFY_CHANNEL}', '') WHERE EXISTS (SELECT 1 FROM queued)),
     claimed AS (
        UPDATE briefing_run_items AS item
           SET state = 'claimed', claimed_by = $2, claimed_at = now(), lease_until = now() + $3::interval
          FROM (SELECT run_id, account_id, state, language_pending, post_started_at, posted_at
                  FROM briefing_run_items
                 WHERE run_id = $1 AND account_id <> ALL($6::int[])
                   AND (state = 'pending'
                        OR (state = 'claimed'
                            AND (lease_until < now() OR (claimed_by = $2 AND account_id <> ALL($4::int[])))))
                 ORDER BY language_pending, account_id
                 LIMIT $5
                 FOR UPDATE SKIP LOCKED) AS next
         WHERE item.run_id = next.run_id AND item.account_id = next.account_id
     RETURNING item.account_id, next.language_pending, next.state = 'claimed' AS taken_over,
               CASE WHEN EXISTS (SELECT 1 FROM slack_outbox AS o
                                  WHERE o.run_id = next.run_id AND o.account_id = next.account_id
                                    AND o.kind = '{DIGEST}') THEN 'queued'
                    WHEN next.posted_at IS NOT NULL THEN 'posted'
                    WHEN next.post_started_at IS NOT NULL THEN 'in flight' ELSE 'none' END AS post)
SELECT done.recorded, claimed.account_id AS claimed_id, claimed.language_pending, claimed.taken_over,
       claimed.post, g.token_data, l.locale AS slack_locale, {ACCOUNT_COLUMNS}
  FROM (SELECT ARRAY(SELECT account_id FROM finished
                      UNION ALL
                      SELECT account_id FROM briefing_run_items
                       WHERE run_id = $1 AND account_id = ANY($6::int[]) AND state = 'done' AND claimed_by = $2)
                  AS recorded,
               (SELECT count(*) FROM told) AS told) AS done
  LEFT JOIN claimed ON true
  LEFT JOIN gmail_tokens AS g ON g.id = claimed.account_id
  LEFT JOIN slack_locales AS l ON l.slack_user_id = g.metadata->>'slack_user_id' AND l.fresh_until > now()
"""


# Mark ($3) or unmark the open accounts of the Slack users $2 (NULL: of every one) as waiting for their language.
# It skips the items a claim holds locked at that moment rather than wait for them: a claim locks several items
# (those it records done, those it claims), so waiting for one while holding others could deadlock with it. What
# it skips is being claimed or recorded done just then (recording an item done unmarks it), and a mark left on a
# claimed item only puts it after the others should it be claimed again.
_MARK_LANGUAGES = """
UPDATE briefing_run_items AS item SET language_pending = $3
  FROM (SELECT i.run_id, i.account_id FROM briefing_run_items AS i LEFT JOIN gmail_tokens AS g ON g.id = i.account_id
         WHERE i.run_id = $1 AND i.state <> 'done' AND i.language_pending <> $3
           AND ($2::text[] IS NULL OR g.metadata->>'slack_user_id' = ANY($2::text[]))
           FOR UPDATE OF i SKIP LOCKED) AS open
 WHERE item.run_id = open.run_id AND item.account_id = open.account_id
"""


class Runs:
    """Repository over briefing_runs and briefing_run_items."""

    def __init__(
        self,
        accounts: Accounts,
        *,
        lease: timedelta = DEFAULT_LEASE,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> None:
        self.pool = accounts.pool
        self.lease = lease
        self.poll_interval = poll_interval
        # A restarted container keeps its host name and often its pid: the suffix tells incarnations apart.
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        # Each worker of the process claims as worker/N: a claim of this process is claimed_by LIKE prefix%.
        self._prefix = self.worker + "/"
        self._workers = itertools.count()

    @property
    def claim_prefix(self) -> str:
        """What this process's claims start with (its workers claim as prefix + number)."""
        return self._prefix

    def new_worker(self) -> int:
        """A number for one worker of this process, never given to another (two runs at once included)."""
        return next(self._workers)

    async def ping(self) -> None:
        """One round trip to the database: raises while it is out of reach."""
        await self.pool.fetchval("SELECT 1")

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

    async def claim(self, run: Run, *, after: Done | None = None, worker: int = 0) -> Claim | None:
        """The next account of the run for this process's `worker` to handle, with its row, tokens and stored
        language, or None when none is left to claim; `after` (the account it just handled) is recorded in
        the same statement."""
        return (await self.record_and_claim(run, after=after, worker=worker))[1]

    async def record_and_claim(
        self, run: Run, *, after: Done | None, worker: int
    ) -> tuple[bool, Claim | None]:
        """claim(), and whether `after` is recorded (and its digest queued) by this worker, now or by an earlier
        statement whose answer was lost: False when this worker no longer held it, since another process took it
        over (or when there was nothing to record)."""
        recorded, claims = await self.record_and_claim_many(
            run, [] if after is None else [after], count=1, worker=worker
        )
        return after is not None and after.account_id in recorded, claims[0] if claims else None

    async def record_and_claim_many(
        self, run: Run, handled: Sequence[Done], *, count: int, worker: int, held: Collection[int] = ()
    ) -> tuple[set[int], list[Claim]]:
        """Record the accounts `handled` done (and queue their digests) and claim up to `count` more for this
        process's `worker`, in one statement: the accounts recorded by `worker` (now or by an earlier statement
        whose answer was lost; not those another process took over meanwhile), and the claims in claim order.
        `held`: the accounts `worker` holds and knows it holds; any other that it claimed in a statement whose
        answer was lost is claimed again."""
        rows = await self.pool.fetch(_RECORD_AND_CLAIM, *self._arguments(run, handled, count, worker, held))
        recorded = set(rows[0]["recorded"])
        claims: list[tuple[bool, int, Claim]] = []
        for row in rows:
            if row["claimed_id"] is None:
                continue
            post, taken_over = Post(row["post"]), row["taken_over"]
            if row["id"] is None:
                claim = Claim(row["claimed_id"], None, None, post=post, taken_over=taken_over)
            else:
                account, stored = Accounts.from_row(row)
                claim = Claim(row["claimed_id"], account, stored, row["slack_locale"], post, taken_over)
            claims.append((row["language_pending"], row["claimed_id"], claim))
        claims.sort(key=lambda found: found[:2])
        return recorded, [claim for _, _, claim in claims]

    async def languages_pending(self, run: Run, slack_user_ids: Collection[str]) -> None:
        """Mark the accounts of these Slack users as waiting for their language: they are claimed last."""
        await self.pool.execute(_MARK_LANGUAGES, run.id, list(slack_user_ids), True)

    async def languages_known(self, run: Run, slack_user_ids: Collection[str] | None) -> None:
        """Unmark the accounts of these Slack users (None: of every one) as waiting for their language."""
        await self.pool.execute(
            _MARK_LANGUAGES, run.id, None if slack_user_ids is None else list(slack_user_ids), False
        )

    async def renew(self, run: Run, account_ids: Collection[int]) -> int:
        """Extend this process's leases on the accounts its workers hold; how many it still held."""
        if not account_ids:
            return 0
        renewed = await self.pool.fetchval(
            # An item locked just now is being recorded done or claimed again by this process: left alone
            # rather than waited for, since that statement locks several items in an order of its own.
            """WITH renewed AS (
                   UPDATE briefing_run_items AS item SET lease_until = now() + $3::interval
                     FROM (SELECT run_id, account_id FROM briefing_run_items
                            WHERE run_id = $1 AND state = 'claimed' AND starts_with(claimed_by, $2)
                              AND account_id = ANY($4::int[])
                              FOR UPDATE SKIP LOCKED) AS mine
                    WHERE item.run_id = mine.run_id AND item.account_id = mine.account_id
                RETURNING 1)
               SELECT count(*) FROM renewed""",
            run.id,
            self._prefix,
            self.lease,
            list(account_ids),
        )
        return int(renewed)

    async def taken_over(self, run: Run, account_ids: Collection[int]) -> int:
        """How many of these accounts another process holds now (an account done meanwhile is not counted)."""
        return int(
            await self.pool.fetchval(
                """SELECT count(*) FROM briefing_run_items
                    WHERE run_id = $1 AND state = 'claimed' AND NOT starts_with(claimed_by, $2)
                      AND account_id = ANY($3::int[])""",
                run.id,
                self._prefix,
                list(account_ids),
            )
        )

    def _arguments(
        self, run: Run, handled: Sequence[Done], count: int, worker: int, held: Collection[int]
    ) -> tuple[Any, ...]:
        fetches = [done.fetch for done in handled]
        digests = [done.digest for done in handled]
        return (
            run.id,
            f"{self.worker}/{worker}",
            self.lease,
            list(held),
            count,
            [done.account_id for done in handled],
            [done.outcome for done in handled],
            [done.detail for done in handled],
            [done.needed_user for done in handled],
            [fetch.result if fetch is not None else None for fetch in fetches],
            [fetch.messages if fetch is not None else None for fetch in fetches],
            [digest.channel if digest is not None else None for digest in digests],
            [digest.sealed if digest is not None else None for digest in digests],
            [digest.not_after if digest is not None else None for digest in digests],
        )

    async def release(self, run: Run) -> None:
        """Give back the claims this process will not complete (it is shutting down), for another to take."""
        await self.pool.execute(
            """UPDATE briefing_run_items
                  SET state = 'pending', claimed_by = NULL, claimed_at = NULL, lease_until = NULL
                WHERE run_id = $1 AND state = 'claimed' AND starts_with(claimed_by, $2)""",
            run.id,
            self._prefix,
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
