"""Signed values for the consent flow (links, the identity cookie): `<payload>.<signature>`, both base64url.

The payload is compact JSON, the signature an HMAC-SHA256 under a key derived from SECRET_KEY and a label of
the value's own, so a value of one kind is never accepted as another. The stdlib's hmac is all this needs: a
JWT library would add algorithm negotiation and headers to a value only this bot reads.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from typing import Any

_B64URL = re.compile(r"[A-Za-z0-9_-]+")


class Sealer:
    """Signs JSON payloads and opens only genuine ones, under a key of its own label."""

    def __init__(self, secret_key: str, label: bytes) -> None:
        self._key = hmac.new(secret_key.encode(), label, hashlib.sha256).digest()

    def seal(self, payload: dict[str, Any]) -> str:
        """The signed value of `payload` (deterministic: the same payload gives the same value)."""
        body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        return f"{body}.{_b64(self._mac(body))}"

    def open(self, value: str) -> dict[str, Any]:
        """The payload of a genuine value; ValueError for anything incomplete, damaged or not ours."""
        body, dot, signature = value.strip().partition(".")
        if not dot or not body or not signature:
            raise ValueError("incomplete")
        if not hmac.compare_digest(_unb64(signature), self._mac(body)):
            raise ValueError("not signed by this key")
        payload = json.loads(_unb64(body))
        if not isinstance(payload, dict):
            raise ValueError("not an object")
        return payload

    def _mac(self, body: str) -> bytes:
        return hmac.new(self._key, body.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    # Strict: only the canonical spelling decodes, so one payload has exactly one accepted value.
    if not _B64URL.fullmatch(text):
        raise ValueError("not unpadded base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise ValueError("not canonical base64url")
    return data
