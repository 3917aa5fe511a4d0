"""How fast the real application acknowledges /gmail-status (Slack wants HTTP 200 within 3 s), and how soon
the ephemeral card follows it.

The bot runs in a child process exactly as `gmail-reconnect serve` runs it, so the load generator and the
fakes of Slack and Google (tests/fakes) do not share its event loop. The database is a throwaway one, seeded
with accounts linked to Slack users: in an embedded cluster in a temp dir, or, when DATABASE_URL is set, a
new database on that server (its user needs CREATEDB), dropped afterwards.

    python bench/slack_ack.py [--requests N] [--concurrency C [C ...]] [--accounts M] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import aiohttp

# tests/ is not an installed package: put the project root first so its fakes and settings can be imported.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    database_server,
    machine,
    percentiles,
    positive,
    postgres_version,
    throwaway_database,
)
from bot.cli.serve import serve
from bot.database import token_codec
from bot.environment import load_settings
from bot.logs import configure_logging
from handlers.slack import EVENTS_PATH
from storage.accounts import Accounts
from storage.crypto import generate_key
from storage.models import Status, TokenGrant
from storage.pool import create_pool
from tests.fakes.google import fake_google_server
from tests.fakes.slack import FORM_CONTENT_TYPE, FakeSlack, fake_slack_server, sign, slash_command_body
from tests.helpers import BASE_ENV, free_port, google_env

log = logging.getLogger("bench.slack_ack")

ACTOR = "bench"
SCOPES = [
    "openid",
    "email",
    "https://www.googleapis.com/auth/gmail.readonly",
    "https://www.googleapis.com/auth/gmail.send",
]
# Six in ten seeded users are healthy, two expired, one has a row without tokens, one has no row at all.
KINDS = ("healthy",) * 6 + ("expired",) * 2 + ("no tokens", "no row")
SLACK_ACK_LIMIT_MS = 3000.0
READY_TIMEOUT_SECONDS = 60.0
CARD_TIMEOUT_SECONDS = 10.0
# Where Bolt's respond() would go if chat.postEphemeral failed: the fake, so nothing leaves the machine.
FALLBACK_METHOD = "bench.response_url"


class BenchError(Exception):
    """The benchmark could not be set up."""


@dataclass
class Command:
    """One /gmail-status sent by `user_id`, in a channel of its own so that its card can be matched."""

    user_id: str
    channel_id: str
    sent_at: float = 0.0
    status: int = 0
    ack_ms: float | None = None


# ---- The database and the application --------------------------------------------------------------------


async def seed(dsn: str, env: dict[str, str], slack: FakeSlack, count: int) -> tuple[dict[str, str], str]:
    """Store `count` Slack users' accounts (a mix of KINDS) and add them to the fake Slack.

    Returns each Slack user's kind, and the PostgreSQL version.
    """
    version = await postgres_version(dsn)
    settings = load_settings(environ=env, env_file=Path(env["GMAIL_RECONNECT_DATA_DIR"]) / "absent.env")
    pool = await create_pool(dsn)
    accounts = Accounts(pool, token_codec(settings))
    expiry = datetime.now(UTC) + timedelta(hours=1)

    async def one(index: int) -> tuple[str, str]:
        user_id, kind = f"UBENCH{index:05d}", KINDS[index % len(KINDS)]
        slack.add_user(user_id, locale="ko-KR" if index % 2 else "en-US")
        if kind == "no row":
            return user_id, kind
        grant = TokenGrant(f"ya29.bench-{index}", f"1//bench-{index}", expiry, SCOPES)
        account = await accounts.store_tokens(
            grant=grant, actor=ACTOR, slack_user_id=user_id, metadata={"email": f"bench{index}@example.com"}
        )
        if kind == "expired":
            await accounts.set_status(account.id, status=Status.EXPIRED, cause="invalid_grant", actor=ACTOR)
        elif kind == "no tokens":
            await accounts.clear_tokens(
                account.id, status=Status.MISSING, cause="No Gmail token is stored.", actor=ACTOR
            )
        return user_id, kind

    try:
        return dict(await asyncio.gather(*(one(index) for index in range(count)))), version
    finally:
        await pool.close()


def run_application(env: dict[str, str]) -> None:
    """The child process: the bot as `gmail-reconnect serve` runs it, with the benchmark's settings."""
    settings = load_settings(environ=env, env_file=Path(env["GMAIL_RECONNECT_DATA_DIR"]) / "absent.env")
    configure_logging(settings.log_level, settings.secret_values())
    serve(settings)


