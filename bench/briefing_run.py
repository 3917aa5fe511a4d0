"""How long the 9am briefing run takes over many accounts, how close it comes to the floor that the latency
of Google and Slack sets, and what it costs in CPU and memory.

The run is the real scheduled one (`open_services(settings)`, then `services.briefing.run(Kind.BRIEFING)`, with run
records and claims, BRIEFING_MODE=digest), in this process. Fakes of Google and Slack (tests/fakes), with a
fixed added latency per call, serve from a child process, so their CPU is not counted against the briefing;
the same child seeds the accounts, as the past left them. The database is a throwaway one: in an embedded
cluster in a temp dir, or, when DATABASE_URL is set, a new database on that server (its user needs CREATEDB),
dropped afterwards. PostgreSQL is another process: its CPU is reported on its own (when it can be read from
/proc) and is not part of the briefing's CPU per account.

The accounts, each linked to its own Slack user:
  healthy        85%  a valid access token for another hour; `--messages` unread messages in the last day
  needs refresh   8%  the access token expired; the refresh token works; the same unread messages
  invalid_grant   5%  the access token expired; the user revoked the grant, so the refresh fails
  no tokens       2%  token_data is NULL (a legacy row, never checked)

The floor is the longer of two. The latency floor is what the latency alone allows: each account's sequential
round trips to Google and Slack, times the latencies, summed over the accounts and divided by the concurrency.
The round trips are the calls the fakes received for each kind of account (each call waits for the one before;
the message gets of an account go in one batch request, one round trip); the benchmark's own reading of the
code path (MODEL_SLACK, model_rounds) gives a second latency floor, and any call in which the two differ is
shown. The pacer floor is the time the delivery queue's pacer takes to let the run's messages go when Slack
never says 429: from SLACK_POST_RATE a minute (`--post-rate`; the bot's default unless given), speeding up
with each message Slack takes (bot.slack.pacer.Lane, run on a simulated clock). The fake Slack of this
benchmark has no cap, so at the default rate the pacer sets the morning's length, as it would against a real
workspace. The same
run is then done one account at a time (BRIEFING_CONCURRENCY=1, as the old cron did) over a sample of
accounts in a fresh database, and its time is extrapolated to all of them.

    python bench/briefing_run.py [--accounts N] [--concurrency C] [--google-latency-ms MS]
                                 [--slack-latency-ms MS] [--messages M] [--serial-sample S] [--post-rate R]
                                 [--json PATH]

It exits with 1 when the concurrent run misses a target (ratio to the floor, CPU per account, peak RSS) or
any run goes otherwise than the mix says, and with 2 when it cannot be set up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import multiprocessing
import os
import random
import resource
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.typedefs import Handler

# tests/ is not an installed package: put the project root first so its fakes and settings can be imported.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import database_server, machine, percentiles, positive, throwaway_database
from bench.common import postgres_version as bench_postgres_version
from bot import event_loop
from bot.briefing.run import Kind, Result
from bot.database import token_codec
from bot.environment import load_settings
from bot.google.health import effective_status
from bot.google.scopes import Capability
from bot.logs import MASK, configure_logging
from bot.services import open_services
from bot.slack.client import LIST_PAGE_SIZE, PAGE_WORTH, PRIME_AT_LEAST
from bot.slack.pacer import POST_MESSAGE, Lane
from storage.accounts import DEFAULT_TOKEN_TYPE, Accounts
from storage.crypto import generate_key
from storage.pool import create_pool
from tests.fakes.google import FakeGoogle
from tests.fakes.slack import FakeSlack

log = logging.getLogger("bench.briefing_run")

SCOPES = [
    "openid",
    "email",
    "https://www.googleapis.com/auth/gmail.readonly",
    "https://www.googleapis.com/auth/gmail.send",
]
HEALTHY, REFRESH, INVALID_GRANT, NO_TOKENS = "healthy", "needs refresh", "invalid_grant", "no tokens"
# The share of each kind of account; whatever rounding leaves goes to the healthy ones.
MIX = {HEALTHY: 0.85, REFRESH: 0.08, INVALID_GRANT: 0.05, NO_TOKENS: 0.02}
EXPECTED_RESULT = {
    HEALTHY: Result.DIGEST,
    REFRESH: Result.DIGEST,
    INVALID_GRANT: Result.PROMPTED,
    NO_TOKENS: Result.PROMPTED,
}
TARGET_RATIO = 1.3
TARGET_CPU_MS = 2.0
TARGET_RSS_MB = 250.0
WORLD_TIMEOUT_SECONDS = 300.0
MAX_MESSAGES = 10  # BRIEFING_MAX_MESSAGES, left at its default
# The fakes' names for the calls, by path (Google) or method (Slack).
TOKEN_REFRESH = "google /token (refresh)"
# A refresh of a row that does not know its Google account yet verifies the ID token against Google's
# certificates, to store its `sub`: every seeded row is such a row. The token service keeps the certificates for
# their max-age, so a run fetches them once. The fake answers without added latency: a call of the model, not a
# round.
CERTS = "google /oauth2/v1/certs"
GMAIL_LIST = "gmail messages.list"
GMAIL_BATCH = "gmail batch (messages.get)"
GMAIL_BATCH_PATH = "/batch/gmail/v1"
GMAIL_MESSAGES = "/gmail/v1/users/me/messages"
# The benchmark's reading of the code path: the Slack calls of each kind of account, one after another.
# The digest and the Reconnect Gmail DM are posted with the user's id as the channel (no conversations.open).
# Before that, an account whose user's language is not known asks users.info (see languages_learned).
DIGEST = ("chat.postMessage",)
PROMPT = ("chat.postMessage",)
MODEL_SLACK = {HEALTHY: DIGEST, REFRESH: DIGEST, INVALID_GRANT: PROMPT, NO_TOKENS: PROMPT}
GOOGLE, SLACK = "google", "slack"
USERS_INFO, USERS_LIST = "users.info", "users.list"
# A stored language is fresh for 6 to 8 days, so on a day like any other about a seventh of them have expired.
STORED_LANGUAGES = round(6 / 7, 2)


class BenchError(Exception):
    """The benchmark could not be set up, or the world's child process failed."""


