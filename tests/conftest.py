"""Shared fixtures: one real PostgreSQL per test session (embedded, or TEST_DATABASE_URL), a fresh database per
test: empty, or a copy of a template migrated once per session."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import psutil
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.app import create_app
from bot.config import Settings
from bot.database import token_codec
from bot.environment import load_settings
from bot.logs import quiet_noisy_loggers
from storage import embedded
from storage.accounts import Accounts
from storage.migrator import migrate
from storage.pool import connect, create_pool
from tests.fakes.google import FakeGoogle, fake_google_server
from tests.fakes.slack import FakeSlack, fake_slack_server
from tests.helpers import BASE_ENV, free_port, google_env, postgres_servers


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server to create test databases in: TEST_DATABASE_URL, or a throwaway embedded cluster."""
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    server = embedded.start_server(tmp_path_factory.mktemp("pg") / "data", delete_on_exit=True)
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture
def embedded_data_dir(tmp_path: Path) -> Iterator[Path]:
    """A data dir for the embedded PostgreSQL; afterwards its server is stopped and a cluster kept elsewhere removed."""
    data_dir = tmp_path / "data"
    yield data_dir
    pgdata = data_dir / "postgres"
    folder = pgdata.resolve()
    for server in postgres_servers(folder):  # a server this test's commands left behind
        server.send_signal(signal.SIGINT)  # a fast shutdown: a smart one would wait for its clients
        _, running = psutil.wait_procs([server], timeout=30)
        for process in running:
            process.kill()
    if pgdata.is_symlink():
        shutil.rmtree(folder, ignore_errors=True)


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


async def _create_database(postgres_url: str, name: str, *, template: str | None = None) -> None:
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    finally:
        await admin.close()


async def _drop_database(postgres_url: str, name: str) -> None:
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def _create_template(postgres_url: str, name: str) -> None:
    await _create_database(postgres_url, name)
    conn = await connect(_with_database(postgres_url, name))
    try:
        await migrate(conn)
    finally:
        await conn.close()
    # CREATE DATABASE ... TEMPLATE fails while any session is connected to the template: the migration's
    # connection is closed above, and from now on nobody (not even a superuser) may open one.
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def migrated_template(postgres_url: str) -> Iterator[str]:
    """The name of a database migrated once per test session, that every `migrated_url` is copied from.

    Its name is unique to the session, since TEST_DATABASE_URL may be a server other sessions share, and it
    is dropped at the end. It accepts no connections once migrated, so copying it never finds one open.
    Synchronous (each step in its own asyncio.run) because it outlives every test's event loop.
    """
    name = "test_template_" + uuid.uuid4().hex[:12]
    asyncio.run(_create_template(postgres_url, name))
    yield name
    asyncio.run(_drop_database(postgres_url, name))


@pytest.fixture
async def database_url(postgres_url: str) -> AsyncIterator[str]:
    """A new, EMPTY database for one test, dropped afterwards: for the tests of migrations themselves and for
    those that put something (the legacy seed) into it before it is migrated. It is not `migrated_url`."""
    name = "test_" + uuid.uuid4().hex[:12]
    await _create_database(postgres_url, name)
    yield _with_database(postgres_url, name)
    await _drop_database(postgres_url, name)


@pytest.fixture
async def migrated_url(postgres_url: str, migrated_template: str) -> AsyncIterator[str]:
    """A new database for one test with every migration applied, dropped afterwards.

    A copy of `migrated_template` (CREATE DATABASE ... TEMPLATE), which is cheaper than migrating each time.
    A separate database from `database_url`: a test wanting both gets two.
    """
    name = "test_" + uuid.uuid4().hex[:12]
    await _create_database(postgres_url, name, template=migrated_template)
    yield _with_database(postgres_url, name)
    await _drop_database(postgres_url, name)


