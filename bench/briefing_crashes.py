"""What a killed or cut-off `run-briefing` costs: digests posted twice per kill -9, how long until a dead process's
accounts are taken over, and how long a run takes to carry on once the database is back after an outage.

Each trial is a real `python -m bot run-briefing` process against fakes of Google and Slack served over HTTP
by this process (tests/fakes), on a throwaway database (an embedded cluster in a temp dir, or a new database on
DATABASE_URL's server). Every account is healthy, so every account gets exactly one digest when nothing goes
wrong; a digest posted twice is a DM channel with two messages.

Kill trials: the run is killed (SIGKILL) once a random number of digests was posted (the last trial: once the
last digest was posted, as the admin summary is about to be queued), and started again at once; the restart
finishes the run. A kill lands right after Slack took a message, before the process could record it: the worst
moment, so about one digest doubled per kill is what to expect. Measured: the claims the dead process left, its queued digests not sent
yet, its messages in flight (`sending` in the delivery queue), the seconds from the kill until every one of its
claims was taken over and until the restart's drainer posted again, digests posted twice, accounts left without
one, and admin summaries posted (exactly one per run is the target).

Outage trials: the database is cut (tests/helpers.py DatabaseProxy: nothing listens, open connections drop)
once a random number of digests was posted, for --outage seconds, then restored. Measured: seconds from the
restore to the run's next digest, digests posted twice, accounts left without one, admin summaries posted, the
exit code.

    python bench/briefing_crashes.py [--accounts N] [--kills K] [--outages O] [--outage SECONDS]
                                     [--lease SECONDS] [--concurrency C] [--gmail-latency-ms MS]
                                     [--slack-latency-ms MS] [--seed S] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

# tests/ is not an installed package: put the project root first so its fakes and settings can be imported.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import database_server, positive, throwaway_database
from bot.database import token_codec
from bot.environment import load_settings
from storage.accounts import Accounts
from storage.models import Status, TokenGrant
from storage.pool import create_pool
from tests.fakes.google import FakeGoogle, fake_google_server
from tests.fakes.slack import FakeSlack, dm_channel_id, fake_slack_server
from tests.helpers import BASE_ENV, DatabaseProxy, cli_process_env, google_env

SCOPES = ["openid", "email", "https://www.googleapis.com/auth/gmail.readonly"]
ROOT = Path(__file__).resolve().parent.parent
ADMINS = "C0BENCHADMINS"


async def seed(dsn: str, google: FakeGoogle, slack: FakeSlack, total: int, workdir: Path) -> list[str]:
    """`total` healthy accounts, each linked to its own Slack user."""
    settings = load_settings(
        environ={**BASE_ENV, "GMAIL_RECONNECT_DATA_DIR": str(workdir)}, env_file=workdir / "absent.env"
    )
    pool = await create_pool(dsn, min_size=1, max_size=4)
    try:
        accounts = Accounts(pool, token_codec(settings))
        slack_ids = [f"U0CRASH{n:05d}" for n in range(total)]
        for slack_id in slack_ids:
            slack.add_user(slack_id)
            email = f"{slack_id.lower()}@gmail.com"
            google.add_refresh_token(f"1//{slack_id}", email=email, scopes=SCOPES)
            access = google.issue_access_token(email, SCOPES)
            await accounts.store_tokens(
                grant=TokenGrant(access, f"1//{slack_id}", datetime.now(UTC) + timedelta(hours=3), SCOPES),
                actor="bench",
                slack_user_id=slack_id,
                metadata={"email": email},
                status=Status.HEALTHY,
            )
        return slack_ids
    finally:
        await pool.close()


def posts(slack: FakeSlack) -> int:
    return len(slack.calls_to("chat.postMessage"))


def summaries(slack: FakeSlack) -> int:
    return sum(1 for channel, _ in slack.messages if channel == ADMINS)


def delivered(slack: FakeSlack, slack_ids: list[str]) -> tuple[int, int]:
    """Digests posted twice (or more: each copy beyond the first counts) and accounts without one."""
    per_channel = Counter(channel for channel, _ in slack.messages)
    counts = [per_channel.get(dm_channel_id(slack_id), 0) for slack_id in slack_ids]
    return sum(max(0, n - 1) for n in counts), sum(1 for n in counts if n == 0)


async def until(condition: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the run did not get there in time")
        await asyncio.sleep(0.01)


class Bench:
    def __init__(
        self, args: argparse.Namespace, dsn: str, google: FakeGoogle, slack: FakeSlack, workdir: Path
    ):
        self.args, self.dsn, self.google, self.slack, self.workdir = args, dsn, google, slack, workdir
        self.rng = random.Random(args.seed)
        self.slack_ids: list[str] = []

    def env(self, database_url: str) -> dict[str, str]:
        return cli_process_env(
            {
                **BASE_ENV,
                **google_env(self.google),
                "DATABASE_URL": database_url,
                "SLACK_API_URL": self.slack.base_url,
                "GMAIL_RECONNECT_DATA_DIR": str(self.workdir / "data"),
                "BRIEFING_LEASE": f"{self.args.lease}s",
                "BRIEFING_CONCURRENCY": str(self.args.concurrency),
                "LOG_LEVEL": "WARNING",
                "ADMIN_CHANNEL_ID": ADMINS,
            }
        )

    async def start(self, database_url: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "run-briefing",
            env=self.env(database_url),
            cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )

    async def fresh_run(self, conn: asyncpg.Connection) -> int:
        await conn.execute("DELETE FROM briefing_runs")
        self.slack.messages.clear()
        self.slack.calls.clear()
        return self.rng.randint(self.args.accounts // 20, self.args.accounts * 9 // 10)

    async def kill_trial(self, conn: asyncpg.Connection, *, last: bool = False) -> dict[str, Any]:
        kill_at = await self.fresh_run(conn)
        if last:
            kill_at = self.args.accounts
        doomed = await self.start(self.dsn)
        await until(lambda: posts(self.slack) >= kill_at, 120)
        with suppress(ProcessLookupError):  # the last trial's process may just have ended by itself
            doomed.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        await doomed.wait()
        held = await conn.fetch(
            "SELECT account_id, claimed_by FROM briefing_run_items WHERE state = 'claimed'"
        )
        sending = await conn.fetchval("SELECT count(*) FROM slack_outbox WHERE state = 'sending'")
        queued = await conn.fetchval("SELECT count(*) FROM slack_outbox WHERE state = 'queued'")
        posted_before = posts(self.slack)
        restart = await self.start(self.dsn)
        taken_over = handed_over = None
        by = {row["account_id"]: row["claimed_by"] for row in held}
        while (taken_over is None or handed_over is None) and restart.returncode is None:
            rows = await conn.fetch(
                "SELECT account_id, state, claimed_by FROM briefing_run_items WHERE account_id = ANY($1::int[])",
                list(by),
            )
            if taken_over is None and all(
                r["state"] == "done" or r["claimed_by"] != by[r["account_id"]] for r in rows
            ):
                taken_over = time.monotonic() - killed
            if handed_over is None and posts(self.slack) > posted_before:
                handed_over = time.monotonic() - killed  # the restart's drainer sends the queue
            await asyncio.sleep(0.02)
        _, stderr = await restart.communicate()
        doubled, lost = delivered(self.slack, self.slack_ids)
        return {
            "killed_after_posts": kill_at,
            "claims_left": len(held),
            "queued_unsent": queued,
            "in_flight": sending,
            "takeover_seconds": round(taken_over, 2) if taken_over is not None else None,
            "queue_handed_over_seconds": round(handed_over, 2) if handed_over is not None else None,
            "seconds_to_finish": round(time.monotonic() - killed, 2),
            "doubled": doubled,
            "lost": lost,
            "summaries": summaries(self.slack),
            "restart_exit": restart.returncode,
            "restart_stderr": stderr.decode()[-400:] if restart.returncode else "",
        }

    async def outage_trial(self, conn: asyncpg.Connection) -> dict[str, Any]:
        cut_at = await self.fresh_run(conn)
        proxy = DatabaseProxy(self.dsn)
        await proxy.start()
        process = await self.start(proxy.url)
        await until(lambda: posts(self.slack) >= cut_at, 120)
        await proxy.cut()
        await asyncio.sleep(self.args.outage)
        before = posts(self.slack)
        await proxy.start()
        restored = time.monotonic()
        try:
            await until(lambda: posts(self.slack) > before or process.returncode is not None, 120)
            resumed = time.monotonic() - restored if posts(self.slack) > before else None
            _, stderr = await process.communicate()
        finally:
            await proxy.cut()
        doubled, lost = delivered(self.slack, self.slack_ids)
        waits = [line for line in stderr.decode().splitlines() if "Waiting for" in line]
        return {
            "cut_after_posts": cut_at,
            "posted_during_outage": before - cut_at,
            "carried_on_seconds_after_restore": round(resumed, 2) if resumed is not None else None,
            "wait_log_lines": len(waits),
            "doubled": doubled,
            "lost": lost,
            "summaries": summaries(self.slack),
            "exit": process.returncode,
        }

    async def run(self) -> dict[str, Any]:
        self.slack_ids = await seed(self.dsn, self.google, self.slack, self.args.accounts, self.workdir)
        conn = await asyncpg.connect(self.dsn)
        try:
            kills = [
                await self.kill_trial(conn, last=n == self.args.kills - 1 and n > 0)
                for n in range(self.args.kills)
            ]
            outages = [await self.outage_trial(conn) for _ in range(self.args.outages)]
        finally:
            await conn.close()
        return {
            "accounts": self.args.accounts,
            "concurrency": self.args.concurrency,
            "lease_seconds": self.args.lease,
            "gmail_latency_ms": self.args.gmail_latency_ms,
            "slack_latency_ms": self.args.slack_latency_ms,
            "kills": kills,
            "outages": outages,
            "summary": {
                "doubled_per_kill": [k["doubled"] for k in kills],
                "in_flight_per_kill": [k["in_flight"] for k in kills],
                "queue_handed_over_seconds": [k["queue_handed_over_seconds"] for k in kills],
                "max_doubled_per_kill": max((k["doubled"] for k in kills), default=0),
                "lost_after_kills": sum(k["lost"] for k in kills),
                "takeover_seconds": [k["takeover_seconds"] for k in kills],
                "carried_on_seconds": [o["carried_on_seconds_after_restore"] for o in outages],
                "doubled_after_outages": sum(o["doubled"] for o in outages),
                "lost_after_outages": sum(o["lost"] for o in outages),
                "summaries_per_run": [t["summaries"] for t in [*kills, *outages]],
            },
        }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-crashes-") as temp:
        workdir = Path(temp)
        async with (
            database_server(workdir) as (server_url, _),
            throwaway_database(server_url) as dsn,
            fake_google_server() as google,
            fake_slack_server(bot_token=BASE_ENV["SLACK_BOT_TOKEN"]) as slack,
        ):
            slack.channels.add(ADMINS)
            google.gmail_delay = args.gmail_latency_ms / 1000
            slack.delay = args.slack_latency_ms / 1000
            return await Bench(args, dsn, google, slack, workdir).run()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=positive, default=200)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--outages", type=int, default=2)
    parser.add_argument("--outage", type=float, default=5.0, help="seconds the database is out of reach")
    parser.add_argument("--lease", type=positive, default=60, help="BRIEFING_LEASE in seconds")
    parser.add_argument("--concurrency", type=positive, default=8)
    parser.add_argument("--gmail-latency-ms", type=float, default=20.0)
    parser.add_argument("--slack-latency-ms", type=float, default=50.0)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse()
    result = asyncio.run(main(arguments))
    text = json.dumps(result, indent=2)
    print(text)
    if arguments.json is not None:
        arguments.json.write_text(text + "\n")
    worst = result["summary"]
    failed = (
        worst["lost_after_kills"]
        or worst["lost_after_outages"]
        or worst["doubled_after_outages"]
        or any(n != 1 for n in worst["summaries_per_run"])
    )
    sys.exit(1 if failed else 0)
