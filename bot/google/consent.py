"""Google's consent screen: the authorization URL, and the code exchange with google-auth-oauthlib's Flow.

Flow is synchronous (requests), so the exchange runs in a worker thread with a timeout. The callback is served
by aiohttp, never by oauthlib, so the state is checked by our own store and the code is passed as `code=`.

The ID token that comes with the tokens is verified with google-auth in that same thread, bounded by the
same timeout: its RS256 signature against Google's published certificates (GOOGLE_CERTS_URI), its audience
(our client id), its issuer and its lifetime. OpenID Connect Core §3.1.3.7 would let a client that got the
token straight from the token endpoint over TLS rely on that channel instead of the signature; but the email
in it decides which mailbox a Slack user is linked to, so it is believed on Google's signature, not on the
channel alone (a TLS-intercepting proxy or a token endpoint that is not Google's cannot name another
mailbox). A token that does not verify, or certificates that cannot be had, leave the claims empty: the email
is then read from userinfo with the access token, as for a grant that came without an ID token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests
from cryptography import x509
from google.auth import exceptions as google_auth_errors
from google.auth import transport
from google.auth.transport.requests import Request as GoogleAuthRequest
from google.oauth2 import id_token as google_id_token
from google_auth_oauthlib.flow import Flow
from oauthlib.oauth2.rfc6749.errors import OAuth2Error

from bot.config import Settings
from bot.errors import ConfigError
from bot.google.client import expires_after
from bot.google.errors import Failure, GoogleError, token_error

log = logging.getLogger(__name__)

EXCHANGE_TIMEOUT_SECONDS = 15
# How far our clock may be off Google's when checking an ID token's iat and exp: a token is checked the moment
# it is issued, so without any leeway a clock a second behind would refuse every one.
ID_TOKEN_CLOCK_SKEW_SECONDS = 10
# The issuers google-auth's verify_oauth2_token accepts; verify_token, which takes our certs URL, checks none.
_GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")
# The longest Google's certificates are kept, whatever their max-age says; and how old they must be before a
# token naming a key they do not hold fetches them again.
MAX_CERTS_AGE_SECONDS = 24 * 3600
REFETCH_AFTER_SECONDS = 60
# A fetch that failed is not tried again for this long: the verifications waiting for it fail at once.
FAILURE_KEPT_SECONDS = 5
# How google-auth begins its message for a token signed by a key that the certificates do not hold.
_UNKNOWN_KID = "Certificate for key id"
# google-auth's messages for a token it refuses, and the few words logged instead: some of them quote the
# token, which must never reach a log line.
_REJECTIONS = (
    ("Could not verify token signature", "bad signature"),
    (_UNKNOWN_KID, "its kid names no published certificate"),
    ("Unsupported signature algorithm", "unsupported or missing signature algorithm"),
    ("Token expired", "expired"),
    ("Token used too early", "issued in the future (is this machine's clock right?)"),
    ("Token has wrong audience", "issued to another OAuth client"),
    ("Token does not contain required claim", "no iat or exp claim"),
)


@dataclass(frozen=True)
class Exchange:
    """What the token endpoint gave for an authorization code."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expiry: datetime | None
    granted_scopes: list[str]
    # The ID token's claims if google-auth verified it (see `verify_id_token`), else {}.
    id_claims: dict[str, Any] = field(repr=False)
    # When the user granted time-based access: the refresh token's end (refresh_token_expires_in).
    refresh_token_expiry: datetime | None = None


