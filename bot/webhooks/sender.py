"""The background sender of `serve`: delivers the webhook outbox at least once, with retries.

Every replica runs one. Each claims due deliveries (FOR UPDATE SKIP LOCKED, so no two send the same one),
POSTs them signed, and records the result: 2xx is delivered; anything else, a timeout or a network error is
tried again after an exponential backoff with jitter, until the retry window (24 hours by default) has passed
since the event, when the delivery fails (audited). A 410 Gone disables the webhook. Senders look every second
(one indexed query), and when a retry is due. (LISTEN/NOTIFY would be quicker, but it holds a pooled connection
for good, which the pool cannot then close.)
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

import aiohttp

from bot import __version__
from bot.event_loop import woken
from bot.metrics import Metrics
from bot.webhooks.signing import (
    ATTEMPT_HEADER,
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    signature_header,
)
from storage.crypto import DecryptionError
from storage.errors import DATABASE_OUTAGE
from storage.webhook_deliveries import Delivery, WebhookDeliveries
from storage.webhooks import Webhooks

log = logging.getLogger(__name__)

ACTOR = "webhook-sender"
USER_AGENT = f"gmail-reconnect-webhooks/{__version__}"
IN_FLIGHT = 20  # deliveries one sender sends at once
# The longest a sender sleeps between looks at the outbox: the most an event waits before its first attempt.
POLL_SECONDS = 1.0
# How long past the attempt's timeout a claim lasts before another sender may take the delivery over.
LEASE_MARGIN = timedelta(seconds=30)
# Delivered and failed deliveries are kept this long (for `webhook list` and the failed gauge), then deleted.
KEEP_FINISHED = timedelta(days=30)
PRUNE_EVERY = timedelta(hours=1)


class Outcome(enum.StrEnum):
    """What one attempt came to (the label of gmail_reconnect_webhook_attempts; metrics lists the same)."""

    DELIVERED = "delivered"  # 2xx
    REJECTED = "rejected"  # another HTTP status: tried again
    GONE = "gone"  # 410: the webhook is disabled
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"  # DNS, refused connection, TLS, a dropped connection
    UNSIGNED = "unsigned"  # the secret could not be decrypted (TOKEN_ENCRYPTION_KEYS)


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed delivery is tried again: `base` doubling, capped at `cap`, for `window` after the event."""

    base: timedelta = timedelta(seconds=10)
    cap: timedelta = timedelta(hours=1)
    window: timedelta = timedelta(hours=24)

    def delay(self, attempt: int) -> timedelta:
        """The wait after the `attempt`-th failed attempt: 75-100% of base·2^(attempt-1), at most `cap`."""
        ceiling = min(self.base.total_seconds() * 2 ** min(attempt - 1, 30), self.cap.total_seconds())
        return timedelta(seconds=ceiling * random.uniform(0.75, 1.0))


