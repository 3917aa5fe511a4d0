"""POST /slack/events over real HTTP: each request is checked before anything reads it (the signature over the
raw bytes, then the body's form), a replayed request takes effect once, an event Slack delivers again runs
once, and no request body ever reaches a log line."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.async_app import AsyncApp

from bot.appkeys import BOLT, SERVICES
from bot.slack.blocks.elements import DISCONNECT_ACTION, NUDGE_ALL_ACTION
from storage import audit
from storage.models import Status, TokenGrant
from tests.fakes.google import FakeGoogle
from tests.fakes.slack import (
    FORM_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    FakeSlack,
    app_home_opened,
    ephemeral_actions_body,
    event_body,
    sign,
    slash_command_body,
)
from tests.helpers import SECRET, DatabaseProxy, Serve, eventually, healthy, settled

ADMIN = "UADMIN1"
REPLAYS = 4
# Every body below carries it (where Slack puts a response URL): it must never reach a log line.
MARKER = "body-marker-7f3a"
RESPONSE_URL = f"https://hooks.slack.com/commands/T0TEAM/1/{MARKER}"


async def send(app: web.Application, body: bytes, headers: dict[str, str]) -> tuple[int, str, str]:
    """POST these very bytes and headers to /slack/events: status, content type and body of the answer."""
    url = app[SERVICES].links.public_base_url + "/slack/events"
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as response:
        return response.status, response.content_type, await response.text()


def reaching_listeners(app: web.Application) -> list[str]:
    """The type of every request that gets past the checks to Bolt's listeners, recorded as it arrives."""
    reached: list[str] = []
    bolt: AsyncApp = app[BOLT]

    async def record(body: dict[str, Any], next: Callable[[], Any]) -> None:
        reached.append(str(body.get("type") or body.get("command")))
        await next()

    bolt.middleware(record)
    return reached


