"""Who may call the API, through the real application over real HTTP on a real PostgreSQL: each key's scopes
(403 outside them, audited), keys from before scopes existed, and requests without a valid key (401, counted
and logged once a minute, never audited)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Iterable

import aiohttp
import pytest
from aiohttp import web

from bot.appkeys import SERVICES
from handlers.http.api_access import REFUSALS
from storage.api_keys import Scope
from storage.migrator import migrate
from storage.pool import connect
from tests.fakes.google import FakeGoogle
from tests.fakes.slack import FakeSlack
from tests.helpers import Serve, call, healthy, load_legacy_seed, metric, scrape_metrics

REASONS = ("missing", "malformed", "unknown", "revoked")
LAST_MIGRATION_WITHOUT_SCOPES = 9


async def new_key(app: web.Application, name: str, scopes: Iterable[Scope]) -> str:
    _, secret = await app[SERVICES].api_keys.create(name, scopes=scopes, actor="test")
    return secret


def paths(slack_id: str) -> dict[str, tuple[str, str]]:
    """Each endpoint's method and path, by the name it is counted under in the metrics."""
    return {
        "accounts": ("GET", "/api/v1/accounts"),
        "account": ("GET", f"/api/v1/accounts/{slack_id}"),
        "credentials": ("GET", f"/api/v1/accounts/{slack_id}/credentials"),
        "token_failure": ("POST", f"/api/v1/accounts/{slack_id}/token-failure"),
    }


async def statuses(app: web.Application, key: str, slack_id: str) -> dict[str, int]:
    """The status every endpoint answers this key with."""
    found = {}
    for name, (method, path) in paths(slack_id).items():
        body = {"reason": "Gmail answered 401"} if method == "POST" else None
        found[name] = (await call(app, method, path, key=key, body=body)).status
    return found


async def audit_count(app: web.Application) -> int:
    count: int = await app[SERVICES].pool.fetchval("SELECT count(*) FROM audit_log")
    return count


# ---- Scopes -------------------------------------------------------------------------------------------------


async def test_each_scope_opens_its_endpoints_and_only_those(
    serve: Serve, fake_google: FakeGoogle, fake_slack: FakeSlack
) -> None:
    app = await serve()
    await healthy(app, fake_google, "U0FRESH")
    keys = {scope: await new_key(app, f"only-{scope}", [scope]) for scope in Scope}

    found = {scope: await statuses(app, keys[scope], "U0FRESH") for scope in Scope}

    assert found == {
        Scope.REGISTRY: {"accounts": 200, "account": 200, "credentials": 403, "token_failure": 403},
        Scope.CREDENTIALS: {"accounts": 403, "account": 403, "credentials": 200, "token_failure": 403},
        Scope.REPORT: {"accounts": 403, "account": 403, "credentials": 403, "token_failure": 200},
    }
    assert len(fake_google.calls_to("/token")) == 1  # the report's check; no refused call reached Google


