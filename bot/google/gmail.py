"""Gmail's answers read: the messages of a search, and the parts of a batch request (multipart/mixed)."""

from __future__ import annotations

import asyncio
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from bot.google.client import GoogleClient, json_or_none
from bot.google.endpoints import GMAIL_API_URL
from bot.google.errors import Failure, GoogleError, gmail_error

# Gmail takes up to 100 calls in one batch request, and advises against more than 50.
BATCH_SIZE = 50
METADATA_QUERY = "format=metadata&metadataHeaders=From&metadataHeaders=Subject"
_BOUNDARY = re.compile(r'boundary=(?:"(?P<quoted>[^"]+)"|(?P<bare>[^;\s]+))', re.IGNORECASE)
_ITEM_LABEL = re.compile(rb"^content-id:\s*<?response-item(\d+)>?\s*$", re.IGNORECASE | re.MULTILINE)
_STATUS_LINE = re.compile(rb"HTTP/\d(?:\.\d)?\s+(\d{3})")


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
        answers[int(label[1]) if label else position] = (int(status[1]), json_or_none(body.rstrip()))
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


class Gmail:
    """The Gmail API calls of the briefing, through the shared Google client."""

    def __init__(self, google: GoogleClient, *, api_url: str = GMAIL_API_URL) -> None:
        self.google = google
        self.api_url = api_url

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
