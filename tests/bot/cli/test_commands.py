"""The CLI end to end, as an admin runs it: a real process against a real PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from tests.fakes.google import FakeGoogle
from tests.fakes.slack import FakeSlack, dm_channel_id
from tests.helpers import BASE_ENV, SEEDS, google_env, load_legacy_seed, run, run_async

TOKENS = SEEDS / "tokens"


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {**BASE_ENV, "DATABASE_URL": database_url, "GMAIL_RECONNECT_DATA_DIR": str(tmp_path / "data")}


def test_help_lists_every_command(tmp_path: Path) -> None:
    result = run("--help", env={}, cwd=tmp_path)
    assert result.returncode == 0
    for command in (
        "serve",
        "migrate",
        "accounts",
        "link",
        "import",
        "rotate-keys",
        "doctor",
        "reconnect-link",
        "disconnect",
        "run-briefing",
    ):
        assert command in result.stdout
    assert "the Slack user to link the account to" in run("import", "--help", env={}, cwd=tmp_path).stdout


def test_console_script_and_module_are_the_same(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("gmail-reconnect")
    result = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert (
        result.returncode == 0
        and result.stdout.strip() == run("--version", env={}, cwd=tmp_path).stdout.strip()
    )


async def test_migrate_import_link_accounts_on_legacy_rows(
    env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    await load_legacy_seed(database_url)

    migrated = run("migrate", env=env, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert "applied 0001_adopt_gmail_tokens" in migrated.stdout
    assert (
        run("migrate", env=env, cwd=tmp_path).stdout.strip()
        == "0 migration(s) applied; the schema is up to date."
    )

    imported = run(
        "import", str(TOKENS / "test_gmail.json"), "--slack-user-id", "U0TEST", env=env, cwd=tmp_path
    )
    assert imported.returncode == 0, imported.stderr
    assert "as user_id test" in imported.stdout
    linked = run("link", "U0UNKNOWN", "unknown", env=env, cwd=tmp_path)
    assert linked.returncode == 0 and "unknown@gmail.com" in linked.stdout

    listing = run("accounts", "--json", env=env, cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    by_user = {row["user_id"]: row for row in json.loads(listing.stdout)}
    assert by_user["test"]["slack_user_id"] == "U0TEST" and by_user["test"]["can_send"] is True
    assert by_user["heejae"]["can_read"] and by_user["heejae"]["can_send"]  # gmail.modify reads and sends
    assert by_user["unknown"]["status"] == "insufficient_scope"
    assert by_user["b6ea2ee0-a15a-5cf4-93a9-a9ca20d4c4a0"]["status"] == "missing"
    assert by_user["b6ea2ee0-a15a-5cf4-93a9-a9ca20d4c4a0"]["cause"] == "token_missing"
    assert "is_equipped" in by_user["b6ea2ee0-a15a-5cf4-93a9-a9ca20d4c4a0"]["cause_detail"]
    assert by_user["unknown"]["cause"] == "scope_missing_read_send"
    assert "ya29" not in listing.stdout and "1//" not in listing.stdout

    table = run("accounts", "--status", "unknown", env=env, cwd=tmp_path)
    assert table.returncode == 0 and table.stdout.splitlines()[0].startswith("SLACK ID")
    assert (
        "heejae@gmail.com" in table.stdout and "test@gmail.com" in table.stdout
    )  # not checked with Google yet
    assert "unknown@gmail.com" not in table.stdout and "goeun2dc@gmail.com" not in table.stdout

    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT token_data, metadata, oauth_config FROM gmail_tokens WHERE user_id = 'test'"
        )
    finally:
        await conn.close()
    import json as _json

    token_data, metadata = _json.loads(row["token_data"]), _json.loads(row["metadata"])
    assert token_data["access_token"] == "ya29.file-test-access"
    assert metadata["source_file"] == "test_gmail.json" and metadata["display_name"] == "테스트"
    assert metadata["imported_at"] and metadata["email"] == "test@gmail.com"


def test_import_a_bad_file_names_it_and_stores_nothing(env: dict[str, str], tmp_path: Path) -> None:
    assert run("migrate", "--init", env=env, cwd=tmp_path).returncode == 0
    bad = tmp_path / "broken_gmail.json"
    bad.write_text('{"client_id": "x"}')

    result = run("import", str(TOKENS / "heejae_gmail.json"), str(bad), env=env, cwd=tmp_path)

    assert result.returncode == 1
    assert "broken_gmail.json" in result.stderr and "nothing to import" in result.stderr
    assert run("accounts", env=env, cwd=tmp_path).stdout.strip() == "No accounts."


def test_link_errors_are_clear(env: dict[str, str], tmp_path: Path) -> None:
    assert run("migrate", "--init", env=env, cwd=tmp_path).returncode == 0
    result = run("link", "U0NOBODY1", "nobody", env=env, cwd=tmp_path)
    assert result.returncode == 1 and "no gmail_tokens row has user_id 'nobody'" in result.stderr


def test_wrong_database_is_refused_and_doctor_says_why(env: dict[str, str], tmp_path: Path) -> None:
    doctor = run("doctor", env=env, cwd=tmp_path)
    assert doctor.returncode == 1
    assert "has no gmail_tokens table. Is DATABASE_URL pointing at the right database" in doctor.stdout

    for command in (["migrate"], ["accounts"]):
        refused = run(*command, env=env, cwd=tmp_path)
        assert refused.returncode == 1 and "gmail-reconnect migrate --init" in refused.stderr

    assert run("migrate", "--init", env=env, cwd=tmp_path).returncode == 0
    healthy = run("doctor", env=env, cwd=tmp_path)
    assert healthy.returncode == 0, healthy.stdout
    assert "The schema is up to date." in healthy.stdout


async def test_doctor_reports_pending_migrations_and_unreachable_databases(
    env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    await load_legacy_seed(database_url)
    pending = run("doctor", env=env, cwd=tmp_path)
    assert pending.returncode == 1 and "migration(s) pending" in pending.stdout

    missing_db = {**env, "DATABASE_URL": database_url.replace("/test_", "/nonexistent_")}
    result = run("doctor", env=missing_db, cwd=tmp_path)
    assert (
        result.returncode == 1
        and "does not exist. Is DATABASE_URL pointing at the right database?" in result.stdout
    )

    unreachable = {**env, "DATABASE_URL": "postgresql://u:topsecretpw@127.0.0.1:1/main_db"}
    result = run("doctor", env=unreachable, cwd=tmp_path)
    assert result.returncode == 1 and "Cannot reach database 'main_db' on 127.0.0.1:1" in result.stdout
    assert "topsecretpw" not in result.stdout + result.stderr


def test_config_errors_exit_2_naming_the_variable(env: dict[str, str], tmp_path: Path) -> None:
    result = run("serve", env={**env, "SLACK_BOT_TOKEN": "", "PORT": "http"}, cwd=tmp_path)
    assert result.returncode == 2
    assert "PORT='http'" in result.stderr

    result = run("serve", env={**env, "SLACK_BOT_TOKEN": ""}, cwd=tmp_path)
    assert result.returncode == 2 and "SLACK_BOT_TOKEN is not set" in result.stderr
    assert "GOCSPX-test-client-secret" not in result.stderr


def test_rotate_keys_needs_keys(env: dict[str, str], tmp_path: Path) -> None:
    assert run("migrate", "--init", env=env, cwd=tmp_path).returncode == 0
    result = run("rotate-keys", env=env, cwd=tmp_path)
    assert result.returncode == 2 and "TOKEN_ENCRYPTION_KEYS is not set" in result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_with_the_embedded_database(embedded_data_dir: Path, tmp_path: Path) -> None:
    """The README's first command: no DATABASE_URL, so the bot starts its own PostgreSQL in the data dir."""
    port = _free_port()
    env = {k: v for k, v in BASE_ENV.items() if k != "SECRET_KEY"}
    env.update({"GMAIL_RECONNECT_DATA_DIR": str(embedded_data_dir), "PORT": str(port), "HOST": "127.0.0.1"})
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "GOOGLE_", "DATABASE_URL"))
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "serve"],
        env={**full_env, **env},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        ready = _wait_for(f"http://127.0.0.1:{port}/readyz", process)
        assert ready == {"status": "ready"}
        assert (embedded_data_dir / "secret_key").is_file()
        assert (embedded_data_dir / "postgres" / "PG_VERSION").is_file()
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=60)[0]
    assert "TOKEN_ENCRYPTION_KEYS is not set" in output
    assert "xoxb-test-bot-token" not in output and "GOCSPX" not in output


