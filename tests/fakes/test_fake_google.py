"""The fake Google over real HTTP, driven by plain requests and by the real google-auth-oauthlib client."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pytest
from google.auth import exceptions as google_auth_exceptions
from google.auth.transport.requests import Request as GoogleAuthRequest
from google.oauth2 import id_token as google_id_token
from google.oauth2.credentials import Credentials
from google_auth_oauthlib.flow import Flow
from googleapiclient.discovery import build
from googleapiclient.http import BatchHttpRequest
from oauthlib.oauth2.rfc6749.errors import InvalidGrantError

from tests.fakes.google import GMAIL_BATCH_LIMIT, Consent, FakeGoogle, fake_google_server

REDIRECT_URI = "http://localhost/cb"
READONLY = "https://www.googleapis.com/auth/gmail.readonly"
SEND = "https://www.googleapis.com/auth/gmail.send"
USERINFO_EMAIL = "https://www.googleapis.com/auth/userinfo.email"


@pytest.fixture
async def google() -> AsyncIterator[FakeGoogle]:
    async with fake_google_server() as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


async def consent(
    http: aiohttp.ClientSession, google: FakeGoogle, scopes: list[str], challenge: str, **extra: str
) -> tuple[int, dict[str, str]]:
    """Visit the consent screen; the status and the query of the redirect back (or the error text)."""
    params = {
        "client_id": google.client_id,
        "redirect_uri": REDIRECT_URI,
        "response_type": "code",
        "scope": " ".join(scopes),
        "state": "state-123",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    async with http.get(google.auth_uri, params=params, allow_redirects=False) as response:
        if response.status != 302:
            return response.status, {"text": await response.text()}
        location = urlsplit(response.headers["Location"])
        assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT_URI
        return 302, {key: values[0] for key, values in parse_qs(location.query).items()}


async def post_token(
    http: aiohttp.ClientSession, google: FakeGoogle, **form: str
) -> tuple[int, dict[str, Any]]:
    """POST form fields to /token with the client's id and secret in the body."""
    body = {"client_id": google.client_id, "client_secret": google.client_secret, **form}
    async with http.post(google.token_uri, data=body) as response:
        return response.status, await response.json()


async def connect(
    http: aiohttp.ClientSession, google: FakeGoogle, scopes: list[str] | None = None
) -> dict[str, Any]:
    """A whole authorization-code flow; the token response."""
    verifier, challenge = pkce_pair()
    _, params = await consent(http, google, scopes or ["openid", "email", READONLY], challenge)
    status, tokens = await post_token(
        http,
        google,
        grant_type="authorization_code",
        code=params["code"],
        redirect_uri=REDIRECT_URI,
        code_verifier=verifier,
    )
    assert status == 200, tokens
    return tokens


async def get_json(http: aiohttp.ClientSession, url: str, token: str, **params: Any) -> tuple[int, Any]:
    async with http.get(url, params=params, headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status, await response.json()


def jwt_payload(token: str) -> dict[str, Any]:
    segment = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


class BatchAnswer(NamedTuple):
    """One part of a batch answer."""

    content_id: str | None
    status: int
    body: Any


def batch_body(requests: list[str], boundary: str = "test_boundary") -> bytes:
    """A batch request's body with CRLF line ends: each embedded request (its lines joined with CRLF) in a
    part of its own, labelled `Content-ID: <item<n>>`."""
    parts = [
        f"--{boundary}\r\nContent-Type: application/http\r\nContent-ID: <item{number}>\r\n\r\n{request}\r\n\r\n"
        for number, request in enumerate(requests)
    ]
    return ("".join(parts) + f"--{boundary}--\r\n").encode()


def batch_answers(content_type: str, payload: bytes) -> list[BatchAnswer]:
    """The parts of a batch answer in order, checking that each is laid out as Google lays it out."""
    assert content_type.startswith("multipart/mixed; boundary=batch_")
    sections = payload.split(b"--" + content_type.partition("boundary=")[2].encode())
    assert sections[0] == b"" and sections[-1] == b"--\r\n"
    answers = []
    for section in sections[1:-1]:
        part_head, _, embedded = section.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        part_headers = dict(line.split(": ", 1) for line in part_head.decode().split("\r\n"))
        assert part_headers.pop("Content-Type") == "application/http"
        head, _, body = embedded.partition(b"\r\n\r\n")
        status_line, *lines = head.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines)
        assert status_line.startswith("HTTP/1.1 ")
        assert headers["Content-Type"] == "application/json; charset=UTF-8"
        assert body.endswith(b"\r\n") and int(headers["Content-Length"]) == len(body) - 2
        answers.append(
            BatchAnswer(part_headers.get("Content-ID"), int(status_line.split()[1]), json.loads(body))
        )
    return answers


