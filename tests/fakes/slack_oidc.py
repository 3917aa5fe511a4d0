"""Sign in with Slack (OpenID Connect) for the fake Slack: the browser's authorize page, the keys that verify
ID tokens, and the Web API methods openid.connect.token and openid.connect.userInfo.

It follows Slack's documentation ("Sign in with Slack", the two methods' reference pages and
https://slack.com/.well-known/openid-configuration): scopes openid, email and profile (space- or
comma-separated, as Bolt for Java sends them); a redirect_uri that is one of the app's redirect URLs or a
subdirectory of one; client credentials by HTTP Basic (client_secret_basic, what slack_sdk sends) or form
fields (client_secret_post); RS256 ID tokens that live 300 seconds, with Slack's claims. Slack's errors come as
HTTP 200 with `{"ok": false, "error": ...}`, like the rest of its Web API. A code works once, for 10 minutes.
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import time
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

if TYPE_CHECKING:
    from tests.fakes.slack import SlackCall, SlackUser

ISSUER = "https://slack.com"
USER_ID_CLAIM = "https://slack.com/user_id"
TEAM_ID_CLAIM = "https://slack.com/team_id"
DEFAULT_OIDC_CLIENT_ID = "fake-slack-client-id"
DEFAULT_OIDC_CLIENT_SECRET = "fake-slack-client-secret"
OIDC_SCOPES = frozenset({"openid", "email", "profile"})
OIDC_METHODS = frozenset({"openid.connect.token", "openid.connect.userInfo"})
AUTHORIZE_PATH = "/openid/connect/authorize"
KEYS_PATH = "/openid/connect/keys"
# `fail(KEYS_FAILURE, status=503)` makes the keys endpoint answer that status once.
KEYS_FAILURE = "openid/connect/keys"
CODE_LIFETIME = 600.0  # seconds
ID_TOKEN_LIFETIME = 300  # seconds; exp - iat in Slack's documented example token
_EMAIL_VERIFIED_AT = 1_622_128_723
_USER_IMAGE_SIZES = (24, 32, 48, 72, 192, 512)
_TEAM_IMAGE_SIZES = (34, 44, 68, 88, 102, 132, 230)


@dataclass(frozen=True)
class _Key:
    kid: str
    private_key: rsa.RSAPrivateKey

    @classmethod
    def generate(cls) -> _Key:
        return cls(secrets.token_urlsafe(32), rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def jwk(self) -> dict[str, Any]:
        """The public half as the keys endpoint publishes it."""
        public = RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {
            "kty": "RSA",
            "kid": self.kid,
            "alg": "RS256",
            "use": "sig",
            "n": public["n"],
            "e": public["e"],
        }


@dataclass(frozen=True)
class _Browser:
    """Who the visiting browser is signed in to Slack as, and since when (the ID token's auth_time)."""

    user_id: str
    team_id: str
    auth_time: int


@dataclass(frozen=True)
class _Grant:
    """What one sign-in granted: to whom, which scopes, and the nonce the app sent."""

    user_id: str
    team_id: str
    scopes: frozenset[str]
    nonce: str | None
    auth_time: int


@dataclass
class _Code:
    grant: _Grant
    redirect_uri: str
    issued_at: float
    used: bool = False


class SignInWithSlack:
    """Sign in with Slack, for FakeSlack to inherit; it provides the attributes declared here."""

    users: dict[str, SlackUser]
    team_id: str
    team_name: str
    team_domain: str
    root_url: str
    bot_token: str
    app_token: str | None
    calls: list[SlackCall]
    _failures: dict[str, list[tuple[int, str | None, int]]]

    def _init_sign_in(self, client_id: str, client_secret: str, redirect_uris: list[str] | None) -> None:
        self.oidc_client_id = client_id
        self.oidc_client_secret = client_secret
        self.oidc_redirect_uris = redirect_uris  # None: any absolute http(s) URL
        self.oidc_code_lifetime = CODE_LIFETIME  # 0 makes every code already expired
        self.oidc_authorize_requests: list[dict[str, str]] = []  # the query of each visit, oldest first
        self.oidc_keys_fetches = 0
        self.oidc_access_tokens: dict[str, _Grant] = {}  # clear() it to revoke every one
        self._browser: _Browser | None = None
        self._deny_next = False
        self._tamper: dict[str, Any] = {}
        self._next_key: str = "served"  # or "unknown", "unknown-same-kid", "none"
        self._codes: dict[str, _Code] = {}
        self._issued: set[str] = set()

    def _add_sign_in_routes(self, app: web.Application) -> None:
        app.router.add_get(AUTHORIZE_PATH, self._authorize)
        app.router.add_get(KEYS_PATH, self._keys)

    # Test controls.

    @property
    def oidc_authorize_url(self) -> str:
        """Where the app sends the browser to sign in (https://slack.com/openid/connect/authorize)."""
        return self.root_url + AUTHORIZE_PATH

    @property
    def oidc_jwks_url(self) -> str:
        """The keys that verify ID tokens (https://slack.com/openid/connect/keys)."""
        return self.root_url + KEYS_PATH

    @property
    def oidc_authorizations(self) -> int:
        """How many times a browser visited the authorize page, whatever came of it."""
        return len(self.oidc_authorize_requests)

    @property
    def oidc_token_exchanges(self) -> int:
        """How many openid.connect.token calls arrived, whatever came of them."""
        return sum(1 for call in self.calls if call.method == "openid.connect.token")

    @property
    def oidc_issued_secrets(self) -> set[str]:
        """The client secret and every code, access token and ID token issued: none may reach a log or page."""
        return self._issued | {self.oidc_client_secret}

    def sign_in(self, user_id: str, team_id: str | None = None) -> None:
        """Sign the browser in to Slack as `user_id` of `team_id` (default: the fake's team)."""
        self._browser = _Browser(user_id, team_id or self.team_id, int(time.time()))

    def sign_out(self) -> None:
        """Sign the browser out: the authorize page then asks to sign in, and the flow goes no further."""
        self._browser = None

    def oidc_deny_next(self) -> None:
        """The next signed-in authorization redirects back with error=access_denied."""
        self._deny_next = True

    def oidc_tamper_next(self, **claims: Any) -> None:
        """Override claims of the next ID token; None removes one. Slack's URL-named claims go by dict
        unpacking: `oidc_tamper_next(**{USER_ID_CLAIM: "U0EVE"})`."""
        self._tamper.update(claims)

    def oidc_sign_next_with_unknown_key(self, *, same_kid: bool = False) -> None:
        """Sign the next ID token with a key the keys endpoint does not publish, under its own key id, or
        with `same_kid` under the published key's id (a forged signature)."""
        self._next_key = "unknown-same-kid" if same_kid else "unknown"

    def oidc_sign_next_unsigned(self) -> None:
        """Make the next ID token unsigned (alg "none")."""
        self._next_key = "none"

    @cached_property
    def _signing_key(self) -> _Key:
        return _Key.generate()  # made when first needed: most tests never see an ID token

    @cached_property
    def _unknown_key(self) -> _Key:
        return _Key.generate()

    # The browser's pages.

    async def _authorize(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.oidc_authorize_requests.append(query)
        error = self._authorize_error(request)
        if error is not None:
            return _page(400, "Something went wrong", f"Slack could not sign you in: {error}.")
        browser, team = self._browser, query.get("team")
        if browser is None or (team and team != browser.team_id):
            # Slack asks the user to sign in to the requested workspace (or to any) before going on.
            workspace = f" to workspace {team}" if team else ""
            return _page(200, "Sign in to Slack", f"Enter your workspace's Slack URL to sign in{workspace}.")
        state = {"state": query["state"]} if "state" in query else {}
        if self._deny_next:
            self._deny_next = False
            return _redirect(query["redirect_uri"], {"error": "access_denied", **state})
        scopes = frozenset(_scopes(query["scope"]))
        grant = _Grant(browser.user_id, browser.team_id, scopes, query.get("nonce"), browser.auth_time)
        code = f"{secrets.randbelow(10**10)}.{secrets.randbelow(10**13)}.{secrets.token_hex(32)}"
        self._codes[code] = _Code(grant, query["redirect_uri"], time.time())
        self._issued.add(code)
        return _redirect(query["redirect_uri"], {"code": code, **state})

    def _authorize_error(self, request: web.Request) -> str | None:
        """Why Slack would refuse this authorization outright (it does not redirect for these), if it would."""
        query = request.query
        if len(query) != len(set(query)):
            return "invalid_request"  # a repeated parameter
        if query.get("client_id") != self.oidc_client_id:
            return "invalid_client_id"
        if not self._redirect_allowed(query.get("redirect_uri", "")):
            return "bad_redirect_uri"
        if query.get("response_type") != "code":
            return "unsupported_response_type"
        scopes = _scopes(query.get("scope", ""))
        if "openid" not in scopes or not scopes <= OIDC_SCOPES:
            return "invalid_scope"
        return None

    def _redirect_allowed(self, uri: str) -> bool:
        """An absolute http(s) URL, and one of the app's redirect URLs or a subdirectory of one."""
        parts = urlsplit(uri)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
            return False
        if {".", ".."} & set(parts.path.split("/")) or "%2e" in parts.path.lower():
            return False  # a path that climbs out of a registered one
        if self.oidc_redirect_uris is None:
            return True
        for allowed in self.oidc_redirect_uris:
            registered = urlsplit(allowed)
            below = parts.path.startswith(registered.path.rstrip("/") + "/") and not parts.query
            same_site = (parts.scheme, parts.netloc) == (registered.scheme, registered.netloc)
            if uri == allowed or (same_site and below):
                return True
        return False

    async def _keys(self, request: web.Request) -> web.Response:
        self.oidc_keys_fetches += 1
        failures = self._failures.get(KEYS_FAILURE)
        if failures:
            status, _, retry_after = failures.pop(0)
            headers = {"Retry-After": str(retry_after)} if status == 429 else None
            return web.Response(status=status, headers=headers)
        return web.json_response({"keys": [self._signing_key.jwk()]})

    # The Web API methods.

    def _oidc_answer(
        self, method: str, args: dict[str, Any], token: str | None, authorization: str
    ) -> dict[str, Any]:
        """The body of an openid.connect.* method's answer."""
        if method == "openid.connect.token":
            return self._oidc_token(args, authorization)
        if not token:
            return _error("not_authed")
        grant = self.oidc_access_tokens.get(token)
        if grant is None:
            return _error(
                "not_allowed_token_type" if token in (self.bot_token, self.app_token) else "invalid_auth"
            )
        return {"ok": True, **self._identity(grant, user_info=True)}

    def _oidc_token(self, args: dict[str, Any], authorization: str) -> dict[str, Any]:
        client_id, client_secret = _client_credentials(args, authorization)
        if client_id != self.oidc_client_id:
            return _error("invalid_client_id")
        if client_secret != self.oidc_client_secret:
            return _error("bad_client_secret")
        grant_type = str(args.get("grant_type") or "authorization_code")
        if grant_type == "refresh_token":
            return _error("invalid_refresh_token")  # token rotation is not faked: no refresh token exists
        if grant_type != "authorization_code":
            return _error("invalid_grant_type")
        code = self._codes.get(str(args.get("code") or ""))
        if code is None or code.used or time.time() >= code.issued_at + self.oidc_code_lifetime:
            return _error("invalid_code")
        code.used = True  # spent even when the redirect_uri is wrong, so a code is never tried twice
        if str(args.get("redirect_uri") or "") != code.redirect_uri:
            return _error("bad_redirect_uri")
        access_token = "xoxp-" + "-".join(str(secrets.randbelow(10**12)) for _ in range(3))
        access_token += "-" + secrets.token_hex(16)
        self.oidc_access_tokens[access_token] = code.grant
        id_token = self._id_token(code.grant, access_token)
        self._issued |= {access_token, id_token}
        return {"ok": True, "access_token": access_token, "token_type": "Bearer", "id_token": id_token}

    def _id_token(self, grant: _Grant, access_token: str) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": grant.user_id,
            "aud": self.oidc_client_id,
            "exp": now + ID_TOKEN_LIFETIME,
            "iat": now,
            "auth_time": grant.auth_time,
        }
        if grant.nonce is not None:
            claims["nonce"] = grant.nonce
        claims["at_hash"] = _b64url(hashlib.sha256(access_token.encode()).digest()[:16])
        claims |= self._identity(grant, user_info=False)
        for name, value in self._tamper.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        self._tamper = {}
        kind, self._next_key = self._next_key, "served"
        if kind == "none":
            return jwt.encode(claims, None, algorithm="none", headers={"kid": self._signing_key.kid})
        key = self._signing_key if kind == "served" else self._unknown_key
        kid = self._signing_key.kid if kind == "unknown-same-kid" else key.kid
        return jwt.encode(claims, key.private_key, algorithm="RS256", headers={"kid": kid})

    def _identity(self, grant: _Grant, *, user_info: bool) -> dict[str, Any]:
        """The claims about the user that the scopes allow; openid.connect.userInfo adds a few of its own."""
        user = self.users.get(grant.user_id)
        claims: dict[str, Any] = {"sub": grant.user_id} if user_info else {}
        claims |= {USER_ID_CLAIM: grant.user_id, TEAM_ID_CLAIM: grant.team_id}
        if "email" in grant.scopes and user is not None and user.email is not None:
            claims |= {"email": user.email, "email_verified": True, "date_email_verified": _EMAIL_VERIFIED_AT}
        if "profile" not in grant.scopes:
            return claims
        real_name = user.real_name if user is not None else grant.user_id.lower()
        given, _, family = real_name.partition(" ")
        images = f"https://fake.slack.com/avatars/{grant.user_id}"
        claims |= {"name": real_name, "given_name": given, "family_name": family}
        claims["locale"] = user.locale if user is not None else "ko-KR"
        if user_info:
            claims["picture"] = f"{images}_512.png"
            own_team = grant.team_id == self.team_id
            claims["https://slack.com/team_name"] = self.team_name if own_team else grant.team_id
            claims["https://slack.com/team_domain"] = self.team_domain if own_team else grant.team_id.lower()
        claims |= {
            f"https://slack.com/user_image_{size}": f"{images}_{size}.png" for size in _USER_IMAGE_SIZES
        }
        team_images = f"https://fake.slack.com/team-icons/{grant.team_id}"
        claims |= {
            f"https://slack.com/team_image_{size}": f"{team_images}_{size}.png" for size in _TEAM_IMAGE_SIZES
        }
        claims["https://slack.com/team_image_default"] = True
        return claims


def _scopes(scope: str) -> set[str]:
    """A scope parameter's scopes: OpenID separates them with spaces, Slack's OAuth with commas."""
    return {name for name in scope.replace(",", " ").split(" ") if name}


def _client_credentials(args: dict[str, Any], authorization: str) -> tuple[str, str]:
    """The client id and secret from HTTP Basic auth if sent (client_secret_basic), else from the body."""
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return str(args.get("client_id") or ""), str(args.get("client_secret") or "")
    try:
        client_id, _, client_secret = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except ValueError:  # not base64, or not UTF-8 inside
        return "", ""
    return client_id, client_secret


def _error(error: str) -> dict[str, Any]:
    return {"ok": False, "error": error}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _redirect(uri: str, params: dict[str, str]) -> web.Response:
    """A 302 to `uri` with `params` added to its query."""
    parts = urlsplit(uri)
    query = urlencode([*parse_qsl(parts.query, keep_blank_values=True), *params.items()])
    return web.Response(status=302, headers={"Location": urlunsplit(parts._replace(query=query))})


def _page(status: int, title: str, text: str) -> web.Response:
    body = f"<!doctype html><title>{html.escape(title)}</title><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>"
    return web.Response(status=status, text=body, content_type="text/html")
