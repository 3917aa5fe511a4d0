"""The fake receiver's signature check can fail: a tampered body, another secret, a stale or missing
signature are all refused, and the bot's own check agrees with it."""

from __future__ import annotations

import time

import pytest

from bot.webhooks.signing import signature_header, verify
from tests.fakes.webhooks import signature_valid

SECRET = "whsec_test-secret"
BODY = b'{"id":"e1","type":"connection.broken"}'


def test_a_signed_body_passes() -> None:
    header = signature_header(SECRET, BODY)
    assert signature_valid(SECRET, BODY, header) and verify(SECRET, BODY, header)


@pytest.mark.parametrize(
    ("secret", "body", "header"),
    [
        (SECRET, BODY.replace(b"broken", b"restored"), signature_header(SECRET, BODY)),  # tampered body
        ("whsec_another", BODY, signature_header(SECRET, BODY)),
        (SECRET, BODY, signature_header(SECRET, BODY, timestamp=int(time.time()) - 3600)),  # replayed later
        (SECRET, BODY, ""),
        (SECRET, BODY, "t=abc,v1=00"),
        (SECRET, BODY, signature_header(SECRET, BODY).replace("t=", "t=1")),  # timestamp changed
    ],
)
def test_anything_else_fails(secret: str, body: bytes, header: str) -> None:
    assert not signature_valid(secret, body, header)
    assert not verify(secret, body, header)
