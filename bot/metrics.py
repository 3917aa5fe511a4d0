"""Prometheus metrics at GET /metrics: accounts by status, refreshes, prompts, OAuth callbacks, runs, API calls
and API calls refused for want of a key. Counters count what this process did (Prometheus sums them over
replicas); the accounts gauge is read from the database at each scrape, so every replica reports the same
figures."""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bot.google.health import effective_status
from bot.google.scopes import Capability
from storage.accounts import Accounts
from storage.errors import DATABASE_OUTAGE
from storage.models import Status
from storage.outbox import SlackOutbox
from storage.webhooks import Webhooks

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The reasons handlers/http/api_access.py's Refusal names.
API_REFUSALS = ("missing", "malformed", "unknown", "revoked")
SLACK_DELIVERY_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600)
# The outcomes bot/webhooks/sender.py's Outcome names.
WEBHOOK_OUTCOMES = ("delivered", "rejected", "gone", "timeout", "unreachable", "unsigned")
RUN_SECONDS_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)


class Metrics:
    """The application's metrics, in a registry of its own (several apps may live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.accounts = Gauge(
            "gmail_reconnect_accounts",
            "gmail_tokens rows by stored status.",
            ["status"],
            registry=self.registry,
        )
        self.refreshes = Counter(
            "gmail_reconnect_refreshes",
            "Access-token refreshes asked of Google, by outcome (refreshed, limited, needs_user, unavailable).",
            ["outcome"],
            registry=self.registry,
        )
        self.prompts = Counter(
            "gmail_reconnect_prompts",
            "Reconnect Gmail DMs, by delivery (posted, updated, snoozed, failed; queued: put in the delivery queue, "
            "and counted again as posted, updated or failed when its turn comes).",
            ["delivery"],
            registry=self.registry,
        )
        self.callbacks = Counter(
            "gmail_reconnect_oauth_callbacks",
            "Google OAuth callbacks, by the page they ended on (connected, denied, state_expired, …).",
            ["outcome"],
            registry=self.registry,
        )
        self.digests_dropped = Counter(
            "gmail_reconnect_digests_dropped",
            "Digests of the briefing not posted because BRIEFING_DEADLINE had passed.",
            registry=self.registry,
        )
        self.sign_ins = Counter(
            "gmail_reconnect_slack_sign_ins",
            "Sign in with Slack callbacks before Google's consent, by outcome (identified, identity_mismatch, …).",
            ["outcome"],
            registry=self.registry,
        )
        self.run_seconds = Histogram(
            "gmail_reconnect_run_duration_seconds",
            "How long this process took over its share of a preflight or briefing run.",
            ["kind"],
            buckets=RUN_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.run_accounts = Counter(
            "gmail_reconnect_run_accounts",
            "Accounts handled by runs in this process, by kind and result.",
            ["kind", "result"],
            registry=self.registry,
        )
        self.api_requests = Counter(
            "gmail_reconnect_api_requests",
            "Calls to /api/v1, by endpoint and HTTP status.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.api_refused = Counter(
            "gmail_reconnect_api_refused",
            "Calls to /api/v1 refused for want of a valid API key, by reason (missing, malformed, unknown, "
            "revoked); they are not written to the audit log.",
            ["reason"],
            registry=self.registry,
        )
        self.risc_events = Counter(
            "gmail_reconnect_risc_events",
            "Google's security event tokens at POST /google/risc, by outcome (accepted, duplicate, or the RFC 8935 "
            "error of a refused one: invalid_key, invalid_audience, invalid_issuer, invalid_request).",
            ["outcome"],
            registry=self.registry,
        )
        self.database_up = Gauge(
            "gmail_reconnect_database_up",
            "1 when the last scrape could read the database, 0 when it could not (the accounts gauge is then stale).",
            registry=self.registry,
        )
        self.slack_limited = Counter(
            "gmail_reconnect_slack_rate_limited",
            "Slack Web API calls answered 429 (each paused every sender of the method, then went again), by method.",
            ["method"],
            registry=self.registry,
        )
        self.slack_pace = Gauge(
            "gmail_reconnect_slack_pace_per_minute",
            "The calls a minute the pacer allows now, by method (it lowers them on a 429 and raises them again).",
            ["method"],
            registry=self.registry,
        )
        self.slack_delivery_seconds = Histogram(
            "gmail_reconnect_slack_delivery_seconds",
            "From a Slack call being asked for to Slack taking it, waits for the pacer and after 429s included.",
            ["method"],
            buckets=SLACK_DELIVERY_BUCKETS,
            registry=self.registry,
        )
        self.webhook_attempts = Counter(
            "gmail_reconnect_webhook_attempts",
            "Webhook delivery attempts by this process, by outcome (delivered, rejected, gone, timeout, "
            "unreachable, unsigned).",
            ["outcome"],
            registry=self.registry,
        )
        self.webhook_deliveries = Gauge(
            "gmail_reconnect_webhook_deliveries",
            "Webhook deliveries still pending (being retried) or failed for good, by webhook id.",
            ["webhook_id", "state"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "gmail_reconnect_slack_queue_depth",
            "Messages of the Slack delivery queue not delivered yet (queued or being sent), read at each scrape.",
            registry=self.registry,
        )
        self.queue_lag = Gauge(
            "gmail_reconnect_slack_queue_lag_seconds",
            "How long the oldest message ready to go has waited in the Slack delivery queue (0 when empty).",
            registry=self.registry,
        )
        self.queue_delivered_seconds = Histogram(
            "gmail_reconnect_slack_queue_delivered_seconds",
            "From a message being queued to Slack accepting it.",
            buckets=SLACK_DELIVERY_BUCKETS,
            registry=self.registry,
        )
        self.queue_finished = Counter(
            "gmail_reconnect_slack_queue_finished",
            "Messages of the Slack delivery queue finished by this process, by state (sent, dropped, failed).",
            ["state"],
            registry=self.registry,
        )
        self.queue_resent = Counter(
            "gmail_reconnect_slack_queue_resent",
            "Messages queued again because their drainer stopped while sending them: each may have been doubled.",
            registry=self.registry,
        )
        # Series that exist from the start read 0 rather than being absent until the first event.
        for outcome in ("refreshed", "limited", "needs_user", "unavailable"):
            self.refreshes.labels(outcome)
        for delivery in ("posted", "updated", "snoozed", "failed", "queued"):
            self.prompts.labels(delivery)
        for reason in API_REFUSALS:
            self.api_refused.labels(reason)
        for outcome in WEBHOOK_OUTCOMES:
            self.webhook_attempts.labels(outcome)
        for state in ("sent", "dropped", "failed"):
            self.queue_finished.labels(state)

    async def render(
        self,
        accounts: Accounts,
        required: Iterable[Capability],
        *,
        webhooks: Webhooks | None = None,
        outbox: SlackOutbox | None = None,
    ) -> bytes:
        """The text exposition format, with the accounts gauge read from the database now.

        Statuses are those `/gmail-status all` and the registry show: an account never checked counts under
        what its stored data already shows (e.g. missing for a NULL token)."""
        try:
            counts = Tally(await accounts.count_by_status())
            never_checked = await accounts.list(statuses=[Status.UNKNOWN])
            deliveries = await webhooks.counts() if webhooks is not None else []
            depth = await outbox.depth() if outbox is not None else None
        except DATABASE_OUTAGE as error:
            # The counters are this process's own: serve them, and keep the accounts gauge as last read.
            log.warning("/metrics: the database could not be read (%s)", type(error).__name__)
            self.database_up.set(0)
            return generate_latest(self.registry)
        self.database_up.set(1)
        counts[Status.UNKNOWN] -= len(never_checked)
        counts.update(effective_status(account, required)[0] for account in never_checked)
        for status in Status:
            self.accounts.labels(str(status)).set(counts.get(status, 0))
        if depth is not None:
            self.queue_depth.set(depth.open)
            self.queue_lag.set(round(depth.oldest_seconds, 3))
        self.webhook_deliveries.clear()  # a removed webhook's series goes with it
        for count in deliveries:
            self.webhook_deliveries.labels(str(count.webhook_id), "pending").set(count.pending)
            self.webhook_deliveries.labels(str(count.webhook_id), "failed").set(count.failed)
        return generate_latest(self.registry)
