"""The api_keys repository against a real PostgreSQL: secrets shown once and stored hashed, verify, revoke."""

from __future__ import annotations

import hashlib

import asyncpg
import pytest

from storage import audit
from storage.api_keys import KEY_PREFIX, SHOWN_PREFIX_LENGTH, ApiKeys
from storage.errors import Conflict, NotFound


@pytest.fixture
def keys(pool: asyncpg.Pool) -> ApiKeys:
    return ApiKeys(pool)


async def test_create_returns_a_new_secret_and_stores_only_its_hash(
    keys: ApiKeys, pool: asyncpg.Pool
) -> None:
    key, secret = await keys.create("skill-email", actor="test")
    other_key, other = await keys.create("registry", actor="test")

    assert secret.startswith(KEY_PREFIX) and len(secret) >= len(KEY_PREFIX) + 40 and other != secret
    assert key.key_prefix == secret[:SHOWN_PREFIX_LENGTH] and key.active and key.created_by == "test"
    row = await pool.fetchrow(
        "SELECT row_to_json(k)::text AS r, key_hash FROM api_keys k WHERE id = $1", key.id
    )
    assert row is not None
    assert secret not in row["r"] and secret[SHOWN_PREFIX_LENGTH:] not in row["r"]
    assert bytes(row["key_hash"]) == hashlib.sha256(secret.encode()).digest()
    (created, _) = [e for e in await audit.recent(pool) if e.action == "api_key.created"]
    assert created.actor == "test" and created.details == {"name": "registry", "prefix": other_key.key_prefix}


async def test_verify_accepts_only_the_active_secret(keys: ApiKeys) -> None:
    key, secret = await keys.create("skill-email", actor="test")

    verified = await keys.verify(secret)

    assert verified is not None and verified.id == key.id and verified.name == "skill-email"
    for wrong in (
        "",
        secret[:-1],
        secret + "x",
        secret.removeprefix(KEY_PREFIX),
        key.key_prefix,
        secret.upper(),
    ):
        assert await keys.verify(wrong) is None, wrong
    await keys.revoke("skill-email", actor="test")
    assert await keys.verify(secret) is None


async def test_last_use_is_recorded_at_most_once_a_minute(keys: ApiKeys, pool: asyncpg.Pool) -> None:
    key, secret = await keys.create("skill-email", actor="test")

    await keys.verify(secret)
    first = await pool.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", key.id)
    await keys.verify(secret)
    second = await pool.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", key.id)
    await pool.execute(
        "UPDATE api_keys SET last_used_at = now() - interval '2 minutes' WHERE id = $1", key.id
    )
    old = await pool.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", key.id)
    await keys.verify(secret)
    third = await pool.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", key.id)

    assert first is not None and second == first
    assert third > old


async def test_one_active_key_per_name_and_revoke_by_name_or_prefix(keys: ApiKeys) -> None:
    first, _ = await keys.create("skill-email", actor="test")
    with pytest.raises(Conflict, match="already named 'skill-email'"):
        await keys.create("skill-email", actor="test")

    revoked = await keys.revoke("skill-email", actor="test")
    second, _ = await keys.create("skill-email", actor="test")  # the name is free again
    by_prefix = await keys.revoke(second.key_prefix, actor="test")

    assert revoked.id == first.id and revoked.revoked_at is not None and not revoked.active
    assert by_prefix.id == second.id
    assert await keys.list() == []
    assert [k.id for k in await keys.list(include_revoked=True)] == [first.id, second.id]
    with pytest.raises(NotFound, match="no active API key is named 'skill-email'"):
        await keys.revoke("skill-email", actor="test")


async def test_revoke_refuses_a_name_that_is_also_another_keys_prefix(keys: ApiKeys) -> None:
    target, _ = await keys.create("skill-email", actor="test")
    await keys.create(target.key_prefix, actor="test")  # a key named like the other key's prefix

    with pytest.raises(Conflict, match="matches several keys"):
        await keys.revoke(target.key_prefix, actor="test")

    assert len(await keys.list()) == 2  # nothing was revoked


async def test_revoke_does_not_claim_that_no_key_starts_with_a_prefix_one_does(keys: ApiKeys) -> None:
    key, secret = await keys.create("skill-email", actor="test")
    shorter = secret[: SHOWN_PREFIX_LENGTH - 2]  # the start of the key, shorter than the shown prefix

    try:
        revoked = await keys.revoke(shorter, actor="test")
    except NotFound as error:
        # Refusing a shorter prefix is fine, but then the message must not say that no key starts with it.
        assert "starts with it" not in str(error), str(error)
    else:
        assert revoked.id == key.id
