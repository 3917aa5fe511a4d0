"""The delivery queue of the runs' Slack messages (slack_outbox): written by the run, sent by one drainer.

A run queues an account's messages only while it holds its claim on the account (so a process whose lease lapsed
queues nothing), once per run, account and kind: the Reconnect Gmail DM here, in the transaction that opens its
prompt, and the digest in the statement that records the account done (storage.runs). Its admin summary is
queued once, by the process that takes it. The drainer takes the queue in order on its lock connection (`take`,
so it takes nothing once it lost the lock), and records what Slack accepted with its next take, in the same round
trip (or through the pool, when there is none). A message is `sending` from just before it goes to Slack until
Slack's answer is recorded: the only ones a crash can double. The message is sealed with TOKEN_ENCRYPTION_KEYS
when it is set, since a digest quotes the user's mail.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson

from storage import audit
from storage.crypto import TOKEN_PREFIX, DecryptionError, TokenCipher
from storage.pool import json_text, transaction

NOTIFY_CHANNEL = "slack_outbox"
DIGEST = "digest"
PROMPT = "prompt"
SUMMARY = "summary"
# Lower goes first: a Reconnect Gmail DM before the digests queued with it. A run's admin summary is queued once
# its other messages are delivered (it says how that went), and goes at once.
PROMPT_PRIORITY = 0
SUMMARY_PRIORITY = 0
DIGEST_PRIORITY = 1


class Queueing(enum.Enum):
    """What queueing a run's message did."""

    QUEUED = "queued"
    ALREADY = "already"  # queued before (by a process that stopped before it could record the account)
    NOT_HELD = "not held"  # the claim was lost: another process took the account over


@dataclass(frozen=True)
class Message:
    """A Slack message as chat.postMessage takes it."""

    channel: str
    text: str
    blocks: list[dict[str, Any]]


@dataclass(frozen=True)
class Outgoing:
    """A queued message, taken for sending."""

    id: int
    run_id: int | None
    account_id: int | None
    kind: str
    message: Message
    not_after: datetime | None
    queued_at: datetime
    attempts: int
    resent: bool
    prompt_id: int | None = None


@dataclass(frozen=True)
class Depth:
    """The queue right now: messages not finished, and how long the oldest ready one has waited."""

    open: int
    oldest_seconds: float


@dataclass(frozen=True)
class RunDelivery:
    """How a run's messages went: counts by state, and when the first was queued and the last sent."""

    sent: int
    dropped: int
    failed: int
    open: int
    first_queued_at: datetime | None
    last_sent_at: datetime | None

    @property
    def seconds(self) -> float | None:
        """From the first message queued to the last one sent."""
        if self.first_queued_at is None or self.last_sent_at is None:
            return None
        return max(0.0, (self.last_sent_at - self.first_queued_at).total_seconds())


_COLUMNS = "id, run_id, account_id, kind, channel, message, not_after, queued_at, attempts, resent, prompt_id"

# A run's Reconnect Gmail DM, queued only while the run's item is claimed by this process ($3: its claim prefix),
# once per run and account. (A digest is queued with its account's record: storage.runs.)
_QUEUE_RUN_PROMPT = f"""
WITH held AS (
        SELECT 1 FROM briefing_run_items
         WHERE run_id = $1 AND account_id = $2 AND state = 'claimed' AND starts_with(claimed_by, $3)),
     queued AS (
        INSERT INTO slack_outbox (run_id, account_id, kind, channel, message, priority, prompt_id)
        SELECT $1, $2, '{PROMPT}', $4, $5, {PROMPT_PRIORITY}, $6 WHERE EXISTS (SELECT 1 FROM held)
            ON CONFLICT (run_id, account_id, kind) DO NOTHING
     RETURNING id),
     told AS (SELECT pg_notify('{NOTIFY_CHANNEL}', '') FROM queued)
SELECT EXISTS (SELECT 1 FROM held) AS held, (SELECT count(*) FROM queued) AS queued, (SELECT count(*) FROM told)
"""

# A run's admin summary, queued by the one process that takes it: nobody took it yet, or ($4: left over) a
# process of a version that posted it directly took it long ago and never posted it.
_QUEUE_SUMMARY = """
WITH taken AS (
        UPDATE briefing_runs SET summary_taken_at = now()
         WHERE id = $1 AND summary_ts IS NULL
           AND NOT EXISTS (SELECT 1 FROM slack_outbox WHERE run_id = $1 AND kind = 'summary')
           AND (summary_taken_at IS NULL OR ($4 AND summary_taken_at < now() - interval '10 minutes'))
     RETURNING id),
     queued AS (
        INSERT INTO slack_outbox (run_id, account_id, kind, channel, message, priority)
        SELECT id, NULL, 'summary', $2, $3, $5 FROM taken
            ON CONFLICT (run_id) WHERE kind = 'summary' DO NOTHING
     RETURNING id),
     told AS (SELECT pg_notify('slack_outbox', '') FROM queued)
SELECT (SELECT count(*) FROM queued) AS queued, (SELECT count(*) FROM told)
"""

