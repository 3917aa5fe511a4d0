"""Consent's code exchange against the fake Google over HTTP: the ID token is believed only once google-auth
verifies it against the certs endpoint; anything else leaves its claims empty, with a warning and no token."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from bot.config import Settings
from bot.google.consent import (
    FAILURE_KEPT_SECONDS,
    REFETCH_AFTER_SECONDS,
    Consent,
    Exchange,
    verified_email,
)
from tests.fakes.google import FakeGoogle
from tests.helpers import READONLY, free_port, google_env

REDIRECT_URI = "http://127.0.0.1:8080/oauth/google/callback"
SCOPES = ["openid", "email", READONLY]
FALLBACK = "reading the email from userinfo"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def make_consent(
    fake_google: FakeGoogle, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Consent]:
    """A Consent for the fake's client, with every Google endpoint at the fake unless overridden."""
    # Consent sets these for oauthlib; set them here first so they are put back after the test.
    monkeypatch.setenv("OAUTHLIB_RELAX_TOKEN_SCOPE", "1")
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")

    def make(**env: str) -> Consent:
        return Consent(make_settings(**{**google_env(fake_google), **env}))

    return make


async def exchange(consent: Consent, fake: FakeGoogle, http: aiohttp.ClientSession, email: str) -> Exchange:
    """Answer the consent screen as `email`, then exchange the code the callback got."""
    return await exchanged(consent, await consented(consent, fake, http, email))


async def consented(
    consent: Consent, fake: FakeGoogle, http: aiohttp.ClientSession, email: str
) -> tuple[str, str, str]:
    """Answer the consent screen as `email`: the code the callback got, its state and its code verifier."""
    fake.consent.email = email
    state, verifier = secrets.token_urlsafe(16), secrets.token_urlsafe(48)
    url = consent.authorization_url(
        state=state, code_verifier=verifier, scopes=SCOPES, redirect_uri=REDIRECT_URI, login_hint=None
    )
    async with http.get(url, allow_redirects=False) as response:
        assert response.status == 302
        code = parse_qs(urlsplit(response.headers["Location"]).query)["code"][0]
    return code, state, verifier


async def exchanged(consent: Consent, answered: tuple[str, str, str]) -> Exchange:
    code, state, verifier = answered
    return await consent.exchange(
        code=code, state=state, code_verifier=verifier, scopes=SCOPES, redirect_uri=REDIRECT_URI
    )


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "bot.google.consent" and record.levelname == "WARNING"
    ]


