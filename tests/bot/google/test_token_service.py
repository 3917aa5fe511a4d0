"""TokenService against a real PostgreSQL and the fake Google over HTTP: refresh, single flight, failures, disconnect."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from bot.config import Settings
from bot.database import token_codec
from bot.errors import ConfigError
from bot.google.client import DEFAULT_TIMEOUT, GoogleClient, google_client, token_response
from bot.google.errors import Failure, token_error
from bot.google.scopes import Capability
from bot.google.token_service import Outcome, TokenService, build_token_service
from storage import audit
from storage.accounts import Accounts
from storage.causes import CauseCode
from storage.migrator import migrate
from storage.models import Account, Status, TokenGrant
from storage.pool import connect, create_pool
from tests.fakes.google import ACCESS_TOKEN_LIFETIME, FakeGoogle
from tests.helpers import account_by_user_id, free_port, google_env, load_legacy_seed

GMAIL = "https://www.googleapis.com/auth/gmail."
READONLY, SEND, MODIFY = GMAIL + "readonly", GMAIL + "send", GMAIL + "modify"
REQUIRED = frozenset({Capability.READ, Capability.SEND})
LEGACY_CLIENT_ID, LEGACY_CLIENT_SECRET = "legacy.apps.googleusercontent.com", "GOCSPX-legacy"
HEEJAE_REFRESH = "1//heejae-refresh"
NULL_TOKEN_USER = "1e16e9d5-59f3-54da-a661-8abeabff4230"

MakeService = Callable[..., TokenService]


@dataclass(frozen=True)
class Connected:
    account: Account
    access_token: str
    refresh_token: str


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def make_service(fake_google: FakeGoogle, session: aiohttp.ClientSession) -> MakeService:
    """A TokenService on the given repository, talking to the fake (or to the URIs given)."""

    def make(
        repo: Accounts,
        *,
        token_uri: str | None = None,
        revoke_uri: str | None = None,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
        http: aiohttp.ClientSession | None = None,
        **options: Any,
    ) -> TokenService:
        google = GoogleClient(
            http or session,
            token_uri=token_uri or fake_google.token_uri,
            revoke_uri=revoke_uri or fake_google.revoke_uri,
            userinfo_uri=fake_google.userinfo_uri,
            timeout=timeout,
            attempts=options.pop("attempts", 3),
            backoff=options.pop("backoff", 0.01),
        )
        settings: dict[str, Any] = {
            "client_id": fake_google.client_id,
            "client_secret": fake_google.client_secret,
            "required": REQUIRED,
            **options,
        }
        return TokenService(repo, google, **settings)

    return make


@pytest.fixture
async def legacy_accounts(
    database_url: str, make_settings: Callable[..., Settings]
) -> AsyncIterator[Accounts]:
    """The repository over a database that holds the legacy table's rows, then migrated."""
    await load_legacy_seed(database_url)
    conn = await connect(database_url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    pool = await create_pool(database_url, min_size=1, max_size=4)
    yield Accounts(pool, token_codec(make_settings()))
    await pool.close()


async def connect_account(
    accounts: Accounts,
    fake: FakeGoogle,
    *,
    slack_user_id: str = "U0ALICE",
    email: str = "alice@gmail.com",
    expires_in: timedelta | None = timedelta(hours=1),
    scopes: tuple[str, ...] = (READONLY, SEND),
    granted: tuple[str, ...] | None = None,
    register: bool = True,
) -> Connected:
    """A healthy account whose refresh token the fake knows (with `granted` scopes, by default `scopes`)."""
    refresh = "1//0" + secrets.token_urlsafe(40)
    access = fake.issue_access_token(email, list(scopes))
    if register:
        fake.add_refresh_token(refresh, email=email, scopes=list(granted or scopes))
    expiry = datetime.now(UTC) + expires_in if expires_in is not None else None
    account = await accounts.store_tokens(
        grant=TokenGrant(access, refresh, expiry, list(scopes)),
        actor="test",
        slack_user_id=slack_user_id,
        metadata={"email": email},
        status=Status.HEALTHY,
    )
    return Connected(account, access, refresh)


def register_heejae_with_the_legacy_client(fake: FakeGoogle) -> None:
    """Make the fake know the legacy heejae grant, issued to the legacy OAuth client."""
    fake.add_refresh_token(
        HEEJAE_REFRESH,
        email="heejae@gmail.com",
        scopes=[MODIFY],
        client_id=LEGACY_CLIENT_ID,
        client_secret=LEGACY_CLIENT_SECRET,
    )


def token_calls(fake: FakeGoogle) -> int:
    return len(fake.calls_to("/token"))


def closed_port_uri(path: str) -> str:
    return f"http://127.0.0.1:{free_port()}{path}"


# ---- Valid and refreshed -------------------------------------------------------------------------------------


async def test_a_token_valid_for_an_hour_is_returned_without_calling_google(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    connected = await connect_account(accounts, fake_google)

    result = await make_service(accounts).access(connected.account.id)

    assert result.outcome is Outcome.VALID and result.ok
    assert result.access_token == connected.access_token
    assert result.expiry == connected.account.expiry
    assert result.account.id == connected.account.id
    assert token_calls(fake_google) == 0


async def test_access_accepts_an_account_object(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    connected = await connect_account(accounts, fake_google)

    result = await make_service(accounts).access(connected.account)

    assert result.outcome is Outcome.VALID and result.access_token == connected.access_token


@pytest.mark.parametrize(
    "expires_in", [timedelta(minutes=1), timedelta(minutes=4, seconds=50), timedelta(minutes=-5), None]
)
async def test_a_token_inside_the_margin_or_without_expiry_is_refreshed(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService, expires_in: timedelta | None
) -> None:
    connected = await connect_account(accounts, fake_google, expires_in=expires_in)
    assert connected.account.last_refresh_at is None
    before = datetime.now(UTC)

    result = await make_service(accounts).access(connected.account.id)

    after = datetime.now(UTC)
    assert result.outcome is Outcome.REFRESHED and result.ok
    assert result.access_token and result.access_token != connected.access_token
    assert result.expiry is not None
    expected = timedelta(seconds=ACCESS_TOKEN_LIFETIME)
    assert before + expected <= result.expiry <= after + expected

    tokens = await accounts.read_tokens(connected.account.id)
    assert tokens is not None
    assert tokens.access_token == result.access_token
    assert tokens.refresh_token == connected.refresh_token  # Google sends none on refresh: the old one stays
    assert tokens.expiry == result.expiry

    account = await accounts.get(connected.account.id)
    assert account == result.account
    assert account.status is Status.HEALTHY and account.status_cause is None
    assert account.expiry == result.expiry
    assert account.last_refresh_at is not None
    assert before - timedelta(seconds=5) <= account.last_refresh_at <= after + timedelta(seconds=5)
    assert (
        account.refresh_token_issued_at == connected.account.refresh_token_issued_at
    )  # no new refresh token
    assert account.scopes == sorted([READONLY, SEND])

    (call,) = fake_google.calls_to("/token")
    assert call.form["grant_type"] == "refresh_token"
    assert call.form["refresh_token"] == connected.refresh_token
    assert call.form["client_id"] == fake_google.client_id
    assert call.status == 200

    event = (await audit.recent(accounts.pool, account_id=account.id, limit=1))[0]
    assert (event.action, event.actor) == ("tokens.refreshed", "token-service")
    assert event.details["status"] == "healthy"
    assert event.details["scopes"] == sorted([READONLY, SEND])
    details = json.dumps(event.details)
    for secret in (result.access_token, connected.access_token, connected.refresh_token):
        assert secret not in details


async def test_the_refresh_audit_tells_whether_google_sent_a_new_refresh_token(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    connected = await connect_account(accounts, fake_google, expires_in=timedelta(minutes=1))

    assert (await make_service(accounts).access(connected.account.id)).outcome is Outcome.REFRESHED

    event = (await audit.recent(accounts.pool, account_id=connected.account.id, limit=1))[0]
    assert event.action == "tokens.refreshed"
    assert event.details["refresh_token_issued"] is False


async def test_a_token_just_outside_the_margin_is_not_refreshed(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    connected = await connect_account(accounts, fake_google, expires_in=timedelta(minutes=5, seconds=30))

    result = await make_service(accounts).access(connected.account.id)

    assert result.outcome is Outcome.VALID and token_calls(fake_google) == 0


async def test_the_refresh_margin_is_configurable(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    connected = await connect_account(accounts, fake_google, expires_in=timedelta(minutes=30))

    result = await make_service(accounts, refresh_margin=timedelta(hours=1)).access(connected.account.id)

    assert result.outcome is Outcome.REFRESHED and token_calls(fake_google) == 1


async def test_force_refresh_refreshes_a_valid_token(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    connected = await connect_account(accounts, fake_google)

    result = await make_service(accounts).access(connected.account.id, force_refresh=True)

    assert result.outcome is Outcome.REFRESHED and result.access_token != connected.access_token
    assert token_calls(fake_google) == 1
    tokens = await accounts.read_tokens(connected.account.id)
    assert tokens is not None and tokens.access_token == result.access_token


async def test_the_refreshed_token_is_then_valid(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    connected = await connect_account(accounts, fake_google, expires_in=timedelta(seconds=30))
    service = make_service(accounts)

    first = await service.access(connected.account.id)
    second = await service.access(connected.account.id)

    assert (first.outcome, second.outcome) == (Outcome.REFRESHED, Outcome.VALID)
    assert second.access_token == first.access_token
    assert token_calls(fake_google) == 1


async def test_the_access_repr_never_shows_the_token(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    connected = await connect_account(accounts, fake_google, expires_in=timedelta(minutes=1))
    service = make_service(accounts)

    refreshed = await service.access(connected.account.id)
    valid = await service.access(connected.account.id)

    for result in (refreshed, valid):
        assert result.access_token
        assert result.access_token not in repr(result)
        assert result.access_token not in str(result)
        assert "outcome=" in repr(result)  # the rest of it is shown
    assert connected.refresh_token not in repr(refreshed)


# ---- Single flight -------------------------------------------------------------------------------------------


async def test_fifty_concurrent_callers_cause_one_refresh(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    connected = await connect_account(accounts, fake_google, expires_in=timedelta(minutes=1))
    service = make_service(accounts)
    fake_google.token_delay = 0.05

    results = await asyncio.gather(*(service.access(connected.account.id) for _ in range(50)))

    assert token_calls(fake_google) == 1
    assert {result.access_token for result in results} == {results[0].access_token}
    assert results[0].access_token != connected.access_token
    assert {result.outcome for result in results} <= {Outcome.REFRESHED, Outcome.VALID}
    assert Outcome.REFRESHED in {result.outcome for result in results}
    tokens = await accounts.read_tokens(connected.account.id)
    assert tokens is not None and tokens.access_token == results[0].access_token


async def test_two_processes_on_separate_pools_refresh_once(
    accounts: Accounts,
    fake_google: FakeGoogle,
    make_service: MakeService,
    migrated_url: str,
    make_settings: Callable[..., Settings],
) -> None:
    connected = await connect_account(accounts, fake_google, expires_in=timedelta(minutes=1))
    fake_google.token_delay = 0.2
    other_pool = await create_pool(migrated_url, min_size=1, max_size=4)
    try:
        async with aiohttp.ClientSession() as other_session:
            first = make_service(accounts)
            second = make_service(Accounts(other_pool, token_codec(make_settings())), http=other_session)
            assert first.accounts.pool is not second.accounts.pool

            results = await asyncio.gather(
                *(service.access(connected.account.id) for _ in range(25) for service in (first, second))
            )
    finally:
        await other_pool.close()

    assert token_calls(fake_google) == 1
    assert len(results) == 50
    assert {result.access_token for result in results} == {results[0].access_token}
    assert results[0].access_token != connected.access_token
    # The callers of the process that won the lock share its refresh; the others find the token valid.
    assert {result.outcome for result in results} <= {Outcome.REFRESHED, Outcome.VALID}
    assert 1 <= [result.outcome for result in results].count(Outcome.REFRESHED) <= 25


async def test_a_caller_that_gives_up_does_not_cancel_the_shared_refresh(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    connected = await connect_account(accounts, fake_google, expires_in=timedelta(minutes=1))
    service = make_service(accounts)
    fake_google.token_delay = 0.3

    impatient = asyncio.create_task(service.access(connected.account.id))
    await asyncio.sleep(0.1)
    assert token_calls(fake_google) == 1  # the refresh is under way at Google
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient

    result = await service.access(connected.account.id)

    assert result.ok and result.access_token != connected.access_token
    assert token_calls(fake_google) == 1
    tokens = await accounts.read_tokens(connected.account.id)
    assert tokens is not None and tokens.access_token == result.access_token


# ---- The user must reconnect ---------------------------------------------------------------------------------


async def test_invalid_grant_marks_the_account_expired_with_its_cause(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    connected = await connect_account(accounts, fake_google, expires_in=timedelta(minutes=1))
    fake_google.revoke_refresh_token(connected.refresh_token)

    result = await make_service(accounts).access(connected.account.id)

    assert result.outcome is Outcome.NEEDS_USER and not result.ok
    assert result.access_token is None
    assert result.account.status is Status.EXPIRED
    assert result.code is CauseCode.REFRESH_TOKEN_REVOKED
    # Google's own words are kept as the detail.
    assert result.cause == "Google answered HTTP 400 (invalid_grant: Token has been expired or revoked.)"
    account = await accounts.get(connected.account.id)
    assert account.status is Status.EXPIRED and account.status_cause == result.cause
    assert account.status_cause_code is CauseCode.REFRESH_TOKEN_REVOKED
    assert account.status.needs_user
    assert token_calls(fake_google) == 1  # not retried: it cannot get better

    event = (await audit.recent(accounts.pool, account_id=account.id, limit=1))[0]
    assert (event.action, event.actor) == ("status.changed", "token-service")
    assert (event.details["from"], event.details["to"]) == ("healthy", "expired")
    assert (event.details["cause"], event.details["cause_detail"]) == ("refresh_token_revoked", result.cause)


@pytest.mark.parametrize(
    ("testing_mode", "age", "status"),
    [
        (True, timedelta(days=8), Status.EXPIRED),
        (True, timedelta(days=7, minutes=1), Status.EXPIRED),
        (True, timedelta(days=1), Status.EXPIRED),
        (False, timedelta(days=8), Status.EXPIRED),
    ],
)
async def test_invalid_grant_in_testing_mode_after_seven_days_is_expiry(
    accounts: Accounts,
    fake_google: FakeGoogle,
    make_service: MakeService,
    testing_mode: bool,
    age: timedelta,
    status: Status,
) -> None:
    connected = await connect_account(accounts, fake_google, expires_in=timedelta(minutes=1))
    await accounts.pool.execute(
        "UPDATE gmail_tokens SET refresh_token_issued_at = now() - $2::interval WHERE id = $1",
        connected.account.id,
        age,
    )
    fake_google.revoke_refresh_token(connected.refresh_token)

    result = await make_service(accounts, testing_mode=testing_mode).access(connected.account.id)

    assert result.outcome is Outcome.NEEDS_USER
    account = await accounts.get(connected.account.id)
    assert account.status is status
    assert result.cause is not None and "invalid_grant" in result.cause
    testing_limit = testing_mode and age >= timedelta(days=7)
    assert account.status_cause_code is (
        CauseCode.TESTING_MODE_EXPIRED if testing_limit else CauseCode.REFRESH_TOKEN_REVOKED
    )


async def test_invalid_grant_that_speaks_only_of_revocation_marks_the_account_revoked(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    connected = await connect_account(accounts, fake_google, expires_in=timedelta(minutes=1))
    fake_google.fail_token(
        400,
        error="invalid_grant",
        body=json.dumps({"error": "invalid_grant", "error_description": "Token has been revoked."}),
    )

    result = await make_service(accounts).access(connected.account.id)

    assert result.outcome is Outcome.NEEDS_USER and result.account.status is Status.REVOKED


@pytest.mark.parametrize("subtype", ["invalid_rapt", "rapt_required"])
async def test_a_workspace_reauth_requirement_marks_the_account_expired(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService, subtype: str
) -> None:
    connected = await connect_account(accounts, fake_google, expires_in=timedelta(minutes=1))
    body = {"error": "invalid_grant", "error_description": "reauth related error", "error_subtype": subtype}
    fake_google.fail_token(400, body=json.dumps(body))

    result = await make_service(accounts).access(connected.account.id)

    assert result.outcome is Outcome.NEEDS_USER
    assert result.code is CauseCode.REAUTH_REQUIRED
    assert result.cause is not None and subtype in result.cause
    assert (await accounts.get(connected.account.id)).status is Status.EXPIRED
    assert token_calls(fake_google) == 1


async def test_a_refresh_without_send_permission_is_insufficient_scope_and_still_reads(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    # The row says read and send, but Google now grants read only (the user unticked send).
    connected = await connect_account(
        accounts, fake_google, expires_in=timedelta(minutes=1), granted=(READONLY,)
    )

    result = await make_service(accounts).access(connected.account.id)

    # Limited: not good for everything the bot needs, but the token reads mail (the digest goes on).
    assert result.outcome is Outcome.LIMITED and not result.ok
    assert result.access_token in fake_google.issued_secrets
    assert result.allows(Capability.READ) and not result.allows(Capability.SEND)
    assert result.cause is not None and "gmail.send" in result.cause and "gmail.readonly" not in result.cause
    assert result.code is CauseCode.SCOPE_MISSING_SEND
    account = await accounts.get(connected.account.id)
    assert account.status is Status.INSUFFICIENT_SCOPE and account.status_cause == result.cause
    assert account.scopes == [READONLY]  # what Google granted now is what is recorded

    # The stored token, fresh now, is limited too (not "valid"): the status still lacks send.
    again = await make_service(accounts).access(connected.account.id)
    assert again.outcome is Outcome.LIMITED and again.access_token == result.access_token


async def test_read_only_is_enough_when_only_reading_is_required(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    connected = await connect_account(
        accounts, fake_google, expires_in=timedelta(minutes=1), scopes=(READONLY,)
    )

    result = await make_service(accounts, required=frozenset({Capability.READ})).access(connected.account.id)

    assert result.outcome is Outcome.REFRESHED
    assert (await accounts.get(connected.account.id)).status is Status.HEALTHY


@pytest.mark.parametrize(
    ("stored", "outcome", "status"),
    [
        ((READONLY, SEND), Outcome.REFRESHED, Status.HEALTHY),
        ((READONLY,), Outcome.LIMITED, Status.INSUFFICIENT_SCOPE),
    ],
)
async def test_a_refresh_answer_without_scope_is_judged_on_the_stored_scopes(
    accounts: Accounts,
    fake_google: FakeGoogle,
    make_service: MakeService,
    stored: tuple[str, ...],
    outcome: Outcome,
    status: Status,
) -> None:
    connected = await connect_account(accounts, fake_google, expires_in=timedelta(minutes=1), scopes=stored)
    answer = {"access_token": "ya29.answer-without-scope-" + secrets.token_urlsafe(16), "expires_in": 3599}
    fake_google.fail_token(200, body=json.dumps(answer))

    result = await make_service(accounts).access(connected.account.id)

    assert result.outcome is outcome
    account = await accounts.get(connected.account.id)
    assert account.status is status
    assert account.scopes == sorted(stored)  # kept, not wiped
    tokens = await accounts.read_tokens(connected.account.id)
    assert tokens is not None and tokens.access_token == answer["access_token"]


async def test_no_refresh_token_stored_is_missing(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    access = fake_google.issue_access_token("bob@gmail.com", [READONLY, SEND])
    account = await accounts.store_tokens(
        grant=TokenGrant(access, None, datetime.now(UTC) - timedelta(minutes=1), [READONLY, SEND]),
        actor="test",
        slack_user_id="U0BOB",
        status=Status.HEALTHY,
    )

    result = await make_service(accounts).access(account.id)

    assert result.outcome is Outcome.NEEDS_USER and result.access_token is None
    assert result.cause == "No refresh token is stored."
    assert (await accounts.get(account.id)).status is Status.MISSING
    assert token_calls(fake_google) == 0


# ---- Google unavailable: nothing concluded -------------------------------------------------------------------


async def assert_unchanged(accounts: Accounts, connected: Connected) -> None:
    account = await accounts.get(connected.account.id)
    assert account.status is Status.HEALTHY and account.status_cause is None
    assert account.last_refresh_at is None
    tokens = await accounts.read_tokens(connected.account.id)
    assert tokens is not None
    assert (tokens.access_token, tokens.refresh_token) == (connected.access_token, connected.refresh_token)
    events = await audit.recent(accounts.pool, account_id=account.id)
    assert [event.action for event in events] == ["tokens.stored"]


async def test_google_failing_every_attempt_is_unavailable(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    connected = await connect_account(accounts, fake_google, expires_in=timedelta(minutes=1))
    fake_google.fail_token(503, times=3)

    result = await make_service(accounts, attempts=3).access(connected.account.id)

    assert result.outcome is Outcome.UNAVAILABLE and not result.ok and result.access_token is None
    assert result.cause is not None and "503" in result.cause
    assert result.account.status is Status.HEALTHY
    assert token_calls(fake_google) == 3
    await assert_unchanged(accounts, connected)


async def test_transient_failures_are_retried_until_a_refresh_succeeds(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    connected = await connect_account(accounts, fake_google, expires_in=timedelta(minutes=1))
    fake_google.fail_token(503, times=2)

    result = await make_service(accounts, attempts=3).access(connected.account.id)

    assert result.outcome is Outcome.REFRESHED
    assert [call.status for call in fake_google.calls_to("/token")] == [503, 503, 200]
    tokens = await accounts.read_tokens(connected.account.id)
    assert tokens is not None and tokens.access_token == result.access_token


@pytest.mark.parametrize(
    ("status", "error"), [(500, "server_error"), (429, "rate_limit_exceeded"), (504, None)]
)
async def test_other_retryable_answers_are_retried(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService, status: int, error: str | None
) -> None:
    connected = await connect_account(accounts, fake_google, expires_in=timedelta(minutes=1))
    fake_google.fail_token(status, error=error)

    result = await make_service(accounts).access(connected.account.id)

    assert result.outcome is Outcome.REFRESHED
    assert [call.status for call in fake_google.calls_to("/token")] == [status, 200]


async def test_an_html_502_is_transient(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    connected = await connect_account(accounts, fake_google, expires_in=timedelta(minutes=1))
    html = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    fake_google.fail_token(502, body=html)

    retried = await make_service(accounts).access(connected.account.id)

    assert retried.outcome is Outcome.REFRESHED
    assert [call.status for call in fake_google.calls_to("/token")] == [502, 200]

    fake_google.fail_token(502, body=html, times=3)
    given_up = await make_service(accounts).access(connected.account.id, force_refresh=True)

    assert given_up.outcome is Outcome.UNAVAILABLE
    assert given_up.cause is not None and "502" in given_up.cause and "<html>" not in given_up.cause
    assert (await accounts.get(connected.account.id)).status is Status.HEALTHY
    assert token_calls(fake_google) == 5


async def test_google_answering_too_slowly_is_unavailable(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    connected = await connect_account(accounts, fake_google, expires_in=timedelta(minutes=1))
    fake_google.token_delay = 0.4
    service = make_service(accounts, timeout=aiohttp.ClientTimeout(total=0.1), attempts=2)

    started = asyncio.get_running_loop().time()
    result = await service.access(connected.account.id)
    elapsed = asyncio.get_running_loop().time() - started

    assert result.outcome is Outcome.UNAVAILABLE
    assert result.cause is not None and "in time" in result.cause
    assert elapsed < 0.7  # bounded by the client's timeout (2 x 0.1 s), not by Google's delay (2 x 0.4 s)
    assert token_calls(fake_google) == 2  # a timeout is retried
    await assert_unchanged(accounts, connected)


async def test_an_unreachable_token_endpoint_is_unavailable(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    connected = await connect_account(accounts, fake_google, expires_in=timedelta(minutes=1))

    result = await make_service(accounts, token_uri=closed_port_uri("/token")).access(connected.account.id)

    assert result.outcome is Outcome.UNAVAILABLE
    assert result.cause is not None and "Could not reach Google" in result.cause
    assert token_calls(fake_google) == 0
    await assert_unchanged(accounts, connected)


async def test_an_answer_not_understood_is_unavailable_and_not_retried(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    connected = await connect_account(accounts, fake_google, expires_in=timedelta(minutes=1))
    fake_google.fail_token(400, error="invalid_request")

    result = await make_service(accounts).access(connected.account.id)

    assert result.outcome is Outcome.UNAVAILABLE
    assert result.cause is not None and "invalid_request" in result.cause
    assert token_calls(fake_google) == 1
    await assert_unchanged(accounts, connected)


async def test_the_bots_own_client_rejected_blames_the_configuration_not_the_user(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService, caplog: pytest.LogCaptureFixture
) -> None:
    connected = await connect_account(accounts, fake_google, expires_in=timedelta(minutes=1))

    result = await make_service(accounts, client_secret="GOCSPX-not-the-right-one").access(
        connected.account.id
    )

    assert result.outcome is Outcome.UNAVAILABLE
    assert token_calls(fake_google) == 1
    await assert_unchanged(accounts, connected)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("GOOGLE_CLIENT_ID" in message and "invalid_client" in message for message in errors)


# ---- Legacy rows ---------------------------------------------------------------------------------------------


async def test_a_legacy_row_is_refreshed_with_its_own_oauth_client(
    legacy_accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    register_heejae_with_the_legacy_client(fake_google)
    heejae = await account_by_user_id(legacy_accounts, "heejae")
    assert heejae is not None and heejae.is_equipped is False and heejae.status is Status.UNKNOWN

    result = await make_service(legacy_accounts).access(heejae.id)

    assert result.outcome is Outcome.REFRESHED
    (call,) = fake_google.calls_to("/token")
    assert call.form["client_id"] == LEGACY_CLIENT_ID
    assert call.form["client_secret"] == LEGACY_CLIENT_SECRET
    assert call.form["refresh_token"] == HEEJAE_REFRESH
    assert call.status == 200

    account = await legacy_accounts.get(heejae.id)
    assert account.status is Status.HEALTHY  # gmail.modify reads and sends
    assert account.scopes == [MODIFY]
    assert account.is_equipped is True  # legacy readers see working tokens again
    tokens = await legacy_accounts.read_tokens(heejae.id)
    assert tokens is not None
    assert (tokens.access_token, tokens.refresh_token) == (result.access_token, HEEJAE_REFRESH)
    assert await legacy_accounts.oauth_client(heejae.id) == (LEGACY_CLIENT_ID, LEGACY_CLIENT_SECRET)
    raw = await legacy_accounts.pool.fetchval(
        "SELECT token_data->>'access_token' FROM gmail_tokens WHERE id = $1", heejae.id
    )
    assert raw == result.access_token  # still plain JSONB for the old services


@pytest.mark.parametrize("rejection", ["invalid_client", "unauthorized_client"])
async def test_a_rejected_legacy_client_needs_the_user(
    legacy_accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService, rejection: str
) -> None:
    if rejection == "unauthorized_client":
        # Google knows the legacy client, but the token belongs to another one.
        fake_google.add_refresh_token(
            "1//someone-else-refresh",
            email="other@gmail.com",
            scopes=[MODIFY],
            client_id=LEGACY_CLIENT_ID,
            client_secret=LEGACY_CLIENT_SECRET,
        )
        fake_google.add_refresh_token(HEEJAE_REFRESH, email="heejae@gmail.com", scopes=[MODIFY])
    heejae = await account_by_user_id(legacy_accounts, "heejae")
    assert heejae is not None

    result = await make_service(legacy_accounts).access(heejae.id)

    assert result.outcome is Outcome.NEEDS_USER
    (call,) = fake_google.calls_to("/token")
    assert call.status == 401 and call.form["client_id"] == LEGACY_CLIENT_ID
    assert result.code is CauseCode.CLIENT_REJECTED
    assert result.cause is not None and rejection in result.cause
    account = await legacy_accounts.get(heejae.id)
    assert account.status is Status.EXPIRED and account.status_cause == result.cause
    event = (await audit.recent(legacy_accounts.pool, account_id=heejae.id, limit=1))[0]
    assert event.action == "status.changed" and event.details["to"] == "expired"


async def test_a_seed_001_row_without_tokens_is_missing(
    legacy_accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    row = await account_by_user_id(legacy_accounts, NULL_TOKEN_USER)
    assert row is not None and row.is_equipped is True

    result = await make_service(legacy_accounts).access(row.id)

    assert result.outcome is Outcome.NEEDS_USER and result.access_token is None
    assert result.cause == "No Gmail token is stored." and result.code is CauseCode.TOKEN_MISSING
    account = await legacy_accounts.get(row.id)
    assert account.status is Status.MISSING and account.status_cause == result.cause
    assert token_calls(fake_google) == 0


# ---- Disconnect ----------------------------------------------------------------------------------------------


async def test_disconnect_revokes_at_google_and_wipes_the_tokens(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    connected = await connect_account(accounts, fake_google)

    done = await make_service(accounts).disconnect(connected.account.id, actor="slack:U1")

    assert done.revoked_at_google is True and done.had_tokens is True and done.cause is None
    assert fake_google.revoked == {connected.refresh_token}
    (call,) = fake_google.calls_to("/revoke")
    assert call.form["token"] == connected.refresh_token and call.status == 200
    assert await accounts.read_tokens(connected.account.id) is None
    account = await accounts.get(connected.account.id)
    assert account == done.account
    assert account.status is Status.DISCONNECTED and not account.status.needs_user
    assert account.status_cause == "Disconnected by slack:U1."
    assert account.status_cause_code is CauseCode.DISCONNECTED_BY_USER
    assert not account.has_access_token and not account.has_refresh_token and account.expiry is None
    assert account.email == "alice@gmail.com"  # the row and its metadata stay

    event = (await audit.recent(accounts.pool, account_id=account.id, limit=1))[0]
    assert (event.action, event.actor) == ("tokens.cleared", "slack:U1")
    assert event.details["revoked_at_google"] is True and event.details["had_tokens"] is True
    details = json.dumps(event.details)
    assert connected.refresh_token not in details and connected.access_token not in details


async def test_a_disconnected_account_stays_disconnected_when_asked_for_access(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    connected = await connect_account(accounts, fake_google)
    service = make_service(accounts)
    await service.disconnect(connected.account.id, actor="slack:U1")

    result = await service.access(connected.account.id)

    assert result.outcome is Outcome.NEEDS_USER and result.cause == "Disconnected by slack:U1."
    account = await accounts.get(connected.account.id)
    assert account.status is Status.DISCONNECTED
    assert token_calls(fake_google) == 0


async def test_disconnect_of_a_grant_already_revoked_at_google_counts_as_revoked(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    connected = await connect_account(accounts, fake_google)
    fake_google.revoke_refresh_token(connected.refresh_token)

    done = await make_service(accounts).disconnect(connected.account.id, actor="slack:U1")

    (call,) = fake_google.calls_to("/revoke")
    assert call.status == 400  # invalid_token: nothing left to revoke
    assert done.revoked_at_google is True and done.cause is None
    assert await accounts.read_tokens(connected.account.id) is None


async def test_disconnect_when_google_cannot_revoke_still_wipes_the_tokens(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    connected = await connect_account(accounts, fake_google)
    service = make_service(accounts, revoke_uri=closed_port_uri("/revoke"))

    done = await service.disconnect(connected.account.id, actor="slack:U1")

    assert done.revoked_at_google is False and done.had_tokens is True
    assert done.cause is not None and "myaccount.google.com/permissions" in done.cause
    assert fake_google.revoked == set() and fake_google.calls_to("/revoke") == []
    assert await accounts.read_tokens(connected.account.id) is None
    assert (await accounts.get(connected.account.id)).status is Status.DISCONNECTED
    event = (await audit.recent(accounts.pool, account_id=connected.account.id, limit=1))[0]
    assert event.action == "tokens.cleared" and event.details["revoked_at_google"] is False


async def test_disconnect_of_a_legacy_row_clears_is_equipped(
    legacy_accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    register_heejae_with_the_legacy_client(fake_google)
    heejae = await account_by_user_id(legacy_accounts, "heejae")
    assert heejae is not None
    service = make_service(legacy_accounts)
    assert (await service.access(heejae.id)).outcome is Outcome.REFRESHED
    assert (await legacy_accounts.get(heejae.id)).is_equipped is True

    done = await service.disconnect(heejae.id, actor="slack:U091UNVE41M")

    assert done.revoked_at_google is True and HEEJAE_REFRESH in fake_google.revoked
    assert done.account.is_equipped is False and done.account.status is Status.DISCONNECTED
    assert await legacy_accounts.read_tokens(heejae.id) is None
    token_data = await legacy_accounts.pool.fetchval(
        "SELECT token_data FROM gmail_tokens WHERE id = $1", heejae.id
    )
    assert "access_token" not in token_data and "refresh_token" not in token_data


async def test_disconnect_of_a_seed_001_row_without_tokens(
    legacy_accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    row = await account_by_user_id(legacy_accounts, NULL_TOKEN_USER)
    assert row is not None and row.is_equipped is True

    done = await make_service(legacy_accounts).disconnect(row.id, actor="slack:U0HAPPYBELL")

    assert done.revoked_at_google is False and done.had_tokens is False and done.cause is None
    assert fake_google.calls_to("/revoke") == []  # nothing to revoke
    assert done.account.is_equipped is False and done.account.status is Status.DISCONNECTED
    event = (await audit.recent(legacy_accounts.pool, account_id=row.id, limit=1))[0]
    assert event.action == "tokens.cleared" and event.details["had_tokens"] is False


# ---- Built from the settings --------------------------------------------------------------------------------


async def test_build_token_service_uses_the_settings(
    accounts: Accounts,
    fake_google: FakeGoogle,
    session: aiohttp.ClientSession,
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(**google_env(fake_google), GOOGLE_OAUTH_TESTING_MODE="true")
    connected = await connect_account(accounts, fake_google, expires_in=timedelta(minutes=1))

    service = build_token_service(settings, accounts, google_client(settings, session))

    assert service.client_id == fake_google.client_id
    assert service.testing_mode is True
    assert service.required == settings.required_capabilities == REQUIRED
    assert service.google.token_uri == fake_google.token_uri
    assert service.google.revoke_uri == fake_google.revoke_uri
    result = await service.access(connected.account.id)
    assert result.outcome is Outcome.REFRESHED  # so the client secret it was given is the right one
    assert fake_google.calls_to("/token")[0].form["client_id"] == fake_google.client_id


@pytest.mark.parametrize("unset", ["GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET"])
async def test_build_token_service_needs_the_google_client(
    accounts: Accounts, session: aiohttp.ClientSession, make_settings: Callable[..., Settings], unset: str
) -> None:
    settings = make_settings(**{unset: None})

    with pytest.raises(ConfigError) as raised:
        build_token_service(settings, accounts, google_client(settings, session))
    assert "GOOGLE_CLIENT_ID / GOOGLE_CLIENT_SECRET" in str(raised.value)


# ---- Classifying Google's error answers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "failure", "error"),
    [
        (
            400,
            {"error": "invalid_grant", "error_subtype": "invalid_rapt"},
            Failure.REAUTH_REQUIRED,
            "invalid_rapt",
        ),
        (
            400,
            {"error": "invalid_grant", "error_subtype": "rapt_required"},
            Failure.REAUTH_REQUIRED,
            "rapt_required",
        ),
        (400, {"error": "invalid_rapt"}, Failure.REAUTH_REQUIRED, "invalid_rapt"),
        (
            400,
            {"error": "invalid_grant", "error_description": "Bad Request"},
            Failure.INVALID_GRANT,
            "invalid_grant",
        ),
        (400, {"error": "invalid_grant", "error_subtype": "other"}, Failure.INVALID_GRANT, "invalid_grant"),
        (401, {"error": "invalid_client"}, Failure.CLIENT_REJECTED, "invalid_client"),
        (401, {"error": "unauthorized_client"}, Failure.CLIENT_REJECTED, "unauthorized_client"),
        (429, {"error": "rate_limit_exceeded"}, Failure.TRANSIENT, "rate_limit_exceeded"),
        (429, None, Failure.TRANSIENT, None),
        (500, None, Failure.TRANSIENT, None),
        (503, {"error": "temporarily_unavailable"}, Failure.TRANSIENT, "temporarily_unavailable"),
        (408, None, Failure.TRANSIENT, None),
        (400, {"error": "server_error"}, Failure.TRANSIENT, "server_error"),
        (400, {"error": "internal_failure"}, Failure.TRANSIENT, "internal_failure"),
        (400, {"error": "invalid_request"}, Failure.UNEXPECTED, "invalid_request"),
        (400, {"error": "something_new"}, Failure.UNEXPECTED, "something_new"),
        (400, None, Failure.UNEXPECTED, None),
        (400, ["not", "an", "object"], Failure.UNEXPECTED, None),
        (404, {}, Failure.UNEXPECTED, None),
    ],
)
def test_token_error_classification(status: int, body: Any, failure: Failure, error: str | None) -> None:
    classified = token_error(status, body)

    assert classified.failure is failure
    assert classified.error == error
    assert classified.status == status
    assert classified.transient is (failure is Failure.TRANSIENT)
    assert f"HTTP {status}" in str(classified)


def test_token_error_message_carries_google_description() -> None:
    classified = token_error(
        400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
    )
    assert str(classified) == "Google answered HTTP 400 (invalid_grant: Token has been expired or revoked.)"


@pytest.mark.parametrize(
    ("expires_in", "seconds"), [(3599, 3599), ("3599", 3599), (3599.0, 3599), (59.5, 59.5)]
)
def test_token_response_reads_expires_in_as_a_number(expires_in: object, seconds: float) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    response = token_response({"access_token": "a", "expires_in": expires_in}, now=now)
    assert response.expiry == now + timedelta(seconds=seconds)


@pytest.mark.parametrize("expires_in", [None, "soon", -5, [], 10**12])
def test_token_response_without_a_usable_expires_in_has_no_expiry(expires_in: object) -> None:
    assert token_response({"access_token": "a", "expires_in": expires_in}).expiry is None


async def test_time_based_access_is_remembered_from_the_refresh_answer(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    connected = await connect_account(accounts, fake_google, expires_in=timedelta(minutes=1))
    fake_google.add_refresh_token(
        connected.refresh_token,
        email="alice@gmail.com",
        scopes=[READONLY, SEND],
        access_for=timedelta(days=3),
    )
    assert connected.account.refresh_token_expires_at is None

    result = await make_service(accounts).access(connected.account.id)

    assert result.outcome is Outcome.REFRESHED
    ends = result.account.refresh_token_expires_at
    assert ends is not None and abs(ends - (datetime.now(UTC) + timedelta(days=3))) < timedelta(minutes=1)


async def test_once_the_granted_time_is_over_the_account_is_expired_without_asking_google(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    connected = await connect_account(accounts, fake_google, expires_in=timedelta(minutes=1))
    await accounts.pool.execute(
        "UPDATE gmail_tokens SET refresh_token_expires_at = now() - interval '1 hour' WHERE id = $1",
        connected.account.id,
    )

    result = await make_service(accounts).access(connected.account.id)

    assert result.outcome is Outcome.NEEDS_USER and token_calls(fake_google) == 0
    account = await accounts.get(connected.account.id)
    assert (account.status, account.status_cause_code) == (Status.EXPIRED, CauseCode.ACCESS_TIME_ENDED)
    assert result.code is CauseCode.ACCESS_TIME_ENDED
    assert result.cause == account.status_cause and "time-limited access" in result.cause


async def test_invalid_grant_as_the_granted_time_ends_says_the_time_ran_out(
    accounts: Accounts, fake_google: FakeGoogle, make_service: MakeService
) -> None:
    # Our clock is a minute behind Google's: the refresh is tried, and Google's refusal is put down to the end.
    connected = await connect_account(accounts, fake_google, expires_in=timedelta(minutes=1))
    await accounts.pool.execute(
        "UPDATE gmail_tokens SET refresh_token_expires_at = now() + interval '1 minute' WHERE id = $1",
        connected.account.id,
    )
    fake_google.end_granted_time(connected.refresh_token)

    result = await make_service(accounts).access(connected.account.id)

    assert result.outcome is Outcome.NEEDS_USER and token_calls(fake_google) == 1
    assert result.cause is not None and "time-limited access" in result.cause
    account = await accounts.get(connected.account.id)
    assert (account.status, account.status_cause_code) == (Status.EXPIRED, CauseCode.ACCESS_TIME_ENDED)
