"""Google's security event tokens (Cross-Account Protection, RISC): checked, then read into typed events.

A security event token (RFC 8417) is a JWT that Google POSTs to our receiver (RFC 8935). It is believed only
when PyJWT verifies it: RS256, signed by a key published at the `jwks_uri` of the RISC configuration (fetched
once, its keys refetched when a token names an unknown kid), issued by that configuration's `issuer`, for our
OAuth client (`aud`). A refusal carries RFC 8935's error code; nothing of the token is ever logged.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import jwt

from bot.errors import GmailReconnectError
from bot.signing_keys import KeysUnavailable, KeysUnreachable, SigningKeys, fetch_json

log = logging.getLogger(__name__)

RISC = "https://schemas.openid.net/secevent/risc/event-type/"
OAUTH = "https://schemas.openid.net/secevent/oauth/event-type/"
TOKENS_REVOKED = OAUTH + "tokens-revoked"
TOKEN_REVOKED = OAUTH + "token-revoked"
SESSIONS_REVOKED = RISC + "sessions-revoked"
ACCOUNT_DISABLED = RISC + "account-disabled"
ACCOUNT_ENABLED = RISC + "account-enabled"
CREDENTIAL_CHANGE_REQUIRED = RISC + "account-credential-change-required"
VERIFICATION = RISC + "verification"
# What the stream asks Google for (`risc register`).
EVENT_TYPES = (
    TOKENS_REVOKED,
    TOKEN_REVOKED,
    SESSIONS_REVOKED,
    ACCOUNT_DISABLED,
    ACCOUNT_ENABLED,
    CREDENTIAL_CHANGE_REQUIRED,
    VERIFICATION,
)
CONTENT_TYPE = "application/secevent+jwt"
RISC_PATH = "/google/risc"  # where the receiver listens (PUBLIC_BASE_URL + this is registered with Google)

CLOCK_SKEW_SECONDS = 60
# Events are historical and carry no exp; one older than this is refused, so that a jti forgotten after
# JTI_KEPT (see storage.security_events) cannot be replayed.
MAX_AGE = timedelta(days=7)


class SecurityEventRejected(GmailReconnectError):
    """A token we do not believe; `err` is RFC 8935 §2.3's code, `description` says why without quoting it."""

    def __init__(self, err: str, description: str) -> None:
        super().__init__(f"{err}: {description}")
        self.err = err
        self.description = description


class IssuerUnavailable(GmailReconnectError):
    """The RISC configuration or its keys could not be had just now: the sender should try again later."""


@dataclass(frozen=True)
class TokenIdentifier:
    """token-revoked's subject: one refresh token, named by its first 16 characters or its double SHA-512."""

    alg: str
    value: str

    def matches(self, refresh_token: str) -> bool:
        """True when this identifier names `refresh_token`."""
        if self.alg == "prefix":
            return len(self.value) >= 16 and hmac.compare_digest(refresh_token[:16], self.value)
        if self.alg == "hash_base64_sha512_sha512":
            digest = hashlib.sha512(hashlib.sha512(refresh_token.encode()).digest()).digest()
            shown = self.value.rstrip("=")
            return any(
                hmac.compare_digest(encode(digest).decode().rstrip("="), shown)
                for encode in (base64.b64encode, base64.urlsafe_b64encode)
            )
        return False


@dataclass(frozen=True)
class SecurityEvent:
    """One event of a verified token."""

    uri: str
    subject_sub: str | None  # the Google account (iss-sub / id_token_claims subjects)
    token: TokenIdentifier | None  # the refresh token (oauth_token subjects)
    reason: str | None  # account-disabled
    state: str | None  # verification

    @property
    def name(self) -> str:
        """The event type's last part, e.g. tokens-revoked (audited as risc.<name>)."""
        return self.uri.rstrip("/").rsplit("/", 1)[-1][:80] or "unknown"


@dataclass(frozen=True)
class SecurityEventToken:
    """A verified token: its jti, when it was issued, and its events."""

    jti: str
    issued_at: datetime
    events: list[SecurityEvent]


