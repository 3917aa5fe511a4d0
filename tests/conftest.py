"""Shared fixtures: one real PostgreSQL per test session (embedded, or TEST_DATABASE_URL), a fresh database per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from bot.config import Settings, load_settings
from bot.database import token_codec
from storage import embedded
from storage.accounts import Accounts
from storage.migrator import migrate
from storage.pool import connect, create_pool

SEEDS = Path(__file__).parent / "data"
# A fixed, valid configuration for tests; each test overrides what it is about.
BASE_ENV = {
    "SLACK_BOT_TOKEN": "xoxb-test-bot-token",
    "SLACK_SIGNING_SECRET": "test-signing-secret-0123456789",
    "GOOGLE_CLIENT_ID": "test-client.apps.googleusercontent.com",
    "GOOGLE_CLIENT_SECRET": "GOCSPX-test-client-secret",
    "SECRET_KEY": "test-secret-key-that-is-long-enough-0123456789",
}


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


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


@pytest.fixture
async def database_url(postgres_url: str) -> AsyncIterator[str]:
    """A new, empty database for one test, dropped afterwards."""
    name = "test_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield _with_database(postgres_url, name)
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def migrated_url(database_url: str) -> str:
    """A database with every migration applied."""
    conn = await connect(database_url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return database_url


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


async def load_legacy_seed(url: str) -> None:
    """Seed 000's table with its three rows, and seed 001's three NULL-token rows with is_equipped."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute((SEEDS / "legacy_gmail_tokens.sql").read_text())
    finally:
        await conn.close()
