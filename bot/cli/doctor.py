"""`gmail-reconnect doctor`: checks the configuration and the database and says in words what is wrong."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg

from bot.config import Settings
from bot.database import describe_cluster, describe_new_cluster, start_embedded, token_codec
from storage import embedded
from storage.diagnostics import slack_users_on_several_rows, stored_token_data, unlinked_rows
from storage.errors import StorageError
from storage.migrator import inspect_database, pending_migrations
from storage.models import Status
from storage.pool import connect, describe_dsn
from storage.token_data import ENCRYPTED, STRAY, TokenCodec

OK, WARN, FAIL = "ok", "warn", "FAIL"
# Finding which row a stray ciphertext was made for tries it against every row (about 10 µs a row and field):
# a few of them are searched, in databases of up to this many rows, so that doctor stays quick.
ORIGIN_SEARCHES, ORIGIN_SEARCH_ROWS = 20, 20_000


@dataclass
class Report:
    """The findings of one doctor run, in order."""

    findings: list[tuple[str, str]] = field(default_factory=list)

    def add(self, level: str, text: str) -> None:
        self.findings.append((level, text))

    @property
    def failed(self) -> bool:
        """True when at least one finding stops the bot from working."""
        return any(level == FAIL for level, _ in self.findings)

    def render(self) -> str:
        lines = [f"[{level:>4}] {text}" for level, text in self.findings]
        lines.append("Problems found: fix the FAIL lines above." if self.failed else "No problems found.")
        return "\n".join(lines)


async def run_doctor(settings: Settings) -> Report:
    """Every check, each adding one finding; never raises for a problem it can describe."""
    report = Report()
    _check_settings(settings, report)
    dsn = await _database_url(settings, report)
    if dsn is None:
        return report
    where = describe_dsn(dsn) + (" (embedded)" if settings.uses_embedded_database else "")
    try:
        conn = await connect(dsn, timeout=10)
    except asyncpg.InvalidCatalogNameError:
        report.add(FAIL, f"{where} does not exist. Is DATABASE_URL pointing at the right database?")
        return report
    except asyncpg.InvalidAuthorizationSpecificationError as error:
        report.add(FAIL, f"{where} refused the login: {error}. Check the user and password in DATABASE_URL.")
        return report
    except (OSError, TimeoutError, asyncpg.PostgresError) as error:
        report.add(FAIL, f"Cannot reach {where}: {type(error).__name__}: {error}. Is the server running?")
        return report
    try:
        await _check_database(settings, conn, where, report)
    finally:
        await conn.close()
    return report


async def _database_url(settings: Settings, report: Report) -> str | None:
    """DATABASE_URL, or the embedded cluster's URL after saying which one it is; None if it did not start."""
    if settings.database_url is not None:
        return settings.database_url.reveal()
    try:
        cluster = await start_embedded(settings)
        dsn = await embedded.ensure_database(cluster)
    except (OSError, RuntimeError, StorageError, asyncpg.PostgresError) as error:
        where = f"GMAIL_RECONNECT_DATA_DIR={settings.data_dir.resolve()}"
        report.add(FAIL, f"The embedded PostgreSQL of {where} did not start: {error}")
        return None
    if cluster.created:
        report.add(WARN, describe_new_cluster(settings, cluster))
    else:
        report.add(OK, describe_cluster(settings, cluster))
    return dsn


def _check_settings(settings: Settings, report: Report) -> None:
    problems = settings.missing_for_serve()
    for problem in problems:
        report.add(FAIL, problem)
    if not problems:
        report.add(OK, "Slack and Google settings are present.")
    report.add(OK, f"OAuth redirect URI to register at Google: {settings.oauth_redirect_uri}")
    identity_warning = settings.identity_warning()
    if identity_warning is not None:
        report.add(WARN, identity_warning)
    else:
        report.add(
            OK, f"Sign in with Slack redirect URL to list in the Slack app: {settings.slack_redirect_uri}"
        )
    if settings.token_encryption_keys:
        report.add(OK, f"Token encryption is on ({len(settings.token_encryption_keys)} key(s)).")
    else:
        report.add(WARN, "TOKEN_ENCRYPTION_KEYS is not set: tokens are stored unencrypted in token_data.")