async def test_a_registry_key_cannot_read_credentials_and_is_told_which_scope_it_lacks(
    serve: Serve, fake_google: FakeGoogle
) -> None:
    app = await serve()
    await healthy(app, fake_google, "U0FRESH")
    key = await new_key(app, "sender-registry", [Scope.REGISTRY])

    refused = await call(app, "GET", "/api/v1/accounts/U0FRESH/credentials", key=key)
    listed = await call(app, "GET", "/api/v1/accounts", key=key)
    one = await call(app, "GET", "/api/v1/accounts/U0FRESH", key=key)

    assert refused.status == 403 and refused.headers["Cache-Control"] == "no-store"
    answer = refused.json()
    assert answer["error"] == "forbidden"
    assert answer["required_scope"] == "credentials" and answer["key_scopes"] == ["registry"]
    assert "'sender-registry'" in answer["message"] and "--scope credentials" in answer["message"]
    assert "access_token" not in refused.text
    for secret in fake_google.issued_secrets:
        assert secret not in refused.text + listed.text + one.text
    assert listed.status == 200 and listed.json()["count"] == 1
    assert one.status == 200
    assert one.json()["slack_user_id"] == "U0FRESH" and one.json()["status"] == "healthy"
    assert one.json()["email"] == "u0fresh@gmail.com" and "access_token" not in one.json()
    forbidden = await app[SERVICES].pool.fetch(
        "SELECT actor, details FROM audit_log WHERE action = 'api.forbidden' ORDER BY id"
    )
    assert [(row["actor"], row["details"]) for row in forbidden] == [
        (
            "api:sender-registry",
            {"path": "/api/v1/accounts/U0FRESH/credentials", "method": "GET", "scope": "credentials"},
        )
    ]
    assert (
        await app[SERVICES].pool.fetchval(
            "SELECT count(*) FROM audit_log WHERE action = 'api.account_read' AND slack_user_id = 'U0FRESH'"
        )
        == 1
    )
    samples = await scrape_metrics(app)
    assert metric(samples, "gmail_reconnect_api_requests_total", endpoint="credentials", status="403") == 1


async def test_a_credentials_key_cannot_list_the_accounts(serve: Serve, fake_google: FakeGoogle) -> None:
    app = await serve()
    await healthy(app, fake_google, "U0FRESH")
    key = await new_key(app, "skill-email", [Scope.CREDENTIALS])

    listed = await call(app, "GET", "/api/v1/accounts", key=key)
    unknown_user = await call(app, "GET", "/api/v1/accounts/U0NOBODY", key=key)

    assert listed.status == 403 and listed.json()["required_scope"] == "registry"
    assert "U0FRESH" not in listed.text and "u0fresh" not in listed.text
    assert unknown_user.status == 403  # refused before it is looked up: no telling who has an account
    assert (await call(app, "GET", "/api/v1/accounts/U0FRESH/credentials", key=key)).status == 200


async def test_one_account_read_by_the_registry_is_404_or_400_for_a_bad_id(serve: Serve) -> None:
    app = await serve()
    key = await new_key(app, "sender-registry", [Scope.REGISTRY])

    assert (await call(app, "GET", "/api/v1/accounts/U0NOBODY", key=key)).status == 404
    malformed = await call(app, "GET", "/api/v1/accounts/foo", key=key)
    assert malformed.status == 400 and "'foo' is not a Slack user ID" in malformed.json()["message"]


async def test_a_key_from_before_scopes_keeps_every_endpoint_through_the_migration(
    serve: Serve, fake_google: FakeGoogle, database_url: str
) -> None:
    # A deployment that made its key before scopes existed: migrated up to then, its key inserted as it was.
    await load_legacy_seed(database_url)
    conn = await connect(database_url)
    try:
        await migrate(conn, until=LAST_MIGRATION_WITHOUT_SCOPES)
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM information_schema.columns WHERE table_name = 'api_keys' AND column_name = 'scopes'"
            )
            == 0
        )
        old = "gmr_" + secrets.token_urlsafe(32)
        await conn.execute(
            "INSERT INTO api_keys (name, key_prefix, key_hash, created_by) VALUES ('skill-email', $1, $2, 'cli')",
            old[:12],
            hashlib.sha256(old.encode()).digest(),
        )
    finally:
        await conn.close()

    app = await serve()  # migrates the rest, as `serve` does at start
    await healthy(app, fake_google, "U0FRESH")

    assert await statuses(app, old, "U0FRESH") == {
        "accounts": 200,
        "account": 200,
        "credentials": 200,
        "token_failure": 200,
    }
    (listed,) = await app[SERVICES].api_keys.list()
    assert listed.name == "skill-email" and listed.scopes == frozenset(Scope)
    new = await new_key(app, "sender-registry", [Scope.REGISTRY])
    assert (await call(app, "GET", "/api/v1/accounts/U0FRESH/credentials", key=new)).status == 403


# ---- Requests without a valid key ---------------------------------------------------------------------------


