"""Sign in with Slack on the fake Slack: a browser's visits over real HTTP, slack_sdk's openid_connect_* methods,
and ID tokens verified by PyJWT against the keys the fake publishes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import jwt
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack import DEFAULT_BOT_TOKEN, FakeSlack, fake_slack_server
from tests.fakes.slack_oidc import KEYS_FAILURE, TEAM_ID_CLAIM, USER_ID_CLAIM

ADA = "U0ADA"
CALLBACK = "https://app.example/slack/sign-in/callback"
CLIENT_ID = "fake-slack-client-id"
CLIENT_SECRET = "fake-slack-client-secret"
STATE = "state-1/2+3 ="  # characters that need escaping come back unchanged
NONCE = "nonce-abc"


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with fake_slack_server(oidc_redirect_uris=[CALLBACK]) as fake:
        fake.add_user(ADA, name="ada", real_name="Ada Lovelace", email="ada@example.com", locale="en-US")
        fake.sign_in(ADA)
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def client(slack: FakeSlack, http: aiohttp.ClientSession) -> AsyncWebClient:
    return AsyncWebClient(base_url=slack.base_url, session=http)


async def visit(
    http: aiohttp.ClientSession, slack: FakeSlack, **changes: str | None
) -> aiohttp.ClientResponse:
    """The browser opens the authorize URL with the app's usual parameters, `changes` applied (None drops one)."""
    params = {
        "response_type": "code",
        "scope": "openid email profile",
        "client_id": CLIENT_ID,
        "state": STATE,
        "nonce": NONCE,
        "redirect_uri": CALLBACK,
    }
    params.update(changes)
    query = {name: value for name, value in params.items() if value is not None}
    async with http.get(slack.oidc_authorize_url, params=query, allow_redirects=False) as response:
        await response.read()
        return response


def redirected(response: aiohttp.ClientResponse) -> tuple[str, dict[str, str]]:
    """Where a redirect goes, without its query, and the query's parameters."""
    assert response.status == 302
    location = urlsplit(response.headers["Location"])
    params = {name: values[0] for name, values in parse_qs(location.query, keep_blank_values=True).items()}
    return location._replace(query="").geturl(), params


async def code_for(http: aiohttp.ClientSession, slack: FakeSlack, **changes: str | None) -> str:
    return redirected(await visit(http, slack, **changes))[1]["code"]


async def exchange(client: AsyncWebClient, code: str, **kwargs: Any) -> dict[str, Any]:
    kwargs = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "redirect_uri": CALLBACK, **kwargs}
    return dict((await client.openid_connect_token(code=code, **kwargs)).data)  # type: ignore[arg-type]


async def token_error(client: AsyncWebClient, code: str, **kwargs: Any) -> str:
    with pytest.raises(SlackApiError) as raised:
        await exchange(client, code, **kwargs)
    assert raised.value.response.status_code == 200
    return raised.value.response["error"]


async def user_info(slack: FakeSlack, http: aiohttp.ClientSession, token: str | None) -> dict[str, Any]:
    """openid.connect.userInfo through slack_sdk, as the holder of `token`."""
    client = AsyncWebClient(token=token, base_url=slack.base_url, session=http)
    return dict((await client.openid_connect_userInfo()).data)  # type: ignore[arg-type]


async def keys(http: aiohttp.ClientSession, slack: FakeSlack) -> jwt.PyJWKSet:
    async with http.get(slack.oidc_jwks_url) as response:
        return jwt.PyJWKSet.from_dict(await response.json())


def verify(id_token: str, key_set: jwt.PyJWKSet, **options: Any) -> dict[str, Any]:
    """The claims of an ID token checked as an app must: key by kid, RS256 only, audience, issuer, expiry."""
    key = key_set[jwt.get_unverified_header(id_token)["kid"]]
    return jwt.decode(
        id_token,
        key,
        algorithms=["RS256"],
        audience=CLIENT_ID,
        issuer="https://slack.com",
        options={"require": ["exp", "iat", "aud", "iss", "sub"], **options},
    )


