"""The API for other services through the real application, over real HTTP, against a real PostgreSQL, the
fake Google and the fake Slack: API-key authentication, credentials, token-failure reports, the registry and
GET /metrics."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.appkeys import SERVICES
from handlers.http.api import REASON_LIMIT, RETRY_AFTER_SECONDS
from storage.api_keys import ApiKeys, Scope
from storage.causes import CauseCode
from storage.models import Status, TokenGrant
from tests.fakes.google import FakeGoogle
from tests.fakes.slack import FakeSlack
from tests.helpers import READONLY, Serve, call, dms, healthy, load_legacy_seed, metric, scrape_metrics

KEY_NAME = "skill-email"
ACTOR = f"api:{KEY_NAME}"
SEED_NULL_TOKENS = "U0EAGLE0914"  # a legacy Slack-linked row whose token_data is NULL
SEED_ROWS = 6  # the legacy table's three imported rows and its three NULL-token rows
SEED_MISSING = 3  # the legacy NULL-token rows


async def new_key(app: web.Application, name: str = KEY_NAME) -> str:
    """A new API key's secret with every scope, created through the application's repository."""
    _, secret = await app[SERVICES].api_keys.create(name, scopes=Scope, actor="test")
    return secret


def credentials_path(slack_id: str) -> str:
    return f"/api/v1/accounts/{slack_id}/credentials"


def failure_path(slack_id: str) -> str:
    return f"/api/v1/accounts/{slack_id}/token-failure"


async def audit_details(app: web.Application) -> str:
    """Every audit row's details, as text, to search for what must never be there."""
    rows = await app[SERVICES].pool.fetch("SELECT details::text AS details FROM audit_log ORDER BY id")
    return "\n".join(str(row["details"]) for row in rows)


async def audit_rows(app: web.Application, action: str) -> list[dict[str, Any]]:
    rows = await app[SERVICES].pool.fetch(
        "SELECT actor, slack_user_id, details::text AS details FROM audit_log WHERE action = $1 ORDER BY id",
        action,
    )
    return [
        {"actor": row["actor"], "slack_user_id": row["slack_user_id"], **json.loads(row["details"])}
        for row in rows
    ]


async def stored_access_token(app: web.Application, slack_id: str) -> str | None:
    account = await app[SERVICES].accounts.find_by_slack_id(slack_id)
    assert account is not None
    tokens = await app[SERVICES].accounts.read_tokens(account.id)
    return tokens.access_token if tokens else None


async def stored_status(app: web.Application, slack_id: str) -> Status:
    account = await app[SERVICES].accounts.find_by_slack_id(slack_id)
    assert account is not None
    return account.status


def assert_no_google_secret(fake_google: FakeGoogle, text: str) -> None:
    leaked = [secret for secret in fake_google.issued_secrets if secret in text]
    assert leaked == [], "a token the fake Google issued is in the text"


# ---- Authentication -----------------------------------------------------------------------------------------


async def test_without_a_key_every_endpoint_answers_401_saying_how_to_create_one(serve: Serve) -> None:
    app = await serve()

    for method, path in [
        ("GET", "/api/v1/accounts"),
        ("GET", credentials_path("U0ANYONE")),
        ("POST", failure_path("U0ANYONE")),
    ]:
        reply = await call(app, method, path, body={"reason": "x"} if method == "POST" else None)

        assert reply.status == 401, path
        assert reply.headers["WWW-Authenticate"] == 'Bearer realm="gmail-reconnect"'
        assert reply.headers["Cache-Control"] == "no-store"
        answer = reply.json()
        assert answer["error"] == "unauthorized"
        assert "gmail-reconnect api-key create NAME --scope" in answer["message"]
    # Anyone can send these: they are counted, not written to the audit log.
    assert await app[SERVICES].pool.fetchval("SELECT count(*) FROM audit_log") == 0
    assert metric(await scrape_metrics(app), "gmail_reconnect_api_refused_total", reason="missing") == 3


