"""Storage errors: each names what went wrong in words an operator can act on."""

from __future__ import annotations

import asyncpg


class StorageError(Exception):
    """Base class of the storage layer's errors."""


class NotFound(StorageError):
    """No row matches what was asked for."""


class Conflict(StorageError):
    """The change would break a rule of the data (e.g. a Slack user linked to two accounts)."""


class MigrationError(StorageError):
    """A migration could not be applied; the database was left as it was before that migration."""


class WrongDatabaseError(StorageError):
    """The database does not look like one that holds gmail_tokens (e.g. auth_db instead of main_db)."""


class TokenUnreadable(StorageError):
    """A stored token is encrypted with a key this process does not have, or was altered.

    `reason` says why in plain words that name no account and no secret (e.g. "encrypted with a key that
    TOKEN_ENCRYPTION_KEYS no longer holds (key id 1a2b3c4d)").
    """

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class EmbeddedDatabaseError(StorageError):
    """The embedded PostgreSQL cannot start where it is asked to; the message says why and what to change."""


# What a PostgreSQL that is down, restarting or out of reach raises, as opposed to a statement that is wrong:
# a short outage, to be answered with "try again in a minute", not with a 500.
DATABASE_OUTAGE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)