class RiscIssuer:
    """Checks tokens against the issuer named by the RISC configuration at `config_uri`, for `audience`."""

    def __init__(self, config_uri: str, session: aiohttp.ClientSession, *, audience: str) -> None:
        self.config_uri = config_uri
        self.session = session
        self.audience = audience
        self._issuer: str | None = None
        self._keys: SigningKeys | None = None
        self._lock = asyncio.Lock()

    async def verify(self, token: str) -> SecurityEventToken:
        """The token's events if it is Google's and ours; SecurityEventRejected if not, IssuerUnavailable when
        the issuer's configuration or keys cannot be read now."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise SecurityEventRejected("invalid_request", "the body is not a signed JWT") from None
        if header.get("alg") != "RS256":
            raise SecurityEventRejected("invalid_request", "only RS256-signed tokens are accepted")
        issuer, keys = await self._configuration()
        try:
            key = await keys.key_for(token)
        except KeysUnreachable as error:
            raise IssuerUnavailable(str(error)) from None
        except KeysUnavailable as error:
            raise SecurityEventRejected("invalid_key", str(error)) from None
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                audience=self.audience,
                issuer=issuer,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["iss", "aud", "iat", "jti"]},
            )
        except jwt.InvalidSignatureError:
            raise SecurityEventRejected("invalid_key", "the signature does not verify") from None
        except jwt.InvalidAudienceError:
            raise SecurityEventRejected("invalid_audience", "the token is for another OAuth client") from None
        except jwt.InvalidIssuerError:
            raise SecurityEventRejected("invalid_issuer", f"the token was not issued by {issuer}") from None
        except jwt.ExpiredSignatureError:
            raise SecurityEventRejected("invalid_request", "the token has expired") from None
        except jwt.PyJWTError as error:
            raise SecurityEventRejected("invalid_request", _why(error)) from None
        return _read(claims)

    async def _configuration(self) -> tuple[str, SigningKeys]:
        """The issuer and its key set, read once (and again after a failed read)."""
        async with self._lock:
            if self._issuer is None or self._keys is None:
                document = await self._fetch_configuration()
                self._issuer = document["issuer"]
                self._keys = SigningKeys(document["jwks_uri"], self.session)
            return self._issuer, self._keys

    async def _fetch_configuration(self) -> dict[str, str]:
        document = await fetch_json(self.session, self.config_uri, IssuerUnavailable)
        if not (
            isinstance(document, dict)
            and isinstance(document.get("issuer"), str)
            and isinstance(document.get("jwks_uri"), str)
        ):
            raise IssuerUnavailable(f"{self.config_uri} names no issuer and jwks_uri")
        log.info("Read the RISC configuration of %s", document["issuer"])
        return {"issuer": document["issuer"], "jwks_uri": document["jwks_uri"]}


def _why(error: jwt.PyJWTError) -> str:
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"the token has no {error.claim} claim"
    if isinstance(error, jwt.ImmatureSignatureError):
        return "the token was issued in the future"
    return f"the token cannot be read ({type(error).__name__})"


def _read(claims: dict[str, Any]) -> SecurityEventToken:
    """The typed token of verified claims; a token that does not have RFC 8417's shape is refused."""
    jti, iat, events = claims.get("jti"), claims.get("iat"), claims.get("events")
    if not isinstance(jti, str) or not jti or len(jti) > 256:
        raise SecurityEventRejected(
            "invalid_request", "the jti claim is not a string of up to 256 characters"
        )
    if not isinstance(iat, int | float):
        raise SecurityEventRejected("invalid_request", "the iat claim is not a number")
    issued_at = datetime.fromtimestamp(iat, UTC)
    if datetime.now(UTC) - issued_at > MAX_AGE:
        raise SecurityEventRejected("invalid_request", "the token was issued more than 7 days ago")
    if not isinstance(events, dict) or not events:
        raise SecurityEventRejected("invalid_request", "the token has no events claim")
    read = []
    for uri, body in events.items():
        if not isinstance(body, dict):
            raise SecurityEventRejected("invalid_request", "an event of the events claim is not an object")
        read.append(_event(str(uri), body))
    return SecurityEventToken(jti=jti, issued_at=issued_at, events=read)


def _event(uri: str, body: dict[str, Any]) -> SecurityEvent:
    subject = body.get("subject") if isinstance(body.get("subject"), dict) else {}
    assert isinstance(subject, dict)
    sub = subject.get("sub")
    token = None
    if subject.get("subject_type") == "oauth_token" or "token_identifier_alg" in subject:
        alg, value = subject.get("token_identifier_alg"), subject.get("token")
        if isinstance(alg, str) and isinstance(value, str) and value:
            token = TokenIdentifier(alg, value)
    reason, state = body.get("reason"), body.get("state")
    return SecurityEvent(
        uri=uri,
        subject_sub=sub if isinstance(sub, str) and sub else None,
        token=token,
        reason=reason[:80] if isinstance(reason, str) and reason else None,
        state=state[:200] if isinstance(state, str) else None,
    )
