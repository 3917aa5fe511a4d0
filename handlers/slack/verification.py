"""Slack's HTTP requests, checked before anything reads them: the signature over the raw bytes (slack_sdk's
SignatureVerifier), then the body's form, then whether this very request was already taken (a replay)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier

from storage.errors import DATABASE_OUTAGE
from storage.slack_deliveries import SlackDeliveries

log = logging.getLogger(__name__)

# Slack's window: a request whose timestamp is further from now than this is refused (as SignatureVerifier does).
MAX_AGE_SECONDS = 5 * 60
# The content types Slack posts: forms (slash commands; interactions as a JSON `payload` field) and JSON (events).
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
# ASCII digits only: int() would also take " 1", "+1", "1_0" and other scripts' digits.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")


class Refused(Exception):
    """Not a request signed by Slack within its window: answered 401."""


class Malformed(Exception):
    """Signed, but not a body Slack sends: answered 400."""


@dataclass(frozen=True)
class Signed:
    """A request whose signature checked out."""

    timestamp: int
    signature: str

    @property
    def key(self) -> bytes:
        """What the replay memory keeps of it: a hash, not the signature itself."""
        return hashlib.sha256(f"{self.timestamp}:{self.signature}".encode()).digest()


def verify(verifier: SignatureVerifier, raw: bytes, headers: Mapping[str, str]) -> Signed:
    """The request's signature, if Slack made it over these very bytes less than 5 minutes ago; else Refused."""
    timestamp = headers.get("X-Slack-Request-Timestamp")
    signature = headers.get("X-Slack-Signature")
    if timestamp is None or signature is None:
        raise Refused("no X-Slack-Signature or X-Slack-Request-Timestamp")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise Refused("X-Slack-Request-Timestamp is not a number")
    if abs(verifier.clock.now() - int(timestamp)) > MAX_AGE_SECONDS:
        raise Refused("X-Slack-Request-Timestamp is more than 5 minutes from now (check this host's clock)")
    # The form first: hmac.compare_digest raises on a str that is not ASCII.
    if not _SIGNATURE.fullmatch(signature) or not _matches(verifier, raw, timestamp, signature):
        raise Refused("the signature does not match (check SLACK_SIGNING_SECRET)")
    return Signed(int(timestamp), signature)


def _matches(verifier: SignatureVerifier, raw: bytes, timestamp: str, signature: str) -> bool:
    try:
        return verifier.is_valid(raw, timestamp, signature)
    except UnicodeDecodeError:
        # SignatureVerifier decodes the body to sign it again, while Slack signs the bytes, whatever they are: a
        # body that is not UTF-8 is checked over its bytes, so that a signed one (400) and a forged one (401)
        # are told apart.
        base = b"v0:" + timestamp.encode() + b":" + raw
        digest = hmac.new(verifier.signing_secret.encode(), base, hashlib.sha256).hexdigest()
        return hmac.compare_digest("v0=" + digest, signature)


def bolt_request(raw: bytes, request: web.Request) -> AsyncBoltRequest:
    """The signed body as Bolt's request, once it is one Slack sends; else Malformed."""
    if request.content_type not in (FORM, JSON):
        raise Malformed("the content type is not one Slack sends")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("the body is not UTF-8") from None
    try:
        # Bolt parses the body (and a form's `payload` field) as it is built.
        built = AsyncBoltRequest(body=text, query=request.query_string, headers=dict(request.headers))
    except ValueError:
        raise Malformed("its JSON does not parse") from None
    except (TypeError, AttributeError, KeyError):
        # What Bolt's reading of the body raises on JSON of another shape than Slack's (a list, a number
        # where Slack sends an object).
        raise Malformed("its JSON is not of the shape Slack sends") from None
    if not isinstance(built.body, dict):
        raise Malformed("its JSON is not an object")
    return built


async def first_time(deliveries: SlackDeliveries, signed: Signed) -> bool:
    """Remember the request: False when it was already taken (a replay). With the database out of reach, the
    request is let through unchecked, so its listener answers as it does in an outage (which needs the
    database for anything it changes) rather than Slack showing the user an error of its own."""
    try:
        return await deliveries.first_request(signed.key, timestamp=signed.timestamp)
    except DATABASE_OUTAGE as error:
        log.warning(
            "A Slack request could not be checked for a replay: the database could not be reached (%s)",
            type(error).__name__,
        )
        return True