async def test_a_genuine_id_token_is_verified_against_the_certs_and_believed(
    make_consent: Callable[..., Consent],
    fake_google: FakeGoogle,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    result = await exchange(make_consent(), fake_google, http, "Ada@Example.com")

    assert result.id_claims["email"] == "Ada@Example.com" and result.id_claims["aud"] == fake_google.client_id
    assert verified_email(result.id_claims) == "ada@example.com"
    assert [call.status for call in fake_google.calls_to("/oauth2/v1/certs")] == [200]
    assert fake_google.calls_to("/v1/userinfo") == []
    assert warnings(caplog) == []


async def test_a_token_issued_a_few_seconds_ahead_of_our_clock_is_believed(
    make_consent: Callable[..., Consent], fake_google: FakeGoogle, http: aiohttp.ClientSession
) -> None:
    now = int(time.time())
    fake_google.id_token_claims = {"iat": now + 5}

    result = await exchange(make_consent(), fake_google, http, "skew@example.com")

    assert verified_email(result.id_claims) == "skew@example.com"


def forged(fake: FakeGoogle) -> None:
    fake.id_token_key = "unknown"


def unsigned(fake: FakeGoogle) -> None:
    fake.id_token_key = "none"


def claims(**values: Any) -> Callable[[FakeGoogle], None]:
    def change(fake: FakeGoogle) -> None:
        fake.id_token_claims = values

    return change


HOUR = 3600

UNTRUSTED_TOKENS = {
    "signed by another key": (forged, "bad signature"),
    "alg none": (unsigned, "unsupported or missing signature algorithm"),
    "wrong audience": (claims(aud="another-client.apps.googleusercontent.com"), "another OAuth client"),
    "wrong issuer": (claims(iss="https://accounts.google.com.example"), "not issued by Google"),
    "no issuer": (claims(iss=None), "not issued by Google"),
    "expired": (claims(iat=int(time.time()) - 2 * HOUR, exp=int(time.time()) - HOUR), "expired"),
    "issued in the future": (claims(iat=int(time.time()) + HOUR), "issued in the future"),
    "no expiry": (claims(exp=None), "no iat or exp"),
}


@pytest.mark.parametrize(("change", "reason"), UNTRUSTED_TOKENS.values(), ids=UNTRUSTED_TOKENS.keys())
async def test_an_id_token_that_does_not_verify_gives_no_claims(
    make_consent: Callable[..., Consent],
    fake_google: FakeGoogle,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    change: Callable[[FakeGoogle], None],
    reason: str,
) -> None:
    change(fake_google)

    result = await exchange(make_consent(), fake_google, http, "mallory@example.com")

    assert result.id_claims == {}
    assert result.access_token.startswith("ya29.") and result.refresh_token  # the exchange itself stands
    assert len(fake_google.calls_to("/oauth2/v1/certs")) == 1
    [warning] = warnings(caplog)
    assert "did not verify" in warning and reason in warning and FALLBACK in warning


CERTS_FAILURES = {
    "500": (500, None, "HTTP 500"),
    "503": (503, None, "HTTP 503"),
    "an HTML page": (200, "<html><body>Sign in to the proxy</body></html>", "not x509 certificates"),
    "not JSON": (200, "certs", "not x509 certificates"),
    "a JWK set": (200, '{"keys": []}', "not x509 certificates"),
    "not PEM": (200, '{"0123abcd": "MIIC..."}', "not x509 certificates"),
    "empty": (200, "{}", "not x509 certificates"),
}


@pytest.mark.parametrize(("status", "body", "reason"), CERTS_FAILURES.values(), ids=CERTS_FAILURES.keys())
async def test_certs_that_cannot_be_used_give_no_claims_and_a_warning(
    make_consent: Callable[..., Consent],
    fake_google: FakeGoogle,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    status: int,
    body: str | None,
    reason: str,
) -> None:
    fake_google.fail_certs(status, body=body)

    result = await exchange(make_consent(), fake_google, http, "ada@example.com")

    assert result.id_claims == {} and result.access_token
    [warning] = warnings(caplog)
    assert "Could not get Google's ID token certificates" in warning and fake_google.certs_uri in warning
    assert reason in warning and FALLBACK in warning


async def test_certs_that_do_not_answer_in_time_give_no_claims(
    make_consent: Callable[..., Consent],
    fake_google: FakeGoogle,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    consent = make_consent()
    # Room for the code exchange itself on a busy machine; the certs answer far later than that.
    consent.timeout = 1.0
    fake_google.certs_delay = 5.0

    started = time.monotonic()
    result = await exchange(consent, fake_google, http, "ada@example.com")

    assert time.monotonic() - started < 5.0  # it did not wait for the certs
    assert result.id_claims == {} and result.access_token
    [warning] = warnings(caplog)
    assert "no answer in time" in warning and FALLBACK in warning


async def test_an_unreachable_certs_endpoint_gives_no_claims(
    make_consent: Callable[..., Consent],
    fake_google: FakeGoogle,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/oauth2/v1/certs"

    result = await exchange(make_consent(GOOGLE_CERTS_URI=nowhere), fake_google, http, "ada@example.com")

    assert result.id_claims == {} and result.access_token
    [warning] = warnings(caplog)
    assert nowhere in warning and "ConnectionError" in warning


async def test_without_an_id_token_the_certs_are_not_fetched(
    make_consent: Callable[..., Consent], fake_google: FakeGoogle, http: aiohttp.ClientSession
) -> None:
    fake_google.omit_id_token = True

    result = await exchange(make_consent(), fake_google, http, "ada@example.com")

    assert result.id_claims == {} and result.access_token
    assert fake_google.calls_to("/oauth2/v1/certs") == []


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


CERTS = "/oauth2/v1/certs"


@pytest.fixture
def clocked(make_consent: Callable[..., Consent]) -> tuple[Consent, Clock]:
    """A Consent whose certificates are kept on a clock of the test's own."""
    consent = make_consent()
    consent.certs.clock = clock = Clock()
    return consent, clock


async def test_the_certificates_are_fetched_once_for_their_max_age(
    clocked: tuple[Consent, Clock], fake_google: FakeGoogle, http: aiohttp.ClientSession
) -> None:
    consent, clock = clocked

    first = await exchange(consent, fake_google, http, "ada@example.com")
    second = await exchange(consent, fake_google, http, "grace@example.com")

    assert verified_email(first.id_claims) == "ada@example.com"
    assert verified_email(second.id_claims) == "grace@example.com"
    assert len(fake_google.calls_to(CERTS)) == 1  # kept: the fake says max-age=22167, as Google does
    clock.now += 22167
    third = await exchange(consent, fake_google, http, "alan@example.com")
    assert verified_email(third.id_claims) == "alan@example.com"
    assert len(fake_google.calls_to(CERTS)) == 2


async def test_verifications_at_once_wait_for_one_fetch(
    make_consent: Callable[..., Consent], fake_google: FakeGoogle, http: aiohttp.ClientSession
) -> None:
    consent = make_consent()
    fake_google.certs_delay = 0.3

    answers = [
        await consented(consent, fake_google, http, f"user{number}@example.com") for number in range(5)
    ]

    results = await asyncio.gather(*(exchanged(consent, answered) for answered in answers))

    assert [verified_email(result.id_claims) for result in results] == [
        f"user{n}@example.com" for n in range(5)
    ]
    assert len(fake_google.calls_to(CERTS)) == 1


async def test_certificates_that_could_not_be_had_are_not_kept(
    clocked: tuple[Consent, Clock],
    fake_google: FakeGoogle,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    consent, clock = clocked
    fake_google.fail_certs(503)

    failed = await exchange(consent, fake_google, http, "ada@example.com")
    # Right after a failure, a verification does not try again: it fails at once, for the same reason.
    soon = await exchange(consent, fake_google, http, "ada@example.com")
    clock.now += FAILURE_KEPT_SECONDS
    again = await exchange(consent, fake_google, http, "ada@example.com")

    assert failed.id_claims == {} and soon.id_claims == {}
    assert "HTTP 503" in warnings(caplog)[-1]
    assert verified_email(again.id_claims) == "ada@example.com"
    assert [call.status for call in fake_google.calls_to(CERTS)] == [503, 200]


async def test_a_token_signed_by_a_key_published_since_fetches_the_certificates_again(
    clocked: tuple[Consent, Clock],
    fake_google: FakeGoogle,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    consent, clock = clocked
    await exchange(consent, fake_google, http, "ada@example.com")
    fake_google.rotate_signing_key()

    # Kept less than a minute ago: a token naming another kid does not make a fetch (forged kids cannot make
    # one each), and is not believed.
    clock.now += REFETCH_AFTER_SECONDS - 1
    soon = await exchange(consent, fake_google, http, "grace@example.com")
    assert soon.id_claims == {}
    assert "its kid names no published certificate" in warnings(caplog)[-1]
    assert len(fake_google.calls_to(CERTS)) == 1

    # Later, it fetches them again at once, well before their max-age, and finds the new key.
    clock.now += 1
    later = await exchange(consent, fake_google, http, "grace@example.com")
    assert verified_email(later.id_claims) == "grace@example.com"
    assert len(fake_google.calls_to(CERTS)) == 2