async def test_a_signed_in_user_comes_back_with_a_code_and_the_state(
    slack: FakeSlack, http: aiohttp.ClientSession
) -> None:
    target, params = redirected(await visit(http, slack))

    assert target == CALLBACK and list(params) == ["code", "state"]
    assert params["state"] == STATE
    assert slack.oidc_authorizations == 1 and slack.oidc_authorize_requests[0]["nonce"] == NONCE
    assert params["code"] in slack.oidc_issued_secrets


async def test_sign_in_with_slack_sdk_and_verify_the_id_token(
    slack: FakeSlack, http: aiohttp.ClientSession, client: AsyncWebClient
) -> None:
    code = await code_for(http, slack)
    before = int(time.time())

    body = await exchange(client, code)

    assert set(body) == {"ok", "access_token", "token_type", "id_token"}
    assert body["ok"] is True and body["token_type"] == "Bearer" and body["access_token"].startswith("xoxp-")
    [call] = slack.calls_to("openid.connect.token")
    # slack_sdk sends the client credentials as HTTP Basic auth, not in the body.
    assert call.status == 200 and call.token is None
    assert call.args == {"code": code, "redirect_uri": CALLBACK}
    assert slack.oidc_token_exchanges == 1
    assert jwt.get_unverified_header(body["id_token"])["alg"] == "RS256"
    claims = verify(body["id_token"], await keys(http, slack))
    assert claims["sub"] == ADA and claims[USER_ID_CLAIM] == ADA and claims[TEAM_ID_CLAIM] == "T0TEAM"
    assert claims["nonce"] == NONCE and claims["exp"] - claims["iat"] == 300
    assert before <= claims["iat"] and claims["auth_time"] <= claims["iat"]
    expected_hash = base64.urlsafe_b64encode(hashlib.sha256(body["access_token"].encode()).digest()[:16])
    assert claims["at_hash"] == expected_hash.rstrip(b"=").decode()
    assert (claims["email"], claims["email_verified"]) == ("ada@example.com", True)
    assert (claims["name"], claims["given_name"], claims["family_name"]) == (
        "Ada Lovelace",
        "Ada",
        "Lovelace",
    )
    assert claims["locale"] == "en-US" and claims["https://slack.com/team_image_default"] is True
    assert {body["access_token"], body["id_token"]} <= slack.oidc_issued_secrets


async def test_user_info_answers_for_the_access_token(
    slack: FakeSlack, http: aiohttp.ClientSession, client: AsyncWebClient
) -> None:
    access_token = (await exchange(client, await code_for(http, slack)))["access_token"]

    info = await user_info(slack, http, access_token)

    assert info["ok"] is True and info["sub"] == ADA and info[USER_ID_CLAIM] == ADA
    assert info[TEAM_ID_CLAIM] == "T0TEAM" and info["email"] == "ada@example.com"
    assert info["https://slack.com/team_domain"] == "fake" and info["https://slack.com/team_name"] == "Fake"
    assert info["picture"].startswith("https://")
    assert slack.calls_to("openid.connect.userInfo")[0].token == access_token


async def test_user_info_refuses_other_tokens(slack: FakeSlack, http: aiohttp.ClientSession) -> None:
    for token, error in [
        (None, "not_authed"),
        ("xoxp-1-2-3-forged", "invalid_auth"),
        (DEFAULT_BOT_TOKEN, "not_allowed_token_type"),
    ]:
        with pytest.raises(SlackApiError) as raised:
            await user_info(slack, http, token)
        assert raised.value.response["error"] == error


async def test_only_the_scopes_asked_for_give_claims(
    slack: FakeSlack, http: aiohttp.ClientSession, client: AsyncWebClient
) -> None:
    body = await exchange(client, await code_for(http, slack, scope="openid", nonce=None))

    claims = verify(body["id_token"], await keys(http, slack))
    assert set(claims) == {
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "auth_time",
        "at_hash",
        USER_ID_CLAIM,
        TEAM_ID_CLAIM,
    }
    info = await user_info(slack, http, body["access_token"])
    assert set(info) == {"ok", "sub", USER_ID_CLAIM, TEAM_ID_CLAIM}
    # Bolt for Java separates scopes with commas, and Slack takes that too.
    email_only = verify(
        (await exchange(client, await code_for(http, slack, scope="openid,email")))["id_token"],
        await keys(http, slack),
    )
    assert "email" in email_only and "name" not in email_only