@asynccontextmanager
async def application(env: dict[str, str]) -> AsyncIterator[str]:
    """Start the bot in a child process, yield its URL once /readyz answers, and stop it (SIGTERM) on exit."""
    process = multiprocessing.get_context("spawn").Process(
        target=run_application, args=(env,), name="gmail-reconnect-bench"
    )
    process.start()
    try:
        await until_ready(env["PUBLIC_BASE_URL"], process)
        yield env["PUBLIC_BASE_URL"]
    finally:
        process.terminate()  # aiohttp's run_app turns SIGTERM into a graceful shutdown
        await asyncio.to_thread(process.join, 15)
        if process.is_alive():
            process.kill()
            await asyncio.to_thread(process.join)


async def until_ready(url: str, process: BaseProcess) -> None:
    """Wait until the application answers /readyz with 200; BenchError if it exits or takes too long."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if not process.is_alive():
                raise BenchError(f"the application exited with code {process.exitcode} before it was ready")
            with suppress(aiohttp.ClientConnectionError):
                async with session.get(url + "/readyz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise BenchError(f"the application was not ready after {READY_TIMEOUT_SECONDS:.0f} s")


# ---- The load --------------------------------------------------------------------------------------------


class SlashCommands:
    """Sends signed /gmail-status commands from random seeded users and matches each with its card."""

    def __init__(
        self, session: aiohttp.ClientSession, app_url: str, slack: FakeSlack, users: list[str]
    ) -> None:
        self.session = session
        self.url = app_url + EVENTS_PATH
        self.slack = slack
        self.users = users
        self.secret = BASE_ENV["SLACK_SIGNING_SECRET"]
        self.response_url = slack.base_url + FALLBACK_METHOD
        self._channels = (f"CBENCH{number:07d}" for number in range(10**7))

    async def run(self, *, count: int, concurrency: int, rng: random.Random) -> dict[str, Any]:
        """Send `count` commands, `concurrency` at a time; the figures of the pass."""
        first_call = len(self.slack.calls)
        commands = [Command(rng.choice(self.users), next(self._channels)) for _ in range(count)]
        self.slack.channels.update(command.channel_id for command in commands)
        queue: Iterator[Command] = iter(commands)  # shared: each sender takes the next command

        async def sender() -> None:
            for command in queue:
                await self.send(command)

        started = time.monotonic()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
        cards = await self.cards(first_call, {command.channel_id for command in commands})
        calls = self.slack.calls[first_call:]
        acks = [command.ack_ms for command in commands if command.ack_ms is not None]
        answers = [
            (cards[command.channel_id] - command.sent_at) * 1000
            for command in commands
            if command.channel_id in cards
        ]
        return {
            "concurrency": concurrency,
            "requests": count,
            "elapsed_s": round(elapsed, 3),
            "requests_per_s": round(count / elapsed, 1),
            "ack_ms": percentiles(acks),
            "answer_ms": percentiles(answers),
            "non_200": sum(command.status != 200 for command in commands),
            "acks_over_3s": sum(ack > SLACK_ACK_LIMIT_MS for ack in acks),
            "missing_cards": count - len(answers),
            "fallbacks_to_response_url": sum(call.method == FALLBACK_METHOD for call in calls),
            "users_info_calls": sum(call.method == "users.info" for call in calls),
        }

    async def send(self, command: Command) -> None:
        """POST one signed command and time the response (the ack)."""
        body = slash_command_body(
            user_id=command.user_id, channel_id=command.channel_id, response_url=self.response_url
        )
        headers = sign(body, self.secret, content_type=FORM_CONTENT_TYPE)
        command.sent_at = time.monotonic()
        try:
            async with self.session.post(self.url, data=body, headers=headers) as response:
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            log.warning("The command from %s got no response: %r", command.user_id, error)
            return
        command.status = response.status
        if response.status == 200:
            command.ack_ms = (time.monotonic() - command.sent_at) * 1000

    async def cards(self, first_call: int, channels: set[str]) -> dict[str, float]:
        """When the fake Slack received the chat.postEphemeral of each channel, waiting for the late ones."""
        deadline = time.monotonic() + CARD_TIMEOUT_SECONDS + self.slack.delay
        while True:
            received = {
                str(call.args.get("channel")): call.at
                for call in self.slack.calls[first_call:]
                if call.method == "chat.postEphemeral" and call.status == 200
            }
            if channels <= received.keys() or time.monotonic() > deadline:
                return received
            await asyncio.sleep(0.01)


# ---- The run and its report ------------------------------------------------------------------------------


def application_env(
    *, workdir: Path, dsn: str, slack: FakeSlack, google_uris: dict[str, str]
) -> dict[str, str]:
    """The bot's environment: the tests' base settings, pointed at the fakes and the throwaway database."""
    port = free_port()
    return {
        **BASE_ENV,
        **google_uris,
        "GMAIL_RECONNECT_DATA_DIR": str(workdir / "data"),
        "DATABASE_URL": dsn,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "SLACK_API_URL": slack.base_url,
        "TOKEN_ENCRYPTION_KEYS": generate_key(),  # as in production; also keeps the plain-storage warning out
        "LOG_LEVEL": "WARNING",
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Set everything up, run one pass per concurrency level (each after its warm-up), and return the report."""
    with tempfile.TemporaryDirectory(prefix="gmail-reconnect-bench-") as tmp:
        workdir = Path(tmp)
        async with (
            database_server(workdir) as (server_url, where),
            throwaway_database(server_url) as dsn,
            fake_slack_server(bot_token=BASE_ENV["SLACK_BOT_TOKEN"]) as slack,
            fake_google_server() as google,
        ):
            env = application_env(workdir=workdir, dsn=dsn, slack=slack, google_uris=google_env(google))
            kinds, postgres_version = await seed(dsn, env, slack, args.accounts)
            slack.delay = args.slack_latency_ms / 1000
            rng = random.Random(args.seed)
            passes = []
            async with (
                application(env) as app_url,
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            ):
                load = SlashCommands(session, app_url, slack, sorted(kinds))
                for concurrency in args.concurrency:
                    if args.warmup > 0:
                        await load.run(count=args.warmup, concurrency=concurrency, rng=rng)
                    passes.append(await load.run(count=args.requests, concurrency=concurrency, rng=rng))
    return {
        "machine": machine(postgres_version, ("aiohttp", "slack-bolt", "slack-sdk", "asyncpg")),
        "parameters": {
            "requests": args.requests,
            "warmup": args.warmup,
            "concurrency": args.concurrency,
            "accounts": {kind: sum(k == kind for k in kinds.values()) for kind in dict.fromkeys(KINDS)},
            "slack_latency_ms": args.slack_latency_ms,
            "seed": args.seed,
            "database": where,
        },
        "passes": passes,
    }