# The item of a run whose digest Slack refused or that came too late: its outcome says so, whether the run has
# recorded the account yet or not (the run keeps a 'failed' or 'late' it finds: storage.runs).
_ITEM_OUTCOME = """
UPDATE briefing_run_items SET outcome = $3, detail = $4
 WHERE run_id = $1 AND account_id = $2
"""


def _sent(first: int) -> str:
    """The statements that record the messages Slack accepted, with their parameters (arrays, one element per
    message) numbered from `first`: their ids, ts, kinds, runs and accounts, and the channels as Slack names them.
    A digest is recorded on its run item too, a summary on its run (where it was posted, to be edited as users
    reconnect). Empty arrays: nothing is recorded."""
    ids, ts, kinds, runs, accounts, channels = (f"${number}" for number in range(first, first + 6))
    return f"""accepted AS (
        SELECT * FROM unnest({ids}::bigint[], {ts}::text[], {kinds}::text[], {runs}::bigint[], {accounts}::int[],
                             {channels}::text[]) AS a (id, ts, kind, run_id, account_id, channel)),
     sent AS (
        UPDATE slack_outbox AS o SET state = 'sent', finished_at = now(), ts = a.ts, error = NULL
          FROM accepted AS a WHERE o.id = a.id),
     item AS (
        UPDATE briefing_run_items AS i SET posted_at = now(), posted_ts = a.ts
          FROM accepted AS a
         WHERE a.kind = '{DIGEST}' AND i.run_id = a.run_id AND i.account_id = a.account_id),
     summary AS (
        UPDATE briefing_runs AS r SET summary_channel = a.channel, summary_ts = a.ts
          FROM accepted AS a WHERE a.kind = '{SUMMARY}' AND r.id = a.run_id AND a.ts IS NOT NULL)"""


_SENT = f"WITH {_sent(1)}\nSELECT 1"

# Up to $2 ready messages marked `sending`, no two to one channel (nor to a channel in $1, which a message is on
# its way to), and the messages the drainer sent before them recorded as sent ($3-$8), in one round trip. The
# candidates are a few more than asked for, so that a channel with several ready messages does not leave a
# sender without one.
_RECORD_AND_TAKE = f"""
WITH {_sent(3)},
     candidates AS (
        SELECT id, channel, priority FROM slack_outbox
         WHERE state = 'queued' AND next_attempt_at <= now() AND NOT channel = ANY($1::text[])
         ORDER BY priority, id LIMIT $2::int * 4 FOR UPDATE SKIP LOCKED),
     chosen AS (
        SELECT id FROM (SELECT id, priority, row_number() OVER (PARTITION BY channel ORDER BY priority, id) AS nth
                          FROM candidates) AS c
         WHERE nth = 1 ORDER BY priority, id LIMIT $2::int)
UPDATE slack_outbox SET state = 'sending', sending_at = now(), attempts = attempts + 1
 WHERE id IN (SELECT id FROM chosen)
RETURNING {_COLUMNS}, priority
"""


@dataclass(frozen=True)
class Accepted:
    """A message Slack accepted, to be recorded as sent: its ts, and its channel as Slack names it."""

    message: Outgoing
    ts: str | None
    channel: str | None = None