def mix_counts(total: int) -> dict[str, int]:
    """How many accounts of each kind make up `total` (the smaller kinds rounded down)."""
    counts = {kind: math.floor(total * share) for kind, share in MIX.items() if kind != HEALTHY}
    return {HEALTHY: total - sum(counts.values()), **counts}


def shuffled_kinds(total: int, rng: random.Random) -> list[str]:
    """One kind per account, in the proportions of MIX and in random order (the run claims by id)."""
    kinds = [kind for kind, count in mix_counts(total).items() for _ in range(count)]
    rng.shuffle(kinds)
    return kinds


def languages_learned(total: int, stored: set[int]) -> tuple[set[int], int]:
    """The accounts (by index) whose user's language the process that begins the run learns from users.list,
    and the pages it reads: as the benchmark reads SlackUsers.prime. The fake lists the users in the order
    they were seeded, which is the accounts' order; the languages of `stored` are in slack_locales already."""
    unknown = [index for index in range(total) if index not in stored]
    if len(unknown) < PRIME_AT_LEAST:
        return set(), 0
    pages = min(math.ceil(len(unknown) / PAGE_WORTH), math.ceil((unknown[-1] + 1) / LIST_PAGE_SIZE))
    return {index for index in unknown if index < pages * LIST_PAGE_SIZE}, pages


def model_rounds(kind: str, messages: int, stored_languages: float) -> tuple[float, float]:
    """(Google, Slack) sequential round trips of one account of `kind`, as the benchmark reads the code.

    Healthy: Gmail's list, then the message gets in one batch request. A refresh comes first when the
    access token has expired; an invalid_grant ends the Google part there, and an account without tokens
    never reaches Google (the certificates a refresh checks its ID token against, CERTS, are fetched once and come without added latency: not a round). Then users.info, for the share of the accounts whose user's language is not known
    (1 - `stored_languages`), and the Slack calls of MODEL_SLACK.
    """
    fetch = 1 + (1 if messages else 0)
    google = {HEALTHY: fetch, REFRESH: 1 + fetch, INVALID_GRANT: 1, NO_TOKENS: 0}[kind]
    return google, len(MODEL_SLACK[kind]) + 1 - stored_languages


def model_calls(
    counts: dict[str, int], messages: int, languages_known: dict[str, int], list_pages: int
) -> dict[str, int]:
    """The calls the fakes should receive for accounts in these numbers, of which `languages_known[kind]`
    have their user's language known (stored, or learned from `list_pages` pages of users.list), as the
    benchmark reads the code."""
    fetching = counts[HEALTHY] + counts[REFRESH]
    calls = Counter(
        {
            TOKEN_REFRESH: counts[REFRESH] + counts[INVALID_GRANT],
            CERTS: 1 if counts[REFRESH] else 0,
            GMAIL_LIST: fetching,
            GMAIL_BATCH: fetching if messages else 0,
        }
    )
    for kind, count in counts.items():
        for method in MODEL_SLACK[kind]:
            calls[method] += count
        calls[USERS_INFO] += count - languages_known.get(kind, 0)
    calls[USERS_LIST] = list_pages
    return {call: n for call, n in calls.items() if n}


