"""What several test modules share: the test settings, the legacy seed, and ways to talk to the served
application as Slack, a browser, another service or the command line would."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import aiohttp
import asyncpg
import psutil
from aiohttp import web
from multidict import CIMultiDictProxy
from prometheus_client.parser import text_string_to_metric_families

from bot.appkeys import SERVICES
from storage.accounts import Accounts
from storage.crypto import TokenCipher, generate_key, parse_keys
from storage.models import Account, Status, TokenGrant
from storage.token_data import TokenCodec
from tests.fakes.google import FakeGoogle
from tests.fakes.slack import FORM_CONTENT_TYPE, FakeSlack, dm_channel_id, sign

SEEDS = Path(__file__).parent / "data"


# A fixed, valid configuration for tests; each test overrides what it is about.
BASE_ENV = {
    "SLACK_BOT_TOKEN": "xoxb-test-bot-token",
    "SLACK_SIGNING_SECRET": "test-signing-secret-0123456789",
    "GOOGLE_CLIENT_ID": "test-client.apps.googleusercontent.com",
    "GOOGLE_CLIENT_SECRET": "GOCSPX-test-client-secret",
    "SECRET_KEY": "test-secret-key-that-is-long-enough-0123456789",
    # Sign in with Slack's credentials, as the fake Slack knows them by default.
    "SLACK_CLIENT_ID": "fake-slack-client-id",
    "SLACK_CLIENT_SECRET": "fake-slack-client-secret",
    # Scheduled runs would fire in whichever test happens to be running at 08:00 or 09:00 KST.
    "PREFLIGHT_TIME": "off",
    "BRIEFING_TIME": "off",
    # Else every run of a test that runs after 11:00 KST would drop its digests as too late for the day.
    "BRIEFING_DEADLINE": "off",
}


async def load_legacy_seed(url: str) -> None:
    """The legacy gmail_tokens table with its three imported rows, and three NULL-token rows with is_equipped."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute((SEEDS / "legacy_gmail_tokens.sql").read_text())
    finally:
        await conn.close()


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def cli_process_env(env: dict[str, str]) -> dict[str, str]:
    """The environment of a CLI process: this one's, without the developer's Slack, Google or database, plus `env`."""
    inherited = {
        k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "GOOGLE_", "DATABASE_URL"))
    }
    return {**inherited, **env}


