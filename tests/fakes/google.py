"""A local fake of Google's OAuth 2.0, OpenID Connect userinfo and Gmail endpoints, served over real HTTP.

The consent screen answers itself (see `Consent`); everything else follows what Google's servers send,
status codes and error bodies included, so client code can be tested against the real protocol. Gmail's
calls can also be sent together through its batch endpoint (multipart/mixed), as Google's clients do.
ID tokens are signed with RS256 by an RSA key of the fake's own, whose self-signed certificate its certs
endpoint publishes in Google's v1 format (`{kid: PEM certificate}`), so they verify as Google's do.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, unquote_plus, urlencode, urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from multidict import CIMultiDict, MultiDict, MultiMapping

DEFAULT_CLIENT_ID = "test-client.apps.googleusercontent.com"
DEFAULT_CLIENT_SECRET = "GOCSPX-test-client-secret"
ACCESS_TOKEN_LIFETIME = 3599
GOOGLE_ISSUER = "https://accounts.google.com"
# Google's certs endpoint answers with this (and Expires), so clients may cache the keys for hours.
_CERTS_CACHE_CONTROL = "public, max-age=22167, must-revalidate, no-transform"
_GMAIL_SCOPE = "https://www.googleapis.com/auth/gmail."
GMAIL_READ_SCOPES = frozenset(
    {_GMAIL_SCOPE + "readonly", _GMAIL_SCOPE + "modify", "https://mail.google.com/"}
)
# Sign-in scopes: Google's granular consent screen shows no box for them, so a user cannot untick them.
IDENTITY_SCOPES = frozenset(
    {
        "openid",
        "email",
        "profile",
        "https://www.googleapis.com/auth/userinfo.email",
        "https://www.googleapis.com/auth/userinfo.profile",
    }
)
EXPIRED_OR_REVOKED = "Token has been expired or revoked."
# What Gmail answers the parts of a large batch beyond a user's concurrency (HTTP 429).
TOO_MANY_CONCURRENT = "Too many concurrent requests for user."
# Gmail's error bodies by status: message and canonical status name.
_GMAIL_ERRORS = {
    400: ("Invalid argument.", "INVALID_ARGUMENT"),
    401: ("Request had invalid authentication credentials.", "UNAUTHENTICATED"),
    403: ("Request had insufficient authentication scopes.", "PERMISSION_DENIED"),
    404: ("Requested entity was not found.", "NOT_FOUND"),
    429: ("Quota exceeded for quota metric 'Queries'.", "RESOURCE_EXHAUSTED"),
    500: ("Internal error encountered.", "INTERNAL"),
    503: ("The service is currently unavailable.", "UNAVAILABLE"),
}
_AGE_UNITS = {"d": 1, "m": 30, "y": 365}
# The Gmail API paths the fake answers (all to GET); a pattern's named groups are the path's parameters.
_GMAIL_PROFILE = re.compile(r"/gmail/v1/users/me/profile")
_GMAIL_MESSAGES = re.compile(r"/gmail/v1/users/me/messages")
_GMAIL_MESSAGE = re.compile(r"/gmail/v1/users/me/messages/(?P<id>[^/]+)")
# Gmail takes at most this many calls in one batch request, and answers 400 to more.
GMAIL_BATCH_LIMIT = 100
_BOUNDARY = re.compile(r'(?:^|;)\s*boundary=(?:"(?P<quoted>[^"]+)"|(?P<bare>[^;\s]+))', re.IGNORECASE)
# An embedded request's first line: the method and the path with its query; the version may be left out.
_REQUEST_LINE = re.compile(r"(?P<method>[A-Z]+) +(?P<target>/\S*)(?: +HTTP/\d(?:\.\d)?)?")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def subject_for(email: str) -> str:
    """A stable, Google-shaped (21 digit) `sub` for an email address."""
    return "1" + str(int(hashlib.sha256(email.lower().encode()).hexdigest(), 16))[:20]


@dataclass
class Consent:
    """What the user does on the next consent screen; reset to the defaults after one use unless sticky."""

    email: str = "user@gmail.com"
    sub: str | None = None  # None: derived from the email
    # The boxes left ticked (None: all): of the scopes requested, only these and the sign-in ones are granted.
    granted_scopes: list[str] | None = None
    # Time-based access: the user grants the app access for this long only (None: until revoked).
    access_for: timedelta | None = None
    deny: bool = False  # redirect back with error=access_denied
    error: str | None = None  # redirect back with this error code
    sticky: bool = False

    @property
    def subject(self) -> str:
        """The Google account id of the consenting user."""
        return self.sub or subject_for(self.email)


@dataclass(frozen=True)
class SigningKey:
    """An RSA key and the self-signed x509 certificate that Google's certs endpoint would publish for it."""

    kid: str
    private_key: rsa.RSAPrivateKey
    certificate_pem: str

    @classmethod
    def generate(cls) -> SigningKey:
        """A new 2048-bit key with a Google-shaped (40 hex digits) key id, certified for a day either way."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, "federated-signon.system.gserviceaccount.com")]
        )
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
        return cls(secrets.token_hex(20), key, pem)

    @property
    def private_pem(self) -> str:
        """The private key in PKCS#8 PEM: a secret, which no log line may hold."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()

    def sign(self, data: bytes) -> bytes:
        """An RS256 signature (RSASSA-PKCS1-v1_5 with SHA-256) of `data`."""
        return self.private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())


