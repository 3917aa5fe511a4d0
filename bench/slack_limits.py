"""The briefing run against a fake Slack that enforces Slack's rate limits (`bench/briefing_run.py --slack-limits`).

Each scenario seeds the accounts of briefing_run.py's mix in a fresh database, tells the fake Slack to enforce a
workspace cap on chat.postMessage (burst 20, one post a second per channel, the documented tiers for the other
methods) and does today's briefing run with SLACK_POST_RATE as given, in one process or in two replicas at once
(two sets of services, one database). Every account gets one message: its digest or its Reconnect Gmail DM.

Measured: messages lost (an account's DM with no message; target 0), doubled (more than one; target 0), the share
of Slack calls answered 429 (target ≤ 2% when the pacer is told the cap, ≤ 5% when not), and the wall time against
the floor that Slack's limits set (target ≤ 1.1× told, ≤ 1.2× not told): the messages ÷ the cap, since the
users.list pages (Tier 2) are read beside the messages of the accounts whose language is known, not before them;
or those pages alone, were they to take longer.

The limits' clock runs faster than Slack's (the fake's rates multiplied by a speed, its Retry-After divided by it,
and the pacer's rates multiplied by it too), so a 17-minute morning at 600 a minute takes 17 minutes ÷ speed. The
speed of each scenario is chosen so that its cap comes to `--posts-per-second` real posts a second (50: what a
small machine serves with the fakes and PostgreSQL beside the run, far from its own ceiling): 5× at 600 a
minute, 10× at 300, 2.5× at 1200. Times are reported in Slack's minutes as well.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import throwaway_database
from bot.briefing.run import Kind
from bot.environment import load_settings
from bot.logs import configure_logging
from bot.services import open_services

# (name, the cap Slack enforces, SLACK_POST_RATE the pacer is told, replicas)
SCENARIOS = (
    ("told the cap", 600, 600, 1),
    ("two replicas, told the cap", 600, 600, 2),
    ("cap 300, not told", 300, 600, 1),
    ("cap 1200, not told", 1200, 600, 1),
)
USERS_LIST_PER_MINUTE = 20  # Tier 2
TARGETS = {"told": (0.02, 1.1), "not told": (0.05, 1.2)}


async def scenario(
    *,
    world: Any,
    server_url: str,
    workdir: Path,
    name: str,
    cap: int,
    told: int,
    replicas: int,
    total: int,
    concurrency: int,
    speed: float,
    stored_languages: float,
    rng: random.Random,
    prefix: str,
    kinds: list[str],
) -> dict[str, Any]:
    """One run under one cap; its figures."""
    languages_known = sorted(rng.sample(range(total), round(total * stored_languages)))
    async with throwaway_database(server_url) as dsn:
        env = {
            **world.env,
            "GMAIL_RECONNECT_DATA_DIR": str(workdir / "data"),
            "DATABASE_URL": dsn,
            "BRIEFING_MODE": "digest",
            "BRIEFING_CONCURRENCY": str(concurrency),
            "SLACK_POST_RATE": str(told),
            "LOG_LEVEL": "WARNING",
        }
        await world.call(
            "seed", dsn=dsn, env=env, prefix=prefix, kinds=kinds, messages=3, languages_known=languages_known
        )
        settings = load_settings(environ=env, env_file=workdir / "absent.env")
        configure_logging(settings.log_level, settings.secret_values())
        await world.call("reset")
        await world.call("limits", posts_per_minute=cap, burst=20, per_channel_per_second=1, speed=speed)
        async with _services(settings, replicas) as all_services:
            for services in all_services:
                services.pacer.speed = speed
            started = time.perf_counter()
            reports = await asyncio.gather(*(s.briefing.run(Kind.BRIEFING) for s in all_services))
            wall_s = time.perf_counter() - started
        stats = await world.call("stats")
        delivered = await world.call("deliveries", prefix=prefix, total=total)
    statuses = Counter[str]()
    for by_status in stats["statuses"].values():
        statuses.update(by_status)
    calls = sum(statuses.values())
    pages = stats["calls"].get("users.list", 0)
    floor_s = max(pages / USERS_LIST_PER_MINUTE, total / cap) * 60 / speed
    told_cap = told == cap
    share_target, ratio_target = TARGETS["told" if told_cap else "not told"]
    share = statuses.get("429", 0) / calls if calls else 0.0
    return {
        "name": name,
        "cap_per_minute": cap,
        "slack_post_rate": told,
        "replicas": replicas,
        "speed": speed,
        "accounts": total,
        "handled": sum(len(report.accounts) for report in reports),
        "messages": delivered["messages"],
        "lost": delivered["lost"],
        "doubled": delivered["doubled"],
        "slack_calls": calls,
        "answered_429": statuses.get("429", 0),
        "share_429": round(share, 4),
        "refused_by_method": delivered["refused"],
        "users_list_pages": pages,
        "wall_s": round(wall_s, 2),
        "floor_s": round(floor_s, 2),
        "ratio": round(wall_s / floor_s, 3),
        # The messages alone (the floor too, unless the pages take longer).
        "messages_floor_s": round(total / cap * 60 / speed, 2),
        "ratio_to_messages_floor": round(wall_s / (total / cap * 60 / speed), 3),
        "slack_minutes": round(wall_s * speed / 60, 1),
        "targets": {"share_429": share_target, "ratio": ratio_target},
        "met": delivered["lost"] == 0
        and delivered["doubled"] == 0
        and share <= share_target
        and wall_s / floor_s <= ratio_target,
    }


class _services:
    """`replicas` sets of services on one database, like that many processes."""

    def __init__(self, settings: Any, replicas: int) -> None:
        self.contexts = [open_services(settings) for _ in range(replicas)]

    async def __aenter__(self) -> list[Any]:
        return [await context.__aenter__() for context in self.contexts]

    async def __aexit__(self, *exc: Any) -> None:
        for context in reversed(self.contexts):
            await context.__aexit__(*exc)


async def run_all(
    args: argparse.Namespace, world: Any, server_url: str, workdir: Path
) -> list[dict[str, Any]]:
    """Every scenario, one after another, each on accounts of its own."""
    from bench.briefing_run import shuffled_kinds  # the same mix as the latency benchmark

    rng = random.Random(args.seed)
    results = []
    if args.speed:
        print(f"every scenario at {args.speed:g}× Slack's speed")
    for number, (name, cap, told, replicas) in enumerate(SCENARIOS):
        if args.scenarios and str(number + 1) not in args.scenarios.split(","):
            continue
        result = await scenario(
            world=world,
            server_url=server_url,
            workdir=workdir,
            name=name,
            cap=cap,
            told=told,
            replicas=replicas,
            total=args.accounts,
            concurrency=args.concurrency,
            speed=args.speed or args.posts_per_second * 60 / cap,
            stored_languages=args.stored_languages,
            rng=rng,
            prefix=f"L{number}",
            kinds=shuffled_kinds(args.accounts, rng),
        )
        print_scenario(result)
        results.append(result)
    return results


def print_scenario(result: dict[str, Any]) -> None:
    """One scenario's figures."""
    print(
        f"\n{result['name']}: Slack's cap {result['cap_per_minute']}/min, SLACK_POST_RATE={result['slack_post_rate']}, "
        f"{result['replicas']} replica{'s' if result['replicas'] > 1 else ''}, {result['accounts']} accounts"
    )
    print(
        f"  messages {result['messages']} (lost {result['lost']}, doubled {result['doubled']}); "
        f"Slack calls {result['slack_calls']}, answered 429: {result['answered_429']} "
        f"({result['share_429']:.2%}; target ≤ {result['targets']['share_429']:.0%}) {result['refused_by_method']}"
    )
    print(
        f"  wall {result['wall_s']:.1f} s ({result['slack_minutes']} of Slack's minutes at {result['speed']:g}× speed); floor "
        f"{result['floor_s']:.1f} s (messages ÷ cap, {result['users_list_pages']} users.list pages at Tier 2 meanwhile); "
        f"ratio {result['ratio']:.3f} (target ≤ {result['targets']['ratio']}); "
        + ("met" if result["met"] else "MISSED")
        + f"; to the messages alone ({result['messages_floor_s']:.1f} s): {result['ratio_to_messages_floor']:.3f}"
    )