class WebhookSender:
    """Sends the due deliveries of the outbox, in a background task between `start` and `stop`."""

    def __init__(
        self,
        webhooks: Webhooks,
        deliveries: WebhookDeliveries,
        session: aiohttp.ClientSession,
        *,
        timeout: timedelta,
        policy: RetryPolicy,
        metrics: Metrics,
    ) -> None:
        self.webhooks = webhooks
        self.deliveries = deliveries
        self.session = session
        self.timeout = timeout
        self.policy = policy
        self.metrics = metrics
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._in_flight: set[asyncio.Task[None]] = set()
        self._next_prune = 0.0

    def start(self) -> None:
        """Begin sending in the background."""
        self._task = asyncio.create_task(self._run(), name="webhook-sender")

    async def stop(self) -> None:
        """Stop sending; an attempt under way is abandoned and its delivery is tried again after the lease."""
        self._stopping = True  # and should a cancellation still be lost, the loop ends at its next turn
        tasks = [task for task in (self._task, *self._in_flight) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def wake(self) -> None:
        """Look for due deliveries now."""
        self._wake.set()

    async def send_due(self) -> int:
        """Claim as many due deliveries as there is room for and start sending them; how many were claimed.

        Each is sent in a task of its own, so that a receiver that is slow to answer holds up no other."""
        room = IN_FLIGHT - len(self._in_flight)
        if room <= 0:
            return 0
        claimed = await self.deliveries.claim(limit=room, lease=self.timeout + LEASE_MARGIN)
        for delivery in claimed:
            task = asyncio.create_task(self._send(delivery))
            self._in_flight.add(task)
            task.add_done_callback(self._sent)
        return len(claimed)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self.wake()  # room for another

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            wait = POLL_SECONDS
            try:
                room = IN_FLIGHT - len(self._in_flight)
                # With no room, a finished attempt wakes the loop.
                if room > 0:
                    if await self.send_due() == room:
                        continue  # there may be more due
                    due_in = await self.deliveries.next_due_in()
                    if due_in is not None:
                        wait = min(max(due_in, 0.01), POLL_SECONDS)
                await self._prune()
            except DATABASE_OUTAGE as error:
                log.warning("Webhook deliveries could not be read (%s); trying again", type(error).__name__)
            except Exception:
                # A background task that dies says nothing: log it with its traceback and carry on.
                log.exception("The webhook sender failed; it tries again in %s s", POLL_SECONDS)
            await woken(self._wake, wait)

    async def _prune(self) -> None:
        now = asyncio.get_running_loop().time()
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY.total_seconds()
            await self.deliveries.prune(older_than=KEEP_FINISHED)

    async def _send(self, delivery: Delivery) -> None:
        try:
            outcome, result = await self._post(delivery)
        except DecryptionError as error:
            log.error(
                "Webhook %s cannot be signed: its secret cannot be read (%s)", delivery.webhook_id, error
            )
            outcome, result = Outcome.UNSIGNED, "secret unreadable: check TOKEN_ENCRYPTION_KEYS"
        self.metrics.webhook_attempts.labels(str(outcome)).inc()
        try:
            await self._record(delivery, outcome, result)
        except DATABASE_OUTAGE as error:
            # The lease ends and the delivery is sent again: at least once, never lost.
            log.warning(
                "The result of webhook delivery %s was not recorded (%s)", delivery.id, type(error).__name__
            )

    async def _post(self, delivery: Delivery) -> tuple[Outcome, str]:
        secret = self.webhooks.secret(delivery.webhook_id, delivery.secret)
        body = delivery.body.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            EVENT_HEADER: delivery.event_type,
            DELIVERY_HEADER: str(delivery.event_id),
            ATTEMPT_HEADER: str(delivery.attempt),
            SIGNATURE_HEADER: signature_header(secret, body),
        }
        try:
            async with self.session.post(
                delivery.url,
                data=body,
                headers=headers,
                allow_redirects=False,  # a redirect is not an answer: the URL should be fixed
                timeout=aiohttp.ClientTimeout(total=self.timeout.total_seconds()),
            ) as response:
                status = response.status
        except TimeoutError:
            return Outcome.TIMEOUT, f"no answer within {self.timeout.total_seconds():g} s"
        except aiohttp.ClientError as error:
            return Outcome.UNREACHABLE, f"could not connect ({type(error).__name__})"
        if 200 <= status < 300:
            return Outcome.DELIVERED, f"HTTP {status}"
        return (Outcome.GONE if status == 410 else Outcome.REJECTED), f"HTTP {status}"

    async def _record(self, delivery: Delivery, outcome: Outcome, result: str) -> None:
        if outcome is Outcome.DELIVERED:
            await self.deliveries.delivered(delivery, result=result)
            return
        if outcome is Outcome.GONE:
            log.warning(
                "Webhook %s answered 410 Gone: it is disabled until it is added again", delivery.webhook_id
            )
            await self.webhooks.disable(
                delivery.webhook_id, reason="the receiver answered 410 Gone", actor=ACTOR
            )
            return
        failed = await self.deliveries.retry_or_fail(
            delivery,
            result=result,
            retry_in=self.policy.delay(delivery.attempt),
            retry_for=self.policy.window,
            actor=ACTOR,
        )
        if failed:
            log.warning(
                "Webhook %s: event %s failed after %d attempts (%s)",
                delivery.webhook_id,
                delivery.event_id,
                delivery.attempt,
                result,
            )
        else:
            log.info(
                "Webhook %s: attempt %d of event %s: %s",
                delivery.webhook_id,
                delivery.attempt,
                delivery.event_id,
                result,
            )


@asynccontextmanager
async def running_sender(
    webhooks: Webhooks,
    deliveries: WebhookDeliveries,
    *,
    answer_within: timedelta,
    policy: RetryPolicy,
    metrics: Metrics,
) -> AsyncIterator[WebhookSender]:
    """A sender on an HTTP session of its own (no cookies), running until the block ends."""
    async with aiohttp.ClientSession(
        headers={"User-Agent": USER_AGENT}, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        sender = WebhookSender(
            webhooks, deliveries, session, timeout=answer_within, policy=policy, metrics=metrics
        )
        sender.start()
        try:
            yield sender
        finally:
            await sender.stop()
