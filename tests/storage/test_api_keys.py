"""The api_keys repository against a real PostgreSQL: secrets shown once and stored hashed, verify, revoke."""

from __future__ import annotations

import hashlib

import asyncpg
import pytest

from storage import audit
from storage.api_keys import KEY_PREFIX, SHOWN_PREFIX_LENGTH, ApiKeys, Scope
from storage.errors import Conflict, NotFound

ALL = list(Scope)


@pytest.fixture
def keys(pool: asyncpg.Pool) -> ApiKeys:
    return ApiKeys(pool)


async def test_create_returns_a_new_secret_and_stores_only_its_hash(
    keys: ApiKeys, pool: asyncpg.Pool
) -> None:
    key, secret = await keys.create("skill-email", scopes=ALL, actor="test")
    other_key, other = await keys.create("registry", scopes=[Scope.REGISTRY], actor="test")

    assert secret.startswith(KEY_PREFIX) and len(secret) >= len(KEY_PREFIX) + 40 and other != secret
    assert key.key_prefix == secret[:SHOWN_PREFIX_LENGTH] and key.active and key.created_by == "test"
    row = await pool.fetchrow(
        "SELECT row_to_json(k)::text AS r, key_hash FROM api_keys k WHERE id = $1", key.id
    )
    assert row is not None
    assert secret not in row["r"] and secret[SHOWN_PREFIX_LENGTH:] not in row["r"]
    assert bytes(row["key_hash"]) == hashlib.sha256(secret.encode()).digest()
    (created, _) = [e for e in await audit.recent(pool) if e.action == "api_key.created"]
    assert created.actor == "test"
    assert created.details == {"name": "registry", "prefix": other_key.key_prefix, "scopes": ["registry"]}


async def test_verify_accepts_only_the_active_secret(keys: ApiKeys) -> None:
    key, secret = await keys.create("skill-email", scopes=ALL, actor="test")

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
    key, secret = await keys.create("skill-email", scopes=ALL, actor="test")

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
    first, _ = await keys.create("skill-email", scopes=ALL, actor="test")
    with pytest.raises(Conflict, match="already named 'skill-email'"):
        await keys.create("skill-email", scopes=ALL, actor="test")

    revoked = await keys.revoke("skill-email", actor="test")
    second, _ = await keys.create("skill-email", scopes=ALL, actor="test")  # the name is free again
    by_prefix = await keys.revoke(second.key_prefix, actor="test")

    assert revoked.id == first.id and revoked.revoked_at is not None and not revoked.active
    assert by_prefix.id == second.id
    assert await keys.list() == []
    assert [k.id for k in await keys.list(include_revoked=True)] == [first.id, second.id]
    with pytest.raises(NotFound, match="no active API key is named 'skill-email'"):
        await keys.revoke("skill-email", actor="test")


async def test_revoke_refuses_a_name_that_is_also_another_keys_prefix(keys: ApiKeys) -> None:
    target, _ = await keys.create("skill-email", scopes=ALL, actor="test")
    await keys.create(target.key_prefix, scopes=ALL, actor="test")  # a key named like the other key's prefix

    with pytest.raises(Conflict, match="matches several keys"):
        await keys.revoke(target.key_prefix, actor="test")

    assert len(await keys.list()) == 2  # nothing was revoked


async def test_revoke_does_not_claim_that_no_key_starts_with_a_prefix_one_does(keys: ApiKeys) -> None:
    key, secret = await keys.create("skill-email", scopes=ALL, actor="test")
    shorter = secret[: SHOWN_PREFIX_LENGTH - 2]  # the start of the key, shorter than the shown prefix

    try:
        revoked = await keys.revoke(shorter, actor="test")
    except NotFound as error:
        # Refusing a shorter prefix is fine, but then the message must not say that no key starts with it.
        assert "starts with it" not in str(error), str(error)
    else:
        assert revoked.id == key.id


async def test_a_key_keeps_the_scopes_it_was_created_with(keys: ApiKeys) -> None:
    key, secret = await keys.create(
        "registry", scopes=[Scope.REGISTRY, Scope.REPORT, Scope.REGISTRY], actor="t"
    )

    verified = await keys.verify(secret)

    assert key.scopes == frozenset({Scope.REGISTRY, Scope.REPORT}) and key.scope_names == [
        "registry",
        "report",
    ]
    assert verified is not None and verified.scopes == key.scopes
    assert verified.allows(Scope.REGISTRY) and not verified.allows(Scope.CREDENTIALS)
    (listed,) = await keys.list()
    assert listed.scopes == key.scopes
    with pytest.raises(ValueError, match="at least one scope"):
        await keys.create("nothing", scopes=[], actor="test")
    with pytest.raises(ValueError):
        await keys.create("bogus", scopes=["everything"], actor="test")  # type: ignore[list-item]


async def test_identify_tells_a_revoked_key_from_an_unknown_one(keys: ApiKeys) -> None:
    key, secret = await keys.create("skill-email", scopes=ALL, actor="test")
    await keys.revoke("skill-email", actor="test")

    revoked = await keys.identify(secret)

    assert revoked is not None and revoked.id == key.id and not revoked.active
    assert revoked.last_used_at is None  # a revoked key's use is not recorded as use
    assert await keys.identify(KEY_PREFIX + "x" * 43) is None
    assert await keys.identify("not-a-key") is None


@pytest.mark.parametrize(
    "scopes",
    [None, [], ["everything"], ["registry", None], ["Registry"]],
    ids=["null", "empty", "unknown", "null-element", "wrong-case"],
)
async def test_the_table_refuses_a_key_without_known_scopes(pool: asyncpg.Pool, scopes: object) -> None:
    with pytest.raises((asyncpg.NotNullViolationError, asyncpg.CheckViolationError)):
        await pool.execute(
            """INSERT INTO api_keys (name, key_prefix, key_hash, scopes, created_by)
               VALUES ('x', 'gmr_x', '\\x00', $1, 'test')""",
            scopes,
        )
    with pytest.raises(asyncpg.NotNullViolationError):  # a new key names its scopes: there is no default
        await pool.execute(
            "INSERT INTO api_keys (name, key_prefix, key_hash, created_by) VALUES ('x', 'gmr_x', '\\x01', 't')"
        )