def _recorded(accepted: Sequence[Accepted]) -> tuple[list[Any], ...]:
    """The parameters of _sent: what is recorded of each message, as one array per column."""
    columns: tuple[list[Any], ...] = ([], [], [], [], [], [])
    for one in accepted:
        message = one.message
        values = (
            message.id,
            one.ts,
            message.kind,
            message.run_id,
            message.account_id,
            one.channel or message.message.channel,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    return columns


class SlackOutbox:
    """Repository over slack_outbox."""

    def __init__(self, pool: asyncpg.Pool, cipher: TokenCipher | None) -> None:
        self.pool = pool
        self.cipher = cipher

    async def queue_prompt(
        self,
        conn: asyncpg.Connection,
        *,
        prompt_id: int,
        message: Message,
        run_id: int | None = None,
        account_id: int | None = None,
        claim_prefix: str | None = None,
    ) -> Queueing:
        """Queue a Reconnect Gmail DM, in the transaction that opened its prompt (`conn`): for a run's account
        while this process holds it, or (no run) on its own."""
        if run_id is not None and claim_prefix is not None:
            row = await conn.fetchrow(
                _QUEUE_RUN_PROMPT,
                run_id,
                account_id,
                claim_prefix,
                message.channel,
                self.seal(message, kind=PROMPT, run_id=run_id, account_id=account_id),
                prompt_id,
            )
            if not row["held"]:
                return Queueing.NOT_HELD
            return Queueing.QUEUED if row["queued"] else Queueing.ALREADY
        await conn.execute(
            """INSERT INTO slack_outbox (run_id, account_id, kind, channel, message, priority, prompt_id)
               VALUES (NULL, $1, 'prompt', $2, $3, $4, $5)""",
            account_id,
            message.channel,
            self.seal(message, kind=PROMPT, run_id=None, account_id=account_id),
            PROMPT_PRIORITY,
            prompt_id,
        )
        await conn.execute("SELECT pg_notify('slack_outbox', '')")
        return Queueing.QUEUED

    async def queue_summary(self, *, run_id: int, message: Message, left_over: bool = False) -> bool:
        """Queue a run's admin summary if this process is the one to post it (see _QUEUE_SUMMARY); whether it
        did."""
        row = await self.pool.fetchrow(
            _QUEUE_SUMMARY,
            run_id,
            message.channel,
            self.seal(message, kind=SUMMARY, run_id=run_id, account_id=None),
            left_over,
            SUMMARY_PRIORITY,
        )
        return bool(row["queued"])

    async def take(
        self,
        conn: asyncpg.Connection,
        *,
        count: int = 1,
        busy: Collection[str] = (),
        accepted: Sequence[Accepted] = (),
    ) -> list[Outgoing]:
        """Mark up to `count` ready messages `sending` and return them in queue order (none: nothing is ready).
        On the drainer's lock connection: a drainer that lost its lock (and its connection) takes nothing more.
        No two go to one channel, nor to a channel in `busy` (a message to it is on its way), so each channel
        gets its messages in order. `accepted`, what the drainer sent last, is recorded as sent in the same round
        trip. A message that cannot be decrypted (its key left TOKEN_ENCRYPTION_KEYS) or read is failed."""
        rows = await conn.fetch(_RECORD_AND_TAKE, list(busy), count, *_recorded(accepted))
        taken = []
        for row in sorted(rows, key=lambda row: (row["priority"], row["id"])):
            try:
                taken.append(self._outgoing(row))
                continue
            except DecryptionError as error:
                unreadable = f"the message could not be decrypted: {error}"
            except (ValueError, KeyError, TypeError) as error:  # not the JSON this module writes
                unreadable = f"the message could not be read: {type(error).__name__}"
            await conn.execute(
                "UPDATE slack_outbox SET state = 'failed', finished_at = now(), error = $2 WHERE id = $1",
                row["id"],
                unreadable,
            )
        return taken

    async def sent(self, accepted: Accepted, *, conn: asyncpg.Connection | None = None) -> None:
        """Record a message Slack accepted (see _sent); in the caller's transaction (`conn`), if it has one."""
        await (conn or self.pool).execute(_SENT, *_recorded([accepted]))

    async def retry_later(self, message: Outgoing, *, after: timedelta, error: str) -> None:
        """Slack could not take the message now: queue it again, to go no sooner than `after`."""
        await self.pool.execute(
            """UPDATE slack_outbox SET state = 'queued', next_attempt_at = now() + $2::interval, error = $3
                WHERE id = $1 AND state = 'sending'""",
            message.id,
            after,
            error,
        )

    async def retry_refused_now(self, conn: asyncpg.Connection, *, errors: Collection[str]) -> int:
        """Make the messages held back because Slack refused the bot's token (their `error` one of `errors`)
        ready now: a drainer that just took the queue may have the fixed token. How many."""
        return int(
            await conn.fetchval(
                """WITH ready AS (
                       UPDATE slack_outbox SET next_attempt_at = now()
                        WHERE state = 'queued' AND next_attempt_at > now() AND error = ANY($1::text[])
                    RETURNING 1)
                   SELECT count(*) FROM ready""",
                list(errors),
            )
        )

    async def finish(
        self,
        message: Outgoing,
        *,
        state: str,
        error: str,
        outcome: str | None,
        detail: str,
        audit_action: str | None = None,
        actor: str = "briefing",
        conn: asyncpg.Connection | None = None,
    ) -> None:
        """The message will not be sent (`state` failed or dropped); its run item's `outcome` (if any) says
        why, and `audit_action` (if any) is audited with it."""
        async with transaction(self.pool, conn) as conn:
            await conn.execute(
                "UPDATE slack_outbox SET state = $2, finished_at = now(), error = $3 WHERE id = $1",
                message.id,
                state,
                error,
            )
            if outcome is not None and message.run_id is not None and message.account_id is not None:
                await conn.execute(_ITEM_OUTCOME, message.run_id, message.account_id, outcome, detail)
            if audit_action is not None:
                await audit.append(
                    conn,
                    actor=actor,
                    action=audit_action,
                    account_id=message.account_id,
                    slack_user_id=message.message.channel,
                    details={
                        "not_after": message.not_after.isoformat() if message.not_after else None,
                        "error": error,
                    },
                )

    async def requeue_abandoned(
        self, conn: asyncpg.Connection, *, older_than: timedelta, keep: Collection[int]
    ) -> int:
        """Queue again the messages left `sending` by a drainer that stopped (longer than `older_than`, so a
        drainer that only lost its connection had time to record them), except this drainer's own (`keep`).
        They may reach Slack twice: each is flagged `resent`. How many."""
        return int(
            await conn.fetchval(
                """WITH again AS (
                       UPDATE slack_outbox SET state = 'queued', resent = true
                        WHERE state = 'sending' AND sending_at < now() - $1::interval AND NOT id = ANY($2::bigint[])
                    RETURNING 1)
                   SELECT count(*) FROM again""",
                older_than,
                list(keep),
            )
        )

    async def open_for_run(self, run_id: int) -> int:
        """How many of a run's messages are not finished (queued or sending)."""
        return int(
            await self.pool.fetchval(
                "SELECT count(*) FROM slack_outbox WHERE run_id = $1 AND state IN ('queued', 'sending')",
                run_id,
            )
        )

    async def run_delivery(self, run_id: int) -> RunDelivery:
        """How a run's messages to its users went (its admin summary, which says so, is not counted)."""
        row = await self.pool.fetchrow(
            """SELECT count(*) FILTER (WHERE state = 'sent') AS sent,
                      count(*) FILTER (WHERE state = 'dropped') AS dropped,
                      count(*) FILTER (WHERE state = 'failed') AS failed,
                      count(*) FILTER (WHERE state IN ('queued', 'sending')) AS open,
                      min(queued_at) AS first_queued_at,
                      max(finished_at) FILTER (WHERE state = 'sent') AS last_sent_at
                 FROM slack_outbox WHERE run_id = $1 AND kind <> 'summary'""",
            run_id,
        )
        return RunDelivery(**dict(row))

    async def depth(self) -> Depth:
        """The messages not finished, and the wait of the oldest one that is ready to go."""
        row = await self.pool.fetchrow(
            """SELECT count(*) AS open,
                      coalesce(extract(epoch FROM now() - min(queued_at)
                                       FILTER (WHERE state = 'queued' AND next_attempt_at <= now())), 0)
                        AS oldest
                 FROM slack_outbox WHERE state IN ('queued', 'sending')"""
        )
        return Depth(int(row["open"]), float(row["oldest"]))

    async def prune(self, *, older_than: timedelta) -> int:
        """Delete the finished messages older than `older_than` (they quote mail: kept no longer than needed)."""
        return int(
            await self.pool.fetchval(
                """WITH gone AS (DELETE FROM slack_outbox
                                  WHERE state IN ('sent', 'dropped', 'failed') AND finished_at < now() - $1::interval
                                 RETURNING 1)
                   SELECT count(*) FROM gone""",
                older_than,
            )
        )

    def seal(self, message: Message, *, kind: str, run_id: int | None, account_id: int | None) -> str:
        """The message as the queue stores it: JSON, encrypted with TOKEN_ENCRYPTION_KEYS when it is set, bound
        to its kind, run and account."""
        text = json_text({"text": message.text, "blocks": message.blocks})
        if self.cipher is None:
            return text
        return self.cipher.encrypt(text, context=_context(kind, run_id, account_id))

    def _outgoing(self, row: asyncpg.Record) -> Outgoing:
        stored = row["message"]
        # A sealed message is a token, and a plain one JSON (written before encryption was turned on); the prefix
        # tells them apart without a walk of the whole token, which decrypt checks anyway.
        if self.cipher is not None and stored.startswith(TOKEN_PREFIX):
            stored = self.cipher.decrypt(
                stored, context=_context(row["kind"], row["run_id"], row["account_id"])
            )
        parts = orjson.loads(stored)
        return Outgoing(
            id=row["id"],
            run_id=row["run_id"],
            account_id=row["account_id"],
            kind=row["kind"],
            message=Message(row["channel"], parts["text"], parts["blocks"]),
            not_after=row["not_after"],
            queued_at=row["queued_at"],
            attempts=row["attempts"],
            resent=row["resent"],
            prompt_id=row["prompt_id"],
        )


def _context(kind: str, run_id: int | None, account_id: int | None) -> str:
    """What a sealed message is bound to: one moved to another row does not open there."""
    return f"slack_outbox:{kind}:{run_id}:{account_id}"
