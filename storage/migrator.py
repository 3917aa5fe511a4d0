"""Numbered plain-SQL migrations, applied in order under an advisory lock and recorded in schema_migrations."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from storage.errors import MigrationError, WrongDatabaseError
from storage.locks import lock_migrations, unlock_migrations

log = logging.getLogger(__name__)

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_HISTORY = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    """One SQL file of storage/migrations."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file, to notice a migration edited after it was applied."""
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def __str__(self) -> str:
        return f"{self.version:04d}_{self.name}"


@dataclass(frozen=True)
class DatabaseShape:
    """What a database holds before any migration: enough to tell ours, a legacy one and a wrong one apart."""

    name: str
    has_gmail_tokens: bool
    has_schema_migrations: bool

    @property
    def is_empty_for_us(self) -> bool:
        """True for a database with neither gmail_tokens nor our migration history."""
        return not (self.has_gmail_tokens or self.has_schema_migrations)


def load_migrations() -> list[Migration]:
    """Every migration shipped with the package, in version order."""
    found = []
    for entry in resources.files("storage").joinpath("migrations").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version number: {versions}")
    return found


async def inspect_database(conn: asyncpg.Connection) -> DatabaseShape:
    """Which of our tables the connected database has."""
    row = await conn.fetchrow(
        """SELECT current_database() AS name,
                  to_regclass('gmail_tokens') IS NOT NULL AS has_gmail_tokens,
                  to_regclass('schema_migrations') IS NOT NULL AS has_schema_migrations"""
    )
    return DatabaseShape(row["name"], row["has_gmail_tokens"], row["has_schema_migrations"])


async def applied_versions(conn: asyncpg.Connection) -> dict[int, str]:
    """version → checksum of the migrations recorded in the database ({} before the first one)."""
    if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
        return {}
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    return {row["version"]: row["checksum"] for row in rows}


async def pending_migrations(conn: asyncpg.Connection) -> list[Migration]:
    """The shipped migrations the database has not had yet."""
    applied = await applied_versions(conn)
    return [migration for migration in load_migrations() if migration.version not in applied]


def refuse_wrong_database(shape: DatabaseShape, where: str) -> None:
    """Raise WrongDatabaseError for a database with no gmail_tokens that was not set up by us."""
    if shape.is_empty_for_us:
        raise WrongDatabaseError(
            f"{where} has no gmail_tokens table. Is DATABASE_URL pointing at the right database? "
            "If the tokens live in another database (e.g. main_db rather than auth_db), fix DATABASE_URL. "
            "If this is a new installation and this database is the right one, create the tables with "
            "`gmail-reconnect migrate --init`."
        )


async def migrate(conn: asyncpg.Connection, *, until: int | None = None) -> list[Migration]:
    """Apply pending migrations in order (up to version `until`, if given), each in its own transaction;
    return those applied.

    Holds a session advisory lock on `conn` for the whole run, so replicas starting together apply each
    migration once. `conn` must be a dedicated connection: a pooled one drops session locks on release.
    """
    await lock_migrations(conn)
    try:
        await conn.execute(_CREATE_HISTORY)
        applied = await applied_versions(conn)
        shipped = load_migrations()
        _check_history(applied, shipped)
        done = []
        for migration in shipped:
            if migration.version in applied or (until is not None and migration.version > until):
                continue
            log.info("Applying migration %s", migration)
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
            except asyncpg.PostgresError as error:
                hint = f" Hint: {error.hint}" if getattr(error, "hint", None) else ""
                raise MigrationError(
                    f"Migration {migration} failed and changed nothing: {error}.{hint}"
                ) from error
            done.append(migration)
        return done
    finally:
        await unlock_migrations(conn)


def _check_history(applied: dict[int, str], shipped: list[Migration]) -> None:
    by_version = {migration.version: migration for migration in shipped}
    for version, checksum in sorted(applied.items()):
        migration = by_version.get(version)
        if migration is None:
            log.warning(
                "The database has migration %04d, which this version does not know: a newer "
                "gmail-reconnect has run against it.",
                version,
            )
        elif migration.checksum != checksum:
            raise MigrationError(
                f"Migration {migration} was changed after it was applied to this database "
                "(its checksum differs); restore the original file rather than editing applied migrations."
            )