async def post_batch(
    http: aiohttp.ClientSession, google: FakeGoogle, body: bytes, token: str | None = None
) -> tuple[int, str, bytes]:
    """POST a batch body made by `batch_body`; the status, Content-Type and body of the answer."""
    headers = {"Content-Type": "multipart/mixed; boundary=test_boundary"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with http.post(google.gmail_batch_uri, data=body, headers=headers) as response:
        return response.status, response.headers["Content-Type"], await response.read()


def message_get(message_id: str) -> str:
    """The request line of a message get for its From and Subject headers, without the HTTP version."""
    return f"GET /gmail/v1/users/me/messages/{message_id}?format=metadata&metadataHeaders=From&metadataHeaders=Subject"


async def test_google_auth_oauthlib_flow_round_trip(
    google: FakeGoogle, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    monkeypatch.setenv("OAUTHLIB_RELAX_TOKEN_SCOPE", "1")
    config = {
        "web": {
            "client_id": google.client_id,
            "client_secret": google.client_secret,
            "auth_uri": google.auth_uri,
            "token_uri": google.token_uri,
        }
    }
    flow = Flow.from_client_config(
        config, scopes=["openid", USERINFO_EMAIL, READONLY, SEND], redirect_uri=REDIRECT_URI
    )
    google.consent = Consent(email="ada@example.com", granted_scopes=["openid", USERINFO_EMAIL, READONLY])
    url, state = flow.authorization_url(
        prompt="consent", include_granted_scopes="true", login_hint="ada@example.com"
    )

    async with http.get(url, allow_redirects=False) as response:
        assert response.status == 302
        redirect = parse_qs(urlsplit(response.headers["Location"]).query)
    assert redirect["state"] == [state]
    await asyncio.to_thread(flow.fetch_token, code=redirect["code"][0])

    credentials = flow.credentials
    with pytest.raises(InvalidGrantError, match="Bad Request"):
        await asyncio.to_thread(flow.fetch_token, code=redirect["code"][0])
    assert credentials.granted_scopes == ["openid", USERINFO_EMAIL, READONLY]
    assert credentials.token.startswith("ya29.") and credentials.refresh_token.startswith("1//0")
    claims = jwt_payload(credentials.id_token)
    assert claims["email"] == "ada@example.com" and claims["aud"] == claims["azp"] == google.client_id
    auth_call = google.calls_to("/o/oauth2/auth")[0].query
    assert auth_call["access_type"] == "offline" and auth_call["login_hint"] == "ada@example.com"
    assert auth_call["prompt"] == "consent" and auth_call["include_granted_scopes"] == "true"
    assert google.calls_to("/token")[0].headers["authorization"].startswith("Basic ")

    # google-auth refreshes with client_id and client_secret in the form body.
    first_token = credentials.token
    await asyncio.to_thread(credentials.refresh, GoogleAuthRequest())
    assert credentials.token != first_token
    assert google.calls_to("/token")[-1].form["client_secret"] == google.client_secret
    assert (await get_json(http, google.userinfo_uri, credentials.token))[1]["email"] == "ada@example.com"


async def test_consent_redirect_and_id_token(google: FakeGoogle, http: aiohttp.ClientSession) -> None:
    verifier, challenge = pkce_pair()
    status, params = await consent(http, google, ["openid", "email", READONLY], challenge)
    assert status == 302
    assert params["state"] == "state-123" and params["code"].startswith("4/0")
    assert params["scope"] == f"openid email {READONLY}"
    assert params["authuser"] == "0" and params["prompt"] == "consent"

    status, tokens = await post_token(
        http,
        google,
        grant_type="authorization_code",
        code=params["code"],
        redirect_uri=REDIRECT_URI,
        code_verifier=verifier,
    )
    assert status == 200
    assert tokens["expires_in"] == 3599 and tokens["token_type"] == "Bearer"
    assert tokens["scope"] == f"openid email {READONLY}"
    header, _, signature = tokens["id_token"].split(".")
    assert json.loads(base64.urlsafe_b64decode(header + "==")) == {
        "alg": "RS256",
        "kid": google.signing_key.kid,
        "typ": "JWT",
    }
    assert len(google.signing_key.kid) == 40 and int(google.signing_key.kid, 16) >= 0
    assert "=" not in signature
    claims = jwt_payload(tokens["id_token"])
    assert claims["iss"] == "https://accounts.google.com" and claims["email"] == "user@gmail.com"
    assert claims["email_verified"] is True and claims["sub"].isdigit() and claims["exp"] > time.time()
    assert {
        params["code"],
        tokens["access_token"],
        tokens["refresh_token"],
        tokens["id_token"],
    } <= google.issued_secrets
    assert google.client_secret in google.issued_secrets
    assert google.signing_key.private_pem in google.issued_secrets


def verify(google: FakeGoogle, token: str, audience: str | None = None) -> Any:
    """google-auth's own verification of an ID token against the fake's certs endpoint (blocking)."""
    return google_id_token.verify_token(
        token, GoogleAuthRequest(), audience=audience or google.client_id, certs_url=google.certs_uri
    )


async def test_certs_are_x509_pem_keyed_by_kid(google: FakeGoogle, http: aiohttp.ClientSession) -> None:
    async with http.get(google.certs_uri) as response:
        assert response.status == 200 and response.content_type == "application/json"
        assert "max-age=" in response.headers["Cache-Control"]
        certs = await response.json()
    assert list(certs) == [google.signing_key.kid]
    pem = certs[google.signing_key.kid]
    assert pem.startswith("-----BEGIN CERTIFICATE-----\n") and pem.endswith("-----END CERTIFICATE-----\n")
    assert "PRIVATE" not in pem


async def test_id_tokens_verify_with_google_auth(google: FakeGoogle, http: aiohttp.ClientSession) -> None:
    google.consent.email = "verified@example.com"
    tokens = await connect(http, google)

    claims = await asyncio.to_thread(verify, google, tokens["id_token"])

    assert claims["email"] == "verified@example.com" and claims["iss"] == "https://accounts.google.com"
    with pytest.raises(google_auth_exceptions.InvalidValue, match="wrong audience"):
        await asyncio.to_thread(
            verify, google, tokens["id_token"], "another-client.apps.googleusercontent.com"
        )


@pytest.mark.parametrize(
    ("key", "error"), [("unknown", "Could not verify token signature"), ("none", "Unsupported signature")]
)
async def test_id_tokens_signed_otherwise_do_not_verify(
    google: FakeGoogle, http: aiohttp.ClientSession, key: Any, error: str
) -> None:
    google.id_token_key = key
    tokens = await connect(http, google)
    header = json.loads(base64.urlsafe_b64decode(tokens["id_token"].split(".")[0] + "=="))
    assert header["kid"] == google.signing_key.kid  # a forger names the genuine key
    assert header["alg"] == ("none" if key == "none" else "RS256")

    with pytest.raises(ValueError, match=error):
        await asyncio.to_thread(verify, google, tokens["id_token"])


async def test_id_token_claims_can_be_changed(google: FakeGoogle, http: aiohttp.ClientSession) -> None:
    google.id_token_claims = {"iss": "https://evil.example", "email_verified": None, "exp": 1}
    claims = jwt_payload((await connect(http, google))["id_token"])
    assert claims["iss"] == "https://evil.example" and claims["exp"] == 1 and "email_verified" not in claims
    assert claims["aud"] == google.client_id  # the others stay genuine


async def test_the_certs_endpoint_can_fail(google: FakeGoogle, http: aiohttp.ClientSession) -> None:
    google.fail_certs(500)
    google.fail_certs(200, body="<html>Sign in to continue</html>")
    async with http.get(google.certs_uri) as response:
        assert response.status == 500 and (await response.json())["error"]["code"] == 500
    async with http.get(google.certs_uri) as response:
        assert response.status == 200 and response.content_type == "text/html"
    async with http.get(google.certs_uri) as response:
        assert response.status == 200 and google.signing_key.kid in await response.json()
    tokens = await connect(http, google)
    google.fail_certs(503)
    with pytest.raises(google_auth_exceptions.TransportError):
        await asyncio.to_thread(verify, google, tokens["id_token"])


async def test_token_response_options(google: FakeGoogle, http: aiohttp.ClientSession) -> None:
    assert "id_token" not in await connect(http, google, [READONLY])
    google.omit_refresh_token = True
    google.omit_id_token = True
    tokens = await connect(http, google)
    assert "refresh_token" not in tokens and "id_token" not in tokens


async def test_pkce_is_enforced(google: FakeGoogle, http: aiohttp.ClientSession) -> None:
    _, challenge = pkce_pair()
    results = []
    for verifier in ("wrong-verifier", None):
        _, params = await consent(http, google, [READONLY], challenge)
        form = {"grant_type": "authorization_code", "code": params["code"], "redirect_uri": REDIRECT_URI}
        results.append(
            await post_token(http, google, **form, **({"code_verifier": verifier} if verifier else {}))
        )
    assert results == [
        (400, {"error": "invalid_grant", "error_description": "Invalid code verifier."}),
        (400, {"error": "invalid_grant", "error_description": "Missing code verifier."}),
    ]


async def test_code_is_single_use_and_bound_to_redirect_uri(
    google: FakeGoogle, http: aiohttp.ClientSession
) -> None:
    verifier, challenge = pkce_pair()
    _, params = await consent(http, google, [READONLY], challenge)
    form = {"grant_type": "authorization_code", "code": params["code"], "code_verifier": verifier}
    assert (await post_token(http, google, **form, redirect_uri=REDIRECT_URI))[0] == 200
    assert await post_token(http, google, **form, redirect_uri=REDIRECT_URI) == (
        400,
        {"error": "invalid_grant", "error_description": "Bad Request"},
    )

    _, params = await consent(http, google, [READONLY], challenge)
    form["code"] = params["code"]
    status, body = await post_token(http, google, **form, redirect_uri="http://localhost/elsewhere")
    assert (status, body["error"]) == (400, "redirect_uri_mismatch")
    status, body = await post_token(http, google, grant_type="authorization_code", code="4/0nonsense")
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_refresh_works_until_revoked(google: FakeGoogle, http: aiohttp.ClientSession) -> None:
    tokens = await connect(http, google)
    refresh_token = tokens["refresh_token"]
    first = await post_token(http, google, grant_type="refresh_token", refresh_token=refresh_token)
    second = await post_token(http, google, grant_type="refresh_token", refresh_token=refresh_token)
    assert first[0] == second[0] == 200
    assert first[1]["access_token"] != second[1]["access_token"]
    assert "refresh_token" not in first[1] and first[1]["scope"] == f"openid email {READONLY}"

    async with http.post(google.revoke_uri, data={"token": refresh_token}) as response:
        assert (response.status, await response.json()) == (200, {})
    assert google.revoked == {refresh_token}
    assert await post_token(http, google, grant_type="refresh_token", refresh_token=refresh_token) == (
        400,
        {"error": "invalid_grant", "error_description": "Token has been expired or revoked."},
    )
    assert (await get_json(http, google.userinfo_uri, second[1]["access_token"]))[0] == 401
    async with http.post(google.revoke_uri, data={"token": refresh_token}) as response:
        assert response.status == 400
        assert await response.json() == {
            "error": "invalid_token",
            "error_description": "Token expired or revoked",
        }


async def test_revoking_an_access_token_revokes_its_grant(
    google: FakeGoogle, http: aiohttp.ClientSession
) -> None:
    tokens = await connect(http, google)
    async with http.post(google.revoke_uri, data={"token": tokens["access_token"]}) as response:
        assert response.status == 200
    status, body = await post_token(
        http, google, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_existing_grants(google: FakeGoogle, http: aiohttp.ClientSession) -> None:
    google.add_refresh_token("1//0legacy", email="old@example.com", scopes=[READONLY])
    google.add_refresh_token(
        "1//0foreign", email="x@example.com", scopes=[READONLY], client_id="other.apps", client_secret="s"
    )
    status, body = await post_token(http, google, grant_type="refresh_token", refresh_token="1//0legacy")
    assert status == 200 and body["scope"] == READONLY
    assert (await get_json(http, google.userinfo_uri, body["access_token"]))[1]["email"] == "old@example.com"

    status, body = await post_token(http, google, grant_type="refresh_token", refresh_token="1//0foreign")
    assert (status, body["error"]) == (401, "unauthorized_client")
    form = {
        "client_id": "other.apps",
        "client_secret": "s",
        "grant_type": "refresh_token",
        "refresh_token": "1//0foreign",
    }
    assert (await post_token(http, google, **form))[0] == 200

    google.revoke_refresh_token("1//0legacy")
    status, body = await post_token(http, google, grant_type="refresh_token", refresh_token="1//0legacy")
    assert (status, body["error"]) == (400, "invalid_grant")
    assert {"1//0legacy", "1//0foreign", "s"} <= google.issued_secrets


async def test_client_authentication(google: FakeGoogle, http: aiohttp.ClientSession) -> None:
    google.add_refresh_token("1//0r", email="a@example.com", scopes=[READONLY])
    form = {"grant_type": "refresh_token", "refresh_token": "1//0r"}

    async def basic(client_id: str, secret: str, fake: FakeGoogle = google) -> tuple[int, dict[str, Any]]:
        header = "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        async with http.post(fake.token_uri, data=form, headers={"Authorization": header}) as response:
            return response.status, await response.json()

    assert (await basic(google.client_id, google.client_secret))[0] == 200
    assert await basic(google.client_id, "wrong") == (
        401,
        {"error": "invalid_client", "error_description": "Unauthorized"},
    )
    assert (await basic("nobody.apps", "x"))[1] == {
        "error": "invalid_client",
        "error_description": "The OAuth client was not found.",
    }
    # RFC 6749 2.3.1: id and secret are form-encoded before Base64, as requests-oauthlib may do.
    async with fake_google_server(client_id="id with:colon", client_secret="se+cret/=") as special:
        special.add_refresh_token("1//0r", email="a@example.com", scopes=[READONLY])
        encoded = [urlencode({"": value})[1:] for value in (special.client_id, special.client_secret)]
        assert (await basic(encoded[0], encoded[1], fake=special))[0] == 200
    status, body = await post_token(http, google, grant_type="password")
    assert (status, body["error"]) == (400, "unsupported_grant_type")


async def test_queued_failures_and_delay(google: FakeGoogle, http: aiohttp.ClientSession) -> None:
    google.add_refresh_token("1//0r", email="a@example.com", scopes=[READONLY])
    form = {"grant_type": "refresh_token", "refresh_token": "1//0r"}
    google.fail_token(503)
    google.fail_token(502, body="<html><title>502 Bad Gateway</title></html>")
    google.fail_token(400, error="invalid_grant")
    assert await post_token(http, google, **form) == (
        503,
        {"error": "temporarily_unavailable", "error_description": "Service Unavailable"},
    )
    async with http.post(google.token_uri, data=form) as response:
        assert response.status == 502 and response.content_type == "text/html"
    assert (await post_token(http, google, **form))[1]["error"] == "invalid_grant"
    assert (await post_token(http, google, **form))[0] == 200

    google.token_delay = 0.1
    started = time.monotonic()
    assert (await post_token(http, google, **form))[0] == 200
    assert time.monotonic() - started >= 0.1
    assert [call.status for call in google.calls_to("/token")] == [503, 502, 400, 200, 200]


async def test_consent_screen_outcomes(google: FakeGoogle, http: aiohttp.ClientSession) -> None:
    _, challenge = pkce_pair()
    google.consent = Consent(deny=True)
    assert await consent(http, google, [READONLY], challenge) == (
        302,
        {"error": "access_denied", "state": "state-123"},
    )
    google.consent = Consent(error="admin_policy_enforced")
    assert (await consent(http, google, [READONLY], challenge))[1]["error"] == "admin_policy_enforced"
    assert "code" in (await consent(http, google, [READONLY], challenge))[1]  # back to defaults

    google.consent = Consent(email="b@example.com", granted_scopes=[SEND], sticky=True)
    for _ in range(2):
        assert (await consent(http, google, [READONLY, SEND], challenge))[1]["scope"] == SEND
    google.consent = Consent(email="b@example.com")
    _, params = await consent(http, google, [READONLY], challenge, include_granted_scopes="true")
    assert params["scope"] == f"{READONLY} {SEND}"


async def test_granular_consent_grants_only_ticked_boxes_that_were_asked_for(
    google: FakeGoogle, http: aiohttp.ClientSession
) -> None:
    _, challenge = pkce_pair()
    # Sign-in scopes have no box to untick; a box for a scope that was not asked for does not exist.
    google.consent = Consent(email="d@example.com", granted_scopes=[READONLY, SEND])
    _, params = await consent(http, google, ["openid", "email", READONLY], challenge)
    assert params["scope"] == f"openid email {READONLY}"
    google.consent = Consent(email="e@example.com", granted_scopes=[])
    _, params = await consent(http, google, ["openid", "email", READONLY, SEND], challenge)
    assert params["scope"] == "openid email"


async def test_incremental_authorization_returns_the_union_only_when_asked(
    google: FakeGoogle, http: aiohttp.ClientSession
) -> None:
    google.consent = Consent(email="f@example.com", granted_scopes=[READONLY], sticky=True)
    first = await connect(http, google, ["openid", "email", READONLY, SEND])
    assert first["scope"] == f"openid email {READONLY}"
    google.consent = Consent(email="f@example.com", sticky=True)
    _, challenge = pkce_pair()
    _, params = await consent(http, google, ["openid", "email", SEND], challenge)
    assert params["scope"] == f"openid email {SEND}"  # without include_granted_scopes: only the new ones
    _, params = await consent(http, google, [SEND], challenge, include_granted_scopes="true")
    assert set(params["scope"].split()) == {"openid", "email", READONLY, SEND}

    # Once the user removes the app's access, nothing earlier is granted any more.
    google.revoke_refresh_token(first["refresh_token"])
    _, params = await consent(http, google, [SEND], challenge, include_granted_scopes="true")
    assert params["scope"] == SEND


async def test_time_based_access_ends_the_refresh_token(
    google: FakeGoogle, http: aiohttp.ClientSession
) -> None:
    assert "refresh_token_expires_in" not in await connect(http, google)
    google.consent = Consent(email="g@example.com", access_for=timedelta(days=1))
    tokens = await connect(http, google)
    assert 86_390 <= tokens["refresh_token_expires_in"] <= 86_400
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    status, refreshed = await post_token(http, google, **form)
    assert status == 200 and 0 < refreshed["refresh_token_expires_in"] <= tokens["refresh_token_expires_in"]

    google.end_granted_time(tokens["refresh_token"])
    assert await post_token(http, google, **form) == (
        400,
        {"error": "invalid_grant", "error_description": "Token has been expired or revoked."},
    )
    google.add_refresh_token(
        "1//limited", email="h@example.com", scopes=[READONLY], access_for=timedelta(hours=2)
    )
    status, body = await post_token(http, google, grant_type="refresh_token", refresh_token="1//limited")
    assert status == 200 and 7190 <= body["refresh_token_expires_in"] <= 7200


async def test_consent_screen_rejects_bad_requests(google: FakeGoogle, http: aiohttp.ClientSession) -> None:
    status, body = await consent(http, google, [READONLY], "")
    assert (status, body["text"]) == (
        400,
        "Error 400: invalid_request\nMissing required parameter: code_challenge",
    )
    _, challenge = pkce_pair()
    assert (await consent(http, google, [READONLY], challenge, code_challenge_method="plain"))[0] == 400
    assert (await consent(http, google, [READONLY], challenge, response_type="token"))[0] == 400
    status, body = await consent(http, google, [READONLY], challenge, client_id="nobody.apps")
    assert status == 401 and "invalid_client" in body["text"]


async def test_userinfo(google: FakeGoogle, http: aiohttp.ClientSession) -> None:
    token = google.issue_access_token("c@example.com", ["openid", "email"])
    status, body = await get_json(http, google.userinfo_uri, token)
    assert status == 200 and body["email"] == "c@example.com" and body["email_verified"] is True
    assert (await get_json(http, google.userinfo_uri, "ya29.bogus"))[0] == 401
    expired = google.issue_access_token("c@example.com", ["email"], expires_in=0)
    status, body = await get_json(http, google.userinfo_uri, expired)
    assert status == 401 and body["error"] == "invalid_token"


async def test_gmail(google: FakeGoogle, http: aiohttp.ClientSession) -> None:
    token = google.issue_access_token("d@example.com", [READONLY])
    recent = google.add_message(
        "d@example.com", sender="Ann <ann@example.com>", subject="Hi", snippet="Hello"
    )
    google.add_message(
        "d@example.com", sender="b@example.com", subject="Old", snippet="...", age=timedelta(days=2)
    )
    google.add_message("d@example.com", sender="c@example.com", subject="Read", snippet="...", unread=False)
    gmail = google.gmail_api_url + "gmail/v1/users/me"

    status, profile = await get_json(http, gmail + "/profile", token)
    assert status == 200 and profile["emailAddress"] == "d@example.com" and profile["historyId"] == "1"
    status, listing = await get_json(
        http, gmail + "/messages", token, q="is:unread newer_than:1d", maxResults=10
    )
    assert listing == {"messages": [{"id": recent, "threadId": recent}], "resultSizeEstimate": 1}
    params = [("format", "metadata"), ("metadataHeaders", "From"), ("metadataHeaders", "Subject")]
    async with http.get(
        f"{gmail}/messages/{recent}", params=params, headers={"Authorization": f"Bearer {token}"}
    ) as r:
        message = await r.json()
    assert message["labelIds"] == ["UNREAD", "INBOX"] and message["snippet"] == "Hello"
    assert message["payload"]["headers"] == [
        {"name": "From", "value": "Ann <ann@example.com>"},
        {"name": "Subject", "value": "Hi"},
    ]
    assert int(message["internalDate"]) < time.time() * 1000
    assert (await get_json(http, f"{gmail}/messages/ffff", token))[0] == 404

    other = google.issue_access_token("e@example.com", ["https://mail.google.com/"])
    assert await get_json(http, gmail + "/messages", other, q="is:unread") == (200, {"resultSizeEstimate": 0})


async def test_gmail_errors(google: FakeGoogle, http: aiohttp.ClientSession) -> None:
    profile = google.gmail_api_url + "gmail/v1/users/me/profile"
    send_only = google.issue_access_token("f@example.com", [SEND])
    status, body = await get_json(http, profile, send_only)
    assert status == 403 and body["error"]["status"] == "PERMISSION_DENIED"
    assert body["error"]["errors"][0]["reason"] == "insufficientPermissions"
    status, body = await get_json(http, profile, "ya29.bogus")
    assert status == 401 and body["error"]["status"] == "UNAUTHENTICATED"

    token = google.issue_access_token("f@example.com", [READONLY])
    google.fail_gmail(503, times=2)
    google.gmail_delay = 0.05
    assert [(await get_json(http, profile, token))[0] for _ in range(3)] == [503, 503, 200]


async def test_gmail_batch_answers_each_call_in_order(
    google: FakeGoogle, http: aiohttp.ClientSession
) -> None:
    token = google.issue_access_token("g@example.com", [READONLY])
    first = google.add_message("g@example.com", sender="a@example.com", subject="One", snippet="1")
    second = google.add_message("g@example.com", sender="b@example.com", subject="Two", snippet="2")
    params = [("format", "metadata"), ("metadataHeaders", "From"), ("metadataHeaders", "Subject")]
    plain = []
    for message_id in (first, second):
        async with http.get(
            f"{google.gmail_api_url}gmail/v1/users/me/messages/{message_id}",
            params=params,
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            plain.append((response.status, await response.json()))
    requests = [message_get(first) + " HTTP/1.1", message_get(second), message_get("ffff")]

    status, content_type, payload = await post_batch(http, google, batch_body(requests), token)
    assert status == 200
    assert batch_answers(content_type, payload) == [
        BatchAnswer("<response-item0>", *plain[0]),
        BatchAnswer("<response-item1>", *plain[1]),
        BatchAnswer(
            "<response-item2>",
            404,
            {"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND"}},
        ),
    ]
    # Each call in the batch is recorded after the batch request, with its own path, query and status.
    outer, *inner = google.calls[-4:]
    assert (outer.path, outer.status, outer.batch) == ("/batch/gmail/v1", 200, False)
    statuses = [(call.method, call.status, call.batch) for call in inner]
    assert statuses == [("GET", 200, True), ("GET", 200, True), ("GET", 404, True)]
    assert inner[0].query == {"format": "metadata", "metadataHeaders": "From"}
    assert inner[0].headers["authorization"] == f"Bearer {token}" and "content-type" not in inner[0].headers
    assert [call.batch for call in google.calls_to(f"/gmail/v1/users/me/messages/{first}")] == [False, True]


async def test_gmail_batch_from_googleapiclient(google: FakeGoogle) -> None:
    # Google's own client writes bare LF line ends, a quoted boundary and `Content-ID: <uuid + n>`.
    token = google.issue_access_token("m@example.com", [READONLY])
    message_id = google.add_message("m@example.com", sender="a@example.com", subject="Hi", snippet="Hello")
    answers: dict[str, Any] = {}

    def run_batch() -> None:
        service = build(
            "gmail",
            "v1",
            credentials=Credentials(token),
            client_options={"api_endpoint": google.gmail_api_url},
            static_discovery=True,
        )
        try:
            batch = BatchHttpRequest(
                callback=lambda number, body, error: answers.update({number: error or body}),
                batch_uri=google.gmail_batch_uri,
            )
            messages = service.users().messages()
            batch.add(
                messages.get(userId="me", id=message_id, format="metadata", metadataHeaders=["Subject"])
            )
            batch.add(messages.get(userId="me", id="ffff"))
            batch.execute()
        finally:
            service.close()

    await asyncio.to_thread(run_batch)
    assert answers["1"]["payload"]["headers"] == [{"name": "Subject", "value": "Hi"}]
    assert answers["2"].status_code == 404
    assert [(call.path, call.batch) for call in google.calls] == [
        ("/batch/gmail/v1", False),
        (f"/gmail/v1/users/me/messages/{message_id}", True),
        ("/gmail/v1/users/me/messages/ffff", True),
    ]


async def test_failing_parts_read_by_googleapiclient_as_gmail_sends_them(
    google: FakeGoogle, http: aiohttp.ClientSession
) -> None:
    # Each part fails on its own: google-api-python-client hands each callback its own HttpError, with the
    # part's status, reason and Retry-After, and the other parts their messages.
    token = google.issue_access_token("n@example.com", [READONLY])
    ids = [google.add_message("n@example.com", sender="a", subject=f"S{n}", snippet="x") for n in range(4)]
    google.fail_gmail_message(ids[0], 429, retry_after=2)
    google.fail_gmail_message(ids[1], 403)
    google.fail_gmail_message(ids[2], 500, times=2)
    answers: dict[str, Any] = {}

    def run_batch() -> None:
        service = build(
            "gmail",
            "v1",
            credentials=Credentials(token),
            client_options={"api_endpoint": google.gmail_api_url},
            static_discovery=True,
        )
        try:
            batch = BatchHttpRequest(
                callback=lambda number, body, error: answers.update({number: error or body}),
                batch_uri=google.gmail_batch_uri,
            )
            for message_id in ids:
                batch.add(service.users().messages().get(userId="me", id=message_id, format="metadata"))
            batch.execute()
        finally:
            service.close()

    await asyncio.to_thread(run_batch)
    too_many, refused, broken, fine = (answers[str(n)] for n in range(1, 5))
    assert (too_many.status_code, too_many.resp["retry-after"]) == (429, "2")
    assert too_many.reason == "Too many concurrent requests for user."
    assert too_many.error_details[0]["reason"] == "rateLimitExceeded"
    assert refused.status_code == 403 and broken.status_code == 500
    assert fine["id"] == ids[3]

    # Only the first `times` gets of a message fail, in a batch or on its own.
    answers.clear()
    await asyncio.to_thread(run_batch)
    assert [getattr(answers[str(n)], "status_code", 200) for n in range(1, 5)] == [200, 200, 500, 200]
    status, body = await get_json(http, f"{google.gmail_api_url}gmail/v1/users/me/messages/{ids[2]}", token)
    assert (status, body["id"]) == (200, ids[2])


async def test_access_tokens_can_die_before_their_expiry_while_the_refresh_token_lives(
    google: FakeGoogle, http: aiohttp.ClientSession
) -> None:
    google.add_refresh_token("1//alive", email="o@example.com", scopes=[READONLY])
    token = google.issue_access_token("o@example.com", [READONLY])
    other = google.issue_access_token("p@example.com", [READONLY])
    profile = google.gmail_api_url + "gmail/v1/users/me/profile"

    assert google.kill_access_tokens("o@example.com") == 1

    assert (await get_json(http, profile, token))[0] == 401
    assert (await get_json(http, profile, other))[0] == 200
    async with http.post(
        google.token_uri,
        data={
            "grant_type": "refresh_token",
            "refresh_token": "1//alive",
            "client_id": google.client_id,
            "client_secret": google.client_secret,
        },
    ) as response:
        fresh = (await response.json())["access_token"]
    assert (await get_json(http, profile, fresh))[0] == 200


async def test_gmail_batch_routes_each_call(google: FakeGoogle, http: aiohttp.ClientSession) -> None:
    token = google.issue_access_token("h@example.com", [READONLY])
    recent = google.add_message("h@example.com", sender="a@example.com", subject="New", snippet="...")
    google.add_message(
        "h@example.com", sender="b@example.com", subject="Old", snippet="...", age=timedelta(days=3)
    )
    # googleapiclient writes bare LF line ends inside each part.
    lf_request = "GET /gmail/v1/users/me/messages?q=newer_than%3A1d HTTP/1.1\nAccept: application/json\n"
    requests = [
        "GET /gmail/v1/users/me/profile",
        lf_request,
        "GET /gmail/v1/users/me/drafts",
        f"POST /gmail/v1/users/me/messages/{recent}",
        "not an HTTP request",
    ]
    status, content_type, payload = await post_batch(http, google, batch_body(requests), token)
    assert status == 200
    answers = batch_answers(content_type, payload)
    assert [answer.status for answer in answers] == [200, 200, 404, 405, 400]
    assert answers[0].body["emailAddress"] == "h@example.com"
    assert answers[1].body == {"messages": [{"id": recent, "threadId": recent}], "resultSizeEstimate": 1}
    assert answers[4].content_id == "<response-item4>"
    assert answers[4].body["error"]["status"] == "INVALID_ARGUMENT"
    listing = google.calls_to("/gmail/v1/users/me/messages")[0]
    assert listing.query == {"q": "newer_than:1d"} and listing.headers["accept"] == "application/json"


async def test_gmail_batch_part_headers_override_the_batch_request_ones(
    google: FakeGoogle, http: aiohttp.ClientSession
) -> None:
    readonly = google.issue_access_token("i@example.com", [READONLY])
    send_only = google.issue_access_token("i@example.com", [SEND])
    profile = "GET /gmail/v1/users/me/profile"
    requests = [profile, f"{profile}\r\nAuthorization: Bearer {send_only}", profile]
    status, content_type, payload = await post_batch(http, google, batch_body(requests), readonly)
    assert status == 200
    answers = batch_answers(content_type, payload)
    assert [answer.status for answer in answers] == [200, 403, 200]
    assert answers[1].body["error"]["errors"][0]["reason"] == "insufficientPermissions"
    inner = [call for call in google.calls if call.batch]
    assert [call.headers["authorization"] for call in inner] == [
        f"Bearer {readonly}",
        f"Bearer {send_only}",
        f"Bearer {readonly}",
    ]


async def test_gmail_batch_without_authorization(google: FakeGoogle, http: aiohttp.ClientSession) -> None:
    body = batch_body(["GET /gmail/v1/users/me/profile", "GET /gmail/v1/users/me/messages"])
    status, content_type, payload = await post_batch(http, google, body)
    assert status == 200
    answers = batch_answers(content_type, payload)
    assert [(answer.status, answer.body["error"]["status"]) for answer in answers] == [
        (401, "UNAUTHENTICATED")
    ] * 2


async def test_gmail_failures_in_a_batch(google: FakeGoogle, http: aiohttp.ClientSession) -> None:
    token = google.issue_access_token("j@example.com", [READONLY])
    body = batch_body(["GET /gmail/v1/users/me/profile"] * 3)
    google.fail_gmail(503)
    google.fail_gmail_batch(429)
    status, _, payload = await post_batch(http, google, body, token)
    assert status == 429
    assert json.loads(payload)["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert [call.batch for call in google.calls] == [False]  # no call in it ran

    # The failure queued for Gmail calls is still there for the first call of the next batch.
    status, content_type, payload = await post_batch(http, google, body, token)
    assert status == 200
    assert [answer.status for answer in batch_answers(content_type, payload)] == [503, 200, 200]
    assert [call.status for call in google.calls] == [429, 200, 503, 200, 200]


async def test_gmail_batch_rejects_what_is_not_a_batch(
    google: FakeGoogle, http: aiohttp.ClientSession
) -> None:
    token = google.issue_access_token("k@example.com", [READONLY])
    profile = "GET /gmail/v1/users/me/profile"
    status, content_type, payload = await post_batch(
        http, google, batch_body([profile] * GMAIL_BATCH_LIMIT), token
    )
    assert status == 200 and len(batch_answers(content_type, payload)) == GMAIL_BATCH_LIMIT

    calls_before = len(google.calls)
    assert (await post_batch(http, google, batch_body([profile] * (GMAIL_BATCH_LIMIT + 1)), token))[0] == 400
    assert (await post_batch(http, google, b"--test_boundary--\r\n", token))[0] == 400
    auth = {"Authorization": f"Bearer {token}"}
    for content_type in ("application/json", "multipart/mixed"):
        async with http.post(
            google.gmail_batch_uri, data=b"{}", headers={**auth, "Content-Type": content_type}
        ) as response:
            assert response.status == 400
            assert (await response.json())["error"]["status"] == "INVALID_ARGUMENT"
    assert [call.status for call in google.calls[calls_before:]] == [400] * 4


async def test_gmail_batch_waits_the_latency_once(google: FakeGoogle, http: aiohttp.ClientSession) -> None:
    token = google.issue_access_token("l@example.com", [READONLY])
    google.gmail_delay = 0.2
    started = time.monotonic()
    assert (await get_json(http, google.gmail_api_url + "gmail/v1/users/me/profile", token))[0] == 200
    assert time.monotonic() - started >= google.gmail_delay

    started = time.monotonic()
    status, _, _ = await post_batch(http, google, batch_body(["GET /gmail/v1/users/me/profile"] * 5), token)
    assert status == 200
    assert google.gmail_delay <= time.monotonic() - started < 2 * google.gmail_delay