def run_cli(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `python -m bot ARGS` to its end, as an admin would."""
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        env=cli_process_env(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def postgres_servers(folder: Path) -> list[psutil.Process]:
    """The PostgreSQL servers running (not zombies) on the cluster in `folder`."""
    return [
        process
        for process in psutil.process_iter(["name", "cmdline", "status"])
        if process.info["name"] == "postgres"
        and process.info["status"] != psutil.STATUS_ZOMBIE
        and str(folder.resolve()) in (process.info["cmdline"] or [])
    ]


def wait_until_stopped(folder: Path, seconds: float = 30) -> list[psutil.Process]:
    """Wait (at most `seconds`) until no server runs on the cluster in `folder`; the ones still running."""
    deadline = time.monotonic() + seconds
    while (running := postgres_servers(folder)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return running


def google_env(fake: FakeGoogle) -> dict[str, str]:
    """Settings that point every Google endpoint at the fake."""
    return {
        "GOOGLE_CLIENT_ID": fake.client_id,
        "GOOGLE_CLIENT_SECRET": fake.client_secret,
        "GOOGLE_AUTH_URI": fake.auth_uri,
        "GOOGLE_TOKEN_URI": fake.token_uri,
        "GOOGLE_REVOKE_URI": fake.revoke_uri,
        "GOOGLE_USERINFO_URI": fake.userinfo_uri,
        "GOOGLE_CERTS_URI": fake.certs_uri,
        "GMAIL_API_URL": fake.gmail_api_url,
    }


Serve = Callable[..., Awaitable[web.Application]]


SECRET = BASE_ENV["SLACK_SIGNING_SECRET"]


READONLY = "https://www.googleapis.com/auth/gmail.readonly"


SEND = "https://www.googleapis.com/auth/gmail.send"


async def post(
    app: web.Application, body: bytes, *, content_type: str = FORM_CONTENT_TYPE, **sign_args: Any
) -> tuple[int, str]:
    """POST a body to /slack/events as Slack would (signed), and return the status and body."""
    headers = sign(
        body, sign_args.pop("secret", SECRET), sign_args.pop("timestamp", None), content_type=content_type
    )
    url = app[SERVICES].links.public_base_url + "/slack/events"
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as response:
        return response.status, await response.text()


async def eventually(condition: Callable[[], bool], seconds: float = 5) -> None:
    """Wait until `condition()` holds: the work after an ack runs in the background."""
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition did not come true in time")


async def settled(fake: FakeSlack, method: str, count: int = 1) -> list[Any]:
    """The calls to `method` once there are `count` of them."""
    await eventually(lambda: len(fake.calls_to(method)) >= count)
    return fake.calls_to(method)


def block_text(blocks: list[dict[str, Any]]) -> str:
    """Every text in a list of blocks, joined, to search in."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("text"), str):
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(blocks)
    return "\n".join(found)


# Slack markup as someone would plant it in data the bot shows (an email, a name, an error text, a subject): a
# ping of the whole channel, a link disguised as "click", a mention, and an ampersand and tag to be escaped.
MARKUP = "<!channel> <https://evil.example|click> <@U0ATTACK> & <b>"
MARKUP_ESCAPED = "&lt;!channel&gt; &lt;https://evil.example|click&gt; &lt;@U0ATTACK&gt; &amp; &lt;b&gt;"
_MARKUP_PIECES = ("<!channel>", "<https://evil", "<@u0attack>", "<b>")  # compared in lower case


def raw_markup(payload: Any) -> list[str]:
    """The pieces of MARKUP that stand unescaped in any text of a Slack payload: a message (its text and
    blocks), a list of blocks, a view, or a response URL post; none when everything was escaped."""
    shown = block_text([payload]).lower()
    return [piece for piece in _MARKUP_PIECES if piece in shown]


def buttons(blocks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["action_id"]: e for b in blocks if b["type"] == "actions" for e in b["elements"]}


async def visit(browser: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, str, str]:
    """Open a URL and follow redirects like a browser: status, page text and final URL."""
    async with browser.get(url, headers=headers) as response:
        return response.status, await response.text(), str(response.url)


SCOPES = ["openid", "email", READONLY, SEND]


async def healthy(
    app: web.Application,
    google: FakeGoogle,
    slack_id: str,
    *,
    expiring: bool = False,
    email: str | None = None,
    expiry_known: bool = True,
) -> Account:
    """A linked account whose refresh token the fake Google honours; `expiring` makes it need a refresh, and
    without `expiry_known` its access token has no known expiry, so using it asks Google for a new one first."""
    email = email or f"{slack_id.lower()}@gmail.com"
    google.add_refresh_token(f"1//{slack_id}", email=email, scopes=SCOPES)
    access = google.issue_access_token(email, SCOPES)
    expiry = datetime.now(UTC) + (timedelta(minutes=1) if expiring else timedelta(minutes=50))
    return await app[SERVICES].accounts.store_tokens(
        grant=TokenGrant(access, f"1//{slack_id}", expiry if expiry_known else None, SCOPES),
        actor="test",
        slack_user_id=slack_id,
        metadata={"email": email},
        status=Status.HEALTHY,
    )


def dms(fake: FakeSlack, slack_id: str) -> list[dict[str, Any]]:
    channel = dm_channel_id(slack_id)
    return [message for (where, _), message in sorted(fake.messages.items()) if where == channel]


async def run_async(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """Run the CLI without blocking the event loop, on which the tests' fake Google and Slack answer."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    return process.returncode or 0, stdout.decode(), stderr.decode()


@dataclass(frozen=True)
class Reply:
    """One answer of the application."""

    status: int
    headers: CIMultiDictProxy[str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


async def call(
    app: web.Application,
    method: str,
    path: str,
    *,
    key: str | None = None,
    authorization: str | None = None,
    body: Any = None,
    data: bytes | None = None,
) -> Reply:
    """Call the application over HTTP, with `Authorization: Bearer key` (or the raw `authorization`)."""
    headers: dict[str, str] = {}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if authorization is not None:
        headers["Authorization"] = authorization
    if data is not None:
        headers["Content-Type"] = "application/json"
    url = app[SERVICES].links.public_base_url + path
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, headers=headers, json=body, data=data) as response,
    ):
        return Reply(response.status, response.headers, await response.text())


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape_metrics(app: web.Application) -> Samples:
    """GET /metrics, parsed: the value of every sample by its name and labels."""
    reply = await call(app, "GET", "/metrics")
    assert reply.status == 200, reply.text
    assert reply.headers["Content-Type"].startswith("text/plain")
    assert reply.headers["Cache-Control"] == "no-store"
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def metric(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value, by its name and labels."""
    return samples[name, frozenset(labels.items())]


async def account_by_user_id(accounts: Accounts, user_id: str) -> Account | None:
    """The account on the gmail_tokens row with this user_id, if there is one."""
    return next((account for account in await accounts.list() if account.user_id == user_id), None)


def run(*args: str, env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the CLI (`python -m bot ARGS`) in `cwd` with only `env` of the Slack, Google and database settings."""
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "GOOGLE_", "DATABASE_URL"))
    }
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        env=full_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class DatabaseProxy:
    """A TCP port in front of the test database that a test can cut (nothing listens, open connections drop)
    and restore: a database outage at the network edge, without stopping the server other tests use."""

    def __init__(self, url: str) -> None:
        self.url_to = urlsplit(url)
        query = dict(parse_qsl(self.url_to.query))
        # The embedded cluster listens on a Unix socket only (its URL names the socket's folder as ?host=).
        self.socket = None
        if self.url_to.hostname is None and query.get("host", "").startswith("/"):
            self.socket = str(sorted(Path(query["host"]).glob(".s.PGSQL.*[0-9]"))[0])
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        """The database's URL through the proxy."""
        netloc = f"{self.url_to.username or 'postgres'}@127.0.0.1:{self.port}"
        return urlunsplit(("postgresql", netloc, self.url_to.path, "", ""))

    async def start(self) -> None:
        """Listen (again, on the same port once it has one)."""
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """The outage: refuse new connections and drop the open ones."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    async def _connect_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.socket is not None:
            return await asyncio.open_unix_connection(self.socket)
        return await asyncio.open_connection(self.url_to.hostname, self.url_to.port or 5432)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await self._connect_upstream()
        self._open |= {writer, upstream_writer}

        async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass  # the other side went away, or the test cut the line
            finally:
                sink.transport.abort()
                self._open.discard(sink)

        await asyncio.gather(copy(reader, upstream_writer), copy(upstream_reader, writer))


def owner_link(app: web.Application, fake_slack: FakeSlack, slack_user_id: str, **claims: Any) -> str:
    """A fresh Reconnect Gmail link for a Slack user, opened by its owner: the fake Slack's browser is signed in
    as that user (in the link's workspace, when it names one)."""
    team = claims.get("slack_team_id")
    fake_slack.sign_in(slack_user_id, **({"team_id": team} if team else {}))
    url: str = app[SERVICES].links.new_url(slack_user_id, **claims)
    return url


async def follow_until(browser: aiohttp.ClientSession, url: str, arrived: Callable[[str], bool]) -> str:
    """Follow redirects one at a time, as a browser would, to the first URL for which `arrived` holds; that URL
    is returned, not opened."""
    for _ in range(10):
        if arrived(url):
            return url
        async with browser.get(url, allow_redirects=False) as response:
            assert response.status == 302, (url, response.status, await response.text())
            url = response.headers["Location"]
    raise AssertionError(f"no redirect led where wanted from {url}")


# ---- Rows whose tokens cannot be decrypted ------------------------------------------------------------------

SERVING_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="  # base64 of 32 bytes: the key the app is given
# Each way a row becomes unreadable: the app's TOKEN_ENCRYPTION_KEYS, and words its reason must hold.
UNREADABLE_CASES = {
    "wrong_key": (SERVING_KEY, "encrypted with a key that TOKEN_ENCRYPTION_KEYS does not hold (key id"),
    "missing_key": (None, "is encrypted (key id"),
    "swapped_rows": (SERVING_KEY, "its ciphertext belongs to another row or field"),
    "swapped_fields": (SERVING_KEY, "holds the ciphertext made for the refresh_token"),
}


async def make_unreadable(pool: asyncpg.Pool, case: str, user_id: str, *, other_user_id: str) -> None:
    """Make the tokens of row `user_id` undecryptable for an app with UNREADABLE_CASES[case]'s keys: under a key
    the app does not hold, or with ciphertexts swapped with row `other_user_id` (both encrypted by the app) or
    between the row's own two fields."""
    if case in ("wrong_key", "missing_key"):
        codec = TokenCodec(TokenCipher(parse_keys(generate_key())))
        lost = {"access_token": "ya29.lost", "refresh_token": "1//lost"}
        data = codec.pack(None, user_id=user_id, tokens=lost, token_type="Bearer")
        await pool.execute("UPDATE gmail_tokens SET token_data = $2 WHERE user_id = $1", user_id, data)
    elif case == "swapped_rows":
        await pool.execute(
            """UPDATE gmail_tokens AS g SET token_data = o.token_data FROM gmail_tokens AS o
                WHERE (g.user_id, o.user_id) IN (($1, $2), ($2, $1))""",
            user_id,
            other_user_id,
        )
    else:
        await pool.execute(
            """UPDATE gmail_tokens SET token_data = jsonb_set(token_data, '{encrypted}', jsonb_build_object(
                   'access_token', token_data->'encrypted'->'refresh_token',
                   'refresh_token', token_data->'encrypted'->'access_token'))
                WHERE user_id = $1""",
            user_id,
        )


async def delivered(app: web.Application, seconds: float = 30) -> None:
    """Wait until the Slack delivery queue has sent (or dropped, or failed) everything in it."""
    for _ in range(int(seconds / 0.01)):
        if (await app[SERVICES].outbox.depth()).open == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the Slack delivery queue was not drained in time")
