"""Google's token, revocation and userinfo endpoints over aiohttp, with each failure classified.

Refreshing is one form POST (RFC 6749 §6), so it is done here, natively async, rather than with
google-auth's synchronous `Credentials.refresh`: that call sleeps through its own fixed retry loop in a
worker thread, with no way to bound it. The authorization-code exchange stays with google-auth-oauthlib
(see `bot.consent`).
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import aiohttp

from bot.errors import GmailReconnectError

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=15, connect=5)
# The token endpoint's retryable answers, as google-auth judges them (google/oauth2/_client.py _can_retry).
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_RETRYABLE_ERRORS = frozenset({"internal_failure", "server_error", "temporarily_unavailable"})
_REAUTH_SUBTYPES = frozenset({"invalid_rapt", "rapt_required"})


class Failure(enum.StrEnum):
    """How a call to Google failed, which decides what the caller may do about it."""

    INVALID_GRANT = "invalid_grant"  # the refresh token is expired or revoked: only the user can fix it
    REAUTH_REQUIRED = "invalid_rapt"  # a Workspace policy requires signing in again
    CLIENT_REJECTED = "invalid_client"  # the OAuth client id/secret is wrong, deleted or not allowed
    TRANSIENT = "transient"  # 5xx, 429, timeouts, connection errors: try again later
    UNAUTHORIZED = "unauthorized"  # Gmail refused the access token (HTTP 401)
    INSUFFICIENT_SCOPE = (
        "insufficient_scope"  # Gmail: the grant does not allow this (403 insufficientPermissions)
    )
    UNEXPECTED = "unexpected"  # an answer we do not understand: nothing is concluded from it


class GoogleError(GmailReconnectError):
    """A failed call to Google; the message holds Google's error code and description, never a token."""

    def __init__(
        self, failure: Failure, message: str, *, error: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.failure = failure
        self.error = error
        self.status = status

    @property
    def transient(self) -> bool:
        """True when the same call may well succeed later."""
        return self.failure is Failure.TRANSIENT


@dataclass(frozen=True)
class TokenResponse:
    """A successful answer of the token endpoint."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expiry: datetime | None
    scopes: list[str] | None


@dataclass(frozen=True)
class MailSummary:
    """One unread message, as the briefing shows it."""

    id: str
    sender: str
    subject: str
    snippet: str
    received_at: datetime | None


@dataclass(frozen=True)
class UnreadMail:
    """The newest unread messages, and how many Gmail estimates there are in all."""

    messages: list[MailSummary]
    total: int


class GoogleClient:
    """The Google endpoints the bot calls directly, on one shared aiohttp session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        token_uri: str,
        revoke_uri: str,
        userinfo_uri: str,
        gmail_api_url: str = "https://gmail.googleapis.com/",
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
    ) -> None:
        self.session = session
        self.gmail_api_url = gmail_api_url
        self.token_uri = token_uri
        self.revoke_uri = revoke_uri
        self.userinfo_uri = userinfo_uri
        self.timeout = timeout

    async def refresh(self, *, refresh_token: str, client_id: str, client_secret: str) -> TokenResponse:
        """One refresh attempt; GoogleError classifies a failure."""
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": client_id,
            "client_secret": client_secret,
        }
        status, body = await self._call("POST", self.token_uri, data=form, what="token refresh")
        if status == 200 and isinstance(body, dict) and body.get("access_token"):
            return token_response(body)
        raise token_error(status, body)

    async def revoke(self, token: str) -> bool:
        """Revoke a token at Google; True when Google confirms or says it is already invalid."""
        status, body = await self._call("POST", self.revoke_uri, data={"token": token}, what="revocation")
        if status == 200:
            return True
        if isinstance(body, dict) and body.get("error") == "invalid_token":
            return True  # already expired or revoked: nothing left to revoke
        raise token_error(status, body)

    async def userinfo(self, access_token: str) -> dict[str, Any]:
        """The OpenID userinfo claims (sub, email, email_verified) of an access token."""
        status, body = await self._call(
            "GET", self.userinfo_uri, headers={"Authorization": f"Bearer {access_token}"}, what="userinfo"
        )
        if status == 200 and isinstance(body, dict):
            return body
        raise token_error(status, body)

    async def unread_mail(self, access_token: str, *, query: str, limit: int) -> UnreadMail:
        """The newest messages matching `query` (sender, subject, snippet), at most `limit`, newest first."""
        auth = {"Authorization": f"Bearer {access_token}"}
        base = self.gmail_api_url + "gmail/v1/users/me/messages"
        status, body = await self._call(
            "GET", base, params={"q": query, "maxResults": str(limit)}, headers=auth, what="Gmail search"
        )
        if status != 200 or not isinstance(body, dict):
            raise gmail_error(status, body)
        ids = [
            str(item["id"]) for item in body.get("messages") or [] if isinstance(item, dict) and "id" in item
        ]
        details = await asyncio.gather(*(self._message(base, message_id, auth) for message_id in ids[:limit]))
        found = [summary for summary in details if summary is not None]
        estimate = body.get("resultSizeEstimate")
        return UnreadMail(found, max(len(found), estimate if isinstance(estimate, int) else 0))

    async def _message(self, base: str, message_id: str, auth: dict[str, str]) -> MailSummary | None:
        params = [("format", "metadata"), ("metadataHeaders", "From"), ("metadataHeaders", "Subject")]
        status, body = await self._call(
            "GET", f"{base}/{message_id}", params=params, headers=auth, what="Gmail message"
        )
        if status == 404:
            return None  # deleted between the search and now
        if status != 200 or not isinstance(body, dict):
            raise gmail_error(status, body)
        headers = {
            str(header.get("name", "")).lower(): str(header.get("value", ""))
            for header in (body.get("payload") or {}).get("headers") or []
            if isinstance(header, dict)
        }
        try:
            received = datetime.fromtimestamp(int(body["internalDate"]) / 1000, UTC)
        except (KeyError, TypeError, ValueError):
            received = None
        return MailSummary(
            id=message_id,
            sender=headers.get("from", ""),
            subject=headers.get("subject", ""),
            snippet=str(body.get("snippet") or ""),
            received_at=received,
        )

    async def _call(self, method: str, url: str, *, what: str, **kwargs: Any) -> tuple[int, Any]:
        try:
            async with self.session.request(method, url, timeout=self.timeout, **kwargs) as response:
                text = await response.text()
                status = response.status
        except TimeoutError:
            raise GoogleError(Failure.TRANSIENT, f"Google did not answer the {what} in time") from None
        except aiohttp.ClientError as error:
            raise GoogleError(
                Failure.TRANSIENT, f"Could not reach Google for the {what}: {type(error).__name__}"
            ) from None
        try:
            return status, json.loads(text)
        except ValueError:
            return status, None


