"""`doctor` decrypts every row's tokens, as the bot will, and lists those it cannot read with the reason."""

from __future__ import annotations

import base64
from pathlib import Path

import asyncpg
import pytest

from bot.database import token_codec
from bot.environment import load_settings
from storage.accounts import Accounts
from storage.crypto import key_id
from storage.models import Status, TokenGrant
from storage.pool import create_pool
from tests.helpers import BASE_ENV, SERVING_KEY, make_unreadable, run, run_async


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {**BASE_ENV, "DATABASE_URL": database_url, "GMAIL_RECONNECT_DATA_DIR": str(tmp_path / "data")}


async def rows(env: dict[str, str], tmp_path: Path, *user_ids: str) -> asyncpg.Pool:
    """A migrated database with a row for each user_id, encrypted under SERVING_KEY."""
    assert run("migrate", "--init", env=env, cwd=tmp_path).returncode == 0
    pool = await create_pool(env["DATABASE_URL"], min_size=1, max_size=2)
    settings = load_settings(
        environ={**env, "TOKEN_ENCRYPTION_KEYS": SERVING_KEY}, env_file=tmp_path / "none"
    )
    accounts = Accounts(pool, token_codec(settings))
    for user_id in user_ids:
        grant = TokenGrant(f"ya29.{user_id}", f"1//{user_id}", None, None)
        await accounts.store_tokens(grant=grant, actor="test", user_id=user_id)
    return pool


async def test_doctor_lists_every_unreadable_row_with_its_reason(env: dict[str, str], tmp_path: Path) -> None:
    pool = await rows(env, tmp_path, "fine", "lostkey", "rowa", "rowb", "fields")
    try:
        await make_unreadable(pool, "wrong_key", "lostkey", other_user_id="fine")
        await make_unreadable(pool, "swapped_rows", "rowa", other_user_id="rowb")
        await make_unreadable(pool, "swapped_fields", "fields", other_user_id="fine")
        lost_kid = (await pool.fetchval("SELECT token_data FROM gmail_tokens WHERE user_id = 'lostkey'"))[
            "encrypted"
        ]["refresh_token"].split(":")[1]
    finally:
        await pool.close()
    serving = {**env, "TOKEN_ENCRYPTION_KEYS": SERVING_KEY}

    code, out, _ = await run_async("doctor", env=serving, cwd=tmp_path)

    assert code == 1, out
    assert "[FAIL] 4 account(s) hold tokens that cannot be decrypted" in out
    lines = {
        line.strip().split(": ", 1)[0]: line.strip() for line in out.splitlines() if line.startswith(" ")
    }
    assert lines.keys() == {"lostkey", "rowa", "rowb", "fields"}
    assert (
        f"the access_token is encrypted with a key that TOKEN_ENCRYPTION_KEYS does not hold (key id {lost_kid})"
        in lines["lostkey"]
    )
    assert (
        "the access_token holds the ciphertext made for the access_token of account 'rowb': "
        "ciphertexts were swapped or copied between rows" in lines["rowa"]
    )
    assert (
        "the refresh_token holds the ciphertext made for the refresh_token of account 'rowa'" in lines["rowb"]
    )
    assert (
        "the access_token holds the ciphertext made for the refresh_token: the fields were swapped or copied"
        in lines["fields"]
    )
    assert "ya29." not in out and "1//" not in out and SERVING_KEY not in out

    code, out, _ = await run_async("doctor", env=env, cwd=tmp_path)  # TOKEN_ENCRYPTION_KEYS not set

    assert code == 1
    assert "[FAIL] 5 account(s) hold tokens that cannot be decrypted" in out
    serving_kid = key_id(base64.b64decode(SERVING_KEY))
    assert (
        f"fine: the access_token is encrypted (key id {serving_kid}) but TOKEN_ENCRYPTION_KEYS is not set"
        in out
    )


async def test_doctor_on_readable_rows_says_so_and_notices_rows_marked_unreadable_that_read_now(
    env: dict[str, str], tmp_path: Path
) -> None:
    pool = await rows(env, tmp_path, "one", "two")
    try:
        await pool.execute(
            "UPDATE gmail_tokens SET status = $1, status_cause = $2 WHERE user_id = 'two'",
            str(Status.UNREADABLE),
            "The stored tokens cannot be decrypted: x.",
        )
    finally:
        await pool.close()

    code, out, _ = await run_async("doctor", env={**env, "TOKEN_ENCRYPTION_KEYS": SERVING_KEY}, cwd=tmp_path)

    assert code == 0, out
    assert "[  ok] Every stored token can be decrypted (2 row(s) with token data)." in out
    assert "[warn] 1 account(s) are marked unreadable but their tokens decrypt now: two." in out
    code, out, _ = await run_async("accounts", "--status", "unreadable", env=env, cwd=tmp_path)
    assert code == 0
    (row,) = out.splitlines()[1:]
    assert row.split()[1:3] == ["two", "-"] and "unreadable" in row
    assert row.endswith("tokens_unreadable (The stored tokens cannot be decrypted: x.)")
