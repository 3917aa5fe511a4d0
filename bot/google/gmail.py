"""Gmail's answers read: the messages of a search, and the parts of a batch request (multipart/mixed).

Each part of a batch succeeds or fails on its own, and Gmail answers some parts of a large batch 429 ("Too
many concurrent requests for user"); like Google's own clients, the parts that worked are kept and only the
others are asked again.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit

from bot.google.client import GoogleClient, json_or_none
from bot.google.endpoints import GMAIL_API_URL
from bot.google.errors import Failure, GoogleError, gmail_error

log = logging.getLogger(__name__)

# Gmail takes up to 100 calls in one batch request, and advises against more than 50.
BATCH_SIZE = 50
# A part answered 429 or 5xx is asked again, in a smaller batch, until it has been asked this many times.
PART_ATTEMPTS = 4
# The longest Retry-After of a part that is waited for; a part asking for more is left out of this digest.
MAX_PART_WAIT = 30.0
METADATA_QUERY = "format=metadata&metadataHeaders=From&metadataHeaders=Subject"
_BOUNDARY = re.compile(r'boundary=(?:"(?P<quoted>[^"]+)"|(?P<bare>[^;\s]+))', re.IGNORECASE)
_ITEM_LABEL = re.compile(rb"^content-id:\s*<?response-item(\d+)>?\s*$", re.IGNORECASE | re.MULTILINE)
_STATUS_LINE = re.compile(rb"HTTP/\d(?:\.\d)?\s+(\d{3})")
_RETRY_AFTER = re.compile(rb"^retry-after:[ \t]*(.+?)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)


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
    unreadable: int = 0  # listed, but Gmail would not give their headers, even when asked again


@dataclass(frozen=True)
class PartAnswer:
    """Gmail's answer to one call of a batch: its status, its JSON body (None when not JSON), and the
    seconds it asks the caller to wait (Retry-After), if it says."""

    status: int
    body: Any
    retry_after: float | None = None


@dataclass(frozen=True)
class Summaries:
    """The messages a batch could read, in the order asked; how many were gone and how many unreadable."""

    messages: list[MailSummary]
    gone: int = 0
    unreadable: int = 0


def message_summary(message_id: str, status: int, body: Any) -> MailSummary | None:
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


def batch_answers(content_type: str, payload: bytes, expected: int) -> list[PartAnswer]:
    """The answer to each call of a batch, in the order of the requests.

    Google answers in order, and labels each answer `Content-ID: <response-item<n>>`; the labels are
    followed when present. ValueError when the answer is not a batch answer to `expected` calls.
    """
    found = _BOUNDARY.search(content_type)
    if not content_type.lower().startswith("multipart/") or found is None:
        raise ValueError(f"Content-Type {content_type[:80]!r} is not multipart")
    delimiter = b"--" + (found["quoted"] or found["bare"]).encode()
    answers: dict[int, PartAnswer] = {}
    sections = payload.split(delimiter)[1:]
    for position, section in enumerate(sections):
        if section.startswith(b"--"):
            break  # the close delimiter
        part_headers, inner = _head_and_rest(section.lstrip(b"\r\n"))
        label = _ITEM_LABEL.search(part_headers)
        answer_head, body = _head_and_rest(inner)
        status = _STATUS_LINE.match(answer_head)
        if status is None:
            raise ValueError(f"part {position + 1} holds no HTTP answer")
        retry_after = _RETRY_AFTER.search(answer_head)
        answers[int(label[1]) if label else position] = PartAnswer(
            int(status[1]),
            json_or_none(body.rstrip()),
            retry_seconds(retry_after[1].decode("latin-1")) if retry_after else None,
        )
    if sorted(answers) != list(range(expected)):
        raise ValueError(f"{len(answers)} answers for {expected} calls")
    return [answers[number] for number in range(expected)]


def retry_seconds(value: str, *, now: datetime | None = None) -> float | None:
    """A Retry-After value (seconds, or an HTTP date) as seconds from now; None when it is neither."""
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            return None
        seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    return max(seconds, 0.0) if seconds == seconds else None  # NaN is no answer


def _head_and_rest(data: bytes) -> tuple[bytes, bytes]:
    """Split a block of header lines from what follows the blank line after them (CRLF or LF)."""
    crlf, lf = data.find(b"\r\n\r\n"), data.find(b"\n\n")
    if crlf != -1 and (lf == -1 or crlf <= lf):
        return data[:crlf], data[crlf + 4 :]
    if lf != -1:
        return data[:lf], data[lf + 2 :]
    return data, b""


class Gmail:
    """The Gmail API calls of the briefing, through the shared Google client."""

    def __init__(
        self, google: GoogleClient, *, api_url: str = GMAIL_API_URL, part_attempts: int = PART_ATTEMPTS
    ) -> None:
        self.google = google
        self.api_url = api_url
        self.part_attempts = part_attempts

    async def unread_mail(self, access_token: str, *, query: str, limit: int) -> UnreadMail:
        """The newest messages matching `query` (sender, subject, snippet), at most `limit`, newest first.

        One search, then the messages' headers in one batch request (or a few, at BATCH_SIZE each).
        """
        status, body = await self.google.call(
            "GET",
            self.api_url + "gmail/v1/users/me/messages",
            params={"q": query, "maxResults": str(limit)},
            headers={"Authorization": f"Bearer {access_token}"},
            what="Gmail search",
        )
        if status != 200 or not isinstance(body, dict):
            raise gmail_error(status, body)
        ids = [
            str(item["id"]) for item in body.get("messages") or [] if isinstance(item, dict) and "id" in item
        ]
        read = await self.summaries(access_token, ids[:limit])
        estimate = body.get("resultSizeEstimate")
        shown = len(read.messages) + read.unreadable
        return UnreadMail(
            read.messages, max(shown, estimate if isinstance(estimate, int) else 0), read.unreadable
        )

    async def summaries(self, access_token: str, ids: list[str]) -> Summaries:
        """Sender, subject and snippet of each message, in order, in batch requests of BATCH_SIZE.

        The parts Gmail answers 429 or 5xx are asked again (waiting `backoff`, twice as long, …, or what the
        part's Retry-After asks, up to MAX_PART_WAIT), up to `part_attempts` times; the parts that still fail,
        or that fail otherwise (403), are counted as unreadable. A message deleted since it was listed (404)
        is left out. GoogleError when Gmail refuses the token (401), or when no part could be read because
        Gmail was not answering.
        """
        auth = {"Authorization": f"Bearer {access_token}"}
        read: dict[str, MailSummary | None] = {}
        pending: list[str] = list(ids)
        given_up: list[GoogleError] = []
        for attempt in range(1, self.part_attempts + 1):
            chunks = [pending[start : start + BATCH_SIZE] for start in range(0, len(pending), BATCH_SIZE)]
            # Most mailboxes need one batch: awaited as it is, without a task of its own for gather to run.
            answers = (
                [await self._batch(chunks[0], auth)]
                if len(chunks) == 1
                else await asyncio.gather(*(self._batch(chunk, auth) for chunk in chunks))
            )
            again: list[str] = []
            wait = self.google.backoff * 2 ** (attempt - 1)
            for message_id, outcome in zip(pending, (o for answer in answers for o in answer), strict=True):
                if not isinstance(outcome, _Failed):
                    read[message_id] = outcome
                    continue
                asks = outcome.retry_after or 0.0
                if outcome.error.transient and attempt < self.part_attempts and asks <= MAX_PART_WAIT:
                    again.append(message_id)
                    wait = max(wait, asks)
                else:
                    given_up.append(outcome.error)
            if not again:
                break
            log.info(
                "Gmail did not answer %d of %d parts of a batch (attempt %d of %d); asking again in %.1f s",
                len(again),
                len(pending),
                attempt,
                self.part_attempts,
                wait,
            )
            await asyncio.sleep(wait)
            pending = again
        messages = [summary for message_id in ids if (summary := read.get(message_id)) is not None]
        if given_up and not messages and all(error.transient for error in given_up):
            # Gmail is not answering now: a digest of nothing but unreadable mail would say little.
            raise given_up[-1]
        if given_up:
            log.warning(
                "%d of %d messages could not be read from Gmail: %s", len(given_up), len(ids), given_up[-1]
            )
        gone = sum(1 for message_id in ids if message_id in read and read[message_id] is None)
        return Summaries(messages, gone, len(given_up))

    async def _batch(self, ids: list[str], auth: dict[str, str]) -> list[MailSummary | _Failed | None]:
        prefix = urlsplit(self.api_url).path + "gmail/v1/users/me/messages/"
        boundary = "batch_" + secrets.token_hex(12)
        lines = [f"GET {prefix}{quote(message_id, safe='')}?{METADATA_QUERY}" for message_id in ids]
        status, content_type, payload = await self.google.request(
            "POST",
            self.api_url + "batch/gmail/v1",
            data=batch_body(boundary, lines),
            headers={**auth, "Content-Type": f"multipart/mixed; boundary={boundary}"},
            what="Gmail batch",
        )
        if status != 200:
            error = gmail_error(status, json_or_none(payload))
            if error.transient:
                return [_Failed(error)] * len(ids)  # asked again with the parts that failed on their own
            raise error
        try:
            answers = batch_answers(content_type, payload, len(ids))
        except ValueError as error:
            raise GoogleError(
                Failure.UNEXPECTED, f"Gmail's batch answer could not be read: {error}"
            ) from None
        return [_outcome(message_id, answer) for message_id, answer in zip(ids, answers, strict=True)]


@dataclass(frozen=True)
class _Failed:
    """A part of a batch that did not give its message."""

    error: GoogleError
    retry_after: float | None = None


def _outcome(message_id: str, answer: PartAnswer) -> MailSummary | _Failed | None:
    try:
        return message_summary(message_id, answer.status, answer.body)
    except GoogleError as error:
        if error.failure is Failure.UNAUTHORIZED:
            raise  # the token itself is refused: every part would be, and a refresh may heal it
        return _Failed(error, answer.retry_after)