def observed_rounds(counts: dict[str, int], by_kind: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """(Google, Slack) round trips per account of each kind, from the calls the fakes received for it: each
    call is a round of its own, since the code makes them one after another."""
    found = {}
    for kind, count in counts.items():
        if not count:
            continue
        seen = by_kind.get(kind, {})
        found[kind] = (sum(seen.get(GOOGLE, {}).values()) / count, sum(seen.get(SLACK, {}).values()) / count)
    return found


def wire_time(
    counts: dict[str, int], by_kind: dict[str, Any], seconds: Callable[[str, str], float]
) -> dict[str, float]:
    """Seconds on the wire per account of each kind: the answer time (`seconds(service, call)`) of each call
    the fakes received for it."""
    found = {}
    for kind, count in counts.items():
        if not count:
            continue
        seen = by_kind.get(kind, {})
        total = sum(
            n * seconds(service, call)
            for service in (GOOGLE, SLACK)
            for call, n in seen.get(service, {}).items()
        )
        found[kind] = total / count
    return found


def model_wire_time(
    messages: int, latency: dict[str, float], stored_languages: dict[str, float]
) -> dict[str, float]:
    """Seconds on the wire per account of each kind (of which the share `stored_languages[kind]` have their
    language stored), as the benchmark reads the code."""
    found = {}
    for kind in MIX:
        google, slack = model_rounds(kind, messages, stored_languages.get(kind, 0.0))
        found[kind] = google * latency[GOOGLE] + slack * latency[SLACK]
    return found


def floor_seconds(
    counts: dict[str, int], latency: dict[str, float], concurrency: int, beside_s: float = 0.0
) -> float:
    """The shortest time these latencies allow: every account's time on the wire, spread over `concurrency`
    workers (and never less than the slowest account's), or `beside_s` on the wire one call after another
    beside them (the users.list pages, read while the workers handle the accounts), whichever is longer."""
    total = sum(count * latency.get(kind, 0.0) for kind, count in counts.items())
    longest = max((latency.get(kind, 0.0) for kind, count in counts.items() if count), default=0.0)
    return max(beside_s, total / concurrency, longest)


def pacer_seconds(posts: int, per_minute: float) -> float:
    """The shortest time in which the pacer lets `posts` chat.postMessage calls go, Slack never answering 429:
    its lane (bot.slack.pacer.Lane itself) starts at SLACK_POST_RATE and speeds up with each accepted call."""
    lane = Lane(POST_MESSAGE, per_minute / 60)
    seconds = 0.0
    for _ in range(posts - 1):
        seconds += 1 / lane.rate
        lane.on_accepted()
    return seconds


# ---- The world outside the briefing: the fakes, and the accounts as the past left them ---------------------


@dataclass
class Served:
    """One call a fake answered: which fake, what call, for which account (its Slack user id, or ""), its
    HTTP status and how long the fake took (latency included)."""

    service: str
    call: str
    account: str
    status: int
    seconds: float


class TimedFakeGoogle(FakeGoogle):
    """FakeGoogle that also times each call it answers."""

    def __init__(self) -> None:
        super().__init__()
        self.served: list[Served] = []

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await super()._record(request, handler)
            status = response.status
            return response
        finally:
            seconds = time.perf_counter() - started
            account = await self._account(request)
            self.served.append(Served(GOOGLE, google_kind(request.path), account, status, seconds))

    async def _account(self, request: web.Request) -> str:
        """The Slack user id of the account a call was for, from its refresh or access token."""
        if request.path == "/token":
            grant = self._refresh_tokens.get(str((await request.post()).get("refresh_token", "")))
        else:
            _, _, token = request.headers.get("Authorization", "").partition(" ")
            grant = self._access_tokens.get(token.strip(), (None, 0.0))[0]
        return grant.email.split("@")[0].upper() if grant is not None else ""


def google_kind(path: str) -> str:
    """The name of a call to the fake Google, from its path."""
    if path == "/token":
        return TOKEN_REFRESH
    if path == GMAIL_MESSAGES:
        return GMAIL_LIST
    if path == GMAIL_BATCH_PATH:
        return GMAIL_BATCH
    return "google " + path


class TimedFakeSlack(FakeSlack):
    """FakeSlack that also times each call."""

    def __init__(self, bot_token: str) -> None:
        super().__init__(bot_token)
        self.served: list[Served] = []
        self._answered_for = ""

    async def _dispatch(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await super()._dispatch(request)
            status = response.status
            return response
        finally:
            # Set by _answer just before _dispatch returned, with no await in between: this call's.
            account, self._answered_for = self._answered_for, ""
            method = request.match_info["method"]
            self.served.append(Served(SLACK, method, account, status, time.perf_counter() - started))

    def _answer(
        self, method: str, args: dict[str, Any], token: str | None, authorization: str
    ) -> web.Response:
        user = str(args.get("user") or args.get("users") or args.get("channel") or "")
        self._answered_for = "U" + user[1:] if user.startswith("D") else user
        return super()._answer(method, args, token, authorization)


class World:
    """The child process's side: the fakes, and the commands the benchmark sends it."""

    def __init__(self, google: TimedFakeGoogle, slack: TimedFakeSlack) -> None:
        self.google = google
        self.slack = slack
        self.kinds: dict[str, list[str]] = {}  # by the prefix of the seeded accounts' Slack user ids

    async def handle(self, command: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Answer one command of the benchmark."""
        if command == "latency":
            self.google.token_delay = self.google.gmail_delay = payload["google_s"]
            self.slack.delay = payload["slack_s"]
            return {}
        if command == "seed":
            return await self.seed(**payload)
        if command == "reset":
            self.google.served.clear()
            self.slack.served.clear()
            self.google.calls.clear()
            self.slack.calls.clear()
            return {}
        if command == "stats":
            return self.stats()
        if command == "limits":
            self.slack.enforce_limits(**payload)
            return {}
        if command == "deliveries":
            return self.deliveries(**payload)
        raise BenchError(f"the world does not know the command {command!r}")

    async def seed(
        self,
        *,
        dsn: str,
        env: dict[str, str],
        prefix: str,
        kinds: list[str],
        messages: int,
        languages_known: list[int],
    ) -> dict[str, Any]:
        """Give each account its tokens at the fake Google and in the database, and its Slack user; the
        accounts at the indexes `languages_known` also get their user's language stored, as by an earlier run.

        The rows are what the application itself writes (token_data packed, and encrypted, by the
        repository's codec; slack_locales as SlackLocales.put leaves it a day later), inserted in one batch
        because ten thousand store_tokens calls take a while.
        """
        settings = load_settings(environ=env, env_file=Path(env["GMAIL_RECONNECT_DATA_DIR"]) / "absent.env")
        codec = token_codec(settings)
        self.kinds[prefix] = kinds
        # A new workspace for each run: users.list then lists exactly these users, in the accounts' order.
        self.slack.remove_users()
        now = datetime.now(UTC)
        naive = now.replace(tzinfo=None)
        rows: list[tuple[Any, ...]] = []
        languages: list[tuple[str, str, datetime, datetime]] = []
        known = set(languages_known)
        for index, kind in enumerate(kinds):
            slack_id = f"U{prefix}{index:06d}"
            email = f"{slack_id.lower()}@example.com"
            locale = "en-US" if index % 2 else "ko-KR"
            self.slack.add_user(slack_id, email=email, locale=locale)
            if index in known:
                languages.append((slack_id, locale, now - timedelta(days=1), now + timedelta(days=5)))
            metadata = {"slack_user_id": slack_id, "email": email}
            if kind == NO_TOKENS:
                rows.append((slack_id, None, None, metadata, None, "unknown", None, None))
                continue
            refresh_token = "1//0" + secrets.token_urlsafe(48)
            self.google.add_refresh_token(refresh_token, email=email, scopes=SCOPES)
            if kind == HEALTHY:
                access_token = self.google.issue_access_token(email, SCOPES)
                expiry = naive + timedelta(minutes=55)
            else:
                access_token = "ya29." + secrets.token_urlsafe(96)  # long expired: the fake never issued it
                expiry = naive - timedelta(minutes=10)
            if kind == INVALID_GRANT:
                self.google.revoke_refresh_token(refresh_token)
            else:
                for number in range(messages):
                    self.google.add_message(
                        email,
                        sender=f"Sender {number} <sender{number}@example.com>",
                        subject=f"Subject {number} of {slack_id}",
                        snippet="The first line of the message, as Gmail shows it in the list.",
                        age=timedelta(minutes=30 + number),
                    )
            token_data = codec.pack(
                None,
                user_id=slack_id,
                tokens={"access_token": access_token, "refresh_token": refresh_token},
                token_type=DEFAULT_TOKEN_TYPE,
            )
            issued = now - timedelta(days=30)
            rows.append((slack_id, token_data, SCOPES, metadata, expiry, "healthy", now, issued))
        pool = await create_pool(dsn, min_size=1, max_size=2)
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.executemany(
                    """INSERT INTO gmail_tokens (user_id, token_data, scopes, metadata, expiry, status,
                                                 status_changed_at, last_checked_at, refresh_token_issued_at)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)""",
                    rows,
                )
                await conn.executemany(
                    """INSERT INTO slack_locales (slack_user_id, locale, fetched_at, fresh_until)
                       VALUES ($1, $2, $3, $4)""",
                    languages,
                )
            return await self.check(Accounts(pool, codec), prefix, kinds, settings.required_capabilities)
        finally:
            await pool.close()

    async def check(
        self, accounts: Accounts, prefix: str, kinds: list[str], required: frozenset[Capability]
    ) -> dict[str, Any]:
        """Read the first account of each kind back through the repository, as the briefing will."""
        seen: dict[str, Any] = {}
        for index, kind in enumerate(kinds):
            if kind in seen:
                continue
            account = await accounts.find_by_slack_id(f"U{prefix}{index:06d}")
            if account is None:
                raise BenchError(f"the seeded account U{prefix}{index:06d} cannot be found")
            tokens = await accounts.read_tokens(account.id)
            fresh = tokens is not None and tokens.expiry is not None and tokens.expiry > datetime.now(UTC)
            seen[kind] = {
                "status": str(effective_status(account, required)[0]),
                "tokens": "none" if tokens is None else ("fresh" if fresh else "expired"),
            }
        by_status = await accounts.count_by_status()
        return {"checked": seen, "by_status": {str(status): count for status, count in by_status.items()}}

    def stats(self) -> dict[str, Any]:
        """The calls answered since the last reset, by call and by kind of account, and this process's CPU."""
        statuses: dict[str, Counter[int]] = {}
        times: dict[str, list[float]] = {}
        by_kind: dict[str, dict[str, Counter[str]]] = {}
        for call in self.google.served + self.slack.served:
            statuses.setdefault(call.call, Counter())[call.status] += 1
            times.setdefault(call.call, []).append(call.seconds * 1000)
            kind = self.kind_of(call.account)
            by_kind.setdefault(kind, {GOOGLE: Counter(), SLACK: Counter()})[call.service][call.call] += 1
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "calls": {call: sum(counter.values()) for call, counter in statuses.items()},
            "statuses": {call: {str(k): v for k, v in counter.items()} for call, counter in statuses.items()},
            "service_ms": {call: percentiles(values) for call, values in times.items()},
            "by_account_kind": {
                kind: {GOOGLE: dict(calls[GOOGLE]), SLACK: dict(calls[SLACK])}
                for kind, calls in by_kind.items()
            },
            "cpu_s": usage.ru_utime + usage.ru_stime,
        }

    def deliveries(self, *, prefix: str, total: int) -> dict[str, Any]:
        """The accounts' DMs that got no message (lost) and the messages beyond one per DM (doubled)."""
        posted = Counter(channel for channel, _ in self.slack.messages)
        expected = [f"D{prefix}{index:06d}" for index in range(total)]
        return {
            "lost": sum(1 for channel in expected if not posted[channel]),
            "doubled": sum(max(0, posted[channel] - 1) for channel in expected),
            "messages": sum(posted[channel] for channel in expected),
            "refused": dict(self.slack.limits.refused) if self.slack.limits is not None else {},
        }

    def kind_of(self, slack_user_id: str) -> str:
        """The kind of the seeded account with this Slack user id ("other" for anything else)."""
        kinds = self.kinds.get(slack_user_id[1:-6])
        index = slack_user_id[-6:]
        if kinds is None or not index.isdigit() or int(index) >= len(kinds):
            return "other"
        return kinds[int(index)]


def run_world(conn: Connection) -> None:
    """The child process: serve the fakes and answer the benchmark's commands until it says stop."""
    configure_logging("WARNING")
    event_loop.run(_serve_world(conn))


async def _serve_world(conn: Connection) -> None:
    from tests.helpers import BASE_ENV, google_env  # only here: the briefing's process loads no test code

    google, slack = TimedFakeGoogle(), TimedFakeSlack(BASE_ENV["SLACK_BOT_TOKEN"])
    await google.start()
    await slack.start()
    world = World(google, slack)
    try:
        conn.send({**BASE_ENV, **google_env(google), "SLACK_API_URL": slack.base_url})
        while True:
            command, payload = await asyncio.to_thread(conn.recv)
            if command == "stop":
                return
            try:
                conn.send(("ok", await world.handle(command, payload)))
            except Exception as error:
                message = f"{type(error).__name__}: {error}"
                for secret in google.issued_secrets:  # the tokens it issued or was given never leave it
                    message = message.replace(secret, MASK)
                conn.send(("error", message))
    finally:
        await slack.close()
        await google.close()


class WorldProcess:
    """The benchmark's handle on the world's child process."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=run_world, args=(child,), name="briefing-bench-world")
        self.env: dict[str, str] = {}

    async def start(self) -> None:
        """Start the child and wait for the settings that point at its fakes."""
        self.process.start()
        self.env = await self._receive()

    async def call(self, command: str, **payload: Any) -> dict[str, Any]:
        """Send a command and wait for its answer; BenchError if the world failed."""
        self.conn.send((command, payload))
        outcome, answer = await self._receive()
        if outcome != "ok":
            raise BenchError(f"the fakes' process failed: {answer}")
        return dict(answer)

    async def stop(self) -> None:
        """Ask the child to stop; kill it if it does not."""
        if self.process.is_alive():
            with suppress(BrokenPipeError, OSError):
                self.conn.send(("stop", {}))
            await asyncio.to_thread(self.process.join, 10)
        if self.process.is_alive():
            self.process.kill()
            await asyncio.to_thread(self.process.join)

    async def _receive(self) -> Any:
        ready = await asyncio.to_thread(self.conn.poll, WORLD_TIMEOUT_SECONDS)
        if not ready:
            raise BenchError(f"the fakes' process did not answer within {WORLD_TIMEOUT_SECONDS:.0f} s")
        try:
            return self.conn.recv()
        except EOFError:
            raise BenchError(f"the fakes' process exited with code {self.process.exitcode}") from None


@asynccontextmanager
async def world_process() -> AsyncIterator[WorldProcess]:
    """The world's child process, started, and stopped on exit."""
    world = WorldProcess()
    try:
        await world.start()
        yield world
    finally:
        await world.stop()


# ---- The database -----------------------------------------------------------------------------------------


class PostgresCpu:
    """The CPU time of a PostgreSQL server on this machine, read from /proc: the postmaster with its reaped
    children, plus the backends alive now. None where the server's processes cannot be seen."""

    def __init__(self, postmaster: int | None) -> None:
        self.postmaster = postmaster
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    @classmethod
    async def find(cls, dsn: str) -> PostgresCpu:
        """Find the postmaster through a backend's parent, if the server runs on this machine."""
        conn = await asyncpg.connect(dsn)
        try:
            backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
            local = await conn.fetchval(
                "SELECT inet_server_addr() IS NULL OR inet_server_addr() = '127.0.0.1'"
            )
            stat = _proc_stat(backend) if local else None  # while connected: the backend exits with it
        finally:
            await conn.close()
        if stat is None or stat[0] != "postgres":
            return cls(None)
        return cls(int(stat[1][1]))

    def seconds(self) -> float | None:
        """CPU seconds so far, or None."""
        if self.postmaster is None:
            return None
        own = _proc_stat(self.postmaster)
        if own is None:
            return None
        fields = own[1]
        ticks = sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                child = _proc_stat(int(entry.name))
                if child is not None and int(child[1][1]) == self.postmaster:
                    ticks += int(child[1][11]) + int(child[1][12])
        return ticks / self.tick


def _proc_stat(pid: int) -> tuple[str, list[str]] | None:
    """(command name, the fields after it) of /proc/PID/stat, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = text[text.index("(") + 1 : text.rindex(")")]
    return name, text[text.rindex(")") + 2 :].split()


def current_rss_mb() -> float | None:
    """This process's resident memory now (VmRSS), or None where /proc does not say."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


# ---- One measured run -------------------------------------------------------------------------------------


async def measured_run(
    *,
    world: WorldProcess,
    server_url: str,
    workdir: Path,
    total: int,
    concurrency: int,
    messages: int,
    stored_languages: float,
    prefix: str,
    rng: random.Random,
    latencies: tuple[float, float],
    post_rate: int | None,
) -> dict[str, Any]:
    """Seed `total` accounts in a fresh database, run today's briefing over them, and measure it."""
    kinds = shuffled_kinds(total, rng)
    counts = mix_counts(total)
    languages_known = sorted(rng.sample(range(total), round(total * stored_languages)))
    learned, list_pages = languages_learned(total, set(languages_known))
    known_by_kind = dict(Counter(kinds[index] for index in {*languages_known, *learned}))
    known_share = {kind: known_by_kind.get(kind, 0) / count for kind, count in counts.items() if count}
    async with throwaway_database(server_url) as dsn:
        env = {
            **world.env,
            "GMAIL_RECONNECT_DATA_DIR": str(workdir / "data"),
            "DATABASE_URL": dsn,
            "TOKEN_ENCRYPTION_KEYS": generate_key(),
            "BRIEFING_MODE": "digest",
            "BRIEFING_CONCURRENCY": str(concurrency),
            "LOG_LEVEL": "WARNING",
            **({"SLACK_POST_RATE": str(post_rate)} if post_rate else {}),
        }
        started = time.perf_counter()
        seeded = await world.call(
            "seed",
            dsn=dsn,
            env=env,
            prefix=prefix,
            kinds=kinds,
            messages=messages,
            languages_known=languages_known,
        )
        seed_s = time.perf_counter() - started
        settings = load_settings(environ=env, env_file=workdir / "absent.env")
        configure_logging(settings.log_level, settings.secret_values())  # as `gmail-reconnect` does
        postgres = await PostgresCpu.find(dsn)
        await world.call("reset")
        started = time.perf_counter()
        async with open_services(settings) as services:
            briefing = services.briefing
            setup_s = time.perf_counter() - started
            rss_before = current_rss_mb()
            world_before = (await world.call("stats"))["cpu_s"]
            postgres_before = postgres.seconds()
            usage_before = resource.getrusage(resource.RUSAGE_SELF)
            started = time.perf_counter()
            report = await briefing.run(Kind.BRIEFING)
            wall_s = time.perf_counter() - started
            usage_after = resource.getrusage(resource.RUSAGE_SELF)
            postgres_after = postgres.seconds()
            stats = await world.call("stats")
            outcomes = {
                str(row["outcome"]): int(row["n"])
                for row in await briefing.accounts.pool.fetch(
                    "SELECT outcome, count(*) AS n FROM briefing_run_items GROUP BY outcome ORDER BY outcome"
                )
            }
    user_s = usage_after.ru_utime - usage_before.ru_utime
    system_s = usage_after.ru_stime - usage_before.ru_stime
    latency = {GOOGLE: latencies[0], SLACK: latencies[1]}
    by_kind = stats["by_account_kind"]
    wire = wire_time(counts, by_kind, lambda service, call: latency[service])
    listed_s = stats["calls"].get(USERS_LIST, 0) * latency[SLACK]
    latency_floor_s = floor_seconds(counts, wire, concurrency, listed_s)
    posts = stats["calls"].get(POST_MESSAGE, 0)
    paced_s = pacer_seconds(posts, settings.slack_post_rate)
    floor_s = max(latency_floor_s, paced_s)
    model_floor_s = floor_seconds(
        counts, model_wire_time(messages, latency, known_share), concurrency, list_pages * latency[SLACK]
    )

    def mean_answer(service: str, call: str) -> float:
        return float(stats["service_ms"].get(call, {}).get("mean", 0.0)) / 1000

    fakes_floor_s = floor_seconds(
        counts,
        wire_time(counts, by_kind, mean_answer),
        concurrency,
        stats["calls"].get(USERS_LIST, 0) * mean_answer(SLACK, USERS_LIST),
    )
    mismatches = [] if len(report.accounts) == total else [f"{total - len(report.accounts)} not processed"]
    for line in report.accounts:
        slack_id = line.account.slack_user_id or ""
        kind = kinds[int(slack_id[1 + len(prefix) :])]
        if line.result is not EXPECTED_RESULT[kind]:
            mismatches.append(f"{slack_id} ({kind}): {line.result}, {line.detail}")
    expected: Counter[str] = Counter()
    for kind, count in counts.items():
        expected[str(EXPECTED_RESULT[kind])] += count
    model = model_calls(counts, messages, known_by_kind, list_pages)
    observed = stats["calls"]
    postgres_s = (
        None if postgres_before is None or postgres_after is None else postgres_after - postgres_before
    )
    return {
        "accounts": counts,
        "languages_stored": len(languages_known),
        "languages_from_users_list": {"accounts": len(learned), "pages": list_pages},
        "concurrency": concurrency,
        "seed_s": round(seed_s, 2),
        "seeded": seeded,
        "setup_s": round(setup_s, 3),
        "wall_s": round(wall_s, 3),
        "floor_s": round(floor_s, 3),
        "ratio": round(wall_s / floor_s, 3) if floor_s else None,
        "latency_floor_s": round(latency_floor_s, 3),
        "pacer_floor_s": round(paced_s, 3),
        "slack_post_rate": settings.slack_post_rate,
        "floor_by_the_model_s": round(model_floor_s, 3),
        "floor_at_fakes_answer_times_s": round(fakes_floor_s, 3),
        "wire_s_per_account": {kind: round(seconds, 4) for kind, seconds in wire.items()},
        "rounds_per_account": {
            kind: {
                "observed": [round(google, 2), round(slack, 2)],
                "model": [round(n, 2) for n in model_rounds(kind, messages, known_share[kind])],
            }
            for kind, (google, slack) in observed_rounds(counts, by_kind).items()
        },
        "accounts_per_s": round(total / wall_s, 1),
        "cpu": {
            "user_s": round(user_s, 3),
            "system_s": round(system_s, 3),
            "total_s": round(user_s + system_s, 3),
            "ms_per_account": round((user_s + system_s) * 1000 / total, 3),
            "of_one_cpu": round((user_s + system_s) / wall_s, 3),
        },
        "rss_mb": {
            "before_run": rss_before,
            "peak": round(usage_after.ru_maxrss / 1024, 1),  # KiB on Linux
        },
        "postgres_cpu_s": None if postgres_s is None else round(postgres_s, 2),
        "fakes_cpu_s": round(stats["cpu_s"] - world_before, 2),
        "results": {str(result): count for result, count in sorted(report.counts.items())},
        "expected_results": dict(sorted(expected.items())),
        "run_items": outcomes,
        "unexpected_results": len(mismatches),
        "unexpected_examples": mismatches[:5],
        "calls": {
            kind: {"model": model.get(kind, 0), "observed": observed.get(kind, 0)}
            for kind in sorted(model.keys() | observed.keys())
        },
        "call_statuses": stats["statuses"],
        "fake_service_ms": stats["service_ms"],
    }


# ---- The benchmark and its report -------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Set everything up, do the concurrent run and the one-at-a-time sample, and return the report."""
    latencies = (args.google_latency_ms / 1000, args.slack_latency_ms / 1000)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="gmail-reconnect-bench-") as tmp:
        workdir = Path(tmp)
        async with database_server(workdir) as (server_url, where), world_process() as world:
            postgres_version = await bench_postgres_version(server_url)
            await world.call("latency", google_s=latencies[0], slack_s=latencies[1])
            common = {
                "world": world,
                "server_url": server_url,
                "workdir": workdir,
                "messages": args.messages,
                "stored_languages": args.stored_languages,
                "rng": rng,
                "latencies": latencies,
                "post_rate": args.post_rate,
            }
            concurrent = await measured_run(
                total=args.accounts, concurrency=args.concurrency, prefix="B", **common
            )
            serial = None
            if args.serial_sample:
                serial = await measured_run(total=args.serial_sample, concurrency=1, prefix="S", **common)
                serial["extrapolated_wall_s"] = round(
                    serial["wall_s"] * args.accounts / args.serial_sample, 1
                )
                latency = {GOOGLE: latencies[0], SLACK: latencies[1]}
                wire = {
                    **model_wire_time(args.messages, latency, dict.fromkeys(MIX, args.stored_languages)),
                    **serial["wire_s_per_account"],
                }
                serial["extrapolated_floor_s"] = round(floor_seconds(mix_counts(args.accounts), wire, 1), 1)
    return {
        "machine": machine(postgres_version, ("aiohttp", "slack-sdk", "asyncpg", "cryptography")),
        "parameters": {
            "accounts": args.accounts,
            "concurrency": args.concurrency,
            "google_latency_ms": args.google_latency_ms,
            "slack_latency_ms": args.slack_latency_ms,
            "messages": args.messages,
            "stored_languages": args.stored_languages,
            "serial_sample": args.serial_sample,
            "seed": args.seed,
            "database": where,
        },
        "targets": {"ratio": TARGET_RATIO, "cpu_ms_per_account": TARGET_CPU_MS, "peak_rss_mb": TARGET_RSS_MB},
        "concurrent": concurrent,
        "serial": serial,
    }


def misses(report: dict[str, Any]) -> list[str]:
    """The targets the concurrent run missed, and anything that did not go as the mix says."""
    run = report["concurrent"]
    found = []
    if run["ratio"] is not None and run["ratio"] > TARGET_RATIO:
        found.append(f"wall time {run['ratio']:.2f}× the floor (target {TARGET_RATIO}×)")
    if run["cpu"]["ms_per_account"] > TARGET_CPU_MS:
        found.append(f"{run['cpu']['ms_per_account']:.2f} ms of CPU per account (target {TARGET_CPU_MS})")
    if run["rss_mb"]["peak"] > TARGET_RSS_MB:
        found.append(f"peak RSS {run['rss_mb']['peak']:.0f} MB (target {TARGET_RSS_MB:.0f})")
    for one in filter(None, (run, report["serial"])):
        if one["unexpected_results"]:
            found.append(f"{one['unexpected_results']} accounts ended otherwise than their kind says")
    return found


def model_differences(run: dict[str, Any]) -> list[str]:
    """The calls in which the code path differed from the benchmark's reading of it (MODEL_SLACK etc.)."""
    return [
        f"{call}: {calls['observed']} received, {calls['model']} in the model"
        for call, calls in run["calls"].items()
        if calls["model"] != calls["observed"]
    ]


def print_report(report: dict[str, Any]) -> None:
    """The report as text."""
    machine, parameters = report["machine"], report["parameters"]
    packages = ", ".join(f"{name} {version}" for name, version in machine["packages"].items())
    print("The 9am briefing run (Kind.BRIEFING, BRIEFING_MODE=digest) against fake Google and Slack")
    print(f"machine:    {machine['python']}, {machine['cpus']} CPUs, {machine['platform']}")
    print(f"            PostgreSQL {machine['postgresql']}, {packages}")
    print(f"database:   a throwaway database in {parameters['database']}")
    print(
        f"latency:    {parameters['google_latency_ms']:g} ms per Google call, "
        f"{parameters['slack_latency_ms']:g} ms per Slack call; "
        f"{parameters['messages']} unread messages per mailbox; seed {parameters['seed']}"
    )
    for title, run in (("concurrent run", report["concurrent"]), ("one account at a time", report["serial"])):
        if run is None:
            continue
        print_run(title, run)
        if "extrapolated_wall_s" in run:
            print(
                f"  extrapolated to {parameters['accounts']} accounts: {run['extrapolated_wall_s']:.0f} s "
                f"({run['extrapolated_wall_s'] / 60:.1f} min; floor {run['extrapolated_floor_s']:.0f} s), "
                "an extrapolation from the sample, not a measurement"
            )
    concurrent, serial = report["concurrent"], report["serial"]
    if serial is not None:
        print(
            f"\nspeed-up of the concurrent run over one at a time: "
            f"{serial['extrapolated_wall_s'] / concurrent['wall_s']:.1f}× "
            f"({serial['extrapolated_wall_s']:.0f} s extrapolated vs {concurrent['wall_s']:.1f} s measured)"
        )
    differences = [
        f"{title}: {difference}"
        for title, one in (("concurrent", concurrent), ("one at a time", serial))
        if one is not None
        for difference in model_differences(one)
    ]
    if differences:
        print(
            "\nnote:       the code made other calls than the benchmark's reading of it (MODEL_SLACK, "
            "model_rounds) says; the floor counts the calls received, the model's floor is beside it:\n  "
            + "\n  ".join(differences)
        )
    found = misses(report)
    print("\ntargets:    " + ("all met" if not found else "missed: " + "; ".join(found)))


def print_run(title: str, run: dict[str, Any]) -> None:
    """One run's figures."""
    accounts = ", ".join(f"{count} {kind}" for kind, count in run["accounts"].items())
    total = sum(run["accounts"].values())
    cpu, rss = run["cpu"], run["rss_mb"]
    print(f"\n{title}: {total} accounts ({accounts}), BRIEFING_CONCURRENCY={run['concurrency']}")
    listed = run["languages_from_users_list"]
    print(
        f"  languages stored by an earlier run: {run['languages_stored']} of {total} accounts; learned beside the "
        f"run from users.list: {listed['accounts']} ({listed['pages']} page{'' if listed['pages'] == 1 else 's'})"
    )
    print(f"  seeding {run['seed_s']:.1f} s; open_services {run['setup_s'] * 1000:.0f} ms")
    rows = [
        ("wall time", f"{run['wall_s']:.2f} s", f"{run['accounts_per_s']:.0f} accounts/s"),
        (
            "floor",
            f"{run['floor_s']:.2f} s",
            "the longer of the two below",
        ),
        (
            "  latency floor",
            f"{run['latency_floor_s']:.2f} s",
            f"Σ accounts × round trips × latency / concurrency (the model: {run['floor_by_the_model_s']:.2f} s)",
        ),
        (
            "  pacer floor",
            f"{run['pacer_floor_s']:.2f} s",
            f"the chat.postMessage calls at the pacer's pace, from SLACK_POST_RATE={run['slack_post_rate']}/min "
            "up, with no 429",
        ),
        (
            "ratio to the floor",
            "n/a" if run["ratio"] is None else f"{run['ratio']:.3f}",
            f"target ≤ {TARGET_RATIO}",
        ),
        (
            "floor, fakes' times",
            f"{run['floor_at_fakes_answer_times_s']:.2f} s",
            "the same at the fakes' mean answer times (latency plus their own work)",
        ),
        (
            "briefing CPU",
            f"{cpu['total_s']:.2f} s",
            f"{cpu['ms_per_account']:.3f} ms/account (user {cpu['user_s']:.2f} s, system "
            f"{cpu['system_s']:.2f} s; {cpu['of_one_cpu']:.0%} of one CPU); target ≤ {TARGET_CPU_MS} ms",
        ),
        (
            "peak RSS",
            f"{rss['peak']:.1f} MB",
            f"the process's peak so far; {rss['before_run']} MB before the run; target ≤ {TARGET_RSS_MB:.0f} MB",
        ),
        (
            "PostgreSQL CPU",
            "not visible" if run["postgres_cpu_s"] is None else f"{run['postgres_cpu_s']:.2f} s",
            "another process: not in the briefing's CPU",
        ),
        ("fakes' CPU", f"{run['fakes_cpu_s']:.2f} s", "the child process: not in the briefing's CPU"),
    ]
    for label, value, note in rows:
        print(f"  {label:<20}{value:>12}   {note}")
    results = ", ".join(f"{result} {count}" for result, count in run["results"].items())
    expected = ", ".join(f"{result} {count}" for result, count in run["expected_results"].items())
    print(
        f"  results: {results} (the mix says {expected}); "
        f"unexpected for the account's kind: {run['unexpected_results']}"
    )
    for example in run["unexpected_examples"]:
        print(f"    {example}")
    rounds = ", ".join(
        f"{kind} {_number(one['observed'][0])} + {_number(one['observed'][1])}"
        + ("" if one["observed"] == one["model"] else f" (model {one['model'][0]} + {one['model'][1]})")
        for kind, one in run["rounds_per_account"].items()
    )
    print(f"  round trips per account, Google + Slack: {rounds}")
    print(f"  {'calls':<28}{'model':>8}{'observed':>10}{'mean ms':>9}{'p99 ms':>9}   statuses")
    for kind, calls in run["calls"].items():
        service = run["fake_service_ms"].get(kind, {})
        statuses = ", ".join(f"{code}×{n}" for code, n in sorted(run["call_statuses"].get(kind, {}).items()))
        print(
            f"  {kind:<28}{calls['model']:>8}{calls['observed']:>10}"
            f"{service.get('mean', float('nan')):>9.1f}{service.get('p99', float('nan')):>9.1f}   {statuses}"
        )


def _number(value: float) -> str:
    """A figure without a fraction when it has none."""
    return f"{value:g}"


def milliseconds(value: str) -> float:
    """An argparse type: a latency in ms, at least 0."""
    number = float(value)
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"{value} is not a latency of at least 0 ms")
    return number