def test_a_command_says_once_where_it_created_the_embedded_database(
    embedded_data_dir: Path, tmp_path: Path
) -> None:
    """Run from another folder, a command would otherwise work quietly on a new, empty database of its own."""
    env = {**BASE_ENV, "GMAIL_RECONNECT_DATA_DIR": str(embedded_data_dir)}
    first = run("accounts", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    folder = (embedded_data_dir / "postgres").resolve()
    assert first.stderr.count("It was created now, empty") == 1
    assert f"GMAIL_RECONNECT_DATA_DIR={embedded_data_dir} is in {folder}" in first.stderr

    again = run("accounts", env=env, cwd=tmp_path)
    assert again.returncode == 0 and again.stderr == ""


def test_doctor_on_a_fresh_embedded_install(embedded_data_dir: Path, tmp_path: Path) -> None:
    """Pending migrations of the embedded database are a note (every command applies them), not a failure."""
    env = {**BASE_ENV, "GMAIL_RECONNECT_DATA_DIR": str(embedded_data_dir)}
    fresh = run("doctor", env=env, cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stdout
    assert "FAIL" not in fresh.stdout
    folder = (embedded_data_dir / "postgres").resolve()
    where = f"The embedded PostgreSQL of GMAIL_RECONNECT_DATA_DIR={embedded_data_dir} is in {folder}"
    assert f"[warn] {where}" in fresh.stdout and "It was created now, empty" in fresh.stdout
    assert "migration(s) not applied yet: every command applies them as it starts." in fresh.stdout

    assert run("accounts", env=env, cwd=tmp_path).returncode == 0
    migrated = run("doctor", env=env, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stdout
    assert f"[  ok] {where}" in migrated.stdout and "The schema is up to date." in migrated.stdout


def _wait_for(url: str, process: subprocess.Popen[str], timeout: float = 60) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"serve exited with {process.returncode}: {process.stdout.read() if process.stdout else ''}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - a loopback URL of the test
                return json.loads(response.read())
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"{url} did not answer within {timeout} s")


def test_doctor_and_rotate_keys_with_encrypted_tokens(env: dict[str, str], tmp_path: Path) -> None:
    import base64

    from storage.crypto import generate_key, key_id

    old, new = generate_key(), generate_key()
    assert run("migrate", "--init", env=env, cwd=tmp_path).returncode == 0
    imported = run(
        "import", str(TOKENS / "test_gmail.json"), env={**env, "TOKEN_ENCRYPTION_KEYS": old}, cwd=tmp_path
    )
    assert imported.returncode == 0, imported.stderr

    lost = run("doctor", env={**env, "TOKEN_ENCRYPTION_KEYS": new}, cwd=tmp_path)
    assert lost.returncode == 1
    assert (
        f"test: the access_token is encrypted with a key that TOKEN_ENCRYPTION_KEYS does not hold "
        f"(key id {key_id(base64.b64decode(old))})" in lost.stdout
    )

    both = {**env, "TOKEN_ENCRYPTION_KEYS": f"{new},{old}"}
    stale = run("doctor", env=both, cwd=tmp_path)
    assert stale.returncode == 0 and "1 account(s) are stored unencrypted or under an old key" in stale.stdout

    rotated = run("rotate-keys", env=both, cwd=tmp_path)
    assert (
        rotated.returncode == 0
        and f"re-encrypted 1 account(s) under key {key_id(base64.b64decode(new))}" in rotated.stdout
    )
    clean = run("doctor", env={**env, "TOKEN_ENCRYPTION_KEYS": new}, cwd=tmp_path)
    assert (
        clean.returncode == 0
        and "old key" not in clean.stdout
        and "Every stored token can be decrypted (1 row(s) with token data)." in clean.stdout
    )


def test_reconnect_link_prints_a_link_the_server_accepts(env: dict[str, str], tmp_path: Path) -> None:
    from bot.reconnect.links import LinkSigner, Purpose

    result = run("reconnect-link", "U0ADMINSENT", "--team", "T0TEAM", "--switch", env=env, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    assert url.startswith("http://localhost:8080/oauth/google/start?t=")
    signer = LinkSigner(env["SECRET_KEY"], public_base_url="http://localhost:8080", ttl=timedelta(days=7))
    claims = signer.verify(url.split("t=", 1)[1])
    assert (claims.slack_user_id, claims.slack_team_id, claims.purpose) == (
        "U0ADMINSENT",
        "T0TEAM",
        Purpose.SWITCH,
    )
    assert "valid until" in result.stderr


async def test_disconnect_revokes_at_google_and_wipes_the_tokens(
    env: dict[str, str], tmp_path: Path, database_url: str, fake_google: FakeGoogle
) -> None:
    await load_legacy_seed(database_url)
    assert run("migrate", env=env, cwd=tmp_path).returncode == 0
    fake_google.add_refresh_token(
        "1//heejae-refresh",
        email="heejae@gmail.com",
        scopes=["https://www.googleapis.com/auth/gmail.modify"],
        client_id="legacy.apps.googleusercontent.com",
        client_secret="GOCSPX-legacy",
    )
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "GOOGLE_", "DATABASE_URL"))
    }
    full_env.update({**env, **google_env(fake_google)})
    code, stdout, stderr = await run_async("disconnect", "U091UNVE41M", env=full_env, cwd=tmp_path)

    assert code == 0, stderr
    assert "access revoked at Google, tokens wiped" in stdout
    assert "1//heejae-refresh" in fake_google.revoked
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT token_data, status, is_equipped FROM gmail_tokens WHERE user_id = 'heejae'"
        )
    finally:
        await conn.close()
    assert "refresh_token" not in row["token_data"] and "access_token" not in row["token_data"]
    assert row["status"] == "disconnected" and row["is_equipped"] is False