def signature(timestamp: str, body: bytes, secret: str = SECRET) -> str:
    """Slack's signature over any timestamp text and any bytes (sign() takes a number)."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def lines_of(caplog: pytest.LogCaptureFixture, logger: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == logger]


def assert_quiet(caplog: pytest.LogCaptureFixture) -> None:
    """No traceback, and nothing of a request body, in any log line."""
    assert [record.getMessage() for record in caplog.records if record.exc_info] == []
    assert "Traceback" not in caplog.text
    assert MARKER not in caplog.text
    assert "Invalid request signature" not in caplog.text  # Bolt's line, which carries the body


async def expired_account(app: web.Application, slack_user_id: str) -> None:
    account = await app[SERVICES].accounts.store_tokens(
        grant=TokenGrant("ya29.stored", f"1//{slack_user_id}", None, []),
        actor="test",
        slack_user_id=slack_user_id,
        metadata={"email": f"{slack_user_id.lower()}@gmail.com"},
        status=Status.HEALTHY,
    )
    await app[SERVICES].accounts.set_status(account.id, status=Status.EXPIRED, cause="expired", actor="test")


# ---- A signed request takes effect once ----------------------------------------------------------------------


async def test_a_replayed_nudge_all_dms_once_and_is_audited_once(
    serve: Serve, fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    app = await serve(ADMIN_SLACK_USER_IDS=ADMIN)
    fake_slack.add_user(ADMIN, locale="en-US")
    for user in ("UEXP1", "UEXP2"):
        fake_slack.add_user(user, locale="en-US")
        await expired_account(app, user)
    reached = reaching_listeners(app)
    click = ephemeral_actions_body(
        NUDGE_ALL_ACTION,
        user_id=ADMIN,
        value="unhealthy",
        response_url=fake_slack.response_url(MARKER),
        block_id="admin_actions",
    )
    headers = sign(click, SECRET, content_type=FORM_CONTENT_TYPE)

    # The click and its replays at once, as a replica-spanning attacker would send them.
    answers = await asyncio.gather(*(send(app, click, headers) for _ in range(1 + REPLAYS)))
    await eventually(lambda: len(fake_slack.responses) == 1)

    assert [status for status, _, _ in answers] == [200] * (1 + REPLAYS)
    assert sorted(text for _, _, text in answers) == [""] * (1 + REPLAYS)
    assert reached == ["block_actions"]  # the replays reached no listener
    assert sorted(call.args["channel"] for call in fake_slack.calls_to("chat.postMessage")) == [
        "UEXP1",
        "UEXP2",
    ]
    assert fake_slack.calls_to("chat.update") == []
    nudged = [e for e in await audit.recent(app[SERVICES].pool) if e.action == "admin.nudged_all"]
    assert len(nudged) == 1
    replays = [r for r in lines_of(caplog, "handlers.slack") if "replay" in r.getMessage()]
    assert len(replays) == REPLAYS and {r.levelno for r in replays} == {logging.INFO}
    assert_quiet(caplog)


async def test_a_replayed_disconnect_revokes_once_and_is_audited_once(
    serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle, caplog: pytest.LogCaptureFixture
) -> None:
    app = await serve()
    fake_slack.add_user("U0OK", locale="en-US")
    account = await healthy(app, fake_google, "U0OK")
    audited_before = len(await audit.recent(app[SERVICES].pool, account_id=account.id))
    reached = reaching_listeners(app)
    click = ephemeral_actions_body(
        DISCONNECT_ACTION, user_id="U0OK", value=str(account.id), response_url=fake_slack.response_url(MARKER)
    )
    headers = sign(click, SECRET, content_type=FORM_CONTENT_TYPE)

    answers = [await send(app, click, headers) for _ in range(1 + REPLAYS)]
    await eventually(lambda: len(fake_slack.responses) == 1)

    assert [status for status, _, _ in answers] == [200] * (1 + REPLAYS)
    assert reached == ["block_actions"]
    assert fake_google.revoked == {"1//U0OK"}
    events = await audit.recent(app[SERVICES].pool, account_id=account.id)
    assert len(events) - audited_before == 1
    assert events[0].action == "tokens.cleared"
    assert (await app[SERVICES].accounts.get(account.id)).status is Status.DISCONNECTED
    assert_quiet(caplog)


async def test_a_replayed_slash_command_answers_once(
    serve: Serve, fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    app = await serve()
    fake_slack.add_user("U0ASK", locale="en-US")
    reached = reaching_listeners(app)
    command = slash_command_body(user_id="U0ASK", response_url=RESPONSE_URL)
    headers = sign(command, SECRET, content_type=FORM_CONTENT_TYPE)

    answers = [await send(app, command, headers) for _ in range(1 + REPLAYS)]
    await settled(fake_slack, "chat.postEphemeral")

    assert [status for status, _, _ in answers] == [200] * (1 + REPLAYS)
    assert reached == ["/gmail-status"]
    assert len(fake_slack.calls_to("chat.postEphemeral")) == 1
    again = slash_command_body(user_id="U0ASK")  # typed again: a new request, with a trigger_id of its own
    assert (await send(app, again, sign(again, SECRET, content_type=FORM_CONTENT_TYPE)))[0] == 200
    await settled(fake_slack, "chat.postEphemeral", 2)
    assert_quiet(caplog)


async def test_two_replicas_on_one_database_share_what_was_taken(
    serve: Serve, fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = await serve(), await serve()
    fake_slack.add_user("U0TWO", locale="en-US")
    reached_first, reached_second = reaching_listeners(first), reaching_listeners(second)
    command = slash_command_body(user_id="U0TWO", response_url=RESPONSE_URL)
    headers = sign(command, SECRET, content_type=FORM_CONTENT_TYPE)
    event = event_body(app_home_opened("U0TWO"))

    answers = [
        await send(first, command, headers),
        await send(second, command, headers),
        await send(first, event, sign(event, SECRET, content_type=JSON_CONTENT_TYPE)),
        await send(
            second,
            event,
            {
                **sign(event, SECRET, int(time.time()) + 1, content_type=JSON_CONTENT_TYPE),
                "X-Slack-Retry-Num": "1",
            },
        ),
    ]
    await settled(fake_slack, "chat.postEphemeral")
    await settled(fake_slack, "views.publish")

    assert [(status, text) for status, _, text in answers] == [(200, "")] * 4
    assert reached_first == ["/gmail-status", "event_callback"] and reached_second == []
    assert len(fake_slack.calls_to("chat.postEphemeral")) == 1
    assert len(fake_slack.calls_to("views.publish")) == 1
    assert_quiet(caplog)


# ---- An event Slack delivers again runs once -----------------------------------------------------------------


async def test_a_retried_app_home_event_publishes_once(
    serve: Serve, fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    app = await serve()
    fake_slack.add_user("U0HOME", locale="en-US")
    reached = reaching_listeners(app)
    event = event_body(app_home_opened("U0HOME"))
    now = int(time.time())

    first = await send(app, event, sign(event, SECRET, now, content_type=JSON_CONTENT_TYPE))
    await settled(fake_slack, "views.publish")
    # Slack's retries: the same body, signed anew each time, numbered.
    retries = [
        await send(
            app,
            event,
            {
                **sign(event, SECRET, now + attempt, content_type=JSON_CONTENT_TYPE),
                "X-Slack-Retry-Num": str(attempt),
                "X-Slack-Retry-Reason": "http_timeout",
            },
        )
        for attempt in (1, 2, 3)
    ]

    assert first[0] == 200 and [(status, text) for status, _, text in retries] == [(200, "")] * 3
    assert reached == ["event_callback"]
    assert len(fake_slack.calls_to("views.publish")) == 1
    again = [r for r in lines_of(caplog, "handlers.slack.redelivery") if "delivered again" in r.getMessage()]
    assert len(again) == 3 and {r.levelno for r in again} == {logging.INFO}

    # Another opening of the tab is another event; a retry whose first delivery never arrived is handled.
    other, lost = event_body(app_home_opened("U0HOME")), event_body(app_home_opened("U0HOME"))
    await send(app, other, sign(other, SECRET, content_type=JSON_CONTENT_TYPE))
    await send(app, lost, {**sign(lost, SECRET, content_type=JSON_CONTENT_TYPE), "X-Slack-Retry-Num": "1"})
    await settled(fake_slack, "views.publish", 3)
    assert reached == ["event_callback"] * 3
    assert_quiet(caplog)


# ---- Checked before anything reads the body ------------------------------------------------------------------

GARBAGE = b"\x00\xff\xfe{{garbage " + MARKER.encode()
NOT_UTF8 = b"payload=%7B%22response_url%22%3A%22" + MARKER.encode() + b"%22\xff\xfe%7D"
BAD_JSON = b"payload=%7B%22response_url%22%3A%22" + MARKER.encode() + b"%22%2C"
JSON_ARRAY = b"payload=%5B%22" + MARKER.encode() + b"%22%5D"
BAD_EVENT_JSON = b'{"type": "event_callback", "response_url": "' + MARKER.encode() + b'", '


def _command() -> bytes:
    return slash_command_body(user_id="U0EVE", response_url=RESPONSE_URL)


def _signed(body: bytes, content_type: str | None = FORM_CONTENT_TYPE, **kwargs: Any) -> dict[str, str]:
    return sign(body, SECRET, content_type=content_type, **kwargs)


def _timestamped(text: str, body: bytes) -> dict[str, str]:
    headers = {"X-Slack-Request-Timestamp": text, "X-Slack-Signature": signature(text, body)}
    return {**headers, "Content-Type": FORM_CONTENT_TYPE}


# name: (body, its headers (made when the test runs: timestamps are now), status, reason in the log line)
REFUSED: dict[str, tuple[Callable[[], bytes], Callable[[bytes], dict[str, str]], int, str]] = {
    "unsigned garbage": (lambda: GARBAGE, lambda body: {}, 401, "no X-Slack-Signature"),
    "timestamp without a signature": (
        _command,
        lambda body: {"X-Slack-Request-Timestamp": str(int(time.time())), "Content-Type": FORM_CONTENT_TYPE},
        401,
        "no X-Slack-Signature",
    ),
    "signed with another secret": (
        _command,
        lambda body: {**_signed(body), **sign(body, "another-signing-secret-0123456789")},
        401,
        "signature does not match",
    ),
    "a signature that is not hex": (
        _command,
        lambda body: {**_signed(body), "X-Slack-Signature": "v0=" + "é" * 64},
        401,
        "signature does not match",
    ),
    "non-numeric timestamp": (_command, lambda body: _timestamped("12ab", body), 401, "not a number"),
    "timestamp in other digits": (
        _command,
        lambda body: _timestamped("١٧٩٠٠٠٠٠٠٠", body),
        401,
        "not a number",
    ),
    "timestamp 5 minutes and 1 s old": (
        _command,
        lambda body: _signed(body, timestamp=int(time.time()) - 301),
        401,
        "more than 5 minutes",
    ),
    "timestamp 5 minutes and 1 s ahead": (
        _command,
        lambda body: _signed(body, timestamp=int(time.time()) + 301),
        401,
        "more than 5 minutes",
    ),
    "invalid UTF-8, unsigned": (
        lambda: NOT_UTF8,
        lambda body: {"Content-Type": FORM_CONTENT_TYPE},
        401,
        "no X-",
    ),
    "invalid UTF-8, forged": (
        lambda: NOT_UTF8,
        lambda body: sign(body, "another-signing-secret-0123456789", content_type=FORM_CONTENT_TYPE),
        401,
        "signature does not match",
    ),
    "bad JSON in payload, unsigned": (lambda: BAD_JSON, lambda body: {}, 401, "no X-Slack-Signature"),
    "invalid UTF-8, signed": (lambda: NOT_UTF8, _signed, 400, "not UTF-8"),
    "bad JSON in payload, signed": (lambda: BAD_JSON, _signed, 400, "JSON does not parse"),
    "a JSON list in payload, signed": (lambda: JSON_ARRAY, _signed, 400, "JSON is not of the shape"),
    "bad JSON event, signed": (
        lambda: BAD_EVENT_JSON,
        lambda body: _signed(body, JSON_CONTENT_TYPE),
        400,
        "JSON does not parse",
    ),
    "unknown content type, signed": (_command, lambda body: _signed(body, "text/plain"), 400, "content type"),
    "no content type, signed": (_command, lambda body: _signed(body, None), 400, "content type"),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_a_request_that_is_not_slacks_or_cannot_be_read_is_refused_in_one_quiet_line(
    serve: Serve, fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    make_body, make_headers, expected, reason = REFUSED[case]
    app = await serve()
    reached = reaching_listeners(app)
    body = make_body()

    status, content_type, text = await send(app, body, make_headers(body))

    assert status == expected
    assert content_type == "text/plain" and len(text) < 80 and MARKER not in text
    assert reached == [] and fake_slack.calls == []
    (line,) = [r for r in caplog.records if r.name.startswith(("handlers", "slack_bolt", "aiohttp.server"))]
    assert line.name == "handlers.slack" and f"({expected})" in line.getMessage()
    assert reason in line.getMessage()
    assert_quiet(caplog)
    assert await app[SERVICES].pool.fetchval("SELECT count(*) FROM slack_request_replays") == 0


async def test_a_refused_request_does_not_use_up_the_real_one(serve: Serve, fake_slack: FakeSlack) -> None:
    app = await serve()
    fake_slack.add_user("U0REAL", locale="en-US")
    command = slash_command_body(user_id="U0REAL")
    headers = sign(command, SECRET, content_type=FORM_CONTENT_TYPE)

    tampered = command.replace(b"U0REAL", b"U0EVIL")
    assert (await send(app, tampered, headers))[0] == 401  # another body under the real signature
    assert (await send(app, command, headers))[0] == 200

    (card,) = await settled(fake_slack, "chat.postEphemeral")
    assert card.args["user"] == "U0REAL"


# ---- When the database is down -------------------------------------------------------------------------------


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[DatabaseProxy]:
    line = DatabaseProxy(database_url)
    await line.start()
    yield line
    await line.cut()


async def test_during_an_outage_requests_are_answered_as_in_any_outage(
    serve: Serve, proxy: DatabaseProxy, fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    app = await serve(DATABASE_URL=proxy.url)
    fake_slack.add_user("U0DOWN", locale="en-US")
    event = event_body(app_home_opened("U0DOWN"))

    await proxy.cut()
    status, _, _ = await send(app, event, sign(event, SECRET, content_type=JSON_CONTENT_TYPE))
    # The listener meets the outage and reports it as it always has (an event is only logged).
    await eventually(lambda: bool(lines_of(caplog, "handlers.slack.errors")))
    await proxy.start()

    assert status == 200  # not a 500, nor a 503 that Slack would show as an error of its own
    unchecked = [
        record.getMessage()
        for record in caplog.records
        if record.name in ("handlers.slack.verification", "handlers.slack.redelivery")
    ]
    assert len(unchecked) == 2 and all("database could not be reached" in line for line in unchecked)
    assert MARKER not in caplog.text