def natural(value: str) -> int:
    """An argparse type: a whole number of at least 0."""
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value} is not a whole number of at least 0")
    return number


def share(value: str) -> float:
    """argparse type: a number from 0 to 1."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0 <= number <= 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not between 0 and 1")
    return number


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=positive, default=10_000, help="linked accounts (10000)")
    parser.add_argument(
        "--concurrency", type=positive, default=32, help="BRIEFING_CONCURRENCY of the run (32)"
    )
    parser.add_argument(
        "--google-latency-ms", type=milliseconds, default=50.0, help="added per Google call (50)"
    )
    parser.add_argument(
        "--slack-latency-ms", type=milliseconds, default=20.0, help="added per Slack call (20)"
    )
    parser.add_argument(
        "--messages", type=natural, default=3, help="unread messages per mailbox that is fetched (3)"
    )
    parser.add_argument(
        "--stored-languages",
        type=share,
        default=STORED_LANGUAGES,
        help="share of the accounts whose user's language an earlier run stored, still fresh "
        f"({STORED_LANGUAGES}: a day like any other, as about a seventh expire each day; 0: the first run)",
    )
    parser.add_argument(
        "--serial-sample",
        type=natural,
        default=200,
        help="accounts of the one-at-a-time run; 0 leaves it out (200)",
    )
    parser.add_argument(
        "--post-rate",
        type=positive,
        default=None,
        help="SLACK_POST_RATE of the run, messages a minute (the bot's default)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the order of the kinds of account (1)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON to PATH")
    parser.add_argument(
        "--slack-limits",
        action="store_true",
        help="instead: the run against a fake Slack enforcing Slack's rate limits, at caps of 600 (told), 600 "
        "with two replicas, 300 and 1200 a minute (not told); see bench/slack_limits.py",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=0.0,
        help="with --slack-limits: how many times faster the limits' clock runs than Slack's in every scenario "
        "(default: as --posts-per-second makes it)",
    )
    parser.add_argument(
        "--posts-per-second",
        type=float,
        default=50.0,
        help="with --slack-limits: the real posts a second each scenario's cap comes to (50)",
    )
    parser.add_argument(
        "--scenarios", default="", help="with --slack-limits: which scenarios, e.g. 1,3 (all)"
    )
    args = parser.parse_args(argv)
    if args.concurrency > 512:
        parser.error("--concurrency: BRIEFING_CONCURRENCY allows 1 to 512")
    if args.messages > MAX_MESSAGES:
        parser.error(f"--messages: the briefing fetches at most {MAX_MESSAGES} (BRIEFING_MAX_MESSAGES)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 1 if a target was missed or the run went otherwise than the mix says, 2 if it
    could not be set up."""
    args = parse_args(argv)
    configure_logging("WARNING")
    if args.slack_limits:
        return limits_main(args)
    try:
        report = event_loop.run(run(args))
    except BenchError as error:
        print(f"bench/briefing_run.py: {error}", file=sys.stderr)
        return 2
    print_report(report)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if misses(report) else 0


async def run_slack_limits(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The scenarios of bench/slack_limits.py, on the fakes' child process and a throwaway database server."""
    from bench.slack_limits import run_all

    with tempfile.TemporaryDirectory(prefix="gmail-reconnect-bench-") as tmp:
        workdir = Path(tmp)
        async with database_server(workdir) as (server_url, _), world_process() as world:
            await world.call(
                "latency", google_s=args.google_latency_ms / 1000, slack_s=args.slack_latency_ms / 1000
            )
            return await run_all(args, world, server_url, workdir)


def limits_main(args: argparse.Namespace) -> int:
    """--slack-limits: 1 if a scenario missed a target, 2 if it could not be set up."""
    print(
        f"The briefing run against a fake Slack enforcing its rate limits: {args.accounts} accounts, "
        f"BRIEFING_CONCURRENCY={args.concurrency}"
    )
    try:
        results = event_loop.run(run_slack_limits(args))
    except BenchError as error:
        print(f"bench/briefing_run.py: {error}", file=sys.stderr)
        return 2
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(result["met"] for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
