"""Slack's documented rate limits, for the fake Slack to enforce when asked: a token bucket per method (per app,
per workspace) and, for chat.postMessage, one more per channel.

From https://api.slack.com/apis/rate-limits: Tier 2 is 20+ calls a minute, Tier 3 50+, Tier 4 100+;
chat.postMessage "generally allows posting one message per second per channel, while also maintaining a
workspace-wide limit" of several hundred a minute. Past a limit Slack answers HTTP 429 with `Retry-After` (seconds)
and `{"ok": false, "error": "ratelimited"}`.

`speed` runs the limits' clock faster: every rate is multiplied by it and every Retry-After divided by it (then
given with decimals), so a benchmark can play a 17-minute morning in 17 seconds at the same shape.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

POST_MESSAGE = "chat.postMessage"
# Calls a minute of each tier, and the methods of the fake in each (api.slack.com/methods/<method>).
TIER_PER_MINUTE = {1: 1, 2: 20, 3: 50, 4: 100}
METHOD_TIERS = {
    "users.list": 2,
    "chat.update": 3,
    "chat.delete": 3,
    "conversations.open": 3,
    "users.lookupByEmail": 3,
    "users.info": 4,
    "views.publish": 4,
    "views.open": 4,
    "views.update": 4,
    "chat.postEphemeral": 4,
}


def tier_limits() -> dict[str, tuple[float, float]]:
    """(calls a minute, burst) of each tiered method: Slack allows short bursts, here 10 seconds' worth."""
    limits = {}
    for method, tier in METHOD_TIERS.items():
        per_minute = TIER_PER_MINUTE[tier]
        limits[method] = (float(per_minute), max(1.0, per_minute / 6))
    return limits


@dataclass
class Bucket:
    """A token bucket: `rate` tokens a second, holding at most `burst`; full at the start."""

    rate: float
    burst: float
    tokens: float = math.nan
    updated: float = math.nan

    def wait(self, now: float) -> float:
        """Seconds until a token is there (0: there is one now)."""
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self, now: float) -> None:
        """Use one token (wait() said there is one)."""
        self._refill(now)
        self.tokens -= 1

    def _refill(self, now: float) -> None:
        if math.isnan(self.updated):
            self.tokens, self.updated = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now


@dataclass
class SlackLimits:
    """The limits the fake enforces, and the calls it refused (by method)."""

    posts_per_minute: float = 600
    burst: float = 20
    per_channel_per_second: float = 1
    per_channel_burst: float = 1
    tiers: Mapping[str, tuple[float, float]] = field(default_factory=tier_limits)
    speed: float = 1.0
    clock: Callable[[], float] = time.monotonic
    refused: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._methods: dict[str, Bucket] = {
            POST_MESSAGE: Bucket(self.posts_per_minute / 60 * self.speed, self.burst)
        }
        for method, (per_minute, burst) in self.tiers.items():
            self._methods[method] = Bucket(per_minute / 60 * self.speed, burst)
        self._channels: dict[str, Bucket] = {}

    def check(self, method: str, channel: str | None) -> float | None:
        """Take this call's tokens and return None, or, when a limit is reached, the seconds Slack would say
        to wait (Retry-After), taking nothing."""
        buckets = [bucket for bucket in (self._methods.get(method),) if bucket is not None]
        if method == POST_MESSAGE and channel:
            per_channel = self._channels.get(channel)
            if per_channel is None:
                per_channel = self._channels[channel] = Bucket(
                    self.per_channel_per_second * self.speed, self.per_channel_burst
                )
            buckets.append(per_channel)
        now = self.clock()
        wait = max((bucket.wait(now) for bucket in buckets), default=0.0)
        if wait > 0:
            self.refused[method] += 1
            return wait
        for bucket in buckets:
            bucket.take(now)
        return None

    def retry_after(self, wait: float) -> str:
        """The Retry-After header for a wait of `wait` real seconds: whole seconds of Slack's clock, as Slack
        gives it (at least 1); at a faster speed, those divided by the speed, with decimals."""
        seconds = max(1, math.ceil(wait * self.speed - 1e-9))
        return str(seconds) if self.speed == 1 else f"{seconds / self.speed:.4f}"