@dataclass
class Call:
    """One request the fake received; header names are lower-cased, status is 0 until it is answered.

    A Gmail call made inside a batch request is recorded too, after the batch request itself, with
    `batch` set and the headers it ran with (the batch request's, overridden by its own).
    """

    method: str
    path: str
    form: dict[str, str]
    query: dict[str, str]
    headers: dict[str, str]
    status: int = 0
    batch: bool = False


@dataclass
class _Grant:
    """One authorization: its refresh token (if any) and access tokens all die with it."""

    client_id: str
    email: str
    sub: str
    scopes: list[str]
    refresh_token: str | None = None
    revoked: bool = False
    refresh_expires_at: float | None = None  # time-based access: when the refresh token stops working


@dataclass
class _Code:
    grant: _Grant
    redirect_uri: str
    challenge: str
    used: bool = False


@dataclass
class _Message:
    id: str
    sender: str
    subject: str
    snippet: str
    unread: bool
    internal_ms: int


# What answers one Gmail path: the caller's grant, the query and the path's parameters in, the answer out.
_GmailHandler = Callable[[_Grant, MultiMapping[str], dict[str, str]], web.Response]


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)


def _consent_error(status: int, error: str, detail: str) -> web.Response:
    # Google shows these on the consent page itself instead of redirecting back.
    return web.Response(status=status, text=f"Error {status}: {error}\n{detail}")


def _gmail_error(status: int, message: str | None = None) -> web.Response:
    default, name = _GMAIL_ERRORS.get(status, (HTTPStatus(status).phrase, "UNKNOWN"))
    message = message or default
    error: dict[str, Any] = {"code": status, "message": message}
    if status == 403:
        error["errors"] = [
            {"reason": "insufficientPermissions", "domain": "global", "message": "Insufficient Permission"}
        ]
    elif status == 429:
        error["errors"] = [{"reason": "rateLimitExceeded", "domain": "global", "message": message}]
    error["status"] = name
    return web.json_response({"error": error}, status=status)


def _within_granted_time(grant: _Grant) -> bool:
    return grant.refresh_expires_at is None or time.time() < grant.refresh_expires_at


def _redirect(uri: str, params: dict[str, str]) -> web.Response:
    location = uri + ("&" if "?" in uri else "?") + urlencode(params)
    return web.Response(status=302, headers={"Location": location})


def _multipart_parts(body: bytes, boundary: str) -> list[bytes]:
    """The parts of a multipart body, up to its close delimiter; CRLF or bare LF line ends."""
    # A delimiter starts a line, and the line break before it belongs to the delimiter, not the part.
    delimiter = re.compile(rb"(?:^|\r?\n)--" + re.escape(boundary.encode()))
    parts = []
    for section in delimiter.split(body)[1:]:  # the first section is the preamble
        if section.startswith(b"--"):
            break
        _, _, part = section.partition(b"\n")  # the rest of the delimiter line
        parts.append(part)
    return parts


def _split_head(data: bytes) -> tuple[list[str], bytes]:
    """The lines before the first empty line, and everything after it; CRLF or bare LF line ends."""
    lines: list[str] = []
    while data:
        line, _, data = data.partition(b"\n")
        line = line.removesuffix(b"\r")
        if not line:
            break
        lines.append(line.decode("latin-1"))
    return lines, data


def _parse_headers(lines: list[str]) -> CIMultiDict[str] | None:
    """`Name: value` lines as headers; None if one is not a header line."""
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            return None
        headers.add(name, value.strip())
    return headers


