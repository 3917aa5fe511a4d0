"""`gmail-reconnect api-key create | list | revoke` as an admin runs it: a real process on the test database,
with the keys it prints checked against the real application's API."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from bot.appkeys import SERVICES
from tests.helpers import BASE_ENV, Serve, call, run_async

SECRET = re.compile(r"gmr_[A-Za-z0-9_-]{40,}")
ALL = "credentials,registry,report"


@pytest.fixture
def cli_env(migrated_url: str, tmp_path: Path) -> dict[str, str]:
    """The CLI's environment: the test's database, and nothing of the developer's Slack or Google settings."""
    inherited = {
        k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "GOOGLE_", "DATABASE_URL"))
    }
    return {
        **inherited,
        **BASE_ENV,
        "DATABASE_URL": migrated_url,
        "GMAIL_RECONNECT_DATA_DIR": str(tmp_path / "data"),
    }


async def api_key(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    return await run_async("api-key", *args, env=env, cwd=cwd)


async def test_create_prints_the_secret_once_and_it_opens_the_api(
    serve: Serve, cli_env: dict[str, str], tmp_path: Path
) -> None:
    app = await serve()  # serves the migrated test database the CLI uses

    code, stdout, stderr = await api_key("create", "skill-email", "--scope", ALL, env=cli_env, cwd=tmp_path)

    assert code == 0, stderr
    (secret,) = stdout.split()  # stdout is the secret alone, for `$(gmail-reconnect api-key create …)`
    assert SECRET.fullmatch(secret)
    assert stdout == secret + "\n"
    assert "not shown again" in stderr and f"{secret[:12]}…" in stderr and "skill-email" in stderr
    assert secret not in stderr
    reply = await call(app, "GET", "/api/v1/accounts", key=secret)
    assert reply.status == 200, reply.text
    row = await app[SERVICES].pool.fetchrow("SELECT row_to_json(k)::text AS r FROM api_keys k")
    assert row is not None and secret not in row["r"] and secret.removeprefix("gmr_") not in row["r"]
    created = await app[SERVICES].pool.fetchrow(
        "SELECT actor, details::text AS details FROM audit_log WHERE action = 'api_key.created'"
    )
    assert created is not None and created["actor"] == "cli" and secret not in created["details"]


async def test_a_second_active_key_with_the_same_name_is_refused(
    serve: Serve, cli_env: dict[str, str], tmp_path: Path
) -> None:
    app = await serve()
    code, _, stderr = await api_key("create", "skill-email", "--scope", ALL, env=cli_env, cwd=tmp_path)
    assert code == 0, stderr

    code, stdout, stderr = await api_key("create", "skill-email", "--scope", ALL, env=cli_env, cwd=tmp_path)

    assert code == 1
    assert stdout == ""  # no secret of a key that does not exist
    assert "an active API key is already named 'skill-email'" in stderr and "revoke it first" in stderr
    assert await app[SERVICES].pool.fetchval("SELECT count(*) FROM api_keys") == 1

    code, stdout, stderr = await api_key("create", "   ", "--scope", "registry", env=cli_env, cwd=tmp_path)

    assert code == 2 and stdout == ""
    assert "NAME must be 1 to 100 characters" in stderr


async def test_list_shows_names_and_prefixes_but_never_secrets(
    serve: Serve, cli_env: dict[str, str], tmp_path: Path
) -> None:
    await serve()
    code, empty, stderr = await api_key("list", env=cli_env, cwd=tmp_path)
    assert code == 0, stderr
    assert empty.strip() == "No API keys. Create one with: gmail-reconnect api-key create NAME --scope SCOPE"
    created = {}
    for name in ("skill-email", "registry"):
        code, stdout, stderr = await api_key("create", name, "--scope", ALL, env=cli_env, cwd=tmp_path)
        assert code == 0, stderr
        created[name] = stdout.strip()

    code, listing, stderr = await api_key("list", env=cli_env, cwd=tmp_path)

    assert code == 0, stderr
    lines = listing.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["registry", "skill-email"]  # by name
    for line, name in zip(lines, ["registry", "skill-email"], strict=True):
        secret = created[name]
        assert f"{secret[:12]}…" in line
        assert "by cli" in line and "never used" in line and line.endswith("active")
        assert f"scopes {ALL} " in line
    for secret in created.values():
        assert secret not in listing + stderr
        assert secret[:13] not in listing  # not one character past the shown prefix
        assert not SECRET.search(listing)


async def test_revoke_by_name_or_prefix_shuts_the_key_out_of_the_api(
    serve: Serve, cli_env: dict[str, str], tmp_path: Path
) -> None:
    app = await serve()
    created = {}
    for name in ("skill-email", "registry"):
        code, stdout, stderr = await api_key("create", name, "--scope", ALL, env=cli_env, cwd=tmp_path)
        assert code == 0, stderr
        created[name] = stdout.strip()
    assert (await call(app, "GET", "/api/v1/accounts", key=created["skill-email"])).status == 200

    code, stdout, stderr = await api_key("revoke", "skill-email", env=cli_env, cwd=tmp_path)

    assert code == 0, stderr
    assert "'skill-email'" in stdout and "revoked" in stdout and "401" in stdout
    refused = await call(app, "GET", "/api/v1/accounts", key=created["skill-email"])
    assert refused.status == 401
    assert (await call(app, "GET", "/api/v1/accounts", key=created["registry"])).status == 200

    code, stdout, stderr = await api_key("revoke", created["registry"][:12], env=cli_env, cwd=tmp_path)

    assert code == 0, stderr
    assert "'registry'" in stdout and "revoked" in stdout
    assert (await call(app, "GET", "/api/v1/accounts", key=created["registry"])).status == 401
    code, active, _ = await api_key("list", env=cli_env, cwd=tmp_path)
    assert code == 0 and active.strip().startswith("No API keys")
    code, everything, _ = await api_key("list", "--all", env=cli_env, cwd=tmp_path)
    assert code == 0
    assert [line.split()[0] for line in everything.strip().splitlines()] == ["registry", "skill-email"]
    assert all(" revoked " in line for line in everything.strip().splitlines())
    revoked = await app[SERVICES].pool.fetch(
        "SELECT actor, details::text AS details FROM audit_log WHERE action = 'api_key.revoked'"
    )
    assert [row["actor"] for row in revoked] == ["cli", "cli"]
    assert not any(secret in row["details"] for row in revoked for secret in created.values())

    # The name is free again once its key is revoked.
    code, stdout, stderr = await api_key("create", "skill-email", "--scope", ALL, env=cli_env, cwd=tmp_path)
    assert code == 0, stderr
    assert (await call(app, "GET", "/api/v1/accounts", key=stdout.strip())).status == 200
    assert (await call(app, "GET", "/api/v1/accounts", key=created["skill-email"])).status == 401


async def test_revoking_an_unknown_or_already_revoked_key_fails_clearly(
    serve: Serve, cli_env: dict[str, str], tmp_path: Path
) -> None:
    await serve()
    code, _, stderr = await api_key("create", "skill-email", "--scope", ALL, env=cli_env, cwd=tmp_path)
    assert code == 0, stderr

    code, stdout, stderr = await api_key("revoke", "nobody", env=cli_env, cwd=tmp_path)

    assert code == 1 and stdout == ""
    assert "no active API key is named 'nobody'" in stderr

    assert (await api_key("revoke", "skill-email", env=cli_env, cwd=tmp_path))[0] == 0
    code, _, stderr = await api_key("revoke", "skill-email", env=cli_env, cwd=tmp_path)

    assert code == 1 and "no active API key is named 'skill-email'" in stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        ([], "--scope is required"),
        (["--scope", "everything"], "unknown scope 'everything'"),
        (["--scope", "registry,admin"], "unknown scope 'admin'"),
        (["--scope", ","], "no scope given"),
        (["--scope="], "no scope given"),
    ],
    ids=["missing", "unknown", "one-unknown", "only-commas", "empty"],
)
async def test_create_without_a_valid_scope_says_which_scopes_exist(
    serve: Serve, cli_env: dict[str, str], tmp_path: Path, args: list[str], said: str
) -> None:
    app = await serve()

    code, stdout, stderr = await api_key("create", "skill-email", *args, env=cli_env, cwd=tmp_path)

    assert code == 2 and stdout == ""
    assert stderr.startswith("usage: gmail-reconnect api-key create"), stderr
    assert said in stderr
    assert "credentials, registry, report" in stderr
    assert "Traceback" not in stderr
    assert await app[SERVICES].pool.fetchval("SELECT count(*) FROM api_keys") == 0


async def test_a_key_created_with_some_scopes_opens_only_those_endpoints(
    serve: Serve, cli_env: dict[str, str], tmp_path: Path
) -> None:
    app = await serve()

    code, stdout, stderr = await api_key(
        "create", "sender-registry", "--scope", " Registry , report", env=cli_env, cwd=tmp_path
    )

    assert code == 0, stderr
    assert "created with scopes registry, report" in stderr
    secret = stdout.strip()
    assert (await call(app, "GET", "/api/v1/accounts", key=secret)).status == 200
    refused = await call(app, "GET", "/api/v1/accounts/U0ANYONE/credentials", key=secret)
    assert refused.status == 403 and refused.json()["required_scope"] == "credentials"
    code, listing, _ = await api_key("list", env=cli_env, cwd=tmp_path)
    assert code == 0 and "scopes registry,report " in listing
    created = await app[SERVICES].pool.fetchval(
        "SELECT details->'scopes' FROM audit_log WHERE action = 'api_key.created'"
    )
    assert created == ["registry", "report"]
