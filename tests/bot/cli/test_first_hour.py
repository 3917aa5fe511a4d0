"""What a new operator runs into first: placeholders, malformed or unreachable settings, wrong IDs, missing
files. Every one is a line naming the variable and the fix, exit 2 (a setting) or 1 (a service), no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import BASE_ENV, SEEDS, load_legacy_seed, run


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {**BASE_ENV, "DATABASE_URL": database_url, "GMAIL_RECONNECT_DATA_DIR": str(tmp_path / "data")}


def no_traceback(result: object) -> bool:
    return "Traceback" not in getattr(result, "stderr", "") + getattr(result, "stdout", "")


def test_the_env_examples_placeholders_count_as_missing(env: dict[str, str], tmp_path: Path) -> None:
    placeholders = {"SLACK_BOT_TOKEN": "xoxb-...", "SLACK_SIGNING_SECRET": "<signing secret>"}
    serve = run("serve", env={**env, **placeholders}, cwd=tmp_path)
    assert serve.returncode == 2 and no_traceback(serve)
    assert "SLACK_BOT_TOKEN is not set" in serve.stderr and "SLACK_SIGNING_SECRET is not set" in serve.stderr

    assert run("migrate", "--init", env=env, cwd=tmp_path).returncode == 0
    doctor = run("doctor", env={**env, **placeholders}, cwd=tmp_path)
    assert doctor.returncode == 1
    assert "[FAIL] SLACK_BOT_TOKEN is not set" in doctor.stdout
    assert "settings are present" not in doctor.stdout


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:pw-not-shown@127.0.0.1:notaport/main_db",
        "postgresql://u:pw-not-shown@127.0.0.1:99999/main_db",
        "postgresql://u:pw-not-shown@[::1/main_db",
    ],
)
@pytest.mark.parametrize("command", ["doctor", "serve", "migrate", "accounts"])
def test_a_malformed_database_url_is_one_line_and_exit_2(command: str, url: str, tmp_path: Path) -> None:
    result = run(command, env={**BASE_ENV, "DATABASE_URL": url}, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert (
        "DATABASE_URL cannot be read" in result.stderr and "postgresql://USER:PASSWORD@HOST" in result.stderr
    )
    assert no_traceback(result) and "pw-not-shown" not in result.stderr


def test_an_unreachable_database_names_its_host_and_the_variable(tmp_path: Path) -> None:
    env = {**BASE_ENV, "DATABASE_URL": "postgresql://u:pw-not-shown@127.0.0.1:1/main_db"}
    result = run("accounts", env=env, cwd=tmp_path)
    assert result.returncode == 1 and no_traceback(result)
    assert "database 'main_db' on 127.0.0.1:1 (DATABASE_URL) could not be used" in result.stderr
    assert "Is the server running, and is DATABASE_URL right?" in result.stderr
    assert "pw-not-shown" not in result.stderr


async def test_slack_out_of_reach_is_blamed_on_slack_not_the_database(
    env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    await load_legacy_seed(database_url)
    assert run("migrate", env=env, cwd=tmp_path).returncode == 0
    # The seed's U0HAPPYBELL has no token: the run asks Slack to DM them, and Slack cannot be reached.
    offline = {**env, "SLACK_API_URL": "http://127.0.0.1:1/api/"}
    result = run("run-briefing", "--user", "U0HAPPYBELL", env=offline, cwd=tmp_path)
    assert result.returncode == 1 and no_traceback(result)
    assert "could not reach Slack at 127.0.0.1:1 (SLACK_API_URL)" in result.stderr
    assert "database" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["link", "notaslackid", "heejae"],
        ["import", str(SEEDS / "tokens" / "heejae_gmail.json"), "--slack-user-id", "erin smith"],
        ["reconnect-link", "garbage"],
        ["disconnect", "u0lowercase"],
        ["run-briefing", "--user", "@someone"],
    ],
)
def test_slack_ids_are_checked_before_anything_runs(
    args: list[str], env: dict[str, str], tmp_path: Path
) -> None:
    result = run(*args, env=env, cwd=tmp_path)
    assert result.returncode == 2 and no_traceback(result)
    assert "is not a Slack user ID: use the member ID, like U0123ABCD" in result.stderr


def test_unlink_removes_the_link_and_keeps_the_row(env: dict[str, str], tmp_path: Path) -> None:
    assert run("migrate", "--init", env=env, cwd=tmp_path).returncode == 0
    token_file = SEEDS / "tokens" / "heejae_gmail.json"
    assert (
        run("import", str(token_file), "--slack-user-id", "U0HEEJAE1", env=env, cwd=tmp_path).returncode == 0
    )
    relink = run("link", "U0SOMEONE", "heejae", env=env, cwd=tmp_path)
    assert relink.returncode == 1 and "run `gmail-reconnect unlink U0HEEJAE1` first" in relink.stderr

    unlinked = run("unlink", "U0HEEJAE1", env=env, cwd=tmp_path)

    assert unlinked.returncode == 0, unlinked.stderr
    assert "unlinked Slack user U0HEEJAE1 from user_id heejae" in unlinked.stdout
    [row] = json.loads(run("accounts", "--json", env=env, cwd=tmp_path).stdout)
    assert row["user_id"] == "heejae" and row["slack_user_id"] is None and row["can_read"] is True
    again = run("unlink", "U0HEEJAE1", env=env, cwd=tmp_path)
    assert again.returncode == 1 and "no gmail_tokens row is linked to Slack user U0HEEJAE1" in again.stderr
    assert run("link", "U0SOMEONE", "heejae", env=env, cwd=tmp_path).returncode == 0


def test_a_missing_env_file_is_an_error(env: dict[str, str], tmp_path: Path) -> None:
    result = run("--env-file", str(tmp_path / "nonexistent.env"), "accounts", env=env, cwd=tmp_path)
    assert result.returncode == 2 and "--env-file" in result.stderr and "no such file" in result.stderr


def test_a_desktop_client_json_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    desktop = tmp_path / "credentials.json"
    desktop.write_text(
        json.dumps({"installed": {"client_id": "x.apps.googleusercontent.com", "client_secret": "s"}})
    )
    without_client = {k: v for k, v in env.items() if not k.startswith("GOOGLE_CLIENT")}
    result = run("doctor", env={**without_client, "GOOGLE_CLIENT_SECRETS_FILE": str(desktop)}, cwd=tmp_path)
    assert result.returncode == 2 and no_traceback(result)
    assert "is a 'Desktop app' client" in result.stderr and "'Web application'" in result.stderr


def test_import_says_why_a_file_without_a_refresh_token_is_missing(
    env: dict[str, str], tmp_path: Path
) -> None:
    assert run("migrate", "--init", env=env, cwd=tmp_path).returncode == 0
    no_refresh = tmp_path / "alice_gmail.json"
    no_refresh.write_text(
        json.dumps({"token": "ya29.only-access", "client_id": "c.apps.googleusercontent.com"})
    )
    full = SEEDS / "tokens" / "heejae_gmail.json"

    result = run("import", str(no_refresh), str(full), env=env, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "as user_id alice: missing\n  No refresh token is stored" in result.stdout
    assert "as user_id heejae: not checked with Google yet" in result.stdout
    rows = {
        row["user_id"]: row for row in json.loads(run("accounts", "--json", env=env, cwd=tmp_path).stdout)
    }
    assert rows["heejae"]["status_checked"] is False  # imported, never asked of Google
    assert rows["alice"]["can_read"] is False and rows["alice"]["can_send"] is False  # nothing to read with


def test_serve_without_the_slack_sign_in_credentials_names_them(env: dict[str, str], tmp_path: Path) -> None:
    without = {k: v for k, v in env.items() if k not in ("SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET")}
    serve = run("serve", env=without, cwd=tmp_path)
    assert serve.returncode == 2 and no_traceback(serve)
    assert "SLACK_CLIENT_ID / SLACK_CLIENT_SECRET are not set" in serve.stderr
    assert "IDENTITY_CHECK=off" in serve.stderr


def test_identity_check_off_is_warned_about_on_every_start(env: dict[str, str], tmp_path: Path) -> None:
    off = {
        **{k: v for k, v in env.items() if k not in ("SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET")},
        "IDENTITY_CHECK": "off",
    }
    assert run("migrate", "--init", env=off, cwd=tmp_path).returncode == 0
    doctor = run("doctor", env=off, cwd=tmp_path)
    assert "[warn] IDENTITY_CHECK=off: reconnect links are not tied to the person" in doctor.stdout
    checked = run("doctor", env=env, cwd=tmp_path)
    assert "Sign in with Slack redirect URL to list in the Slack app" in checked.stdout
    assert "IDENTITY_CHECK=off" not in checked.stdout

    # serve says it before anything else starts (here it then stops: nothing listens at this database).
    unreachable = {**off, "DATABASE_URL": "postgresql://u:p@127.0.0.1:9/main_db"}
    serve = run("serve", env=unreachable, cwd=tmp_path)
    assert serve.returncode != 0 and no_traceback(serve)
    assert "IDENTITY_CHECK=off: reconnect links are not tied to the person" in serve.stderr