async def test_pyjwkclient_finds_the_signing_key(
    slack: FakeSlack, http: aiohttp.ClientSession, client: AsyncWebClient
) -> None:
    id_token = (await exchange(client, await code_for(http, slack)))["id_token"]
    jwks = jwt.PyJWKClient(slack.oidc_jwks_url)

    # PyJWKClient fetches with urllib, which blocks: in a thread, so the fake on this loop can answer.
    key = await asyncio.to_thread(jwks.get_signing_key_from_jwt, id_token)

    claims = jwt.decode(id_token, key, algorithms=["RS256"], audience=CLIENT_ID, issuer="https://slack.com")
    assert claims["sub"] == ADA and slack.oidc_keys_fetches == 1
    [published] = (await keys(http, slack)).keys
    assert published.key_id == key.key_id


async def test_the_keys_endpoint_publishes_one_rs256_key(
    slack: FakeSlack, http: aiohttp.ClientSession
) -> None:
    async with http.get(slack.oidc_jwks_url) as response:
        body = await response.json()
    [key] = body["keys"]
    assert set(key) == {"kty", "kid", "alg", "use", "n", "e"}
    assert (key["kty"], key["alg"], key["use"], key["e"]) == ("RSA", "RS256", "sig", "AQAB")

    slack.fail(KEYS_FAILURE, status=503)
    async with http.get(slack.oidc_jwks_url) as response:
        assert response.status == 503
    async with http.get(slack.oidc_jwks_url) as response:
        assert (await response.json())["keys"][0]["kid"] == key["kid"]


async def test_client_credentials_in_the_form_body_are_accepted(
    slack: FakeSlack, http: aiohttp.ClientSession
) -> None:
    form = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "code": await code_for(http, slack)}
    form |= {"redirect_uri": CALLBACK, "grant_type": "authorization_code"}
    async with http.post(slack.base_url + "openid.connect.token", data=form) as response:
        body = await response.json()
    assert body["ok"] is True and body["id_token"]


async def test_a_code_works_once(
    slack: FakeSlack, http: aiohttp.ClientSession, client: AsyncWebClient
) -> None:
    code = await code_for(http, slack)
    await exchange(client, code)

    assert await token_error(client, code) == "invalid_code"
    assert await token_error(client, "4724469134.4644010092847.forged") == "invalid_code"
    assert await token_error(client, "") == "invalid_code"


async def test_a_code_expires(slack: FakeSlack, http: aiohttp.ClientSession, client: AsyncWebClient) -> None:
    slack.oidc_code_lifetime = 0  # as if ten minutes had passed since it was issued

    assert await token_error(client, await code_for(http, slack)) == "invalid_code"


async def test_the_redirect_uri_must_be_the_one_the_code_was_issued_for(
    slack: FakeSlack, http: aiohttp.ClientSession, client: AsyncWebClient
) -> None:
    code = await code_for(http, slack)

    assert await token_error(client, code, redirect_uri="https://evil.example/cb") == "bad_redirect_uri"
    assert await token_error(client, code) == "invalid_code"  # the failed try spent it
    assert await token_error(client, await code_for(http, slack), redirect_uri=None) == "bad_redirect_uri"


@pytest.mark.parametrize(
    ("credentials", "error"),
    [
        ({"client_secret": "wrong-secret"}, "bad_client_secret"),
        ({"client_id": "other-client-id"}, "invalid_client_id"),
        ({"client_id": "", "client_secret": ""}, "invalid_client_id"),
    ],
)
async def test_bad_client_credentials_are_refused(
    slack: FakeSlack,
    http: aiohttp.ClientSession,
    client: AsyncWebClient,
    credentials: dict[str, str],
    error: str,
) -> None:
    code = await code_for(http, slack)

    assert await token_error(client, code, **credentials) == error
    assert slack.calls_to("openid.connect.token")[0].status == 200  # an error, as Slack answers it
    await exchange(client, code)  # a refused client did not spend the code


async def test_grant_types_other_than_a_code_are_refused(
    slack: FakeSlack, http: aiohttp.ClientSession, client: AsyncWebClient
) -> None:
    code = await code_for(http, slack)

    assert await token_error(client, code, grant_type="refresh_token", refresh_token="xoxe-1-x") == (
        "invalid_refresh_token"
    )
    assert await token_error(client, code, grant_type="password") == "invalid_grant_type"
    await exchange(client, code, grant_type="authorization_code")


