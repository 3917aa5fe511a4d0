"""Google's token, revocation and userinfo endpoints over aiohttp, with each failure classified.

Refreshing is one form POST (RFC 6749 §6), so it is done here, natively async, rather than with
google-auth's synchronous `Credentials.refresh`: that call sleeps through its own fixed retry loop in a
worker thread, with no way to bound it. The authorization-code exchange stays with google-auth-oauthlib
(see `bot.google.consent`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import aiohttp
import orjson

from bot.config import Settings
from bot.google.errors import Failure, GoogleError, token_error

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=15, connect=5)


@dataclass(frozen=True)
class TokenResponse:
    """A successful answer of the token endpoint."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expiry: datetime | None
    scopes: list[str] | None
    id_token: str | None = field(default=None, repr=False)  # when `openid` was granted
    refresh_token_expiry: datetime | None = None  # when the user granted time-based access


class GoogleClient:
    """The Google endpoints the bot calls directly, on one shared aiohttp session, with one retry policy."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        token_uri: str,
        revoke_uri: str,
        userinfo_uri: str,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
        attempts: int = 3,
        backoff: float = 0.5,
    ) -> None:
        self.session = session
        self.attempts = attempts
        self.backoff = backoff
        self.token_uri = token_uri
        self.revoke_uri = revoke_uri
        self.userinfo_uri = userinfo_uri
        self.timeout = timeout

    async def retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """`attempt()` under this client's retry policy: transient failures are tried `attempts` times in all,
        waiting `backoff`, then twice as long, and so on."""
        return await retry_transient(attempt, attempts=self.attempts, backoff=self.backoff)

    async def refresh(self, *, refresh_token: str, client_id: str, client_secret: str) -> TokenResponse:
        """One refresh attempt; GoogleError classifies a failure."""
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": client_id,
            "client_secret": client_secret,
        }
        status, body = await self.call("POST", self.token_uri, data=form, what="token refresh")
        if status == 200 and isinstance(body, dict) and body.get("access_token"):
            return token_response(body)
        raise token_error(status, body)

    async def revoke(self, token: str) -> bool:
        """Revoke a token at Google; True when Google confirms or says it is already invalid."""
        status, body = await self.call("POST", self.revoke_uri, data={"token": token}, what="revocation")
        if status == 200:
            return True
        if isinstance(body, dict) and body.get("error") == "invalid_token":
            return True  # already expired or revoked: nothing left to revoke
        raise token_error(status, body)

    async def userinfo(self, access_token: str) -> dict[str, Any]:
        """The OpenID userinfo claims (sub, email, email_verified) of an access token."""
        status, body = await self.call(
            "GET", self.userinfo_uri, headers={"Authorization": f"Bearer {access_token}"}, what="userinfo"
        )
        if status == 200 and isinstance(body, dict):
            return body
        raise token_error(status, body)

    async def call(self, method: str, url: str, *, what: str, **kwargs: Any) -> tuple[int, Any]:
        """One request: the answer's status and its JSON body (None when it is not JSON)."""
        status, _, payload = await self.request(method, url, what=what, **kwargs)
        return status, json_or_none(payload)

    async def request(self, method: str, url: str, *, what: str, **kwargs: Any) -> tuple[int, str, bytes]:
        """One request: the answer's status, Content-Type header and body; GoogleError when none came."""
        try:
            async with self.session.request(method, url, timeout=self.timeout, **kwargs) as response:
                return response.status, response.headers.get("Content-Type", ""), await response.read()
        except TimeoutError:
            raise GoogleError(Failure.TRANSIENT, f"Google did not answer the {what} in time") from None
        except aiohttp.ClientError as error:
            raise GoogleError(
                Failure.TRANSIENT, f"Could not reach Google for the {what}: {type(error).__name__}"
            ) from None


def token_response(body: dict[str, Any], *, now: datetime | None = None) -> TokenResponse:
    """A TokenResponse from the token endpoint's JSON."""
    now = now or datetime.now(UTC)
    scope = body.get("scope")
    return TokenResponse(
        access_token=str(body["access_token"]),
        refresh_token=str(body["refresh_token"]) if body.get("refresh_token") else None,
        expiry=expires_after(body.get("expires_in"), now),
        scopes=scope.split() if isinstance(scope, str) else None,
        id_token=body["id_token"] if isinstance(body.get("id_token"), str) else None,
        refresh_token_expiry=expires_after(body.get("refresh_token_expires_in"), now),
    )


def expires_after(seconds: object, now: datetime) -> datetime | None:
    """The moment `seconds` (a token answer's expires_in or refresh_token_expires_in) after `now`; None for a
    value that is missing or not a sensible lifetime."""
    try:
        lifetime = float(seconds)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return now + timedelta(seconds=lifetime) if 0 <= lifetime < 10 * 365 * 86400 else None


async def retry_transient(attempt: Callable[[], Awaitable[T]], *, attempts: int, backoff: float) -> T:
    """Run `attempt()` until it succeeds or fails for good; transient failures wait backoff, 2×backoff, …"""
    for number in range(1, attempts + 1):
        try:
            return await attempt()
        except GoogleError as error:
            if not error.transient or number == attempts:
                raise
            log.info("Transient Google failure (attempt %d of %d): %s", number, attempts, error)
            await asyncio.sleep(backoff * 2 ** (number - 1))
    raise ValueError("attempts must be at least 1")


def google_client(settings: Settings, session: aiohttp.ClientSession) -> GoogleClient:
    """The Google client for these settings' endpoints, on `session`."""
    return GoogleClient(
        session,
        token_uri=settings.google_token_uri,
        revoke_uri=settings.google_revoke_uri,
        userinfo_uri=settings.google_userinfo_uri,
    )


def json_or_none(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except ValueError:
        return None