def failures(report: dict[str, Any]) -> int:
    """Requests that Slack would have shown as failed, or whose card never came."""
    keys = ("non_200", "acks_over_3s", "missing_cards", "fallbacks_to_response_url")
    return sum(one[key] for one in report["passes"] for key in keys)


def print_report(report: dict[str, Any]) -> None:
    """The report as text."""
    machine, parameters = report["machine"], report["parameters"]
    packages = ", ".join(f"{name} {version}" for name, version in machine["packages"].items())
    print("/gmail-status: time to the ack (HTTP 200) and to the card (chat.postEphemeral at the fake Slack)")
    print(f"machine:    {machine['python']}, {machine['cpus']} CPUs, {machine['platform']}")
    print(f"            PostgreSQL {machine['postgresql']}, {packages}")
    print(f"database:   a throwaway database in {parameters['database']}")
    accounts = ", ".join(f"{count} {kind}" for kind, count in parameters["accounts"].items())
    print(f"accounts:   {sum(parameters['accounts'].values())} Slack users ({accounts})")
    print(
        f"requests:   {parameters['requests']} per pass after {parameters['warmup']} warm-up; "
        f"fake Slack latency {parameters['slack_latency_ms']:g} ms; seed {parameters['seed']}"
    )
    for one in report["passes"]:
        print(
            f"\nconcurrency {one['concurrency']}: {one['requests_per_s']} requests/s, "
            f"users.info calls {one['users_info_calls']}"
        )
        print(f"  {'ms':<12}{'count':>7}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}")
        for label, key in (("ack", "ack_ms"), ("full answer", "answer_ms")):
            figures = one[key]
            cells = "".join(
                f"{figures.get(name, float('nan')):>9.1f}" for name in ("p50", "p90", "p99", "max")
            )
            print(f"  {label:<12}{figures['count']:>7}{cells}")
        print(
            f"  non-200: {one['non_200']}, acks over 3 s: {one['acks_over_3s']}, "
            f"missing cards: {one['missing_cards']}, response_url fallbacks: {one['fallbacks_to_response_url']}"
        )
    print(f"\nfailed: {failures(report)}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=positive, default=500, help="measured requests per pass (500)")
    parser.add_argument(
        "--concurrency", type=positive, nargs="+", default=[1, 16], help="one pass per level (1 16)"
    )
    parser.add_argument("--accounts", type=positive, default=1000, help="seeded Slack users (1000)")
    parser.add_argument("--warmup", type=int, default=20, help="uncounted requests before each pass (20)")
    parser.add_argument(
        "--slack-latency-ms", type=float, default=0.0, help="delay of each fake Slack call (0)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the random choice of users (1)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON to PATH")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 1 if any request failed, 2 if it could not be set up."""
    args = parse_args(argv)
    configure_logging("WARNING", BASE_ENV.values())
    try:
        report = asyncio.run(run(args))
    except BenchError as error:
        print(f"bench/slack_ack.py: {error}", file=sys.stderr)
        return 2
    print_report(report)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if failures(report) else 0


if __name__ == "__main__":
    sys.exit(main())