async def test_the_token_method_can_be_rate_limited_and_failed(
    slack: FakeSlack, http: aiohttp.ClientSession, client: AsyncWebClient
) -> None:
    code = await code_for(http, slack)
    slack.rate_limit("openid.connect.token", retry_after=3)
    with pytest.raises(SlackApiError) as raised:
        await exchange(client, code)
    assert raised.value.response.status_code == 429 and raised.value.response.headers["Retry-After"] == "3"

    slack.fail("openid.connect.token", status=500)
    with pytest.raises(SlackApiError) as raised:
        await exchange(client, code)
    assert raised.value.response.status_code == 500

    slack.fail("openid.connect.token", error="internal_error")
    assert await token_error(client, code) == "internal_error"
    assert (await exchange(client, code))["ok"] is True  # the faults did not spend the code
    assert slack.oidc_token_exchanges == 4


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"client_id": "other-client-id"}, "invalid_client_id"),
        ({"client_id": None}, "invalid_client_id"),
        ({"redirect_uri": None}, "bad_redirect_uri"),
        ({"redirect_uri": "https://evil.example/slack/sign-in/callback"}, "bad_redirect_uri"),
        ({"redirect_uri": CALLBACK + "-evil"}, "bad_redirect_uri"),
        ({"redirect_uri": CALLBACK + "/../../../evil"}, "bad_redirect_uri"),
        ({"redirect_uri": CALLBACK + "/%2E%2E/evil"}, "bad_redirect_uri"),
        ({"redirect_uri": CALLBACK + "#fragment"}, "bad_redirect_uri"),
        ({"redirect_uri": "/slack/sign-in/callback"}, "bad_redirect_uri"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": None}, "unsupported_response_type"),
        ({"scope": "email profile"}, "invalid_scope"),
        ({"scope": "openid chat:write"}, "invalid_scope"),
        ({"scope": None}, "invalid_scope"),
    ],
)
async def test_bad_authorize_requests_get_an_error_page(
    slack: FakeSlack, http: aiohttp.ClientSession, changes: dict[str, str | None], error: str
) -> None:
    response = await visit(http, slack, **changes)

    assert response.status == 400 and response.content_type == "text/html"
    assert error in await response.text() and "Location" not in response.headers
    assert slack.oidc_authorizations == 1


async def test_a_repeated_parameter_is_refused(slack: FakeSlack, http: aiohttp.ClientSession) -> None:
    url = f"{slack.oidc_authorize_url}?response_type=code&scope=openid&client_id={CLIENT_ID}"
    url += f"&redirect_uri={CALLBACK}&redirect_uri=https://evil.example/"
    async with http.get(url, allow_redirects=False) as response:
        assert response.status == 400 and "invalid_request" in await response.text()


async def test_a_subdirectory_of_a_redirect_url_is_allowed(
    slack: FakeSlack, http: aiohttp.ClientSession, client: AsyncWebClient
) -> None:
    target, params = redirected(await visit(http, slack, redirect_uri=CALLBACK + "/team"))

    assert target == CALLBACK + "/team"
    assert await token_error(client, params["code"]) == "bad_redirect_uri"


async def test_any_redirect_url_without_registered_ones(http: aiohttp.ClientSession) -> None:
    async with fake_slack_server(oidc_client_id="A1.B2") as slack:
        slack.sign_in(ADA)
        target, params = redirected(
            await visit(http, slack, client_id="A1.B2", redirect_uri="http://127.0.0.1:9/cb?x=1")
        )
    assert target == "http://127.0.0.1:9/cb" and params["x"] == "1" and params["state"] == STATE


async def test_a_signed_out_browser_gets_the_sign_in_page(
    slack: FakeSlack, http: aiohttp.ClientSession
) -> None:
    slack.sign_out()

    response = await visit(http, slack)

    assert response.status == 200 and "Sign in to Slack" in await response.text()
    assert "Location" not in response.headers and slack.oidc_authorizations == 1
    slack.sign_in(ADA)
    assert redirected(await visit(http, slack))[1]["state"] == STATE