async def test_run_briefing_dry_then_for_one_user(
    env: dict[str, str], tmp_path: Path, database_url: str, fake_google: FakeGoogle, fake_slack: FakeSlack
) -> None:
    await load_legacy_seed(database_url)
    assert run("migrate", env=env, cwd=tmp_path).returncode == 0
    fake_slack.add_user("U0HAPPYBELL", locale="en-US")
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "GOOGLE_", "DATABASE_URL"))
    }
    full_env.update({**env, **google_env(fake_google), "SLACK_API_URL": fake_slack.base_url})

    code, dry, stderr = await run_async("run-briefing", "--dry-run", env=full_env, cwd=tmp_path)

    assert code == 0, stderr
    assert "U0HAPPYBELL" in dry and "would send the Reconnect Gmail DM (missing)" in dry
    assert dry.strip().endswith("dry run: 3 accounts (checked 1, prompted 2)")
    assert fake_slack.calls == [] and fake_google.calls == []

    code, out, stderr = await run_async("run-briefing", "--user", "U0HAPPYBELL", env=full_env, cwd=tmp_path)

    assert code == 0, stderr
    assert out.strip().splitlines()[-1] == "1 account (prompted 1)"
    (message,) = fake_slack.messages.values()
    assert message["channel"] == dm_channel_id("U0HAPPYBELL") and "Reconnect" in str(message["blocks"])