def token_response(body: dict[str, Any], *, now: datetime | None = None) -> TokenResponse:
    """A TokenResponse from the token endpoint's JSON."""
    expiry = None
    try:
        seconds = float(body.get("expires_in"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        seconds = -1.0
    if 0 <= seconds < 10 * 365 * 86400:
        expiry = (now or datetime.now(UTC)) + timedelta(seconds=seconds)
    scope = body.get("scope")
    return TokenResponse(
        access_token=str(body["access_token"]),
        refresh_token=str(body["refresh_token"]) if body.get("refresh_token") else None,
        expiry=expiry,
        scopes=scope.split() if isinstance(scope, str) else None,
    )


def gmail_error(status: int, body: Any) -> GoogleError:
    """Classify an error answer of the Gmail API."""
    error = body.get("error") if isinstance(body, dict) else None
    message = str(error.get("message")) if isinstance(error, dict) and error.get("message") else ""
    reasons = {
        str(item.get("reason"))
        for item in (error.get("errors") or [] if isinstance(error, dict) else [])
        if isinstance(item, dict)
    }
    text = f"Gmail answered HTTP {status}" + (f" ({message})" if message else "")
    if status == 401:
        return GoogleError(Failure.UNAUTHORIZED, text, status=status)
    if status == 403 and reasons & {"insufficientPermissions", "ACCESS_TOKEN_SCOPE_INSUFFICIENT"}:
        return GoogleError(Failure.INSUFFICIENT_SCOPE, text, error="insufficientPermissions", status=status)
    if status in _RETRYABLE_STATUS or reasons & {
        "rateLimitExceeded",
        "userRateLimitExceeded",
        "backendError",
    }:
        return GoogleError(Failure.TRANSIENT, text, status=status)
    return GoogleError(Failure.UNEXPECTED, text, status=status)


def token_error(status: int, body: Any) -> GoogleError:
    """Classify an error answer of a Google OAuth endpoint."""
    error = str(body.get("error")) if isinstance(body, dict) and body.get("error") else None
    subtype = str(body.get("error_subtype")) if isinstance(body, dict) and body.get("error_subtype") else None
    description = body.get("error_description") if isinstance(body, dict) else None
    text = f"Google answered HTTP {status}" + (f" ({error}: {description})" if error else "")
    if error == "invalid_rapt" or subtype in _REAUTH_SUBTYPES:
        return GoogleError(Failure.REAUTH_REQUIRED, text, error=subtype or error, status=status)
    if error == "invalid_grant":
        return GoogleError(Failure.INVALID_GRANT, text, error=error, status=status)
    if error in ("invalid_client", "unauthorized_client"):
        return GoogleError(Failure.CLIENT_REJECTED, text, error=error, status=status)
    if status in _RETRYABLE_STATUS or error in _RETRYABLE_ERRORS:
        return GoogleError(Failure.TRANSIENT, text, error=error, status=status)
    return GoogleError(Failure.UNEXPECTED, text, error=error, status=status)


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