async def test_a_user_of_another_workspace_is_asked_to_sign_in_to_the_one_requested(
    slack: FakeSlack, http: aiohttp.ClientSession, client: AsyncWebClient
) -> None:
    response = await visit(http, slack, team="T0OTHER")
    assert response.status == 200 and "T0OTHER" in await response.text()

    slack.sign_in("U0BOB", team_id="T0OTHER")
    body = await exchange(client, await code_for(http, slack, team="T0OTHER"))
    claims = verify(body["id_token"], await keys(http, slack))
    assert (claims[USER_ID_CLAIM], claims[TEAM_ID_CLAIM]) == ("U0BOB", "T0OTHER")
    assert claims["name"] == "u0bob" and "email" not in claims  # a user the fake knows nothing about


async def test_a_denied_authorization_redirects_with_access_denied(
    slack: FakeSlack, http: aiohttp.ClientSession
) -> None:
    slack.oidc_deny_next()

    target, params = redirected(await visit(http, slack))

    assert (target, params) == (CALLBACK, {"error": "access_denied", "state": STATE})
    assert "code" in redirected(await visit(http, slack))[1]


@pytest.mark.parametrize(
    ("claims", "raised"),
    [
        ({"aud": "other-client-id"}, jwt.InvalidAudienceError),
        ({"iss": "https://evil.example"}, jwt.InvalidIssuerError),
        ({"exp": int(time.time()) - 60}, jwt.ExpiredSignatureError),
        ({"iat": int(time.time()) + 3600}, jwt.ImmatureSignatureError),
        ({"exp": None}, jwt.MissingRequiredClaimError),
        ({"aud": None}, jwt.MissingRequiredClaimError),
    ],
)
async def test_tampered_claims_fail_verification(
    slack: FakeSlack,
    http: aiohttp.ClientSession,
    client: AsyncWebClient,
    claims: dict[str, Any],
    raised: type[Exception],
) -> None:
    slack.oidc_tamper_next(**claims)
    id_token = (await exchange(client, await code_for(http, slack)))["id_token"]

    with pytest.raises(raised):
        verify(id_token, await keys(http, slack))
    verify((await exchange(client, await code_for(http, slack)))["id_token"], await keys(http, slack))


async def test_tampered_identity_claims_verify_but_say_something_else(
    slack: FakeSlack, http: aiohttp.ClientSession, client: AsyncWebClient
) -> None:
    slack.oidc_tamper_next(nonce="wrong", **{USER_ID_CLAIM: "U0EVE", "at_hash": None})

    claims = verify(
        (await exchange(client, await code_for(http, slack)))["id_token"], await keys(http, slack)
    )

    assert (claims["nonce"], claims[USER_ID_CLAIM], claims["sub"]) == ("wrong", "U0EVE", ADA)
    assert "at_hash" not in claims


async def test_a_token_signed_with_an_unpublished_key_is_not_found_among_the_keys(
    slack: FakeSlack, http: aiohttp.ClientSession, client: AsyncWebClient
) -> None:
    slack.oidc_sign_next_with_unknown_key()
    id_token = (await exchange(client, await code_for(http, slack)))["id_token"]

    with pytest.raises(KeyError):
        verify(id_token, await keys(http, slack))
    with pytest.raises(jwt.PyJWKClientError):
        await asyncio.to_thread(jwt.PyJWKClient(slack.oidc_jwks_url).get_signing_key_from_jwt, id_token)


async def test_a_forged_signature_under_the_published_kid_fails(
    slack: FakeSlack, http: aiohttp.ClientSession, client: AsyncWebClient
) -> None:
    slack.oidc_sign_next_with_unknown_key(same_kid=True)
    id_token = (await exchange(client, await code_for(http, slack)))["id_token"]

    with pytest.raises(jwt.InvalidSignatureError):
        verify(id_token, await keys(http, slack))


async def test_an_unsigned_token_is_refused_by_an_rs256_only_check(
    slack: FakeSlack, http: aiohttp.ClientSession, client: AsyncWebClient
) -> None:
    slack.oidc_sign_next_unsigned()
    id_token = (await exchange(client, await code_for(http, slack)))["id_token"]

    assert jwt.get_unverified_header(id_token)["alg"] == "none" and id_token.endswith(".")
    with pytest.raises(jwt.InvalidAlgorithmError):
        verify(id_token, await keys(http, slack))
