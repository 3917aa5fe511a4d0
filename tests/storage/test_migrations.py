"""Migrations on an empty database and on a live legacy gmail_tokens table: nothing existing may change."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from storage.errors import MigrationError
from storage.migrator import inspect_database, load_migrations, migrate, pending_migrations
from storage.pool import connect
from tests.helpers import load_legacy_seed

SEED_COLUMNS = (
    "id, user_id, robing_id, token_data, oauth_config, scopes, metadata, expiry, created_at, updated_at"
)


async def _migrate(url: str) -> list[str]:
    conn = await connect(url)
    try:
        return [str(m) for m in await migrate(conn)]
    finally:
        await conn.close()


async def _snapshot(url: str, columns: str = SEED_COLUMNS) -> list[dict[str, object]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(f"SELECT {columns} FROM gmail_tokens ORDER BY id")
        return [dict(row) for row in rows]
    finally:
        await conn.close()


async def test_empty_database_gets_every_table(database_url: str) -> None:
    applied = await _migrate(database_url)

    assert applied == [str(m) for m in load_migrations()]
    conn = await asyncpg.connect(database_url)
    try:
        tables = {
            row[0]
            for row in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        }
        nullable = await conn.fetchval(
            "SELECT is_nullable FROM information_schema.columns "
            "WHERE table_name = 'gmail_tokens' AND column_name = 'token_data'"
        )
    finally:
        await conn.close()
    assert {
        "gmail_tokens",
        "schema_migrations",
        "oauth_states",
        "reconnect_prompts",
        "audit_log",
        "api_keys",
        "token_failure_checks",
        "slack_request_replays",
        "slack_events_handled",
    } <= tables
    assert nullable == "YES"


async def test_legacy_rows_survive_unchanged_twice(database_url: str) -> None:
    await load_legacy_seed(database_url)
    before = await _snapshot(database_url)
    before_equipped = await _snapshot(database_url, "id, is_equipped")
    assert len(before) == 6

    first = await _migrate(database_url)
    after_first = await _snapshot(database_url)
    second = await _migrate(database_url)
    after_second = await _snapshot(database_url)

    assert first and second == []
    assert after_first == before
    assert after_second == before
    assert await _snapshot(database_url, "id, is_equipped") == before_equipped
    new_columns = await _snapshot(database_url, "status, status_cause, last_checked_at")
    assert all(
        row == {"status": "unknown", "status_cause": None, "last_checked_at": None} for row in new_columns
    )


async def test_legacy_trigger_is_kept_and_still_works(database_url: str) -> None:
    await load_legacy_seed(database_url)
    await _migrate(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        triggers = await conn.fetchval(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'gmail_tokens'::regclass AND NOT tgisinternal"
        )
        await conn.execute("UPDATE gmail_tokens SET robing_id = 'rb9000' WHERE user_id = 'test'")
        updated_at = await conn.fetchval("SELECT updated_at FROM gmail_tokens WHERE user_id = 'test'")
    finally:
        await conn.close()
    assert triggers == 1
    assert updated_at.year >= 2026


async def test_seed_000_table_with_not_null_token_data_becomes_nullable(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            """CREATE TABLE gmail_tokens (id SERIAL PRIMARY KEY, user_id VARCHAR(100) UNIQUE NOT NULL,
               robing_id VARCHAR(50), token_data JSONB NOT NULL, oauth_config JSONB, scopes JSONB,
               metadata JSONB, expiry TIMESTAMP, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
               updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"""
        )
        await conn.execute(
            """INSERT INTO gmail_tokens (user_id, token_data) VALUES ('a', '{"access_token": "x"}')"""
        )
    finally:
        await conn.close()

    await _migrate(database_url)

    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("INSERT INTO gmail_tokens (user_id, token_data) VALUES ('b', NULL)")
        count = await conn.fetchval("SELECT count(*) FROM gmail_tokens")
    finally:
        await conn.close()
    assert count == 2


async def test_duplicate_slack_ids_stop_the_migration_and_change_nothing(database_url: str) -> None:
    await load_legacy_seed(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            """UPDATE gmail_tokens SET metadata = metadata || '{"slack_user_id": "U091UNVE41M"}'
               WHERE user_id = 'test'"""
        )
    finally:
        await conn.close()
    before = await _snapshot(database_url)

    with pytest.raises(MigrationError) as raised:
        await _migrate(database_url)

    message = str(raised.value)
    assert "U091UNVE41M" in message and "'heejae'" in message and "'test'" in message
    assert "changed nothing" in message
    assert await _snapshot(database_url) == before
    conn = await asyncpg.connect(database_url)
    try:
        status_column = await conn.fetchval(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_name = 'gmail_tokens' AND column_name = 'status'"
        )
        recorded = await conn.fetchval("SELECT count(*) FROM schema_migrations")
        pending = await pending_migrations(conn)
    finally:
        await conn.close()
    assert status_column == 0
    assert recorded == 0
    assert len(pending) == len(load_migrations())


async def test_concurrent_runs_apply_each_migration_once(database_url: str) -> None:
    results = await asyncio.gather(*(_migrate(database_url) for _ in range(4)))

    applied = [name for result in results for name in result]
    assert sorted(applied) == sorted(str(m) for m in load_migrations())
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(load_migrations())
    finally:
        await conn.close()


async def test_an_edited_applied_migration_is_refused(migrated_url: str) -> None:
    conn = await connect(migrated_url)
    try:
        await conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate(conn)
    finally:
        await conn.close()


async def test_audit_log_is_append_only(migrated_url: str) -> None:
    conn = await asyncpg.connect(migrated_url)
    try:
        await conn.execute("INSERT INTO audit_log (actor, action) VALUES ('test', 'x')")
        for statement in ("UPDATE audit_log SET action = 'y'", "DELETE FROM audit_log", "TRUNCATE audit_log"):
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute(statement)
        assert await conn.fetchval("SELECT action FROM audit_log") == "x"
    finally:
        await conn.close()


async def test_one_open_prompt_per_user_whatever_the_incident(migrated_url: str) -> None:
    conn = await asyncpg.connect(migrated_url)
    try:
        insert = "INSERT INTO reconnect_prompts (slack_user_id, incident, state) VALUES ($1, $2, $3)"
        await conn.execute(insert, "U1", "expired", "open")
        await conn.execute(insert, "U1", "expired", "resolved")
        await conn.execute(insert, "U2", "expired", "open")
        for incident in ("expired", "insufficient_scope"):
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.execute(insert, "U1", incident, "open")
    finally:
        await conn.close()


async def test_duplicate_open_prompts_from_before_are_dismissed_keeping_the_newest(migrated_url: str) -> None:
    conn = await asyncpg.connect(migrated_url)
    try:
        await conn.execute("DROP INDEX reconnect_prompts_one_open_per_user_idx")
        insert = "INSERT INTO reconnect_prompts (slack_user_id, incident, state) VALUES ($1, $2, 'open') RETURNING id"
        older = await conn.fetchval(insert, "U1", "expired")
        newer = await conn.fetchval(insert, "U1", "insufficient_scope")
        other = await conn.fetchval(insert, "U2", "expired")
        (one_open,) = [m for m in load_migrations() if m.name == "one_open_prompt_per_user"]
        await conn.execute(one_open.sql)
        states = dict(await conn.fetch("SELECT id, state FROM reconnect_prompts"))
        assert states == {older: "dismissed", newer: "open", other: "open"}
    finally:
        await conn.close()


async def test_inspect_tells_our_legacy_and_foreign_databases_apart(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert (await inspect_database(conn)).is_empty_for_us
    finally:
        await conn.close()
    await load_legacy_seed(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        shape = await inspect_database(conn)
    finally:
        await conn.close()
    assert shape.has_gmail_tokens and not shape.has_schema_migrations and not shape.is_empty_for_us


async def test_api_keys_from_before_scopes_get_every_scope_and_new_ones_must_name_theirs(
    database_url: str,
) -> None:
    await load_legacy_seed(database_url)  # a deployment that had keys before they had scopes
    conn = await connect(database_url)
    try:
        assert [str(m) for m in await migrate(conn, until=9)][-1] == "0009_slack_locales"
        await conn.execute(
            "INSERT INTO api_keys (name, key_prefix, key_hash, created_by, revoked_at) "
            "VALUES ('a', 'gmr_a', '\\x01', 'cli', NULL), ('b', 'gmr_b', '\\x02', 'cli', now())"
        )
        assert "0010_api_key_scopes_and_report_checks" in [str(m) for m in await migrate(conn)]
        scopes = await conn.fetch("SELECT name, scopes FROM api_keys ORDER BY name")
        with pytest.raises(asyncpg.NotNullViolationError):
            await conn.execute(
                "INSERT INTO api_keys (name, key_prefix, key_hash, created_by) VALUES ('c', 'gmr_c', '\\x03', 't')"
            )
    finally:
        await conn.close()
    assert [(row["name"], row["scopes"]) for row in scopes] == [
        ("a", ["credentials", "registry", "report"]),
        ("b", ["credentials", "registry", "report"]),
    ]


# What earlier versions wrote as status_cause, and the code each row gets.
EARLIER_CAUSES = [
    (
        "missing",
        "No Gmail token is stored (the legacy is_equipped flag says connected, but token_data is empty).",
        "token_missing",
    ),
    (
        "missing",
        "No refresh token is stored, so the access token cannot be renewed.",
        "refresh_token_missing",
    ),
    ("missing", "No refresh token is stored.", "refresh_token_missing"),
    (
        "expired",
        "Google says the access was revoked or has expired (invalid_grant): the password may have changed, access may have been removed in the Google account, or the token went unused for months.",
        "refresh_token_revoked",
    ),
    ("expired", "invalid_grant: Token has been expired or revoked.", "refresh_token_revoked"),
    (
        "expired",
        "Google ended the access after 7 days, as it does for OAuth apps in testing mode (invalid_grant).",
        "testing_mode_expired",
    ),
    (
        "expired",
        "Your Google Workspace administrator requires you to sign in again (Google: invalid_rapt); reconnect to continue.",
        "reauth_required",
    ),
    (
        "expired",
        "The token was issued to an OAuth client that Google no longer accepts (invalid_client); reconnecting issues a new one.",
        "client_rejected",
    ),
    (
        "revoked",
        "You removed this app's access in your Google Account (Google's security event tokens-revoked).",
        "access_removed",
    ),
    (
        "revoked",
        "Google says the access was revoked or has expired (invalid_grant): the password may have changed.",
        "refresh_token_revoked",
    ),
    (
        "insufficient_scope",
        "The granted permissions do not allow reading mail (gmail.readonly) or sending mail (gmail.send).",
        "scope_missing_read_send",
    ),
    (
        "insufficient_scope",
        "The granted permissions lack gmail.readonly and gmail.send.",
        "scope_missing_read_send",
    ),
    ("insufficient_scope", "The granted permissions lack gmail.send.", "scope_missing_send"),
    (
        "insufficient_scope",
        "The granted permissions do not allow reading mail (gmail.readonly).",
        "scope_missing_read",
    ),
    (
        "insufficient_scope",
        "Gmail answered HTTP 403 (Request had insufficient authentication scopes.)",
        "scope_missing_read",
    ),
    ("disconnected", "Disconnected by slack:U0123ABCD.", "disconnected_by_user"),
    ("disconnected", "Disconnected by cli.", "disconnected_by_admin"),
    (
        "unreadable",
        "The stored tokens cannot be decrypted: the access_token was encrypted under key k9. Reconnecting stores new ones.",
        "tokens_unreadable",
    ),
    (
        "disabled",
        "Google disabled this Google account (signs of a takeover (hijacking)); the bot does not use it until Google enables it.",
        "account_disabled",
    ),
    ("expired", None, "refresh_token_revoked"),
    ("healthy", None, None),
    ("unknown", "Imported from a file; not checked with Google yet.", None),
]


async def test_rows_from_before_cause_codes_get_the_code_their_words_tell_and_keep_the_words(
    database_url: str,
) -> None:
    await load_legacy_seed(database_url)
    conn = await connect(database_url)
    try:
        assert [str(m) for m in await migrate(conn, until=17)][-1] == "0017_webhooks"
        await conn.executemany(
            "INSERT INTO gmail_tokens (user_id, status, status_cause) VALUES ($1, $2, $3)",
            [(f"earlier-{n}", status, cause) for n, (status, cause, _) in enumerate(EARLIER_CAUSES)],
        )
        legacy_before = await conn.fetch(
            f"SELECT {SEED_COLUMNS} FROM gmail_tokens WHERE user_id NOT LIKE 'earlier-%'"
        )
        assert [str(m) for m in await migrate(conn, until=19)] == [
            "0018_refresh_token_expiry",
            "0019_status_cause_codes",
        ]
        rows = await conn.fetch(
            "SELECT user_id, status, status_cause, status_cause_code FROM gmail_tokens"
            " WHERE user_id LIKE 'earlier-%' ORDER BY id"
        )
        legacy_after = await conn.fetch(
            f"SELECT {SEED_COLUMNS} FROM gmail_tokens WHERE user_id NOT LIKE 'earlier-%'"
        )
    finally:
        await conn.close()
    assert [(row["status"], row["status_cause"], row["status_cause_code"]) for row in rows] == EARLIER_CAUSES
    assert legacy_after == legacy_before  # legacy rows (never checked) are not rewritten, updated_at included
