"""Google's token, revocation and userinfo endpoints over aiohttp, with each failure classified.

Refreshing is one form POST (RFC 6749 §6), so it is done here, natively async, rather than with
google-auth's synchronous `Credentials.refresh`: that call sleeps through its own fixed retry loop in a
worker thread, with no way to bound it. The authorization-code exchange stays with google-auth-oauthlib
(see `bot.google.consent`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp

from bot.google.errors import Failure, GoogleError, gmail_error, token_error
from bot.google.gmail import (
    BATCH_SIZE,
    METADATA_QUERY,
    MailSummary,
    UnreadMail,
    batch_answers,
    batch_body,
    json_or_none,
    message_summary,
)

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
        lines = [f"GET {prefix}{quote(message_id, safe='')}?{METADATA_QUERY}" for message_id in ids]
        status, content_type, payload = await self._exchange(
            "POST",
            self.gmail_api_url + "batch/gmail/v1",
            data=batch_body(boundary, lines),
            headers={**auth, "Content-Type": f"multipart/mixed; boundary={boundary}"},
            what="Gmail batch",
        )
        if status != 200:
            raise gmail_error(status, json_or_none(payload))
        try:
            answers = batch_answers(content_type, payload, len(ids))
        except ValueError as error:
            raise GoogleError(
                Failure.UNEXPECTED, f"Gmail's batch answer could not be read: {error}"
            ) from None
        return [
            message_summary(message_id, answer_status, body)
            for message_id, (answer_status, body) in zip(ids, answers, strict=True)
        ]

    async def _call(self, method: str, url: str, *, what: str, **kwargs: Any) -> tuple[int, Any]:
        status, _, payload = await self._exchange(method, url, what=what, **kwargs)
        return status, json_or_none(payload)

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
