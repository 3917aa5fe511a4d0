"""Where the database is (DATABASE_URL or the embedded cluster), and bringing its schema up to date."""

from __future__ import annotations

import asyncio
import logging

from bot.config import Settings
from storage import embedded
from storage.crypto import TokenCipher
from storage.errors import MigrationError
from storage.migrator import Migration, inspect_database, migrate, pending_migrations, refuse_wrong_database
from storage.pool import connect, describe_dsn
from storage.token_data import TokenCodec

log = logging.getLogger(__name__)

POSTGRES_SUBDIR = "postgres"


async def resolve_database_url(settings: Settings) -> str:
    """DATABASE_URL, or the URL of the embedded cluster in the data dir (started on first use)."""
    if settings.database_url is not None:
        return settings.database_url.reveal()
    cluster = await start_embedded(settings)
    if cluster.created:
        # A command run from another folder would otherwise quietly work on an empty database of its own.
        log.warning("%s", describe_new_cluster(settings, cluster))
    return await embedded.ensure_database(cluster)


async def start_embedded(settings: Settings) -> embedded.Cluster:
    """Start (or join) the embedded cluster of the data dir; it stops when the last process using it exits."""
    return await asyncio.to_thread(embedded.start_server, settings.data_dir / POSTGRES_SUBDIR)


def describe_cluster(settings: Settings, cluster: embedded.Cluster) -> str:
    """Where the embedded cluster is, and which data dir it belongs to, as absolute paths."""
    where = f"in {cluster.folder}" + (f", linked from {cluster.link}" if cluster.link is not None else "")
    return f"The embedded PostgreSQL of GMAIL_RECONNECT_DATA_DIR={settings.data_dir.resolve()} is {where}."


def describe_new_cluster(settings: Settings, cluster: embedded.Cluster) -> str:
    """The notice that a command has just created an empty embedded cluster, and how to use another one."""
    return (
        f"{describe_cluster(settings, cluster)} It was created now, empty: to use an existing one instead, run "
        "from the folder that holds its .gmail-reconnect, or set GMAIL_RECONNECT_DATA_DIR to that folder."
    )


async def apply_migrations(settings: Settings, dsn: str, *, init: bool = False) -> list[Migration]:
    """Apply pending migrations; refuse a configured database that holds no gmail_tokens unless `init`."""
    conn = await connect(dsn)
    try:
        shape = await inspect_database(conn)
        if not (init or settings.uses_embedded_database):
            refuse_wrong_database(shape, describe_dsn(dsn))
        if shape.is_empty_for_us:
            log.info("%s is new: creating gmail_tokens and the bot's tables", describe_dsn(dsn))
        applied = await migrate(conn)
    finally:
        await conn.close()
    return applied  # migrate() logs each one as it applies it


def token_codec(settings: Settings) -> TokenCodec:
    """The codec for token_data: encrypting when TOKEN_ENCRYPTION_KEYS is set, plain JSONB otherwise."""
    keys = settings.token_encryption_keys
    return TokenCodec(TokenCipher(keys) if keys else None)


async def check_schema(settings: Settings, dsn: str) -> None:
    """Make sure the schema is current before a command uses it.

    The embedded database is ours: pending migrations are applied. A configured one must hold gmail_tokens
    and be migrated explicitly (`gmail-reconnect migrate`), so a wrong DATABASE_URL is never "fixed" silently.
    """
    if settings.uses_embedded_database:
        await apply_migrations(settings, dsn)
        return
    conn = await connect(dsn, timeout=10)
    try:
        refuse_wrong_database(await inspect_database(conn), describe_dsn(dsn))
        pending = await pending_migrations(conn)
    finally:
        await conn.close()
    if pending:
        raise MigrationError(
            f"{len(pending)} migration(s) are pending on {describe_dsn(dsn)}: run `gmail-reconnect migrate` first."
        )
