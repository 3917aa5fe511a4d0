"""One pace for every Slack call of the process: a token bucket per Web API method whose rate adapts.

Slack limits each method per app and workspace (chat.postMessage to several hundred a minute for the whole
workspace and about one a second per channel; Tier 2/3/4 methods to 20+/50+/100+ a minute) and answers 429 with
`Retry-After` past that. So every sender waits its turn here rather than finding out by a 429: a 429 pauses the
whole method for its Retry-After (not just the caller), lowers the rate (multiplicative decrease), and each call
Slack accepts raises it again (additive increase back to the rate it started at, then slow probing above it), so
the pace settles at whatever cap the workspace really has. A rate-limited call is never given up; it waits.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import Gauge, Histogram

from bot.metrics import Metrics

POST_MESSAGE = "chat.postMessage"
# The documented minimum of each tier's calls a minute (api.slack.com/apis/rate-limits), for the methods the bot
# calls: the rates the other lanes start at.
TIER_PER_MINUTE = {
    "users.list": 20,
    "chat.update": 50,
    "chat.delete": 50,
    "conversations.open": 50,
    "users.lookupByEmail": 50,
    "users.info": 100,
    "views.publish": 100,
    "views.open": 100,
    "views.update": 100,
    "chat.postEphemeral": 100,
}
# A little under Slack's one a second per channel: two posts that leave a second apart may arrive closer.
PER_CHANNEL_PER_SECOND = 0.9
# On a 429 the rate is multiplied by DECREASE; each accepted call adds RECOVERY of the starting rate until it is
# back there (or just under the rate that drew the last 429), then multiplies it by 1 + PROBE, so a workspace
# with a higher cap is found within a few hundred calls; once a cap was met, by 1 + PROBE_NEAR_LIMIT, since each
# 429 costs a pause of at least a second. Counted in calls, not seconds: the same at any speed.
DECREASE = 0.85
RECOVERY = 0.02
PROBE = 0.002
PROBE_NEAR_LIMIT = 0.0002
BELOW_LAST_LIMIT = 0.95
MIN_SHARE = 0.02  # the rate never falls below this share of the starting one
MAX_FACTOR = 4.0  # nor rises past this many times it
DEFAULT_RETRY_AFTER = 1.0
# Calls go on a grid, up to one grid step before their slot: the callers waiting for their turns wake together
# rather than one by one (each wake-up of the process costs CPU of its own), while the pace over any stretch longer
# than a step stays the rate. The step is a whole number of TICKs, as many as `burst` calls take at the lane's rate
# (at least one): chat.postMessage goes in bursts of up to POST_BURST (the delivery queue's senders, which then post
# together and record together), e.g. 8 every 0.4 s at 20 a second, well within Slack's tolerance; other methods
# one by one. Whole TICKs keep the grid where it is while the rate creeps up call by call. Each burst costs a few
# wake-ups of the process whatever its size (the step's timer, the answers, the statement that records them),
# which at Slack's pace are most of the queue's CPU: 8 halves them against 4, at the price of 8 messages a crash
# may double rather than 4.
TICK = 0.1
POST_BURST = 8
_CHANNELS_KEPT = 10_000


@dataclass
class Lane:
    """The pace of one method: calls a second now, the rate it started at, and when the next call may go."""

    method: str
    start_rate: float
    clock: Callable[[], float] = time.monotonic
    rate: float = math.nan
    limit_hint: float | None = None  # the rate at which Slack last said 429
    next_at: float = 0.0  # when the next call may go (the bucket's theoretical arrival time)
    paused_until: float = 0.0
    decreased_at: float = -math.inf
    tick: float = TICK  # the shortest step of the grid on which calls go (on the lane's clock)
    burst: int = 1  # calls that may go together: the grid's step is at least the time they take at the rate
    epoch: int = 0  # bumped on every 429, so that calls waiting for a slot take a new one
    limited: int = 0
    accepted: int = 0

    def __post_init__(self) -> None:
        if math.isnan(self.rate):
            self.rate = self.start_rate

    async def turn(self) -> float:
        """Wait for this method's next slot; returns when the call may go (its ticket)."""
        while True:
            now = self.clock()
            slot = max(now, self.next_at, self.paused_until)
            self.next_at = slot + 1 / self.rate
            epoch = self.epoch
            step = self.tick * max(1, math.floor(self.burst / (self.rate * self.tick)))
            # Never before a pause for Retry-After ends, whatever the grid.
            wake = max(now, self.paused_until, slot - slot % step)
            if wake > now:
                await asyncio.sleep(wake - now)
            if self.epoch == epoch:
                return slot
            # A 429 came while waiting: the slot was promised at a pace Slack refused. Queue again.

    def on_limited(self, retry_after: float, ticket: float | None) -> None:
        """Slack said 429: pause everyone for Retry-After and, once per pace that drew it, slow down."""
        now = self.clock()
        self.limited += 1
        self.paused_until = max(self.paused_until, now + retry_after)
        self.next_at = max(self.next_at, self.paused_until)
        self.epoch += 1
        # The calls that went out before the last decrease were sent at the old pace: one decrease covers them.
        if ticket is not None and ticket >= self.decreased_at:
            self.limit_hint = self.rate
            self.rate = max(self.start_rate * MIN_SHARE, self.rate * DECREASE)
            self.decreased_at = now

    def on_accepted(self) -> None:
        """Slack accepted a call: raise the rate a little."""
        self.accepted += 1
        below = self.start_rate if self.limit_hint is None else self.limit_hint * BELOW_LAST_LIMIT
        if self.rate < min(self.start_rate, below):
            self.rate = min(self.rate + self.start_rate * RECOVERY, self.start_rate, below)
        else:
            probe = PROBE if self.limit_hint is None else PROBE_NEAR_LIMIT
            self.rate = min(self.rate * (1 + probe), self.start_rate * MAX_FACTOR)