async def test_a_revoked_key_gets_401_and_writes_no_audit_row(serve: Serve) -> None:
    app = await serve()
    key = await new_key(app, "skill-email", list(Scope))
    assert (await call(app, "GET", "/api/v1/accounts", key=key)).status == 200
    await app[SERVICES].api_keys.revoke("skill-email", actor="test")
    before = await audit_count(app)

    refused = await call(app, "GET", "/api/v1/accounts", key=key)

    assert refused.status == 401 and refused.json()["error"] == "unauthorized"
    assert await audit_count(app) == before
    samples = await scrape_metrics(app)
    assert metric(samples, "gmail_reconnect_api_refused_total", reason="revoked") == 1
    (revoked,) = await app[SERVICES].api_keys.list(include_revoked=True)
    assert revoked.last_used_at is not None and revoked.revoked_at is not None


async def test_a_thousand_requests_without_a_valid_key_add_no_audit_row_and_are_counted(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    app = await serve()
    revoked = await new_key(app, "old-service", [Scope.REGISTRY])
    await app[SERVICES].api_keys.revoke("old-service", actor="test")
    unknown = "gmr_" + secrets.token_urlsafe(32)
    now = [1000.0]
    app[REFUSALS].clock = lambda: now[0]  # the log's clock stands still: every request falls in one minute
    headers = {
        "missing": {},
        "malformed": {"Authorization": f"Basic {unknown}"},
        "unknown": {"Authorization": f"Bearer {unknown}"},
        "revoked": {"Authorization": f"Bearer {revoked}"},
    }
    base = app[SERVICES].links.public_base_url
    audit_before = await audit_count(app)
    caplog.set_level(logging.WARNING, logger="handlers.http.api_access")

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:

        async def attempt(n: int) -> int:
            reason = REASONS[n % len(REASONS)]
            method, path = list(paths("U0ANYONE").values())[(n // 4) % 4]  # every endpoint, every reason
            async with session.request(method, base + path, headers=headers[reason]) as response:
                await response.read()
                return response.status

        answered = await asyncio.gather(*(attempt(n) for n in range(1000)))

    assert answered == [401] * 1000
    assert await audit_count(app) == audit_before
    samples = await scrape_metrics(app)
    refused = {
        reason: metric(samples, "gmail_reconnect_api_refused_total", reason=reason) for reason in REASONS
    }
    assert refused == dict.fromkeys(REASONS, 250.0)
    assert sum(refused.values()) == 1000
    lines = [r.getMessage() for r in caplog.records if r.name == "handlers.http.api_access"]
    assert len(lines) == 1 and "refused 1 request(s)" in lines[0]

    now[0] += 60  # a minute later, the next refusal writes the next line, with the count since the last
    assert (await call(app, "GET", "/api/v1/accounts")).status == 401

    lines = [r.getMessage() for r in caplog.records if r.name == "handlers.http.api_access"]
    assert len(lines) == 2
    assert "refused 1000 request(s)" in lines[1] and "since the last such line" in lines[1]
    assert "missing 250" in lines[1] and "revoked 250" in lines[1]
    for secret in (unknown, revoked, unknown[:12], revoked[4:]):
        assert secret not in caplog.text


async def test_keys_in_odd_shapes_get_401_never_500(serve: Serve) -> None:
    app = await serve()
    base = app[SERVICES].links.public_base_url
    odd = [
        "Bearer",
        "Bearer ",
        "Bearer gmr_",
        "Bearer  gmr_" + "x" * 6000,
        "bearer gmr_🙂",
        "Bearer gmr_abc def",
        "Token gmr_abc",
        "\t",
    ]
    async with aiohttp.ClientSession() as session:
        for header in odd:
            async with session.get(base + "/api/v1/accounts", headers={"Authorization": header}) as response:
                assert response.status == 401, header
                assert (await response.json())["error"] == "unauthorized"
    assert await audit_count(app) == 0
