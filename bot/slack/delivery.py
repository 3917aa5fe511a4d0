"""The drainer of the Slack delivery queue (storage.outbox): one process at a time sends the runs' messages.

Every process runs a drainer, but only the holder of the delivery lock (a session advisory lock on a connection
it keeps) sends: so the whole deployment posts at one pace, the pace of that process's Pacer, and a 429 pauses
all of it. When the holder dies its connection closes, the lock is free, and another replica's drainer takes the
queue over within LOCK_RETRY_SECONDS. A few messages go at once (IN_FLIGHT, the pacer's burst for posts): the
senders whose answers come together record them and take their next messages in one statement. A message is
`sending` from when it is taken until Slack's answer is recorded, so a crash can double at most IN_FLIGHT
messages, and only those Slack had already taken. A message is never given up for a 429; it is dropped when it
can no longer arrive in time (`not_after`: a digest after BRIEFING_DEADLINE), failed when Slack refuses it for
good, and tried again later when Slack (or the way to it) fails for a moment.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

import aiohttp
import asyncpg
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.database_wait import DatabaseWait
from bot.errors import GmailReconnectError
from bot.event_loop import woken
from bot.metrics import Metrics
from bot.slack.client import SLACK_TIMEOUT_SECONDS
from bot.slack.pacer import POST_BURST, POST_MESSAGE, Pacer
from bot.slack.poster import Poster
from bot.slack.prompter import Prompter
from storage.errors import DATABASE_OUTAGE
from storage.locks import try_lock_delivery, unlock_delivery
from storage.outbox import DIGEST, NOTIFY_CHANNEL, PROMPT, SUMMARY, Accepted, Outgoing, SlackOutbox
from storage.prompts import Prompts, PromptState

log = logging.getLogger(__name__)

# Messages sent at once: enough for Slack's workspace cap at a few hundred milliseconds a call, and the most a
# crash can double. The pacer lets them go together (its burst), so they are answered and recorded together.
IN_FLIGHT = POST_BURST
# How long a sender waits for the others whose messages went with its own before it takes the next ones for all
# that asked: well under the pacer's step, so that none misses its turn. A sender whose message still waits for its
# turn is not waited for: it asks only after a later step.
GATHER_SECONDS = 0.05
# How long a drainer with nothing to send waits before it looks again (a queued message wakes it sooner).
POLL_SECONDS = 1.0
# How often wait_for looks at a run's messages while more than FEW_LEFT (a few seconds' worth at Slack's pace) are
# still to go: after about a quarter of the time the rest would take at the pace they have gone so far, between
# MANY_LEFT_POLL_SECONDS and LONGEST_POLL_SECONDS. With fewer left it looks at its `poll`, so it still sees the
# last one go at once.
FEW_LEFT = 20
MANY_LEFT_POLL_SECONDS = 1.0
LONGEST_POLL_SECONDS = 5.0
# How often a process without the lock tries to take it: the hand-over after the holder died.
LOCK_RETRY_SECONDS = 1.0
# A message left `sending` this long by a drainer that is gone is queued again: longer than a Slack call may
# take, so a drainer that only lost its database connection has recorded what Slack answered it.
ABANDONED_AFTER = timedelta(seconds=SLACK_TIMEOUT_SECONDS + 15)
RECOVER_EVERY_SECONDS = 5.0
# Finished messages quote mail: deleted once they can no longer be asked about.
KEEP_FINISHED = timedelta(days=2)
PRUNE_EVERY_SECONDS = 3600.0
# A message Slack could not take for a moment waits 2, 4, 8 … seconds (at most RETRY_MAX), and is failed after
# MAX_ATTEMPTS.
RETRY_MAX = timedelta(seconds=60)
MAX_ATTEMPTS = 10
# The bot's token was refused: no message can go until someone fixes it, so the queue waits (and is dropped at
# its deadline) rather than being failed message by message.
TOKEN_REFUSED_WAIT = timedelta(seconds=60)
# On shutdown, how long the messages already on their way get to be answered and recorded.
STOP_GRACE_SECONDS = 10.0

# Slack's errors that say it failed for a moment, not that the message is wrong.
MOMENTARY_ERRORS = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout", "ratelimited"}
)
# Slack's errors that say the bot's token (or its app) cannot post at all.
TOKEN_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "token_revoked",
        "token_expired",
        "account_inactive",
        "missing_scope",
        "not_allowed_token_type",
        "team_access_not_granted",
        "ekm_access_denied",
    }
)
ACTOR = "briefing"


class SlackRefusedToken(GmailReconnectError):
    """Slack refuses the bot's token, so nothing can be delivered until someone fixes it."""

    def __init__(self, code: str, waiting: int) -> None:
        super().__init__(
            f"Slack refused the bot's token ({code}): {waiting} messages of the run stay queued. Fix "
            "SLACK_BOT_TOKEN (or add the app's missing scopes and reinstall it); then a running `serve`, or "
            "run-briefing again, sends them (a digest no later than BRIEFING_DEADLINE)."
        )
        self.code = code
        self.waiting = waiting