def _answer_part(response: web.Response, content_id: str | None, boundary: str) -> bytes:
    """One part of a batch answer: the embedded HTTP answer to one call, labelled as Google labels it."""
    body = bytes(response.body) if isinstance(response.body, (bytes, bytearray)) else b""
    label = [f"Content-ID: <response-{content_id.strip('<>')}>"] if content_id else []
    retry_after = (
        [f"Retry-After: {response.headers['Retry-After']}"] if "Retry-After" in response.headers else []
    )
    head = [
        f"--{boundary}",
        "Content-Type: application/http",
        *label,
        "",
        f"HTTP/1.1 {response.status} {response.reason}",
        *retry_after,
        "Content-Type: application/json; charset=UTF-8",
        f"Content-Length: {len(body)}",
        "",
        "",
    ]
    return "\r\n".join(head).encode() + body + b"\r\n"


class FakeGoogle:
    """Google's accounts, token, revoke, userinfo and Gmail endpoints on 127.0.0.1."""

    def __init__(
        self,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        *,
        redirect_uris: Collection[str] | None = None,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uris = redirect_uris  # None: any redirect_uri is registered
        self.base_url = ""
        self.consent = Consent()
        self.omit_refresh_token = False
        self.omit_id_token = False
        # How ID tokens are signed: "served", with the key the certs endpoint publishes; "unknown", with
        # another key under the served key's kid, as a forger would; "none", unsigned (`alg: none`).
        self.id_token_key: Literal["served", "unknown", "none"] = "served"
        # Claims to set in every ID token's payload, over the genuine ones; a value of None removes the claim.
        self.id_token_claims: dict[str, Any] = {}
        self.token_delay = 0.0
        self.certs_delay = 0.0
        self.gmail_delay = 0.0
        self.calls: list[Call] = []
        self.revoked: set[str] = set()
        self._clients = {client_id: client_secret}
        self._codes: dict[str, _Code] = {}
        self._refresh_tokens: dict[str, _Grant] = {}
        self._access_tokens: dict[str, tuple[_Grant, float]] = {}
        self._granted: dict[tuple[str, str], list[str]] = {}
        self._secrets: set[str] = set()
        self._token_failures: list[tuple[int, str | None, str | None]] = []
        self._certs_failures: list[tuple[int, str | None]] = []
        self._gmail_failures: list[tuple[int, str | None]] = []
        self._gmail_batch_failures: list[int] = []
        # Per message id: the answers its next gets receive instead of the message (status, text, Retry-After).
        self._message_failures: dict[str, list[tuple[int, str | None, float | None]]] = {}
        self._mailboxes: dict[str, list[_Message]] = {}
        self._runner: web.AppRunner | None = None

    @property
    def auth_uri(self) -> str:
        """The consent screen."""
        return self.base_url + "/o/oauth2/auth"

    @property
    def token_uri(self) -> str:
        """The token endpoint."""
        return self.base_url + "/token"

    @property
    def revoke_uri(self) -> str:
        """The revocation endpoint."""
        return self.base_url + "/revoke"

    @property
    def certs_uri(self) -> str:
        """The public keys that ID tokens are signed with, as x509 certificates keyed by kid (Google's v1)."""
        return self.base_url + "/oauth2/v1/certs"

    @property
    def userinfo_uri(self) -> str:
        """OpenID Connect userinfo."""
        return self.base_url + "/v1/userinfo"

    @property
    def gmail_api_url(self) -> str:
        """The Gmail API root, ending in a slash."""
        return self.base_url + "/"

    @property
    def gmail_batch_uri(self) -> str:
        """Gmail's batch endpoint: up to 100 Gmail calls in one multipart/mixed request."""
        return self.base_url + "/batch/gmail/v1"

    async def start(self) -> None:
        """Serve on an unused port of 127.0.0.1 and set base_url."""
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/o/oauth2/auth", self._auth)
        app.router.add_post("/token", self._token)
        app.router.add_post("/revoke", self._revoke)
        app.router.add_get("/oauth2/v1/certs", self._certs)
        app.router.add_get("/v1/userinfo", self._userinfo)
        app.router.add_get("/gmail/v1/users/me/profile", self._gmail)
        app.router.add_get("/gmail/v1/users/me/messages", self._gmail)
        app.router.add_get("/gmail/v1/users/me/messages/{id}", self._gmail)
        app.router.add_post("/batch/gmail/v1", self._gmail_batch)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"

    async def close(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # Test controls.

    def fail_token(
        self, status: int, *, times: int = 1, error: str | None = None, body: str | None = None
    ) -> None:
        """Answer the next `times` /token calls with `status` and an OAuth error JSON, or the raw `body`."""
        self._token_failures += [(status, error, body)] * times

    def fail_certs(self, status: int, *, times: int = 1, body: str | None = None) -> None:
        """Answer the next `times` certs calls with `status` and Google's error JSON, or the raw `body` (which
        may come with a 200, for an answer that is not certificates)."""
        self._certs_failures += [(status, body)] * times

    def fail_gmail(self, status: int, *, times: int = 1, message: str | None = None) -> None:
        """Answer the next `times` Gmail calls with `status` and Gmail's error JSON (with `message` instead of
        Google's usual text for the status, if given).

        A call inside a batch request counts as one; the batch request itself does not.
        """
        self._gmail_failures += [(status, message)] * times

    def fail_gmail_batch(self, status: int, *, times: int = 1) -> None:
        """Answer the next `times` batch requests as a whole with `status` and Gmail's error JSON, running
        none of their calls."""
        self._gmail_batch_failures += [status] * times

    def fail_gmail_message(
        self,
        message_id: str,
        status: int,
        *,
        times: int = 1,
        retry_after: float | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next `times` gets of one message (on their own or as a part of a batch) with `status`
        and Gmail's error JSON, with a Retry-After header if given; a 429 says "Too many concurrent requests
        for user", as Gmail does for the parts of a large batch."""
        if status == 429 and message is None:
            message = TOO_MANY_CONCURRENT
        self._message_failures.setdefault(message_id, []).extend([(status, message, retry_after)] * times)

    def kill_access_tokens(self, email: str) -> int:
        """End every live access token of `email` before its stated expiry, as Google does after a password
        change or a security event, while the refresh tokens still work; how many were ended."""
        ended = 0
        for token, (grant, expires_at) in self._access_tokens.items():
            if grant.email == email and time.time() < expires_at:
                self._access_tokens[token] = (grant, 0.0)
                ended += 1
        return ended

    def revoke_refresh_token(self, refresh_token: str) -> None:
        """Revoke a grant as the user would from their Google account; its tokens stop working."""
        grant = self._refresh_tokens[refresh_token]
        grant.revoked = True
        self._granted.pop((grant.client_id, grant.email), None)

    def end_granted_time(self, refresh_token: str) -> None:
        """Let the time a user granted (time-based access) run out now: the refresh token stops working."""
        self._refresh_tokens[refresh_token].refresh_expires_at = time.time()

    def add_refresh_token(
        self,
        refresh_token: str,
        *,
        email: str,
        scopes: list[str],
        client_id: str | None = None,
        client_secret: str | None = None,
        access_for: timedelta | None = None,
    ) -> None:
        """Register an existing grant, optionally issued to another OAuth client or for a limited time (from now)."""
        client_id = client_id or self.client_id
        if client_id not in self._clients:
            self._clients[client_id] = client_secret or "GOCSPX-" + secrets.token_urlsafe(21)
        grant = _Grant(client_id, email, subject_for(email), list(scopes), refresh_token)
        if access_for is not None:
            grant.refresh_expires_at = time.time() + access_for.total_seconds()
        self._refresh_tokens[refresh_token] = grant
        self._secrets.add(refresh_token)

    def issue_access_token(
        self,
        email: str,
        scopes: list[str],
        *,
        client_id: str | None = None,
        expires_in: float = ACCESS_TOKEN_LIFETIME,
    ) -> str:
        """A valid access token for `email` and `scopes`, as if from a finished flow without a refresh token."""
        grant = _Grant(client_id or self.client_id, email, subject_for(email), list(scopes))
        return self._new_access_token(grant, expires_in)

    def add_message(
        self,
        email: str,
        *,
        sender: str,
        subject: str,
        snippet: str,
        unread: bool = True,
        age: timedelta = timedelta(hours=1),
    ) -> str:
        """Put a message in `email`'s mailbox, received `age` ago; returns its id."""
        internal_ms = int((time.time() - age.total_seconds()) * 1000)
        message = _Message(secrets.token_hex(8), sender, subject, snippet, unread, internal_ms)
        self._mailboxes.setdefault(email, []).append(message)
        return message.id

    @cached_property
    def signing_key(self) -> SigningKey:
        """The key ID tokens are signed with and the certs endpoint publishes; made when first needed, since
        most tests never see an ID token."""
        key = SigningKey.generate()
        self._secrets.add(key.private_pem)
        return key

    def rotate_signing_key(self) -> None:
        """Sign ID tokens from now on with a new key under a new kid, and publish it instead of the old one, as
        Google does about once a day."""
        key = SigningKey.generate()
        self._secrets.add(key.private_pem)
        self.__dict__["signing_key"] = key

    @cached_property
    def unknown_key(self) -> SigningKey:
        """A key the certs endpoint never publishes (see `id_token_key`)."""
        key = SigningKey.generate()
        self._secrets.add(key.private_pem)
        return key

    def calls_to(self, path: str) -> list[Call]:
        """The recorded calls to one path, oldest first."""
        return [call for call in self.calls if call.path == path]

    @property
    def issued_secrets(self) -> set[str]:
        """Every code, token and client secret the fake issued or was given."""
        return self._secrets | set(self._clients.values())

    # Token bookkeeping.

    def _new_access_token(self, grant: _Grant, expires_in: float = ACCESS_TOKEN_LIFETIME) -> str:
        token = "ya29." + secrets.token_urlsafe(96)
        self._access_tokens[token] = (grant, time.time() + expires_in)
        self._secrets.add(token)
        return token

    def _id_token(self, grant: _Grant) -> str:
        now = int(time.time())
        header = {
            "alg": "none" if self.id_token_key == "none" else "RS256",
            "kid": self.signing_key.kid,
            "typ": "JWT",
        }
        payload: dict[str, Any] = {
            "iss": GOOGLE_ISSUER,
            "azp": grant.client_id,
            "aud": grant.client_id,
            "sub": grant.sub,
            "email": grant.email,
            "email_verified": True,
            "iat": now,
            "exp": now + ACCESS_TOKEN_LIFETIME + 1,
        }
        for name, value in self.id_token_claims.items():
            if value is None:
                payload.pop(name, None)
            else:
                payload[name] = value
        signing_input = ".".join(_b64url(json.dumps(part).encode()) for part in (header, payload))
        signature = b""
        if self.id_token_key != "none":
            key = self.signing_key if self.id_token_key == "served" else self.unknown_key
            signature = key.sign(signing_input.encode())
        token = f"{signing_input}.{_b64url(signature)}"
        self._secrets.add(token)
        return token

    def _token_response(self, grant: _Grant, *, with_refresh_token: bool) -> web.Response:
        body: dict[str, Any] = {
            "access_token": self._new_access_token(grant),
            "expires_in": ACCESS_TOKEN_LIFETIME,
        }
        if with_refresh_token:
            grant.refresh_token = "1//0" + secrets.token_urlsafe(72)
            self._refresh_tokens[grant.refresh_token] = grant
            self._secrets.add(grant.refresh_token)
            body["refresh_token"] = grant.refresh_token
        if grant.refresh_expires_at is not None:
            # Google's answer, to a code exchange or a refresh, when the user granted time-based access.
            body["refresh_token_expires_in"] = max(0, int(grant.refresh_expires_at - time.time()))
        body["scope"] = " ".join(grant.scopes)
        body["token_type"] = "Bearer"
        if "openid" in grant.scopes and not self.omit_id_token:
            body["id_token"] = self._id_token(grant)
        return web.json_response(body)

    def _live_access_token(self, token: str) -> _Grant | None:
        grant, expires_at = self._access_tokens.get(token, (None, 0.0))
        return None if grant is None or grant.revoked or time.time() >= expires_at else grant

    def _bearer(self, headers: MultiMapping[str]) -> _Grant | None:
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        return self._live_access_token(token.strip()) if scheme.lower() == "bearer" else None

    def _client_credentials(self, request: web.Request, form: dict[str, str]) -> tuple[str, str | None]:
        header = request.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return form.get("client_id", ""), form.get("client_secret")
        try:
            client_id, _, secret = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except ValueError:
            return "", None
        # RFC 6749 2.3.1 form-encodes both parts before Base64; not every client does.
        if client_id not in self._clients:
            client_id = unquote_plus(client_id)
        if secret != self._clients.get(client_id):
            secret = unquote_plus(secret)
        return client_id, secret

    # Handlers.

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        form: dict[str, str] = {}
        if request.content_type == "application/x-www-form-urlencoded":
            form = {key: value for key, value in (await request.post()).items() if isinstance(value, str)}
        headers = {name.lower(): value for name, value in request.headers.items()}
        call = Call(request.method, request.path, form, dict(request.query), headers)
        self.calls.append(call)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            call.status = exc.status
            raise
        call.status = response.status
        return response

    async def _auth(self, request: web.Request) -> web.Response:
        query = request.query
        for name in ("client_id", "redirect_uri", "response_type", "scope", "state", "code_challenge"):
            if not query.get(name):
                return _consent_error(400, "invalid_request", f"Missing required parameter: {name}")
        client_id, redirect_uri = query["client_id"], query["redirect_uri"]
        if client_id not in self._clients:
            return _consent_error(401, "invalid_client", "The OAuth client was not found.")
        if self.redirect_uris is not None and redirect_uri not in self.redirect_uris:
            return _consent_error(400, "redirect_uri_mismatch", f"redirect_uri={redirect_uri}")
        if query["response_type"] != "code":
            return _consent_error(400, "invalid_request", "Invalid response_type")
        if query.get("code_challenge_method") != "S256":
            return _consent_error(400, "invalid_request", "Invalid code_challenge_method")
        consent = self.consent
        if not consent.sticky:
            self.consent = Consent()
        if consent.deny or consent.error:
            return _redirect(
                redirect_uri, {"error": consent.error or "access_denied", "state": query["state"]}
            )
        # Granular consent: the user may untick any box, but there is none for the sign-in scopes, and nothing
        # that was not asked for can be granted.
        ticked = consent.granted_scopes
        scopes = [
            scope
            for scope in query["scope"].split()
            if ticked is None or scope in ticked or scope in IDENTITY_SCOPES
        ]
        earlier = self._granted.setdefault((client_id, consent.email), [])
        # Incremental authorization: with include_granted_scopes the new grant also holds every earlier one.
        if query.get("include_granted_scopes") == "true":
            scopes += [scope for scope in earlier if scope not in scopes]
        earlier += [scope for scope in scopes if scope not in earlier]
        code = "4/0" + secrets.token_urlsafe(54)
        grant = _Grant(client_id, consent.email, consent.subject, scopes)
        if consent.access_for is not None:
            grant.refresh_expires_at = time.time() + consent.access_for.total_seconds()
        self._codes[code] = _Code(grant, redirect_uri, query["code_challenge"])
        self._secrets.add(code)
        params = {"state": query["state"], "code": code, "scope": " ".join(scopes), "authuser": "0"}
        return _redirect(redirect_uri, {**params, "prompt": "consent"})

    async def _token(self, request: web.Request) -> web.Response:
        if self.token_delay:
            await asyncio.sleep(self.token_delay)
        if self._token_failures:
            status, error, body = self._token_failures.pop(0)
            if body is not None:
                content_type = "text/html" if body.lstrip().startswith("<") else "text/plain"
                return web.Response(status=status, text=body, content_type=content_type)
            default = "temporarily_unavailable" if status >= 500 else "invalid_request"
            return _oauth_error(status, error or default, HTTPStatus(status).phrase)
        form = {key: value for key, value in (await request.post()).items() if isinstance(value, str)}
        client_id, secret = self._client_credentials(request, form)
        if not client_id:
            return _oauth_error(400, "invalid_request", "Could not determine client ID from request.")
        if client_id not in self._clients:
            return _oauth_error(401, "invalid_client", "The OAuth client was not found.")
        if secret != self._clients[client_id]:
            return _oauth_error(401, "invalid_client", "Unauthorized")
        grant_type = form.get("grant_type", "")
        if grant_type == "authorization_code":
            return self._exchange_code(client_id, form)
        if grant_type == "refresh_token":
            grant = self._refresh_tokens.get(form.get("refresh_token", ""))
            if grant is None or grant.revoked or not _within_granted_time(grant):
                return _oauth_error(400, "invalid_grant", EXPIRED_OR_REVOKED)
            if grant.client_id != client_id:
                return _oauth_error(401, "unauthorized_client", "Unauthorized")
            return self._token_response(grant, with_refresh_token=False)
        return _oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")

    def _exchange_code(self, client_id: str, form: dict[str, str]) -> web.Response:
        code = self._codes.get(form.get("code", ""))
        if code is None:
            return _oauth_error(400, "invalid_grant", "Malformed auth code.")
        if code.used or code.grant.client_id != client_id:
            return _oauth_error(400, "invalid_grant", "Bad Request")
        code.used = True
        if form.get("redirect_uri") != code.redirect_uri:
            return _oauth_error(400, "redirect_uri_mismatch", "Bad Request")
        verifier = form.get("code_verifier")
        if not verifier:
            return _oauth_error(400, "invalid_grant", "Missing code verifier.")
        if _b64url(hashlib.sha256(verifier.encode()).digest()) != code.challenge:
            return _oauth_error(400, "invalid_grant", "Invalid code verifier.")
        return self._token_response(code.grant, with_refresh_token=not self.omit_refresh_token)

    async def _revoke(self, request: web.Request) -> web.Response:
        token = str((await request.post()).get("token") or request.query.get("token", ""))
        grant = self._refresh_tokens.get(token) or self._live_access_token(token)
        if grant is None or grant.revoked:
            return _oauth_error(400, "invalid_token", "Token expired or revoked")
        grant.revoked = True
        self.revoked.add(token)
        # The app's access is gone: a later consent screen asks for every scope again.
        self._granted.pop((grant.client_id, grant.email), None)
        return web.json_response({})

    async def _certs(self, request: web.Request) -> web.Response:
        if self.certs_delay:
            await asyncio.sleep(self.certs_delay)
        if self._certs_failures:
            status, body = self._certs_failures.pop(0)
            if body is not None:
                content_type = "text/html" if body.lstrip().startswith("<") else "text/plain"
                return web.Response(status=status, text=body, content_type=content_type)
            return _gmail_error(status)  # the error body of every googleapis.com API
        key = self.signing_key
        return web.json_response(
            {key.kid: key.certificate_pem}, headers={"Cache-Control": _CERTS_CACHE_CONTROL}
        )

    async def _userinfo(self, request: web.Request) -> web.Response:
        grant = self._bearer(request.headers)
        if grant is None:
            return _oauth_error(401, "invalid_token", "Invalid Credentials")
        return web.json_response({"sub": grant.sub, "email": grant.email, "email_verified": True})

    # Gmail: one call on its own or many in a batch request, answered by the same code.

    async def _gmail(self, request: web.Request) -> web.Response:
        if self.gmail_delay:
            await asyncio.sleep(self.gmail_delay)
        return self._gmail_call(request.method, request.path, request.query, request.headers)

    async def _gmail_batch(self, request: web.Request) -> web.Response:
        # A batch is one round trip, so it waits the latency once, however many calls it holds.
        if self.gmail_delay:
            await asyncio.sleep(self.gmail_delay)
        if self._gmail_batch_failures:
            return _gmail_error(self._gmail_batch_failures.pop(0))
        boundary = _BOUNDARY.search(request.headers.get("Content-Type", ""))
        if request.content_type != "multipart/mixed" or boundary is None:
            return _gmail_error(400, "Invalid batch request: expected multipart/mixed with a boundary.")
        parts = _multipart_parts(await request.read(), boundary["quoted"] or boundary["bare"])
        if not parts:
            return _gmail_error(400, "Invalid batch request: it holds no calls.")
        if len(parts) > GMAIL_BATCH_LIMIT:
            return _gmail_error(
                400, f"Invalid batch request: more than {GMAIL_BATCH_LIMIT} calls in one batch."
            )
        # The batch request's headers apply to every call in it, except those that describe its own body.
        shared = CIMultiDict(
            (name, value)
            for name, value in request.headers.items()
            if not name.lower().startswith("content-")
        )
        reply = "batch_" + secrets.token_hex(16)
        answers = [self._batch_part(part, shared, reply) for part in parts]
        return web.Response(
            body=b"".join(answers) + f"--{reply}--\r\n".encode(),
            headers={"Content-Type": f"multipart/mixed; boundary={reply}"},
        )

    def _batch_part(self, part: bytes, shared: CIMultiDict[str], reply: str) -> bytes:
        """The answer part to one part of a batch request; a part that holds no HTTP request answers 400."""
        part_lines, embedded = _split_head(part)
        part_headers = _parse_headers(part_lines)
        if part_headers is None:
            return _answer_part(_gmail_error(400), None, reply)
        content_id = part_headers.get("Content-ID")
        if part_headers.get("Content-Type", "").partition(";")[0].strip().lower() != "application/http":
            return _answer_part(_gmail_error(400), content_id, reply)
        lines, _ = _split_head(embedded)
        request_line = _REQUEST_LINE.fullmatch(lines[0].strip()) if lines else None
        own_headers = _parse_headers(lines[1:])
        if request_line is None or own_headers is None:
            return _answer_part(_gmail_error(400), content_id, reply)
        headers = shared.copy()
        headers.update(own_headers)
        target = urlsplit(request_line["target"])
        path, query = unquote(target.path), MultiDict(parse_qsl(target.query, keep_blank_values=True))
        recorded = {name.lower(): value for name, value in headers.items()}
        call = Call(request_line["method"], path, {}, dict(query), recorded, batch=True)
        self.calls.append(call)
        response = self._gmail_call(call.method, path, query, headers)
        call.status = response.status
        return _answer_part(response, content_id, reply)

    def _gmail_call(
        self, method: str, path: str, query: MultiMapping[str], headers: MultiMapping[str]
    ) -> web.Response:
        """Gmail's answer to one call, made on its own or inside a batch; the caller waits the latency."""
        route = self._gmail_route(path)
        if route is None:
            return _gmail_error(404)
        # aiohttp also routes HEAD to the GET handlers, and leaves the body out of the answer.
        if method not in ("GET", "HEAD"):
            return _gmail_error(405)
        if self._gmail_failures:
            return _gmail_error(*self._gmail_failures.pop(0))
        grant = self._bearer(headers)
        if grant is None:
            return _gmail_error(401)
        if not GMAIL_READ_SCOPES.intersection(grant.scopes):
            return _gmail_error(403)
        handler, params = route
        return handler(grant, query, params)

    def _gmail_route(self, path: str) -> tuple[_GmailHandler, dict[str, str]] | None:
        """The handler of a Gmail API path and the path's parameters; None for a path Gmail does not have."""
        routes = (
            (_GMAIL_PROFILE, self._gmail_profile),
            (_GMAIL_MESSAGES, self._gmail_list),
            (_GMAIL_MESSAGE, self._gmail_get),
        )
        for pattern, handler in routes:
            found = pattern.fullmatch(path)
            if found is not None:
                return handler, found.groupdict()
        return None

    def _gmail_profile(self, grant: _Grant, query: MultiMapping[str], params: dict[str, str]) -> web.Response:
        total = len(self._mailboxes.get(grant.email, []))
        return web.json_response(
            {"emailAddress": grant.email, "messagesTotal": total, "threadsTotal": total, "historyId": "1"}
        )

    def _gmail_list(self, grant: _Grant, query: MultiMapping[str], params: dict[str, str]) -> web.Response:
        search = query.get("q", "")
        limit = int(query.get("maxResults", "100"))
        newer = re.search(r"\bnewer_than:(\d+)([dmy])\b", search)
        cutoff = time.time() * 1000 - int(newer[1]) * _AGE_UNITS[newer[2]] * 86_400_000 if newer else 0
        newest_first = sorted(self._mailboxes.get(grant.email, []), key=lambda m: m.internal_ms, reverse=True)
        found = [
            m for m in newest_first if (m.unread or "is:unread" not in search) and m.internal_ms > cutoff
        ]
        body: dict[str, Any] = {"resultSizeEstimate": len(found)}
        if found:
            body = {"messages": [{"id": m.id, "threadId": m.id} for m in found[:limit]], **body}
        return web.json_response(body)

    def _gmail_get(self, grant: _Grant, query: MultiMapping[str], params: dict[str, str]) -> web.Response:
        failures = self._message_failures.get(params["id"])
        if failures:
            status, text, retry_after = failures.pop(0)
            failure = _gmail_error(status, text)
            if retry_after is not None:
                failure.headers["Retry-After"] = f"{retry_after:g}"
            return failure
        mailbox = {message.id: message for message in self._mailboxes.get(grant.email, [])}
        message = mailbox.get(params["id"])
        if message is None:
            return _gmail_error(404)
        wanted = {name.lower() for name in query.getall("metadataHeaders", [])}
        headers = [{"name": "From", "value": message.sender}, {"name": "Subject", "value": message.subject}]
        return web.json_response(
            {
                "id": message.id,
                "threadId": message.id,
                "labelIds": ["UNREAD", "INBOX"] if message.unread else ["INBOX"],
                "snippet": message.snippet,
                "internalDate": str(message.internal_ms),
                "payload": {"headers": [h for h in headers if not wanted or h["name"].lower() in wanted]},
            }
        )


@asynccontextmanager
async def fake_google_server(**kwargs: Any) -> AsyncIterator[FakeGoogle]:
    """A started FakeGoogle (constructor arguments as keywords), closed on exit."""
    fake = FakeGoogle(**kwargs)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()
