"""The briefing's Gmail fetch: one search, then the messages' headers in batch requests, against the fake
Google over HTTP; and the reading of batch answers shaped as Gmail sends them."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from bot.google.client import GoogleClient
from bot.google.errors import Failure, GoogleError
from bot.google.gmail import (
    BATCH_SIZE,
    MAX_PART_WAIT,
    PART_ATTEMPTS,
    Gmail,
    PartAnswer,
    batch_answers,
    retry_seconds,
)
from tests.fakes.google import FakeGoogle

READONLY = "https://www.googleapis.com/auth/gmail.readonly"
QUERY = "is:unread newer_than:1d"
MESSAGES = "/gmail/v1/users/me/messages"


@pytest.fixture
async def google(fake_google: FakeGoogle) -> AsyncIterator[Gmail]:
    async with aiohttp.ClientSession() as session:
        client = GoogleClient(
            session,
            token_uri=fake_google.token_uri,
            revoke_uri=fake_google.revoke_uri,
            userinfo_uri=fake_google.userinfo_uri,
            backoff=0.01,  # the waits between attempts, which these tests need not sit through
        )
        yield Gmail(client, api_url=fake_google.gmail_api_url)


def mailbox(fake: FakeGoogle, email: str, count: int) -> list[str]:
    """`count` unread messages, newest first (message 0 is the newest); their ids in that order."""
    return [
        fake.add_message(
            email,
            sender=f"Sender {n} <s{n}@example.com>",
            subject=f"Subject {n}",
            snippet=f"Snippet {n}",
            age=timedelta(minutes=10 + n),
        )
        for n in range(count)
    ]


async def test_one_search_and_one_batch_for_the_newest_messages(
    google: Gmail, fake_google: FakeGoogle
) -> None:
    token = fake_google.issue_access_token("a@example.com", [READONLY])
    ids = mailbox(fake_google, "a@example.com", 4)
    fake_google.add_message("a@example.com", sender="Old", subject="Old", snippet="-", age=timedelta(days=2))

    unread = await google.unread_mail(token, query=QUERY, limit=3)

    assert [m.id for m in unread.messages] == ids[:3] and unread.total == 4
    first = unread.messages[0]
    assert (first.sender, first.subject, first.snippet) == (
        "Sender 0 <s0@example.com>",
        "Subject 0",
        "Snippet 0",
    )
    assert first.received_at is not None
    outer = [call for call in fake_google.calls if not call.batch]
    assert [call.path for call in outer] == [MESSAGES, "/batch/gmail/v1"]
    inner = [call for call in fake_google.calls if call.batch]
    assert [call.path for call in inner] == [f"{MESSAGES}/{message_id}" for message_id in ids[:3]]
    assert all(call.query.get("format") == "metadata" for call in inner)


async def test_more_messages_than_one_batch_takes_go_in_several(
    google: Gmail, fake_google: FakeGoogle
) -> None:
    token = fake_google.issue_access_token("b@example.com", [READONLY])
    ids = mailbox(fake_google, "b@example.com", BATCH_SIZE + 10)

    unread = await google.unread_mail(token, query=QUERY, limit=100)

    assert [m.id for m in unread.messages] == ids  # in the search's order, across the batches
    assert len(fake_google.calls_to("/batch/gmail/v1")) == 2


async def test_no_unread_mail_makes_no_batch(google: Gmail, fake_google: FakeGoogle) -> None:
    token = fake_google.issue_access_token("c@example.com", [READONLY])

    unread = await google.unread_mail(token, query=QUERY, limit=10)

    assert unread.messages == [] and unread.total == 0
    assert fake_google.calls_to("/batch/gmail/v1") == []


async def test_a_message_gone_since_the_search_answers_none(google: Gmail, fake_google: FakeGoogle) -> None:
    token = fake_google.issue_access_token("d@example.com", [READONLY])
    (kept,) = mailbox(fake_google, "d@example.com", 1)

    found = await google.summaries(token, ["0000deleted0000", kept])

    assert [m.id for m in found.messages] == [kept] and (found.gone, found.unreadable) == (1, 0)
    assert [call.status for call in fake_google.calls if call.batch] == [404, 200]


@pytest.mark.parametrize(
    ("status", "failure"),
    [(401, Failure.UNAUTHORIZED), (403, Failure.INSUFFICIENT_SCOPE), (429, Failure.TRANSIENT)],
)
async def test_a_refused_batch_is_classified_like_any_gmail_answer(
    google: Gmail, fake_google: FakeGoogle, status: int, failure: Failure
) -> None:
    token = fake_google.issue_access_token("e@example.com", [READONLY])
    mailbox(fake_google, "e@example.com", 2)
    fake_google.fail_gmail_batch(status, times=PART_ATTEMPTS)  # a 429 is asked again, and again refused

    with pytest.raises(GoogleError) as caught:
        await google.unread_mail(token, query=QUERY, limit=10)

    assert caught.value.failure is failure and caught.value.status == status
    assert token not in str(caught.value)


async def test_a_batch_keeps_the_parts_that_worked_and_asks_again_for_those_gmail_was_too_busy_for(
    google: Gmail, fake_google: FakeGoogle
) -> None:
    # 20 messages, 6 of whose parts fail (30%): two 429s and two 500s that heal when asked again, a 403, and
    # a 429 that never heals.
    token = fake_google.issue_access_token("f@example.com", [READONLY])
    ids = mailbox(fake_google, "f@example.com", 20)
    fake_google.fail_gmail_message(ids[1], 429)
    fake_google.fail_gmail_message(ids[4], 429)
    fake_google.fail_gmail_message(ids[7], 500, times=2)
    fake_google.fail_gmail_message(ids[10], 503, times=2)
    fake_google.fail_gmail_message(ids[13], 403)
    fake_google.fail_gmail_message(ids[16], 429, times=PART_ATTEMPTS + 5)

    unread = await google.unread_mail(token, query=QUERY, limit=20)

    lost = {ids[13], ids[16]}
    assert [m.id for m in unread.messages] == [i for i in ids if i not in lost]  # in order, retried ones too
    assert (unread.total, unread.unreadable) == (20, 2)
    # One batch of 20, then only the parts that were asked again: 5, then 3, then the one that never heals.
    batches = [call for call in fake_google.calls if not call.batch and call.path == "/batch/gmail/v1"]
    parts = [call for call in fake_google.calls if call.batch]
    assert len(batches) == PART_ATTEMPTS and len(parts) == 20 + 5 + 3 + 1
    assert [call.path.rsplit("/", 1)[1] for call in parts].count(ids[13]) == 1  # a 403 is not asked again


async def test_a_parts_retry_after_is_waited_for_and_one_asking_too_much_is_left_out(
    google: Gmail, fake_google: FakeGoogle, caplog: pytest.LogCaptureFixture
) -> None:
    token = fake_google.issue_access_token("g@example.com", [READONLY])
    ids = mailbox(fake_google, "g@example.com", 3)
    fake_google.fail_gmail_message(ids[0], 429, retry_after=0.3)
    fake_google.fail_gmail_message(ids[1], 429, retry_after=MAX_PART_WAIT + 1)

    with caplog.at_level(logging.INFO, logger="bot.google.gmail"):
        unread = await google.unread_mail(token, query=QUERY, limit=3)

    assert [m.id for m in unread.messages] == [ids[0], ids[2]] and unread.unreadable == 1
    assert "asking again in 0.3 s" in caplog.text  # the part's Retry-After, not the 0.01 s backoff
    assert len(fake_google.calls_to(f"{MESSAGES}/{ids[1]}")) == 1
    assert token not in caplog.text


async def test_parts_that_gmail_never_answers_make_the_fetch_unavailable_not_an_empty_digest(
    google: Gmail, fake_google: FakeGoogle
) -> None:
    token = fake_google.issue_access_token("h@example.com", [READONLY])
    ids = mailbox(fake_google, "h@example.com", 2)
    for message_id in ids:
        fake_google.fail_gmail_message(message_id, 503, times=PART_ATTEMPTS)

    with pytest.raises(GoogleError) as caught:
        await google.unread_mail(token, query=QUERY, limit=2)

    assert caught.value.failure is Failure.TRANSIENT


async def test_parts_refused_for_good_are_counted_and_a_refused_token_is_raised(
    google: Gmail, fake_google: FakeGoogle
) -> None:
    token = fake_google.issue_access_token("i@example.com", [READONLY])
    ids = mailbox(fake_google, "i@example.com", 2)
    for message_id in ids:
        fake_google.fail_gmail_message(message_id, 403)

    unread = await google.unread_mail(token, query=QUERY, limit=2)

    assert (unread.messages, unread.total, unread.unreadable) == ([], 2, 2)
    fake_google.fail_gmail_message(ids[1], 401)
    with pytest.raises(GoogleError) as caught:
        await google.unread_mail(token, query=QUERY, limit=2)
    assert caught.value.failure is Failure.UNAUTHORIZED


# Gmail's answers, as it sends them: part headers, then the embedded HTTP answer with headers of its own.
GOOGLE_SHAPED = (
    b"--batch_7Xp52oGIwpA_AAEAc7ERnGU\r\n"
    b"Content-Type: application/http\r\n"
    b"Content-ID: <response-item1>\r\n"
    b"\r\n"
    b"HTTP/1.1 404 Not Found\r\n"
    b"Vary: Origin\r\n"
    b"Content-Type: application/json; charset=UTF-8\r\n"
    b"\r\n"
    b'{"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND"}}\r\n'
    b"--batch_7Xp52oGIwpA_AAEAc7ERnGU\r\n"
    b"Content-Type: application/http\r\n"
    b"Content-Transfer-Encoding: binary\r\n"
    b"Content-ID: <response-item0>\r\n"
    b"\r\n"
    b"HTTP/1.1 200 OK\r\n"
    b'ETag: "A-DdBGA6g-wV4rIZCu5Hcm3JQpY/w2hzEg9kqXFH7AEJ-oSc-y10HNQ"\r\n'
    b"Content-Type: application/json; charset=UTF-8\r\n"
    b"Content-Length: 50\r\n"
    b"\r\n"
    b'{"id": "152d10540c21bd07", "snippet": "Likewise."}\r\n'
    b"--batch_7Xp52oGIwpA_AAEAc7ERnGU\r\n"
    b"Content-Type: application/http\r\n"
    b"Content-ID: <response-item2>\r\n"
    b"\r\n"
    b"HTTP/1.1 429 Too Many Requests\r\n"
    b"Retry-After: 7\r\n"
    b"Content-Type: application/json; charset=UTF-8\r\n"
    b"\r\n"
    b'{"error": {"code": 429, "message": "Too many concurrent requests for user.", "status": "RESOURCE_EXHAUSTED"}}\r\n'
    b"--batch_7Xp52oGIwpA_AAEAc7ERnGU\r\n"
    b"Content-Type: application/http\r\n"
    b"Content-ID: <response-item3>\r\n"
    b"\r\n"
    b"HTTP/1.1 403 Access Not Configured\r\n"
    b"Content-Type: application/json; charset=UTF-8\r\n"
    b"\r\n"
    b'{"error": {"code": 403, "message": "Access Not Configured"}}\r\n'
    b"--batch_7Xp52oGIwpA_AAEAc7ERnGU--\r\n"
)
CONTENT_TYPE = "multipart/mixed; boundary=batch_7Xp52oGIwpA_AAEAc7ERnGU"


def test_answers_are_put_back_in_the_order_of_the_calls_by_their_content_id() -> None:
    answers = batch_answers(CONTENT_TYPE, GOOGLE_SHAPED, 4)

    assert answers[0] == PartAnswer(200, {"id": "152d10540c21bd07", "snippet": "Likewise."})
    assert answers[1].status == 404 and answers[1].body["error"]["status"] == "NOT_FOUND"
    assert (answers[2].status, answers[2].retry_after) == (429, 7.0)
    assert (answers[3].status, answers[3].retry_after) == (403, None)


def test_retry_after_is_seconds_or_an_http_date() -> None:
    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    assert retry_seconds("7", now=now) == 7.0
    assert retry_seconds("Tue, 01 Dec 2026 09:00:30 GMT", now=now) == 30.0
    assert retry_seconds("Tue, 01 Dec 2026 08:00:00 GMT", now=now) == 0.0  # already past
    assert retry_seconds("soon", now=now) is None and retry_seconds("nan", now=now) is None


def test_answers_without_content_ids_are_taken_in_order_with_bare_newlines_and_a_quoted_boundary() -> None:
    payload = (
        b"--b\nContent-Type: application/http\n\nHTTP/1.1 200 OK\nContent-Type: application/json\n\n"
        b'{"id": "1"}\n--b\nContent-Type: application/http\n\nHTTP/1.1 503 Service Unavailable\n\n'
        b"not json\n--b--\n"
    )

    assert batch_answers('multipart/mixed; boundary="b"', payload, 2) == [
        PartAnswer(200, {"id": "1"}),
        PartAnswer(503, None),
    ]


@pytest.mark.parametrize(
    ("content_type", "payload", "problem"),
    [
        ("application/json; charset=UTF-8", b'{"messages": []}', "is not multipart"),
        ("multipart/mixed", GOOGLE_SHAPED, "is not multipart"),  # no boundary
        (CONTENT_TYPE, GOOGLE_SHAPED.replace(b"HTTP/1.1 404 Not Found", b"garbage"), "holds no HTTP answer"),
        (CONTENT_TYPE, GOOGLE_SHAPED.replace(b"response-item1", b"response-item0"), "3 answers for 4 calls"),
    ],
)
def test_what_is_not_a_batch_answer_to_these_calls_is_refused(
    content_type: str, payload: bytes, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        batch_answers(content_type, payload, 4)