class SlackDelivery:
    """This process's drainer of the delivery queue, sending while it holds the delivery lock."""

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        outbox: SlackOutbox,
        client: AsyncWebClient,
        pacer: Pacer,
        metrics: Metrics,
        timezone: tzinfo,
        prompts: Prompts,
        prompter: Callable[[], Prompter],
    ) -> None:
        self.pool = pool
        self._connect = connect  # the drainer's own connection, on which it holds the lock
        self.prompts = prompts
        self.prompter = prompter  # made when a Reconnect Gmail DM first comes (it needs SECRET_KEY)
        self.outbox = outbox
        self.client = client
        self.pacer = pacer
        self.poster = Poster(client, pacer)  # the queue's chat.postMessage, on the client's session
        self.metrics = metrics
        self._sent = metrics.queue_finished.labels("sent")  # looked up once: every message counts in it
        self.timezone = timezone
        self.holding = False  # whether this process holds the delivery lock now
        self.abandoned_after = ABANDONED_AFTER
        self.token_refused_wait = TOKEN_REFUSED_WAIT
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._conn_lock = asyncio.Lock()
        self._asks: list[_Ask] = []  # the senders waiting for their next message
        self._all_asked = asyncio.Event()  # every sender whose message went to Slack asks
        self._senders = 0  # running now (counted by _drain as it starts them)
        self._idle = 0  # of which waiting for a message to be queued
        self._waiting = 0  # of which holding a message until its pacer turn
        self._sending: set[int] = set()
        self._busy: set[str] = set()  # the channels a message is on its way to
        self._next_recovery = 0.0
        self._next_prune = 0.0
        # What Slack answered this drainer's last send when it refused the bot's token, and when (None: the last
        # send went through).
        self.refused: str | None = None
        self._refused_at = 0.0
        self._records = DatabaseWait(self._ping, where="the database")

    @property
    def started(self) -> bool:
        """Whether the drainer runs in this process."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Begin draining in the background (whenever this process gets the lock)."""
        if not self.started:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="slack-delivery")

    async def stop(self) -> None:
        """Stop draining: the messages on their way get STOP_GRACE_SECONDS to be answered and recorded."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        try:
            async with asyncio.timeout(STOP_GRACE_SECONDS):
                await asyncio.shield(task)
        except TimeoutError:
            log.warning(
                "The Slack delivery queue did not stop within %s s: stopped mid-send", STOP_GRACE_SECONDS
            )
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    @asynccontextmanager
    async def running(self) -> AsyncIterator[SlackDelivery]:
        """The drainer running during the block: started here unless the process runs it already (`serve`)."""
        if self.started:
            yield self
            return
        self.start()
        try:
            yield self
        finally:
            await self.stop()

    def wake(self) -> None:
        """Look at the queue now."""
        self._wake.set()

    async def wait_for(self, run_id: int, *, since: float | None = None, poll: float = 0.25) -> None:
        """Return once every message of the run is delivered, dropped or failed, whichever process sent it.
        Raises SlackRefusedToken once this process's drainer was refused the bot's token since `since` (the
        event loop's time; by default the wait's start): the messages stay queued for the fix, and the run says
        so and ends rather than wait for ever (and hold up tomorrow's)."""
        loop = asyncio.get_running_loop()
        began = loop.time() if since is None else since
        left = first = await self.outbox.open_for_run(run_id)
        first_at = loop.time()
        while left:
            if self.refused is not None and self._refused_at >= began:
                raise SlackRefusedToken(self.refused, left)
            # Many left: they take a while at Slack's pace, and each look is a wake-up and a query of its own.
            await asyncio.sleep(_next_look(left, first - left, loop.time() - first_at, poll))
            left = await self.outbox.open_for_run(run_id)

    async def _ping(self) -> None:
        await self.pool.fetchval("SELECT 1")

    async def _run(self) -> None:
        # The lock is held on a connection of the drainer's own, outside the pool: the pool's connections give
        # back nothing but transactions (storage.pool), and closing the pool must not wait for this one.
        conn: asyncpg.Connection | None = None
        announced = False
        try:
            while not self._stopping:
                try:
                    if conn is None or conn.is_closed():
                        conn = await self._connect()
                    if await try_lock_delivery(conn):
                        log.info("This process delivers the Slack queue")
                        announced = False
                        self.holding = True
                        try:
                            await self._drain(conn)
                        finally:
                            self.holding = False
                        if not conn.is_closed():
                            await unlock_delivery(conn)
                    elif not announced:
                        log.info("Another process delivers the Slack queue: this one takes over if it stops")
                        announced = True
                except DATABASE_OUTAGE as error:
                    log.warning(
                        "The Slack delivery queue could not be read (%s): trying again in %s s",
                        type(error).__name__,
                        LOCK_RETRY_SECONDS,
                    )
                except Exception:  # a background task that dies says nothing: log it and carry on
                    log.exception(
                        "The Slack delivery queue failed; it tries again in %s s", LOCK_RETRY_SECONDS
                    )
                if not self._stopping:
                    await woken(self._wake, LOCK_RETRY_SECONDS)
        finally:
            if conn is not None and not conn.is_closed():
                conn.terminate()  # at once, even when cancelled: the server lets the lock go with the session

    async def _drain(self, conn: asyncpg.Connection) -> None:
        """Send while this connection (and so the lock) lives; return when it is lost or the drainer stops."""
        await conn.add_listener(NOTIFY_CHANNEL, self._notified)
        # Messages held back for a refused token go at once: this process may have been started with the fix.
        await self.outbox.retry_refused_now(conn, errors=[_refusal(code) for code in TOKEN_ERRORS])
        # Nothing of an earlier drain's senders is left: a message taken for one stopped as it asked is queued
        # again as abandoned, and must not keep its channel busy.
        self._asks, self._busy = [], set()
        # Counted before they start, so that the first to ask waits for the others and the first take is one
        # for all of them, not one for the first and another for the rest.
        self._senders = IN_FLIGHT
        senders = [
            asyncio.create_task(self._sender(conn), name="slack-delivery-sender") for _ in range(IN_FLIGHT)
        ]
        try:
            await asyncio.gather(*senders)
        finally:
            # A sender ends only when the connection is lost or the drainer stops (or is cancelled): none may
            # outlive this drain and send beside the next one's.
            for sender in senders:
                sender.cancel()
            await asyncio.gather(*senders, return_exceptions=True)
            self._senders = 0  # a sender cancelled before it started never counted itself out
            if not conn.is_closed():
                with suppress(*DATABASE_OUTAGE):
                    await conn.remove_listener(NOTIFY_CHANNEL, self._notified)

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def _sender(self, conn: asyncpg.Connection) -> None:
        """Take the next message, send it, record it; until the lock connection is lost or the drainer stops.
        What Slack accepted is recorded with the next take, in one round trip (or, when there is no next take,
        through the pool)."""
        accepted: Accepted | None = None
        try:
            while not self._stopping:
                self._wake.clear()
                try:
                    message = await self._take(conn, accepted)
                except DATABASE_OUTAGE:
                    return  # the lock went with the connection: _run takes it again once it can
                if accepted is not None:
                    self._sending.discard(accepted.message.id)
                    accepted = None
                if message is None:
                    self._idle += 1
                    self._gathered()
                    try:
                        await woken(self._wake, POLL_SECONDS)
                    finally:
                        self._idle -= 1
                    continue
                self._sending.add(message.id)
                try:
                    accepted = await self._deliver(conn, message)
                except DATABASE_OUTAGE:
                    # Slack may have it, and what it answered could not be recorded: the message stays `sending`
                    # and is queued again (flagged resent) once no call of this drainer can still be on its way.
                    log.warning(
                        "Slack message %s could not be recorded: the database is out of reach", message.id
                    )
                    return
                except Exception as error:  # a surprise of one message must not stop the queue for the others
                    log.exception("Slack message %s could not be sent", message.id)
                    await self._later(message, f"{type(error).__name__} while sending")
                finally:
                    if accepted is None:
                        self._sending.discard(message.id)
                    self._busy.discard(message.message.channel)
                    self._wake.set()  # a message for that channel may be waiting
        finally:
            self._senders -= 1
            if accepted is not None:  # not recorded with a take: through the pool, once the database answers
                await self._record(accepted)
                self._sending.discard(accepted.message.id)

    async def _take(self, conn: asyncpg.Connection, accepted: Accepted | None) -> Outgoing | None:
        """A sender's next message (None: none is ready), with `accepted`, the one it sent last, recorded.

        The senders whose Slack answers came in the same wake-up of the process (at Slack's pace, those that went
        in the same pacer tick) ask at the same moment: one of them takes and records for all of them in one
        round trip, on the lock connection."""
        ask = _Ask(accepted, asyncio.get_running_loop().create_future())
        self._asks.append(ask)
        self._gathered()
        try:
            async with self._conn_lock:
                if not ask.answer.done():
                    # The senders whose messages went with this one's are answered within moments: wait for
                    # them to ask too (a message that is still waiting its turn is not waited for long).
                    await woken(self._all_asked, GATHER_SECONDS)
                    await self._take_for(conn, self._asks)
        finally:
            if ask in self._asks:  # cancelled while it waited: nobody takes for it
                self._asks.remove(ask)
        answer = ask.answer.result()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def _gathered(self) -> None:
        """Let the take go once every sender that will ask soon has asked: not the idle ones, nor those whose
        message waits for its turn (at the pacer's next step, well after GATHER_SECONDS)."""
        if self._asks and len(self._asks) >= self._senders - self._idle - self._waiting:
            self._all_asked.set()

    async def _take_for(self, conn: asyncpg.Connection, asks: list[_Ask]) -> None:
        """Take a message for each ask (as many as are ready), recording what they sent before; a failure is
        each ask's answer, since none of what they sent was recorded."""
        self._asks = []
        self._all_asked.clear()
        try:
            await self._housekeeping(conn)
            taken = await self.outbox.take(
                conn,
                count=len(asks),
                busy=self._busy,
                accepted=[one.accepted for one in asks if one.accepted is not None],
            )
        except BaseException as error:
            for one in asks:
                one.answer.set_result(error)
            raise
        self._busy.update(message.message.channel for message in taken)
        for number, one in enumerate(asks):  # fewer ready than asked: the others get none
            one.answer.set_result(taken[number] if number < len(taken) else None)

    async def _record(self, accepted: Accepted) -> None:
        await self._records.call(
            f"recording Slack message {accepted.message.id} as sent", lambda: self.outbox.sent(accepted)
        )

    async def _housekeeping(self, conn: asyncpg.Connection) -> None:
        """Now and then: queue again what a stopped drainer left `sending`, and prune old finished messages."""
        now = asyncio.get_running_loop().time()
        if now >= self._next_recovery:
            self._next_recovery = now + RECOVER_EVERY_SECONDS
            again = await self.outbox.requeue_abandoned(
                conn, older_than=self.abandoned_after, keep=self._sending
            )
            if again:
                self.metrics.queue_resent.inc(again)
                log.warning(
                    "%d Slack messages were being sent when their process stopped: sending them again "
                    "(Slack may have taken some of them already)",
                    again,
                )
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY_SECONDS
            await self.outbox.prune(older_than=KEEP_FINISHED)

    async def _deliver(self, conn: asyncpg.Connection, message: Outgoing) -> Accepted | None:
        """Send one message; what Slack accepted, for the caller to record (None: recorded or queued again)."""
        if message.kind == PROMPT:
            await self._deliver_prompt(message)
            return None
        if _too_late(message):
            await self._drop(message)
            return None
        self._waiting += 1
        self._gathered()
        try:
            ticket = await self.pacer.turn(POST_MESSAGE, message.message.channel)
        finally:
            self._waiting -= 1
        assert ticket is not None  # chat.postMessage is always paced
        if conn.is_closed():
            # This process lost the lock while the message waited its turn: another drainer may send it now.
            log.info("Slack message %s is left to the next drainer: the delivery lock was lost", message.id)
            return None
        if _too_late(message):  # the wait for the turn took it past its deadline
            await self._drop(message)
            return None
        try:
            response = await self.poster.post(
                channel=message.message.channel,
                text=message.message.text,
                blocks=message.message.blocks,
                ticket=ticket,
            )
        except SlackApiError as error:
            await self._refused(message, error)
            return None
        except (aiohttp.ClientError, TimeoutError) as error:
            # Slack may or may not have it: sending again may double it, not sending would lose it.
            await self._later(message, f"{type(error).__name__} on the way to Slack")
            return None
        self.refused = None
        self._sent.inc()
        self.metrics.queue_delivered_seconds.observe(
            max(0.0, (datetime.now(UTC) - message.queued_at).total_seconds())
        )
        return Accepted(message, response.get("ts"), response.get("channel"))

    async def _deliver_prompt(self, message: Outgoing) -> None:
        """A Reconnect Gmail DM: posted, or the open DM edited, under the user's prompt lock (as the Prompter
        does it), and recorded on the prompt with the message; dropped when the prompt was closed meanwhile."""
        user = message.message.channel
        async with self.prompts.locked(user) as conn:
            prompt = await self.prompts.get(message.prompt_id, conn=conn) if message.prompt_id else None
            if prompt is None or prompt.state is not PromptState.OPEN:
                log.info("The queued Reconnect Gmail DM for %s is not needed any more: dropped", user)
                await self.outbox.finish(
                    message,
                    state="dropped",
                    error="its prompt was closed before it went out",
                    outcome=None,
                    detail="",
                    conn=conn,
                )
                self.metrics.queue_finished.labels("dropped").inc()
                return
            try:
                channel, ts, edited = await self.prompter().deliver(
                    prompt, blocks=message.message.blocks, text=message.message.text
                )
            except SlackApiError as error:
                refused = error
            except (aiohttp.ClientError, TimeoutError) as error:
                refused = None
                momentary = f"{type(error).__name__} on the way to Slack"
            else:
                await self.prompts.record_sent(
                    prompt, channel_id=channel, message_ts=ts, edited=edited, actor=ACTOR, conn=conn
                )
                await self.outbox.sent(Accepted(message, ts), conn=conn)
                self.refused = None
                self.metrics.prompts.labels("updated" if edited else "posted").inc()
                self.metrics.queue_finished.labels("sent").inc()
                self.metrics.queue_delivered_seconds.observe(
                    max(0.0, (datetime.now(UTC) - message.queued_at).total_seconds())
                )
                return
        if refused is not None:
            self.metrics.prompts.labels("failed").inc()
            await self._refused(message, refused)
        else:
            await self._later(message, momentary)

    async def _refused(self, message: Outgoing, error: SlackApiError) -> None:
        code = str(error.response.get("error") or error.response.status_code)
        if error.response.status_code >= 500 or code in MOMENTARY_ERRORS:
            await self._later(message, _refusal(code))
        elif code in TOKEN_ERRORS:
            if self.refused is None:
                log.error(
                    "Slack refused the bot's token (%s): the queue waits; fix SLACK_BOT_TOKEN or the app's scopes",
                    code,
                )
            self.refused, self._refused_at = code, asyncio.get_running_loop().time()
            await self._records.call(
                f"queueing Slack message {message.id} again",
                lambda: self.outbox.retry_later(message, after=self.token_refused_wait, error=_refusal(code)),
            )
        else:
            if message.kind == SUMMARY:
                log.warning(
                    "The admin summary could not be posted to %s: Slack answered %s%s",
                    message.message.channel,
                    code,
                    " (invite the bot to that channel)"
                    if code in ("not_in_channel", "channel_not_found")
                    else "",
                )
            else:
                log.warning(
                    "Slack refused message %s (%s) for %s: not sent",
                    message.id,
                    code,
                    message.message.channel,
                )
            await self._finish(message, "failed", _refusal(code), outcome="failed")

    async def _later(self, message: Outgoing, why: str) -> None:
        if message.attempts >= MAX_ATTEMPTS:
            log.warning(
                "Slack message %s could not be sent in %d attempts (%s): failed",
                message.id,
                message.attempts,
                why,
            )
            await self._finish(message, "failed", f"{why} ({message.attempts} attempts)", outcome="failed")
            return
        delay = min(RETRY_MAX, timedelta(seconds=2**message.attempts * random.uniform(0.8, 1.2)))
        log.info("Slack message %s goes again in %.0f s: %s", message.id, delay.total_seconds(), why)
        await self._records.call(
            f"queueing Slack message {message.id} again",
            lambda: self.outbox.retry_later(message, after=delay, error=why),
        )

    async def _drop(self, message: Outgoing) -> None:
        assert message.not_after is not None
        deadline = f"{message.not_after.astimezone(self.timezone):%H:%M %Z}"
        log.warning(
            "Slack message %s for %s was dropped: its deadline (%s) passed",
            message.id,
            message.message.channel,
            deadline,
        )
        await self._finish(
            message,
            "dropped",
            f"not delivered by {deadline}",
            outcome="late",
            detail=f"not delivered by BRIEFING_DEADLINE ({deadline}): dropped",
            audit_action="briefing.digest_dropped" if message.kind == DIGEST else None,
        )
        if message.kind == DIGEST:
            self.metrics.digests_dropped.inc()

    async def _finish(
        self,
        message: Outgoing,
        state: str,
        error: str,
        *,
        outcome: str,
        detail: str | None = None,
        audit_action: str | None = None,
    ) -> None:
        await self._records.call(
            f"recording Slack message {message.id} as {state}",
            lambda: self.outbox.finish(
                message,
                state=state,
                error=error,
                outcome=outcome,
                detail=detail or error,
                audit_action=audit_action,
                actor=ACTOR,
            ),
        )
        self.metrics.queue_finished.labels(state).inc()


@dataclass(frozen=True)
class _Ask:
    """A sender's ask for its next message: what it sent last, to record, and where its message is answered."""

    accepted: Accepted | None
    answer: asyncio.Future[Outgoing | BaseException | None]


def _too_late(message: Outgoing) -> bool:
    return message.not_after is not None and datetime.now(UTC) >= message.not_after


def _refusal(code: str) -> str:
    """What a message records of Slack's answer."""
    return f"Slack answered {code}"


def _next_look(left: int, gone: int, seconds: float, poll: float) -> float:
    """How long wait_for waits before it looks again, with `left` messages still to go after `gone` went in the
    `seconds` it has waited so far."""
    if left <= FEW_LEFT:
        return poll
    shortest = max(poll, MANY_LEFT_POLL_SECONDS)
    if gone <= 0 or seconds <= 0:
        return shortest
    return max(shortest, min(left * seconds / gone / 4, LONGEST_POLL_SECONDS))