@dataclass
class Pacer:
    """The lanes of every method of one process (chat.postMessage at SLACK_POST_RATE, the others at their
    tier's documented rate), and chat.postMessage's one post a second per channel. `speed` multiplies every
    rate, for a Slack whose clock runs that much faster (a benchmark's)."""

    post_rate_per_minute: float
    clock: Callable[[], float] = time.monotonic
    metrics: Metrics | None = None
    per_channel_per_second: float = PER_CHANNEL_PER_SECOND
    speed: float = 1.0
    lanes: dict[str, Lane] = field(default_factory=dict)
    _channels: dict[str, float] = field(default_factory=dict)
    # Each method's series of slack_delivery_seconds and slack_pace, looked up once: every post updates both.
    _series: dict[str, tuple[Histogram, Gauge]] = field(default_factory=dict)

    def lane(self, method: str) -> Lane | None:
        """The lane of a paced method (None for the others, e.g. auth.test)."""
        lane = self.lanes.get(method)
        if lane is None:
            per_minute = self.post_rate_per_minute if method == POST_MESSAGE else TIER_PER_MINUTE.get(method)
            if per_minute is None:
                return None
            lane = self.lanes[method] = Lane(
                method,
                per_minute / 60 * self.speed,
                clock=self.clock,
                tick=TICK / self.speed,
                burst=POST_BURST if method == POST_MESSAGE else 1,
            )
        return lane

    async def turn(self, method: str, channel: str | None = None) -> float | None:
        """Wait until `method` may be called (for chat.postMessage, in `channel` too); the call's ticket."""
        if method == POST_MESSAGE and channel:
            await self.channel_turn(channel)
        lane = self.lane(method)
        return None if lane is None else await lane.turn()

    def limited(self, method: str, retry_after: float, ticket: float | None) -> None:
        """Slack answered 429 to a call of `method` that went at `ticket`."""
        if self.metrics is not None:
            self.metrics.slack_limited.labels(method).inc()
        lane = self.lane(method) or self._unpaced(method)
        lane.on_limited(retry_after, ticket)
        self._show(lane)

    def accepted(self, method: str, *, asked_at: float | None = None) -> None:
        """Slack answered a call of `method` (asked for at `asked_at`, on the pacer's clock) without a 429."""
        if self.metrics is not None and asked_at is not None:
            self._series_of(method)[0].observe(self.clock() - asked_at)
        lane = self.lanes.get(method)
        if lane is not None:
            lane.on_accepted()
            self._show(lane)

    def _unpaced(self, method: str) -> Lane:
        """A method not paced until Slack limited it: from now on it has a lane, at a cautious rate."""
        per_second = TIER_PER_MINUTE["chat.update"] / 60 * self.speed
        lane = self.lanes[method] = Lane(method, per_second, clock=self.clock, tick=TICK / self.speed)
        return lane

    async def channel_turn(self, channel: str) -> None:
        """Wait until chat.postMessage may post in `channel` again (about once a second)."""
        now = self.clock()
        slot = max(now, self._channels.get(channel, 0.0))
        self._channels[channel] = slot + 1 / (self.per_channel_per_second * self.speed)
        if len(self._channels) > _CHANNELS_KEPT:
            for name in [name for name, at in self._channels.items() if at < now]:
                del self._channels[name]
        if slot > now:
            await asyncio.sleep(slot - now)

    def _show(self, lane: Lane) -> None:
        if self.metrics is not None:
            self._series_of(lane.method)[1].set(round(lane.rate * 60, 1))

    def _series_of(self, method: str) -> tuple[Histogram, Gauge]:
        series = self._series.get(method)
        if series is None:
            assert self.metrics is not None
            series = self._series[method] = (
                self.metrics.slack_delivery_seconds.labels(method),
                self.metrics.slack_pace.labels(method),
            )
        return series


def retry_after_seconds(value: str | None) -> float:
    """Slack's Retry-After header as seconds (whole seconds from Slack; decimals are taken too)."""
    try:
        seconds = float(value) if value is not None else DEFAULT_RETRY_AFTER
    except ValueError:
        return DEFAULT_RETRY_AFTER
    return seconds if math.isfinite(seconds) and seconds >= 0 else DEFAULT_RETRY_AFTER