@pytest.fixture
async def pool(migrated_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a migrated database."""
    pool = await create_pool(migrated_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings from BASE_ENV plus overrides (a value of None removes the variable); no .env is read."""

    def make(**overrides: str | None) -> Settings:
        env = {"GMAIL_RECONNECT_DATA_DIR": str(tmp_path / "data"), **BASE_ENV}
        for name, value in overrides.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return load_settings(environ=env, env_file=tmp_path / "absent.env")

    return make


@pytest.fixture
def accounts(pool: asyncpg.Pool, make_settings: Callable[..., Settings]) -> Accounts:
    """The repository with encryption off."""
    return Accounts(pool, token_codec(make_settings()))


# ---- Secrets never reach a log line -------------------------------------------------------------------------

# Every value a test must never see in a log: the settings' secrets, and whatever the fake Google issued.
_watched_fakes: list[FakeGoogle | FakeSlack] = []


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append((record.name, text))


@pytest.fixture(autouse=True)
def no_secrets_in_logs() -> Iterator[None]:
    """Record every log line of every test at DEBUG, under the production logging policy, and fail the test
    if one holds a secret, a token or an authorization code."""
    root = logging.getLogger()
    recorder, previous_level = _Recorder(), root.level
    root.addHandler(recorder)
    root.setLevel(logging.DEBUG)
    quiet_noisy_loggers()
    _watched_fakes.clear()
    try:
        yield
    finally:
        root.removeHandler(recorder)
        root.setLevel(previous_level)
    secrets = {value for key, value in BASE_ENV.items() if key not in ("GOOGLE_CLIENT_ID", "SLACK_CLIENT_ID")}
    for fake in _watched_fakes:
        secrets |= fake.issued_secrets if isinstance(fake, FakeGoogle) else fake.oidc_issued_secrets
    leaks = [
        name for name, text in recorder.lines for secret in secrets if len(secret) >= 8 and secret in text
    ]
    if leaks:
        pytest.fail(f"a secret, token or code was logged by: {sorted(set(leaks))}")


# ---- Fake Google and the served application --------------------------------------------------------------------


@pytest.fixture
async def fake_google() -> AsyncIterator[FakeGoogle]:
    """The local fake of Google's OAuth, userinfo and Gmail endpoints, watched by the log check."""
    async with fake_google_server() as fake:
        _watched_fakes.append(fake)
        yield fake


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    """The local fake of Slack's Web API, answering the bot token of BASE_ENV, watched by the log check."""
    async with fake_slack_server(bot_token=BASE_ENV["SLACK_BOT_TOKEN"]) as fake:
        _watched_fakes.append(fake)  # the sign-in's codes and tokens
        yield fake


@pytest.fixture
def served_database(request: pytest.FixtureRequest) -> tuple[str, bool]:
    """The database `serve` serves, and whether `serve` must migrate it first.

    A test that asks for `database_url` (itself or through another fixture) gets that database, which `serve`
    migrates at start as it always has, so the test may load the legacy seed into it before. Any other test
    gets `migrated_url`, a copy of the migrated template with nothing left to migrate, so it shares the
    database of `pool` and `accounts` if it asks for those too.
    """
    if "database_url" in request.fixturenames:
        return request.getfixturevalue("database_url"), True
    return request.getfixturevalue("migrated_url"), False


@pytest.fixture
async def serve(
    served_database: tuple[str, bool],
    fake_google: FakeGoogle,
    fake_slack: FakeSlack,
    make_settings: Callable[..., Settings],
) -> AsyncIterator[Callable[..., Awaitable[web.Application]]]:
    """Start the real application over real HTTP (on a free port that PUBLIC_BASE_URL names) and return it.

    It serves `migrated_url`, or, in a test that asks for `database_url`, that database migrated at start, so
    the test may load the legacy seed into `database_url` before (see `served_database`).
    """
    database_url, needs_migrating = served_database
    servers: list[TestServer] = []

    async def start(**env: str | None) -> web.Application:
        if needs_migrating:
            conn = await connect(database_url)
            try:
                await migrate(conn)
            finally:
                await conn.close()
        port = free_port()
        settings = make_settings(
            **{
                "DATABASE_URL": database_url,
                "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
                "SLACK_API_URL": fake_slack.base_url,
                "SLACK_OIDC_AUTHORIZE_URL": fake_slack.oidc_authorize_url,
                "SLACK_OIDC_JWKS_URL": fake_slack.oidc_jwks_url,
                **google_env(fake_google),
                **env,
            }
        )
        server = TestServer(create_app(settings), host="127.0.0.1", port=port)
        await server.start_server()
        servers.append(server)
        return server.app

    yield start
    for server in servers:
        await closed_in_time(server)


# Longer than aiohttp's own shutdown_timeout (60 s), after which it cancels the handlers still running.
SHUTDOWN_WATCHDOG_SECONDS = 90


async def closed_in_time(server: TestServer) -> None:
    """Close the app over its server; a shutdown that hangs fails the test with what every task waits on,
    rather than hang the suite."""
    closing = asyncio.ensure_future(server.close())
    done, _ = await asyncio.wait({closing}, timeout=SHUTDOWN_WATCHDOG_SECONDS)
    if closing in done:
        closing.result()
        return
    stacks = "\n".join(
        f"{task.get_name()}: {task.get_coro()!r}\n"
        + "".join(f"    {f.f_code.co_filename}:{f.f_lineno} {f.f_code.co_name}\n" for f in task.get_stack())
        for task in asyncio.all_tasks()
    )
    closing.cancel()
    pytest.fail(f"The app did not shut down within {SHUTDOWN_WATCHDOG_SECONDS} s. Its tasks:\n{stacks}")


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    """A browser: keeps cookies (also for 127.0.0.1) and follows redirects."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session
