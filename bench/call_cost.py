"""What the delivery queue's two calls cost this process in CPU: one chat.postMessage exchange over aiohttp, and
one take of the queue (the statement that records the last burst and takes the next), each done back to back and
in bursts at Slack's pace.

At Slack's pace a morning's messages go in bursts (bot.slack.pacer.POST_BURST at a time, about 20 a second) and
the process sleeps between them; most of the briefing's CPU per account (bench/briefing_run.py) is then the
libraries' own work per call, aiohttp's per HTTP exchange and asyncpg's per statement, done with cold caches after
each sleep (bench/wake_cost.py shows the effect on plain Python work). This measures those calls as the queue makes
them, on the bot's event loop (uvloop's where installed):
- the exchange: a digest-sized JSON POST with the bot token, answered as Slack answers (a small JSON body) by a
  local server in a child process (its CPU is not counted);
- the take: storage.outbox.SlackOutbox.take on a throwaway migrated database (embedded PostgreSQL, or a new
  database on DATABASE_URL's server), taking a burst of sealed digests and recording the burst before it as sent.

    python bench/call_cost.py [--rate R] [--bursts N] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

# bench/ is not an installed package: put the project root first so that bench.common can be imported.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from aiohttp import web

from bench.common import database_server, positive, postgres_version, throwaway_database
from bot import event_loop
from bot.google.gmail import MailSummary
from bot.slack.blocks.digest import digest_blocks
from bot.slack.pacer import POST_BURST
from storage.crypto import TokenCipher
from storage.outbox import DIGEST, Accepted, Message, Outgoing, SlackOutbox
from storage.pool import connect

BURSTS = (1, 4, 8, 16, 32)
WARM_UP = 10  # bursts before each measurement


def digest_message(number: int) -> Message:
    """A digest of three unread messages, as a morning queues it for one user."""
    mail = [
        MailSummary(
            f"m{number}-{item}",
            f"Sender {item} <sender{item}@example.com>",
            f"Quarterly planning, item {item}: the numbers for next week's review",
            "A snippet as Gmail gives it, about a hundred characters of the message's first lines, cut short",
            datetime.now(UTC),
        )
        for item in range(3)
    ]
    blocks, fallback = digest_blocks(mail, 3, "ko")
    return Message(f"U{number:08d}", fallback, blocks)


def answer_posts(port_to: Connection) -> None:
    """The child process: answer every POST as chat.postMessage answers it, until killed."""

    async def post_message(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(
            {"ok": True, "channel": "D" + body["channel"][1:], "ts": "1700000000.000100"}
        )

    async def serve() -> None:
        app = web.Application()
        app.router.add_post("/api/chat.postMessage", post_message)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_to.send(runner.addresses[0][1])
        await asyncio.Event().wait()

    event_loop.run(serve())


async def cpu_per_burst(burst: Callable[[], Awaitable[object]], *, every: float, bursts: int) -> float:
    """CPU seconds per `burst()`, one every `every` seconds (0: back to back)."""
    for _ in range(WARM_UP):
        await burst()
    started = time.process_time()
    for _ in range(bursts):
        await burst()
        if every:
            await asyncio.sleep(every)
    return (time.process_time() - started) / bursts


async def exchanges(url: str, rate: float, bursts: int) -> list[dict[str, Any]]:
    message = digest_message(1)
    body = json.dumps({"channel": message.channel, "text": message.text, "blocks": message.blocks}).encode()
    headers = {"Content-Type": "application/json;charset=utf-8", "Authorization": "Bearer xoxb-bench"}
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=64)) as session:

        async def post() -> bytes:
            async with session.post(url, data=body, headers=headers) as response:
                return await response.read()

        def posts(size: int) -> Callable[[], Awaitable[object]]:
            return lambda: asyncio.gather(*(post() for _ in range(size)))

        return await _rows(posts, rate, bursts)


async def takes(dsn: str, rate: float, bursts: int) -> list[dict[str, Any]]:
    """The take at each burst size, on one connection, as the drainer holds its lock connection."""
    cipher = TokenCipher([os.urandom(32)])
    conn = await connect(dsn)
    try:
        outbox = SlackOutbox(pool=None, cipher=cipher)  # take and seal need no pool
        # Each size takes its bursts twice (paced, then back to back), after its warm-up each time.
        needed = sum(size * 2 * (WARM_UP + bursts) for size in BURSTS)
        # A sealed message is bound to its account: each row is sealed for its own.
        await conn.executemany(
            "INSERT INTO slack_outbox (account_id, kind, channel, message) VALUES ($1, 'digest', $2, $3)",
            [(n, *_sealed(outbox, n)) for n in range(needed)],
        )
        last: list[Outgoing] = []

        def takes_of(size: int) -> Callable[[], Awaitable[object]]:
            async def take() -> object:
                nonlocal last
                accepted = [Accepted(message, "1700000000.000100") for message in last]
                last = await outbox.take(conn, count=size, accepted=accepted)
                return last

            return take

        return await _rows(takes_of, rate, bursts)
    finally:
        await conn.close()


def _sealed(outbox: SlackOutbox, account_id: int) -> tuple[str, str]:
    message = digest_message(account_id)
    return message.channel, outbox.seal(message, kind=DIGEST, run_id=None, account_id=account_id)


async def _rows(
    burst_of: Callable[[int], Callable[[], Awaitable[object]]], rate: float, bursts: int
) -> list[dict[str, Any]]:
    """The CPU per message of `burst_of(size)()`, the messages of one burst, at each size: at `rate` messages a
    second (one burst every size / rate seconds) and back to back."""
    rows = []
    for size in BURSTS:
        paced = await cpu_per_burst(burst_of(size), every=size / rate, bursts=bursts) / size
        busy = await cpu_per_burst(burst_of(size), every=0, bursts=bursts) / size
        rows.append(
            {
                "burst": size,
                "paced_us": round(paced * 1e6, 1),
                "back_to_back_us": round(busy * 1e6, 1),
                "ratio": round(paced / busy, 2),
            }
        )
    return rows


async def measure(args: argparse.Namespace, url: str) -> dict[str, Any]:
    posts = await exchanges(url, args.rate, args.bursts)
    with tempfile.TemporaryDirectory(prefix="call-cost-") as workdir:
        async with (
            database_server(Path(workdir)) as (server_url, where),
            throwaway_database(server_url) as dsn,
        ):
            version = await postgres_version(dsn)
            taken = await takes(dsn, args.rate, args.bursts)
    return {"rate": args.rate, "postgresql": version, "database": where, "post": posts, "take": taken}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=positive, default=20, help="messages a second at Slack's pace (20)")
    parser.add_argument("--bursts", type=positive, default=40, help="bursts measured per size (40)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON to PATH")
    args = parser.parse_args(argv)
    context = multiprocessing.get_context("spawn")
    port_from, port_to = context.Pipe(duplex=False)
    server = context.Process(target=answer_posts, args=(port_to,), name="call-cost-slack", daemon=True)
    server.start()
    try:
        if not port_from.poll(30):
            print("call_cost: the local Slack server did not start", file=sys.stderr)
            return 2
        url = f"http://127.0.0.1:{port_from.recv()}/api/chat.postMessage"
        figures = event_loop.run(measure(args, url))
    finally:
        server.kill()
        server.join()
    print(
        f"CPU per message of the delivery queue's calls, at {args.rate} messages a second in bursts, and back to back"
    )
    print(f"(PostgreSQL {figures['postgresql']}, {figures['database']}; the pacer's burst is {POST_BURST})")
    print("  burst   post: paced  back to back   ratio   take: paced  back to back   ratio")
    for post, take in zip(figures["post"], figures["take"], strict=True):
        print(
            f"  {post['burst']:5d}   {post['paced_us']:8.1f} µs   {post['back_to_back_us']:8.1f} µs   "
            f"{post['ratio']:4.2f}×   {take['paced_us']:8.1f} µs   {take['back_to_back_us']:8.1f} µs   "
            f"{take['ratio']:4.2f}×"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