async def test_wrong_malformed_and_revoked_keys_get_401_and_a_good_key_gets_200(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    app = await serve()
    secret = await new_key(app)
    wrong = "gmr_" + secrets.token_urlsafe(32)

    good = await call(app, "GET", "/api/v1/accounts", key=secret)
    bad = await call(app, "GET", "/api/v1/accounts", key=wrong)
    not_bearer = await call(app, "GET", "/api/v1/accounts", authorization=f"Basic {secret}")
    bare = await call(app, "GET", "/api/v1/accounts", authorization=secret)
    unprefixed = await call(app, "GET", "/api/v1/accounts", key=secret.removeprefix("gmr_"))
    lower_scheme = await call(app, "GET", "/api/v1/accounts", authorization=f"bearer {secret}")

    assert good.status == 200 and good.json() == {"accounts": [], "count": 0}
    assert lower_scheme.status == 200  # the scheme is case-insensitive (RFC 7235)
    for reply in (bad, not_bearer, bare, unprefixed):
        assert reply.status == 401
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert bad.json()["message"] == "This API key is not valid, or it was revoked."

    await ApiKeys(app[SERVICES].pool).revoke(KEY_NAME, actor="test")
    revoked = await call(app, "GET", "/api/v1/accounts", key=secret)

    assert revoked.status == 401 and revoked.json()["error"] == "unauthorized"
    assert revoked.json()["message"] == bad.json()["message"]  # unknown and revoked read the same
    assert await audit_rows(app, "api.refused") == []
    samples = await scrape_metrics(app)
    assert {
        reason: metric(samples, "gmail_reconnect_api_refused_total", reason=reason)
        for reason in ("missing", "malformed", "unknown", "revoked")
    } == {"missing": 0, "malformed": 3, "unknown": 1, "revoked": 1}
    details = await audit_details(app)
    for presented in (secret, wrong, secret.removeprefix("gmr_")):
        assert presented not in details
    assert secret not in caplog.text and wrong not in caplog.text


async def test_keys_are_stored_hashed_and_their_use_is_recorded(serve: Serve) -> None:
    app = await serve()
    key, secret = await app[SERVICES].api_keys.create(KEY_NAME, scopes=[Scope.REGISTRY], actor="test")
    assert secret.startswith("gmr_") and len(secret) > 40
    assert key.key_prefix == secret[:12] and key.last_used_at is None and key.active

    assert (await call(app, "GET", "/api/v1/accounts", key=secret)).status == 200

    rows = await app[SERVICES].pool.fetch(
        """SELECT id::text, name, key_prefix, encode(key_hash, 'escape') AS hash_escaped,
                  encode(key_hash, 'hex') AS hash_hex, encode(key_hash, 'base64') AS hash_base64,
                  created_by, created_at::text, last_used_at::text, revoked_at::text
             FROM api_keys"""
    )
    (row,) = rows
    for column, value in dict(row).items():
        assert value is None or secret not in value, column
        assert value is None or secret.removeprefix("gmr_") not in value, column
    assert row["hash_hex"] == hashlib.sha256(secret.encode()).hexdigest()
    assert row["last_used_at"] is not None  # recorded on use
    (listed,) = await app[SERVICES].api_keys.list()
    assert listed.last_used_at is not None
    assert secret not in await audit_details(app)


# ---- Credentials --------------------------------------------------------------------------------------------


async def test_credentials_of_a_healthy_account(
    serve: Serve, fake_google: FakeGoogle, fake_slack: FakeSlack
) -> None:
    app = await serve()
    key = await new_key(app)
    account = await healthy(app, fake_google, "U0FRESH")
    issued = await stored_access_token(app, "U0FRESH")

    reply = await call(app, "GET", credentials_path("U0FRESH"), key=key)

    assert reply.status == 200, reply.text
    assert reply.headers["Cache-Control"] == "no-store"
    assert reply.headers["Content-Type"].startswith("application/json")
    answer = reply.json()
    assert answer["access_token"] == issued and issued in fake_google.issued_secrets
    expiry = datetime.fromisoformat(answer["expiry"])
    assert expiry.tzinfo is not None and expiry == account.expiry
    assert expiry > datetime.now(UTC) + timedelta(minutes=40)
    assert answer["email"] == "u0fresh@gmail.com"
    assert (
        answer["scopes"] == account.scopes
        and "https://www.googleapis.com/auth/gmail.send" in answer["scopes"]
    )
    assert fake_google.calls_to("/token") == []  # still valid: Google is not asked
    assert fake_slack.calls == []
    (audited,) = await audit_rows(app, "api.credentials")
    assert (audited["actor"], audited["slack_user_id"], audited["outcome"]) == (ACTOR, "U0FRESH", "valid")
    assert_no_google_secret(fake_google, await audit_details(app))


async def test_credentials_of_an_expiring_account_are_refreshed_once(
    serve: Serve, fake_google: FakeGoogle
) -> None:
    app = await serve()
    key = await new_key(app)
    await healthy(app, fake_google, "U0STALE", expiring=True)
    old = await stored_access_token(app, "U0STALE")

    first = await call(app, "GET", credentials_path("U0STALE"), key=key)
    second = await call(app, "GET", credentials_path("U0STALE"), key=key)

    assert first.status == 200 and second.status == 200
    token = first.json()["access_token"]
    assert token != old and token in fake_google.issued_secrets
    assert token == await stored_access_token(app, "U0STALE")
    assert datetime.fromisoformat(first.json()["expiry"]) > datetime.now(UTC) + timedelta(minutes=50)
    assert second.json()["access_token"] == token  # the refreshed token is now fresh: no second refresh
    (refresh,) = fake_google.calls_to("/token")
    assert refresh.form["grant_type"] == "refresh_token" and refresh.status == 200
    assert [row["outcome"] for row in await audit_rows(app, "api.credentials")] == ["refreshed", "valid"]
    assert_no_google_secret(fake_google, await audit_details(app))


async def test_concurrent_credentials_for_one_expiring_account_cost_one_refresh(
    serve: Serve, fake_google: FakeGoogle
) -> None:
    app = await serve()
    key = await new_key(app)
    await healthy(app, fake_google, "U0STALE", expiring=True)
    fake_google.token_delay = 0.2  # every caller arrives while the refresh is under way

    replies = await asyncio.gather(
        *(call(app, "GET", credentials_path("U0STALE"), key=key) for _ in range(8))
    )

    assert [reply.status for reply in replies] == [200] * 8
    assert len({reply.json()["access_token"] for reply in replies}) == 1
    assert len(fake_google.calls_to("/token")) == 1
    assert metric(await scrape_metrics(app), "gmail_reconnect_refreshes_total", outcome="refreshed") == 1


async def test_credentials_of_an_account_without_tokens_is_409_missing(
    serve: Serve, fake_google: FakeGoogle, fake_slack: FakeSlack, database_url: str
) -> None:
    await load_legacy_seed(database_url)
    app = await serve()
    key = await new_key(app)

    reply = await call(app, "GET", credentials_path(SEED_NULL_TOKENS), key=key)

    assert reply.status == 409, reply.text
    assert reply.headers["Cache-Control"] == "no-store"
    answer = reply.json()
    assert answer["error"] == "reconnect_required"
    assert answer["status"] == "missing"
    assert answer["cause"] == "token_missing"  # a stable code; its words, in English, as the detail
    assert "No Gmail token is stored" in answer["cause_detail"]
    assert answer["reconnect_prompted"] is False  # nothing was sent, and no earlier DM is open
    assert "access_token" not in answer
    assert fake_google.calls == [] and fake_slack.calls == []


async def test_credentials_whose_refresh_token_was_revoked_prompt_the_user_once(
    serve: Serve, fake_google: FakeGoogle, fake_slack: FakeSlack
) -> None:
    app = await serve()
    key = await new_key(app)
    fake_slack.add_user("U0GONE", locale="en-US")
    await healthy(app, fake_google, "U0GONE", expiring=True)
    fake_google.revoke_refresh_token("1//U0GONE")

    reply = await call(app, "GET", credentials_path("U0GONE"), key=key)

    assert reply.status == 409, reply.text
    answer = reply.json()
    assert answer["status"] in ("expired", "revoked")
    assert answer["reconnect_prompted"] is True
    assert answer["cause"] == "refresh_token_revoked" and "invalid_grant" in answer["cause_detail"]
    assert await stored_status(app, "U0GONE") == Status(answer["status"])
    (dm,) = dms(fake_slack, "U0GONE")
    assert "Reconnect" in json.dumps(dm["blocks"])

    again = await call(app, "GET", credentials_path("U0GONE"), key=key)

    assert again.status == 409
    assert again.json()["status"] == answer["status"] and again.json()["reconnect_prompted"] is True
    assert len(dms(fake_slack, "U0GONE")) == 1
    assert len(fake_google.calls_to("/token")) == 1  # the stored status already says only the user can fix it
    assert_no_google_secret(fake_google, reply.text + again.text + str(fake_slack.calls))


async def test_credentials_when_slack_cannot_take_the_dm_still_answer_409(
    serve: Serve, fake_google: FakeGoogle, fake_slack: FakeSlack
) -> None:
    app = await serve()
    key = await new_key(app)
    await healthy(app, fake_google, "U0GONE", expiring=True)  # U0GONE is not in the fake Slack workspace
    fake_google.revoke_refresh_token("1//U0GONE")

    reply = await call(app, "GET", credentials_path("U0GONE"), key=key)

    assert reply.status == 409, reply.text
    assert reply.json()["reconnect_prompted"] is False
    assert reply.json()["status"] in ("expired", "revoked")
    assert dms(fake_slack, "U0GONE") == []


async def test_credentials_when_google_is_unavailable_are_503_and_change_nothing(
    serve: Serve, fake_google: FakeGoogle, fake_slack: FakeSlack
) -> None:
    app = await serve()
    key = await new_key(app)
    app[SERVICES].google.backoff = 0.01  # the retries' waits, shortened for the test
    fake_slack.add_user("U0STALE", locale="en-US")
    await healthy(app, fake_google, "U0STALE", expiring=True)
    old = await stored_access_token(app, "U0STALE")
    fake_google.fail_token(503, times=app[SERVICES].google.attempts)

    reply = await call(app, "GET", credentials_path("U0STALE"), key=key)

    assert reply.status == 503, reply.text
    assert reply.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert reply.headers["Cache-Control"] == "no-store"
    assert reply.json()["error"] == "unavailable"
    assert [call.status for call in fake_google.calls_to("/token")] == [503] * app[SERVICES].google.attempts
    assert await stored_status(app, "U0STALE") is Status.HEALTHY
    assert await stored_access_token(app, "U0STALE") == old
    assert fake_slack.calls_to("chat.postMessage") == []

    recovered = await call(app, "GET", credentials_path("U0STALE"), key=key)

    assert recovered.status == 200 and recovered.json()["access_token"] != old


async def read_only(
    app: web.Application, google: FakeGoogle, slack_id: str, *, expiring: bool = False
) -> None:
    """A linked account whose user unticked "Send email" on Google's screen: it reads, and lacks send."""
    email = f"{slack_id.lower()}@gmail.com"
    scopes = ["openid", "email", READONLY]
    google.add_refresh_token(f"1//{slack_id}", email=email, scopes=scopes)
    expiry = datetime.now(UTC) + (timedelta(minutes=1) if expiring else timedelta(minutes=50))
    await app[SERVICES].accounts.store_tokens(
        grant=TokenGrant(google.issue_access_token(email, scopes), f"1//{slack_id}", expiry, scopes),
        actor="test",
        slack_user_id=slack_id,
        metadata={"email": email},
        status=Status.INSUFFICIENT_SCOPE,
        cause="The granted permissions do not allow sending mail (gmail.send).",
        code=CauseCode.SCOPE_MISSING_SEND,
    )


async def test_credentials_of_a_read_only_grant_say_send_is_missing_unless_only_reading_is_needed(
    serve: Serve, fake_google: FakeGoogle, fake_slack: FakeSlack
) -> None:
    app = await serve()
    key = await new_key(app)
    await read_only(app, fake_google, "U0READ", expiring=True)

    # A service that sends (by default, the caller needs all the bot requires) is told what is missing.
    refused = await call(app, "GET", credentials_path("U0READ"), key=key)
    assert refused.status == 409, refused.text
    answer = refused.json()
    assert (answer["status"], answer["missing"]) == ("insufficient_scope", ["send"])
    assert answer["cause"] == "scope_missing_send" and "gmail.send" in answer["cause_detail"]
    assert "access_token" not in answer
    assert fake_google.calls_to("/token") == []  # the stored grant already says so
    sender = await call(app, "GET", credentials_path("U0READ") + "?needs=send", key=key)
    assert sender.status == 409 and sender.json()["missing"] == ["send"]

    # A service that only reads gets a token (refreshed first), and learns what else is missing.
    reader = await call(app, "GET", credentials_path("U0READ") + "?needs=read", key=key)
    assert reader.status == 200, reader.text
    assert reader.json()["missing"] == ["send"] and READONLY in reader.json()["scopes"]
    assert reader.json()["access_token"] == await stored_access_token(app, "U0READ")
    assert len(fake_google.calls_to("/token")) == 1
    assert await stored_status(app, "U0READ") is Status.INSUFFICIENT_SCOPE
    assert fake_slack.calls == []  # the briefing asks the user, not every API call
    (listed,) = (await call(app, "GET", "/api/v1/accounts", key=key)).json()["accounts"]
    assert (listed["status"], listed["can_read"], listed["can_send"], listed["missing"]) == (
        "insufficient_scope",
        True,
        False,
        ["send"],
    )
    assert_no_google_secret(fake_google, refused.text + sender.text + str(listed))


async def test_credentials_of_a_healthy_account_say_nothing_is_missing(
    serve: Serve, fake_google: FakeGoogle
) -> None:
    app = await serve()
    key = await new_key(app)
    await healthy(app, fake_google, "U0FULL")
    for path in (credentials_path("U0FULL"), credentials_path("U0FULL") + "?needs=read,send"):
        reply = await call(app, "GET", path, key=key)
        assert reply.status == 200 and reply.json()["missing"] == []


async def test_credentials_with_needs_that_are_not_capabilities_are_400(serve: Serve) -> None:
    app = await serve()
    key = await new_key(app)
    for needs in ("write", "", "read,delete"):
        reply = await call(app, "GET", credentials_path("U0ANY") + f"?needs={needs}", key=key)
        assert reply.status == 400 and "read, send" in reply.json()["message"], reply.text


async def test_credentials_of_unknown_and_malformed_users(serve: Serve) -> None:
    app = await serve()
    key = await new_key(app)

    unknown = await call(app, "GET", credentials_path("U0NOBODY"), key=key)
    malformed = await call(app, "GET", credentials_path("foo"), key=key)
    lower = await call(app, "GET", credentials_path("u0nobody"), key=key)

    assert unknown.status == 404 and unknown.json()["error"] == "not_found"
    assert "U0NOBODY" in unknown.json()["message"]
    assert malformed.status == 400 and malformed.json()["error"] == "bad_request"
    assert "'foo' is not a Slack user ID" in malformed.json()["message"]
    assert lower.status == 400


# ---- Token-failure reports ----------------------------------------------------------------------------------


async def test_token_failure_refuses_bad_bodies(serve: Serve, fake_google: FakeGoogle) -> None:
    app = await serve()
    key = await new_key(app)
    await healthy(app, fake_google, "U0FRESH")
    path = failure_path("U0FRESH")

    for data in (b"reason=401", b"", b"\xff\xfe{", b"[1]", b"null", b'"reason"'):
        reply = await call(app, "POST", path, key=key, data=data)
        assert reply.status == 400, data
        assert reply.json()["error"] == "bad_request" and '{"reason":' in reply.json()["message"]
    for body in ({}, {"reason": ""}, {"reason": "   "}, {"reason": 401}, {"reason": None}, {"why": "x"}):
        reply = await call(app, "POST", path, key=key, body=body)
        assert reply.status == 400, body
    too_long = await call(app, "POST", path, key=key, body={"reason": "x" * (REASON_LIMIT + 1)})
    assert too_long.status == 400
    assert too_long.json()["message"] == f"reason is longer than {REASON_LIMIT} characters."
    assert (await call(app, "POST", failure_path("foo"), key=key, body={"reason": "x"})).status == 400
    assert (await call(app, "POST", failure_path("U0NOBODY"), key=key, body={"reason": "x"})).status == 404

    assert fake_google.calls_to("/token") == []  # nothing was checked for a refused report
    assert await audit_rows(app, "api.token_failure") == []


async def test_token_failure_for_a_token_google_still_honours_is_not_confirmed(
    serve: Serve, fake_google: FakeGoogle, fake_slack: FakeSlack
) -> None:
    app = await serve()
    key = await new_key(app)
    fake_slack.add_user("U0FRESH", locale="en-US")
    await healthy(app, fake_google, "U0FRESH")
    old = await stored_access_token(app, "U0FRESH")
    reason = "Gmail answered 401 to users.messages.list " + "x" * (REASON_LIMIT - 60)

    reply = await call(app, "POST", failure_path("U0FRESH"), key=key, body={"reason": f"  {reason}  "})

    assert reply.status == 200, reply.text
    assert reply.headers["Cache-Control"] == "no-store"
    answer = reply.json()
    assert answer["confirmed"] is False and answer["status"] == "healthy"
    (refresh,) = fake_google.calls_to("/token")  # checked with Google although the stored token looked fine
    assert refresh.status == 200
    new = await stored_access_token(app, "U0FRESH")
    assert new != old and new in fake_google.issued_secrets
    assert await stored_status(app, "U0FRESH") is Status.HEALTHY
    assert fake_slack.calls_to("chat.postMessage") == [] and dms(fake_slack, "U0FRESH") == []
    (audited,) = await audit_rows(app, "api.token_failure")
    assert audited["actor"] == ACTOR and audited["slack_user_id"] == "U0FRESH"
    assert audited["reason"] == reason and audited["confirmed"] is False
    assert_no_google_secret(fake_google, await audit_details(app) + reply.text)


async def test_token_failure_for_a_revoked_token_prompts_the_user_once_and_edits_after(
    serve: Serve, fake_google: FakeGoogle, fake_slack: FakeSlack
) -> None:
    app = await serve()
    key = await new_key(app)
    fake_slack.add_user("U0GONE", locale="en-US")
    await healthy(app, fake_google, "U0GONE")  # the stored token still looks good
    fake_google.revoke_refresh_token("1//U0GONE")

    first = await call(app, "POST", failure_path("U0GONE"), key=key, body={"reason": "Gmail answered 401"})

    assert first.status == 409, first.text
    answer = first.json()
    assert answer["confirmed"] is True and answer["reconnect_prompted"] is True
    assert answer["error"] == "reconnect_required" and answer["status"] in ("expired", "revoked")
    assert await stored_status(app, "U0GONE") == Status(answer["status"])
    (dm,) = dms(fake_slack, "U0GONE")
    assert "Reconnect Gmail" in json.dumps(dm["blocks"])
    assert len(fake_slack.calls_to("chat.postMessage")) == 1

    second = await call(
        app, "POST", failure_path("U0GONE"), key=key, body={"reason": "Gmail answered 401 again"}
    )

    assert second.status == 409 and second.json()["confirmed"] is True
    assert second.json()["reconnect_prompted"] is True
    assert len(dms(fake_slack, "U0GONE")) == 1  # the same DM, edited
    assert len(fake_slack.calls_to("chat.postMessage")) == 1
    (update,) = fake_slack.calls_to("chat.update")
    assert update.args["ts"] == dm["ts"]
    assert len(fake_google.calls_to("/token")) == 1  # the second report needs no new check
    audited = await audit_rows(app, "api.token_failure")
    assert [(row["actor"], row["reason"], row["confirmed"]) for row in audited] == [
        (ACTOR, "Gmail answered 401", True),
        (ACTOR, "Gmail answered 401 again", True),
    ]
    assert all(row["status"] == answer["status"] for row in audited)
    assert_no_google_secret(fake_google, await audit_details(app) + str(fake_slack.calls))


async def test_token_failure_when_google_is_unavailable_is_503(
    serve: Serve, fake_google: FakeGoogle, fake_slack: FakeSlack
) -> None:
    app = await serve()
    key = await new_key(app)
    app[SERVICES].google.backoff = 0.01
    await healthy(app, fake_google, "U0FRESH")
    fake_google.fail_token(500, times=app[SERVICES].google.attempts)

    reply = await call(app, "POST", failure_path("U0FRESH"), key=key, body={"reason": "401"})

    assert reply.status == 503 and reply.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert await stored_status(app, "U0FRESH") is Status.HEALTHY
    assert fake_slack.calls == []
    (audited,) = await audit_rows(app, "api.token_failure")
    assert audited["confirmed"] is None and audited["reason"] == "401"


async def test_fifty_reports_within_a_minute_cost_google_one_refresh(
    serve: Serve, fake_google: FakeGoogle, fake_slack: FakeSlack
) -> None:
    app = await serve()
    key = await new_key(app)
    await healthy(app, fake_google, "U0FRESH")

    # One after the other, as a service retrying in a loop sends them: each arrives after the last check ended.
    replies = [
        await call(app, "POST", failure_path("U0FRESH"), key=key, body={"reason": f"401 (try {n})"})
        for n in range(50)
    ]

    assert len(fake_google.calls_to("/token")) == 1
    assert [reply.status for reply in replies] == [200] + [202] * 49
    assert replies[0].json()["confirmed"] is False
    later = [reply.json() for reply in replies[1:]]
    checked_at = {answer["checked_at"] for answer in later}
    assert len(checked_at) == 1  # every later report is told of the same check
    (when,) = checked_at
    for answer in later:
        assert answer["accepted"] is True and answer["status"] == "healthy"
        assert datetime.fromisoformat(answer["next_check_after"]) - datetime.fromisoformat(when) == timedelta(
            minutes=1
        )
    fake_google.token_delay = 0.2  # reports that arrive together are no different
    together = await asyncio.gather(
        *(call(app, "POST", failure_path("U0FRESH"), key=key, body={"reason": "401"}) for _ in range(10))
    )
    assert {reply.status for reply in together} == {202}
    one_more = await call(app, "POST", failure_path("U0FRESH"), key=key, body={"reason": "and again"})
    assert one_more.status == 202 and one_more.json()["checked_at"] == when
    assert len(fake_google.calls_to("/token")) == 1
    assert fake_slack.calls == []
    audited = await audit_rows(app, "api.token_failure")
    assert len(audited) == 61 and sum(bool(row.get("throttled")) for row in audited) == 60
    samples = await scrape_metrics(app)
    assert metric(samples, "gmail_reconnect_api_requests_total", endpoint="token_failure", status="202") == 60

    # A minute later (the check's time moved back rather than the test waiting), a report checks again.
    fake_google.token_delay = 0.0
    await app[SERVICES].pool.execute(
        "UPDATE token_failure_checks SET checked_at = checked_at - interval '61 seconds'"
    )
    again = await call(app, "POST", failure_path("U0FRESH"), key=key, body={"reason": "still 401"})

    assert again.status == 200 and again.json()["confirmed"] is False
    assert len(fake_google.calls_to("/token")) == 2


async def test_the_report_throttle_is_shared_by_replicas_and_kept_per_account(
    serve: Serve, fake_google: FakeGoogle
) -> None:
    first, second = await serve(), await serve()  # two processes' worth of application on one database
    key = await new_key(first)
    await healthy(first, fake_google, "U0FRESH")
    await healthy(first, fake_google, "U0OTHER")

    replies = await asyncio.gather(
        *(
            call(app, "POST", failure_path("U0FRESH"), key=key, body={"reason": "401"})
            for app in [first, second] * 10
        )
    )
    other = await call(second, "POST", failure_path("U0OTHER"), key=key, body={"reason": "401"})

    assert sorted(reply.status for reply in replies) == [200] + [202] * 19
    assert other.status == 200  # another account's check is its own
    refreshed = [call.form["refresh_token"] for call in fake_google.calls_to("/token")]
    assert sorted(refreshed) == ["1//U0FRESH", "1//U0OTHER"]


async def test_reports_on_an_account_google_refused_keep_answering_409_without_asking_again(
    serve: Serve, fake_google: FakeGoogle, fake_slack: FakeSlack
) -> None:
    app = await serve()
    key = await new_key(app)
    fake_slack.add_user("U0GONE", locale="en-US")
    await healthy(app, fake_google, "U0GONE")
    fake_google.revoke_refresh_token("1//U0GONE")
    fake_google.token_delay = 0.2

    replies = await asyncio.gather(
        *(call(app, "POST", failure_path("U0GONE"), key=key, body={"reason": "401"}) for _ in range(10))
    )
    after = await call(app, "POST", failure_path("U0GONE"), key=key, body={"reason": "401"})

    assert len(fake_google.calls_to("/token")) == 1
    # Those that came during the check are told of it; once it is known, the stored status answers.
    assert {reply.status for reply in replies} <= {202, 409} and 409 in {reply.status for reply in replies}
    assert after.status == 409 and after.json()["confirmed"] is True
    assert len(dms(fake_slack, "U0GONE")) == 1


# ---- The registry -------------------------------------------------------------------------------------------


async def test_the_registry_lists_every_account_without_tokens_and_filters_by_status(
    serve: Serve, fake_google: FakeGoogle, database_url: str
) -> None:
    await load_legacy_seed(database_url)
    app = await serve()
    key = await new_key(app)
    await healthy(app, fake_google, "U0FRESH")
    await healthy(app, fake_google, "U0STALE", expiring=True)
    await call(app, "GET", credentials_path("U0STALE"), key=key)  # a refresh: one more token issued

    everything = await call(app, "GET", "/api/v1/accounts", key=key)

    assert everything.status == 200 and everything.headers["Cache-Control"] == "no-store"
    answer = everything.json()
    assert answer["count"] == len(answer["accounts"]) == SEED_ROWS + 2
    by_user = {row["user_id"]: row for row in answer["accounts"]}
    assert len(by_user) == SEED_ROWS + 2
    assert all(row["status"] in {str(status) for status in Status} for row in answer["accounts"])
    by_slack = {row["slack_user_id"]: row for row in answer["accounts"] if row["slack_user_id"]}
    assert by_slack["U0FRESH"]["status"] == "healthy" and by_slack["U0FRESH"]["email"] == "u0fresh@gmail.com"
    assert by_slack["U0STALE"]["status"] == "healthy" and by_slack["U0STALE"]["last_refresh_at"]
    assert by_slack[SEED_NULL_TOKENS]["status"] == "missing"
    assert by_user["unknown"]["status"] == "insufficient_scope"
    assert_no_google_secret(fake_google, everything.text)
    for seed_token in ("ya29.", "1//", "GOCSPX"):
        assert seed_token not in everything.text
    for row in answer["accounts"]:
        assert not {"access_token", "refresh_token", "token_data", "oauth_config"} & set(row)

    missing = await call(app, "GET", "/api/v1/accounts?status=missing", key=key)
    healthy_only = await call(app, "GET", "/api/v1/accounts?status=healthy", key=key)
    bogus = await call(app, "GET", "/api/v1/accounts?status=bogus", key=key)

    assert missing.status == 200
    assert missing.json()["count"] == SEED_MISSING
    assert {row["status"] for row in missing.json()["accounts"]} == {"missing"}
    assert SEED_NULL_TOKENS in {row["slack_user_id"] for row in missing.json()["accounts"]}
    assert {row["slack_user_id"] for row in healthy_only.json()["accounts"]} == {"U0FRESH", "U0STALE"}
    assert bogus.status == 400 and bogus.json()["error"] == "bad_request"
    for status in Status:
        assert str(status) in bogus.json()["message"]
    assert [
        (row["actor"], row["status"], row["count"]) for row in await audit_rows(app, "api.accounts_listed")
    ] == [
        (ACTOR, None, SEED_ROWS + 2),
        (ACTOR, "missing", SEED_MISSING),
        (ACTOR, "healthy", 2),
    ]


# ---- Metrics ------------------------------------------------------------------------------------------------


async def test_metrics_count_accounts_refreshes_api_calls_and_callbacks(
    serve: Serve, fake_google: FakeGoogle, database_url: str
) -> None:
    await load_legacy_seed(database_url)
    app = await serve()
    key = await new_key(app)
    await healthy(app, fake_google, "U0FRESH")
    await healthy(app, fake_google, "U0STALE", expiring=True)

    before = await scrape_metrics(app)

    # The statuses the registry shows: never-checked seed rows count under what their stored data shows.
    listed = (await call(app, "GET", "/api/v1/accounts", key=key)).json()
    shown = Counter(account["status"] for account in listed["accounts"])
    assert sum(shown.values()) == SEED_ROWS + 2 and shown["missing"] == 3
    for status in Status:
        assert metric(before, "gmail_reconnect_accounts", status=str(status)) == shown[str(status)], status
    assert metric(before, "gmail_reconnect_refreshes_total", outcome="refreshed") == 0
    assert metric(before, "gmail_reconnect_prompts_total", delivery="posted") == 0
    assert (
        "gmail_reconnect_api_requests_total",
        frozenset({("endpoint", "credentials"), ("status", "200")}),
    ) not in before

    assert (await call(app, "GET", credentials_path("U0STALE"), key=key)).status == 200
    assert (await call(app, "GET", "/api/v1/accounts")).status == 401
    async with (
        aiohttp.ClientSession() as session,
        session.get(app[SERVICES].links.public_base_url + "/oauth/google/callback") as response,
    ):
        assert response.status == 400
    after = await scrape_metrics(app)

    assert metric(after, "gmail_reconnect_api_requests_total", endpoint="credentials", status="200") == 1.0
    assert metric(after, "gmail_reconnect_api_requests_total", endpoint="accounts", status="401") == 1.0
    assert metric(after, "gmail_reconnect_refreshes_total", outcome="refreshed") == 1.0
    assert metric(after, "gmail_reconnect_oauth_callbacks_total", outcome="state_missing") == 1.0
    assert metric(after, "gmail_reconnect_accounts", status="healthy") == 2

    text = (await call(app, "GET", "/metrics")).text
    for private in ("U0FRESH", "U0STALE", "u0fresh@gmail.com", "skill-email", key):
        assert private not in text
    assert_no_google_secret(fake_google, text)


async def test_the_accounts_gauge_follows_the_database_at_each_scrape(
    serve: Serve, fake_google: FakeGoogle, fake_slack: FakeSlack
) -> None:
    app = await serve()
    key = await new_key(app)
    fake_slack.add_user("U0GONE", locale="en-US")
    await healthy(app, fake_google, "U0GONE")
    fake_google.revoke_refresh_token("1//U0GONE")
    assert metric(await scrape_metrics(app), "gmail_reconnect_accounts", status="healthy") == 1

    reply = await call(app, "POST", failure_path("U0GONE"), key=key, body={"reason": "401"})

    after = await scrape_metrics(app)
    status = reply.json()["status"]
    assert metric(after, "gmail_reconnect_accounts", status="healthy") == 0
    assert metric(after, "gmail_reconnect_accounts", status=status) == 1
    assert metric(after, "gmail_reconnect_refreshes_total", outcome="needs_user") == 1
    assert metric(after, "gmail_reconnect_prompts_total", delivery="posted") == 1
    assert metric(after, "gmail_reconnect_api_requests_total", endpoint="token_failure", status="409") == 1
