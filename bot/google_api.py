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
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp

from bot.errors import GmailReconnectError

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=15, connect=5)
# The token endpoint's retryable answers, as google-auth judges them (google/oauth2/_client.py _can_retry).
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_RETRYABLE_ERRORS = frozenset({"internal_failure", "server_error", "temporarily_unavailable"})
_REAUTH_SUBTYPES = frozenset({"invalid_rapt", "rapt_required"})
# Gmail takes up to 100 calls in one batch request, and advises against more than 50.
BATCH_SIZE = 50
_METADATA_QUERY = "format=metadata&metadataHeaders=From&metadataHeaders=Subject"
_BOUNDARY = re.compile(r'boundary=(?:"(?P<quoted>[^"]+)"|(?P<bare>[^;\s]+))', re.IGNORECASE)
_ITEM_LABEL = re.compile(rb"^content-id:\s*<?response-item(\d+)>?\s*$", re.IGNORECASE | re.MULTILINE)
_STATUS_LINE = re.compile(rb"HTTP/\d(?:\.\d)?\s+(\d{3})")


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
        """The newest messages matching `query` (sender, subject, snippet), at most `limit`, newest first.

        One search, then the messages' headers in one batch request (or a few, at BATCH_SIZE each).
        """
        status, body = await self._call(
            "GET",
            self.gmail_api_url + "gmail/v1/users/me/messages",
            params={"q": query, "maxResults": str(limit)},
            headers={"Authorization": f"Bearer {access_token}"},
            what="Gmail search",
        )
        if status != 200 or not isinstance(body, dict):
            raise gmail_error(status, body)
        ids = [
            str(item["id"]) for item in body.get("messages") or [] if isinstance(item, dict) and "id" in item
        ]
        found = [
            summary for summary in await self.summaries(access_token, ids[:limit]) if summary is not None
        ]
        estimate = body.get("resultSizeEstimate")
        return UnreadMail(found, max(len(found), estimate if isinstance(estimate, int) else 0))

    async def summaries(self, access_token: str, ids: list[str]) -> list[MailSummary | None]:
        """Sender, subject and snippet of each message, in order, in batch requests of BATCH_SIZE; None for a
        message that is gone (deleted since it was listed)."""
        auth = {"Authorization": f"Bearer {access_token}"}
        chunks = [ids[start : start + BATCH_SIZE] for start in range(0, len(ids), BATCH_SIZE)]
        answers = await asyncio.gather(*(self._batch(chunk, auth) for chunk in chunks))
        return [summary for answer in answers for summary in answer]

    async def _batch(self, ids: list[str], auth: dict[str, str]) -> list[MailSummary | None]:
        prefix = urlsplit(self.gmail_api_url).path + "gmail/v1/users/me/messages/"
        boundary = "batch_" + secrets.token_hex(12)
        lines = [f"GET {prefix}{quote(message_id, safe='')}?{_METADATA_QUERY}" for message_id in ids]
        status, content_type, payload = await self._exchange(
            "POST",
            self.gmail_api_url + "batch/gmail/v1",
            data=batch_body(boundary, lines),
            headers={**auth, "Content-Type": f"multipart/mixed; boundary={boundary}"},
            what="Gmail batch",
        )
        if status != 200:
            raise gmail_error(status, _json_or_none(payload))
        try:
            answers = batch_answers(content_type, payload, len(ids))
        except ValueError as error:
            raise GoogleError(
                Failure.UNEXPECTED, f"Gmail's batch answer could not be read: {error}"
            ) from None
        return [
            _summary(message_id, answer_status, body)
            for message_id, (answer_status, body) in zip(ids, answers, strict=True)
        ]

    async def _call(self, method: str, url: str, *, what: str, **kwargs: Any) -> tuple[int, Any]:
        status, _, payload = await self._exchange(method, url, what=what, **kwargs)
        return status, _json_or_none(payload)

    async def _exchange(self, method: str, url: str, *, what: str, **kwargs: Any) -> tuple[int, str, bytes]:
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


def _json_or_none(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        return None


def _summary(message_id: str, status: int, body: Any) -> MailSummary | None:
    """One message's summary from Gmail's answer to its get (format=metadata); None when it is gone."""
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


def batch_body(boundary: str, requests: list[str]) -> bytes:
    """A Google batch request's body: each request line (method, path and query) as a part of its own,
    with a Content-ID that its answer echoes as `response-item<n>`."""
    parts = [
        f"--{boundary}\r\nContent-Type: application/http\r\nContent-ID: <item{number}>\r\n\r\n{line}\r\n\r\n"
        for number, line in enumerate(requests)
    ]
    return ("".join(parts) + f"--{boundary}--\r\n").encode()


def batch_answers(content_type: str, payload: bytes, expected: int) -> list[tuple[int, Any]]:
    """The (status, JSON body or None) of each call of a batch, in the order of the requests.

    Google answers in order, and labels each answer `Content-ID: <response-item<n>>`; the labels are
    followed when present. ValueError when the answer is not a batch answer to `expected` calls.
    """
    found = _BOUNDARY.search(content_type)
    if not content_type.lower().startswith("multipart/") or found is None:
        raise ValueError(f"Content-Type {content_type[:80]!r} is not multipart")
    delimiter = b"--" + (found["quoted"] or found["bare"]).encode()
    answers: dict[int, tuple[int, Any]] = {}
    sections = payload.split(delimiter)[1:]
    for position, section in enumerate(sections):
        if section.startswith(b"--"):
            break  # the close delimiter
        part_headers, inner = _head_and_rest(section.lstrip(b"\r\n"))
        label = _ITEM_LABEL.search(part_headers)
        status_line, body = _head_and_rest(inner)
        status = _STATUS_LINE.match(status_line)
        if status is None:
            raise ValueError(f"part {position + 1} holds no HTTP answer")
        answers[int(label[1]) if label else position] = (int(status[1]), _json_or_none(body.rstrip()))
    if sorted(answers) != list(range(expected)):
        raise ValueError(f"{len(answers)} answers for {expected} calls")
    return [answers[number] for number in range(expected)]


def _head_and_rest(data: bytes) -> tuple[bytes, bytes]:
    """Split a block of header lines from what follows the blank line after them (CRLF or LF)."""
    crlf, lf = data.find(b"\r\n\r\n"), data.find(b"\n\n")
    if crlf != -1 and (lf == -1 or crlf <= lf):
        return data[:crlf], data[crlf + 4 :]
    if lf != -1:
        return data[:lf], data[lf + 2 :]
    return data, b""


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