class Consent:
    """Builds consent URLs and exchanges codes for one OAuth client."""

    def __init__(self, settings: Settings, *, timeout: float = EXCHANGE_TIMEOUT_SECONDS) -> None:
        if settings.google_client_id is None or settings.google_client_secret is None:
            raise ConfigError(settings.missing_for_serve())
        self.client_id = settings.google_client_id
        self.certs_uri = settings.google_certs_uri
        self.certs = GoogleCerts()
        self.timeout = timeout
        self._client_config = {
            "web": {
                "client_id": settings.google_client_id,
                "client_secret": settings.google_client_secret.reveal(),
                "auth_uri": settings.google_auth_uri,
                "token_uri": settings.google_token_uri,
            }
        }
        if settings.google_token_uri.startswith("http://") or settings.google_auth_uri.startswith("http://"):
            _permit_loopback_http()

    def authorization_url(
        self, *, state: str, code_verifier: str, scopes: list[str], redirect_uri: str, login_hint: str | None
    ) -> str:
        """The URL of Google's consent screen, asking for a refresh token every time (prompt=consent)."""
        flow = self._flow(scopes=scopes, redirect_uri=redirect_uri, state=state, code_verifier=code_verifier)
        extra = {"login_hint": login_hint} if login_hint else {}
        url, _ = flow.authorization_url(
            access_type="offline", prompt="consent", include_granted_scopes="true", state=state, **extra
        )
        return str(url)

    async def exchange(
        self, *, code: str, state: str, code_verifier: str, scopes: list[str], redirect_uri: str
    ) -> Exchange:
        """Exchange an authorization code and verify its ID token (off the event loop); GoogleError classifies
        a failure of the exchange, while an ID token that cannot be verified only leaves `id_claims` empty.

        The exchange's Flow is given no scopes: oauthlib would raise when the grant differs from what was asked
        (a user may untick a box), and we judge the granted scopes ourselves, by capability."""
        flow = self._flow(scopes=None, redirect_uri=redirect_uri, state=state, code_verifier=code_verifier)
        answer: dict[str, int] = {}

        def remember_status(response: requests.Response) -> requests.Response:
            answer["status"] = response.status_code
            return response

        flow.oauth2session.register_compliance_hook("access_token_response", remember_status)
        try:
            token, id_claims = await asyncio.to_thread(self._fetch_and_verify, flow, code)
        except OAuth2Error as error:
            status = answer.get("status") or error.status_code
            raise token_error(
                status, {"error": error.error, "error_description": error.description}
            ) from None
        except requests.Timeout:
            raise GoogleError(Failure.TRANSIENT, "Google did not answer the code exchange in time") from None
        except requests.RequestException as error:
            raise GoogleError(
                Failure.TRANSIENT, f"Could not reach Google for the code exchange: {type(error).__name__}"
            ) from None
        except ValueError:
            # oauthlib could not parse the body: typically an HTML error page from a proxy or an outage.
            status = answer.get("status", 0)
            failure = Failure.TRANSIENT if status >= 500 or status in (408, 429) else Failure.UNEXPECTED
            raise GoogleError(
                failure, f"Google's answer to the code exchange was not JSON (HTTP {status})"
            ) from None
        credentials = flow.credentials
        granted = credentials.granted_scopes or token.get("scope") or scopes
        expiry = credentials.expiry.replace(tzinfo=UTC) if credentials.expiry else None
        return Exchange(
            access_token=str(token["access_token"]),
            refresh_token=str(token["refresh_token"]) if token.get("refresh_token") else None,
            expiry=expiry,
            granted_scopes=list(granted.split() if isinstance(granted, str) else granted),
            id_claims=id_claims,
            # google-auth's Credentials has no field for it: read from the token answer itself.
            refresh_token_expiry=expires_after(token.get("refresh_token_expires_in"), datetime.now(UTC)),
        )

    def _fetch_and_verify(self, flow: Flow, code: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """In the worker thread: the token response, then the claims of its ID token if they verify."""
        token = flow.fetch_token(code=code, timeout=self.timeout)
        claims = verify_id_token(
            token.get("id_token"),
            client_id=self.client_id,
            certs_uri=self.certs_uri,
            timeout=self.timeout,
            certs=self.certs,
        )
        return token, claims

    def _flow(self, *, scopes: list[str] | None, redirect_uri: str, state: str, code_verifier: str) -> Flow:
        return Flow.from_client_config(
            self._client_config,
            scopes=scopes,
            redirect_uri=redirect_uri,
            state=state,
            code_verifier=code_verifier,
            autogenerate_code_verifier=False,
        )


def _permit_loopback_http() -> None:
    """Let oauthlib call Google's endpoints over http://, which it refuses unless OAUTHLIB_INSECURE_TRANSPORT is
    set: its only switch, and process-wide. The settings accept http:// only for loopback addresses (local
    servers standing in for Google), so this is set, once, only where every such address is this machine."""
    os.environ.setdefault("OAUTHLIB_INSECURE_TRANSPORT", "1")


class CertsUnavailable(Exception):
    """Google's ID token certificates could not be had: no answer in time, an error status, or an answer that is
    not x509 certificates keyed by kid."""


class GoogleCerts:
    """Google's ID token certificates, kept for as long as Google's answer says (its Cache-Control max-age, a few
    hours; Google changes its keys about once a day and publishes a new one before it signs with it).

    google-auth fetches the certificates on every verification and keeps none; its documentation points to an HTTP
    cache for that (CacheControl). This is such a cache for the one URL, with what a generic one lacks: the threads
    that verify at once (a run's refreshes, the consent callbacks) wait for one fetch rather than each making its
    own (and, when it fails, do not each try again at once), and a token signed by a key newer than those kept
    fetches them again (see verify_id_token)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        # By URL: Google's answer, when it was fetched, and until when it may be kept; the last failure, and why.
        self._kept: dict[str, tuple[transport.Response, float, float]] = {}
        self._failed: dict[str, tuple[float, str]] = {}

    def answer(self, url: str, fetch: Callable[[], transport.Response], *, fresh: bool) -> transport.Response:
        """Google's answer at `url`: the one kept while it may be, else `fetch()`ed and kept for its max-age.
        `fresh` asks for a new one, which is fetched unless the one kept is less than REFETCH_AFTER_SECONDS old
        (tokens naming unknown keys do not make a fetch each)."""
        with self._lock:
            now = self.clock()
            kept = self._kept.get(url)
            if kept is not None and now < kept[2] and not (fresh and now - kept[1] >= REFETCH_AFTER_SECONDS):
                return kept[0]
            failed = self._failed.get(url)
            if failed is not None and now - failed[0] < FAILURE_KEPT_SECONDS:
                # Those that waited for the fetch that just failed do not each try again (and wait as long).
                raise CertsUnavailable(failed[1])
            try:
                response = fetch()
            except CertsUnavailable as error:
                self._failed[url] = (now, str(error))
                raise
            self._failed.pop(url, None)
            seconds = _max_age(response.headers)
            if seconds:
                self._kept[url] = (response, now, now + seconds)
            else:
                self._kept.pop(url, None)
            return response


def verify_id_token(
    id_token: object, *, client_id: str, certs_uri: str, timeout: float, certs: GoogleCerts | None = None
) -> dict[str, Any]:
    """The claims of an ID token that google-auth verifies as Google's and ours, or {} if it is not trusted.

    google-auth's `verify_token` checks the RS256 signature against the certificates at `certs_uri` (kept in
    `certs`, or fetched each time without; at most `timeout` seconds per read), the audience and the iat/exp
    lifetime; the issuer is checked here, as `verify_oauth2_token` would (it cannot be pointed at another certs
    URL). A token whose key is not among the certificates kept is checked once more against certificates fetched
    now: Google may have just published it. Blocking: call it in a worker thread. Nothing of the token is ever
    logged.
    """
    if not isinstance(id_token, str) or not id_token:
        return {}
    with requests.Session() as session:
        try:
            try:
                claims = _verified(id_token, session, client_id, certs_uri, timeout, certs, fresh=False)
            except ValueError as error:
                if certs is None or not str(error).startswith(_UNKNOWN_KID):
                    raise
                claims = _verified(id_token, session, client_id, certs_uri, timeout, certs, fresh=True)
        except CertsUnavailable as error:
            log.warning(
                "Could not get Google's ID token certificates from %s (%s): reading the email from userinfo",
                certs_uri,
                error,
            )
            return {}
        except (google_auth_errors.GoogleAuthError, ValueError, TypeError) as error:
            log.warning(
                "Google's ID token did not verify (%s): reading the email from userinfo", _rejection(error)
            )
            return {}
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or issuer not in _GOOGLE_ISSUERS:
        log.warning(
            "Google's ID token did not verify (not issued by Google): reading the email from userinfo"
        )
        return {}
    return dict(claims)


def _verified(
    id_token: str,
    session: requests.Session,
    client_id: str,
    certs_uri: str,
    timeout: float,
    certs: GoogleCerts | None,
    *,
    fresh: bool,
) -> Mapping[str, Any]:
    return google_id_token.verify_token(
        id_token,
        _CertsRequest(session, timeout=timeout, certs=certs, fresh=fresh),
        audience=client_id,
        certs_url=certs_uri,
        clock_skew_in_seconds=ID_TOKEN_CLOCK_SKEW_SECONDS,
    )


def _max_age(headers: Mapping[str, str]) -> float:
    """How long an answer may be kept, by its Cache-Control (max-age, less its Age), at most MAX_CERTS_AGE; 0
    when it may not be kept."""
    control = next((value for name, value in headers.items() if name.lower() == "cache-control"), "")
    if re.search(r"\b(no-store|no-cache|private)\b", control, re.IGNORECASE):
        return 0.0
    found = re.search(r"\bmax-age=(\d+)", control, re.IGNORECASE)
    if found is None:
        return 0.0
    age = next((value for name, value in headers.items() if name.lower() == "age"), "0")
    try:
        seconds = int(found[1]) - int(age)
    except ValueError:
        return 0.0
    return float(min(max(seconds, 0), MAX_CERTS_AGE_SECONDS))


class _CertsRequest(transport.Request):
    """google-auth's requests transport for fetching the certificates: with our timeout, through `certs` (kept,
    unless `fresh`) when given, and raising CertsUnavailable when they cannot be used, so that is told apart
    from a token that does not verify."""

    def __init__(
        self,
        session: requests.Session,
        *,
        timeout: float,
        certs: GoogleCerts | None = None,
        fresh: bool = False,
    ) -> None:
        self._request = GoogleAuthRequest(session)
        self._timeout = timeout
        self._certs = certs
        self._fresh = fresh

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> transport.Response:
        if self._certs is not None and method == "GET":
            return self._certs.answer(
                url, lambda: self._fetch(url, method, body, headers, **kwargs), fresh=self._fresh
            )
        return self._fetch(url, method, body, headers, **kwargs)

    def _fetch(
        self, url: str, method: str, body: bytes | None, headers: Mapping[str, str] | None, **kwargs: Any
    ) -> transport.Response:
        # google-auth passes no timeout of its own for the certs; ours bounds the fetch.
        try:
            response = self._request(
                url, method=method, body=body, headers=headers, timeout=self._timeout, **kwargs
            )
        except (google_auth_errors.TransportError, OSError) as error:
            cause = error.__cause__ or error
            reason = "no answer in time" if isinstance(cause, requests.Timeout) else type(cause).__name__
            raise CertsUnavailable(reason) from None
        if response.status != 200:
            raise CertsUnavailable(f"HTTP {response.status}")
        if not _are_certificates(response.data):
            raise CertsUnavailable("the answer is not x509 certificates keyed by kid")
        return response


def _are_certificates(data: bytes) -> bool:
    """Whether a certs answer is Google's v1 format, `{kid: PEM x509 certificate}`, the one this bot expects
    (a JWK set, Google's v3 format, would need PyJWT in google-auth)."""
    try:
        certs = json.loads(data)
    except ValueError:
        return False
    if not isinstance(certs, dict) or not certs or "keys" in certs:
        return False
    try:
        for pem in certs.values():
            if not isinstance(pem, str):
                return False
            x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        return False
    return True


def _rejection(error: Exception) -> str:
    """Why google-auth refused a token, in words that hold nothing of it."""
    message = str(error)
    for prefix, reason in _REJECTIONS:
        if message.startswith(prefix):
            return reason
    return f"unreadable: {type(error).__name__}"


def verified_email(claims: dict[str, Any]) -> str | None:
    """The email address in OpenID claims, if Google says it is verified."""
    email = claims.get("email")
    verified = claims.get("email_verified")
    if isinstance(email, str) and email and verified in (True, "true"):
        return email.lower()
    return None


def google_subject(claims: dict[str, Any]) -> str | None:
    """The Google account's id (`sub`) in verified OpenID claims: what Google's security events name it by."""
    sub = claims.get("sub")
    return sub if isinstance(sub, str) and sub else None