async def _check_database(settings: Settings, conn: asyncpg.Connection, where: str, report: Report) -> None:
    report.add(OK, f"Connected to {where}.")
    shape = await inspect_database(conn)
    if shape.is_empty_for_us and not settings.uses_embedded_database:
        report.add(
            FAIL,
            f"{where} has no gmail_tokens table. Is DATABASE_URL pointing at the right database "
            "(e.g. main_db rather than auth_db)? For a new installation run `gmail-reconnect migrate --init`.",
        )
        return
    pending = await pending_migrations(conn)
    if pending and settings.uses_embedded_database:
        # The embedded database is the bot's own: serve and every other command bring it up to date.
        report.add(
            OK, f"{len(pending)} migration(s) not applied yet: every command applies them as it starts."
        )
    elif pending:
        names = ", ".join(str(migration) for migration in pending)
        report.add(FAIL, f"{len(pending)} migration(s) pending ({names}): run `gmail-reconnect migrate`.")
    else:
        report.add(OK, "The schema is up to date.")
    if not shape.has_gmail_tokens:
        return
    await _check_slack_ids(conn, report)
    await _check_tokens(settings, conn, report)


async def _check_slack_ids(conn: asyncpg.Connection, report: Report) -> None:
    for slack_user_id, user_ids in await slack_users_on_several_rows(conn):
        report.add(FAIL, f"Slack user {slack_user_id} is on several rows: {', '.join(user_ids)}.")
    unlinked = await unlinked_rows(conn)
    if unlinked:
        report.add(
            WARN,
            f"{unlinked} account(s) have no Slack user: link them with `gmail-reconnect link SLACK_USER_ID USER_ID`.",
        )


async def _check_tokens(settings: Settings, conn: asyncpg.Connection, report: Report) -> None:
    """Decrypt every row's tokens, as the bot will: a row that does not read is listed with the reason."""
    codec = token_codec(settings)
    rows = await stored_token_data(conn)
    unreadable: dict[str, list[str]] = {}
    recovered: list[str] = []
    stale = 0
    searches = ORIGIN_SEARCHES if len(rows) <= ORIGIN_SEARCH_ROWS else 0
    for user_id, status, token_data in rows:
        problems = codec.problems(token_data, user_id=user_id)
        for name, why in problems.items():
            origin = None
            if searches > 0 and STRAY in why:
                searches -= 1
                origin = _origin(codec, rows, user_id, _ciphertext(token_data, name))
            if origin is not None:
                why = (
                    f"the {name} holds the ciphertext made for the {origin[1]} of account {origin[0]!r}: "
                    "ciphertexts were swapped or copied between rows"
                )
            unreadable.setdefault(user_id, []).append(why)
        if problems:
            continue
        if status == str(Status.UNREADABLE):
            recovered.append(user_id)
        if codec.needs_rewrite(token_data):
            stale += 1
    if unreadable:
        report.add(
            FAIL,
            f"{len(unreadable)} account(s) hold tokens that cannot be decrypted (restore the key they were "
            "encrypted with, or let their users reconnect, which stores new ones):\n"
            + "\n".join(f"         {user_id}: {'; '.join(whys)}" for user_id, whys in unreadable.items()),
        )
    else:
        report.add(OK, f"Every stored token can be decrypted ({len(rows)} row(s) with token data).")
    if recovered:
        report.add(
            WARN,
            f"{len(recovered)} account(s) are marked unreadable but their tokens decrypt now: "
            f"{', '.join(recovered)}. Each is checked with Google again at its next credentials request, "
            "or when its user reconnects.",
        )
    if stale:
        report.add(
            WARN,
            f"{stale} account(s) are stored unencrypted or under an old key: run `gmail-reconnect rotate-keys`.",
        )


def _ciphertext(token_data: Any, name: str) -> str:
    encrypted = token_data.get(ENCRYPTED) if isinstance(token_data, dict) else None
    return str(encrypted.get(name)) if isinstance(encrypted, dict) else ""


def _origin(
    codec: TokenCodec, rows: list[tuple[str, str | None, Any]], user_id: str, value: str
) -> tuple[str, str] | None:
    """(user_id, field) of the other row a stray ciphertext was made for, if it is one of `rows`."""
    for other, _, _ in rows:
        if other != user_id and (name := codec.belongs_to(value, other)) is not None:
            return other, name
    return None
