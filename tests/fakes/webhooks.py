"""A local webhook receiver, served over real HTTP, that checks each delivery's signature as a service would.

It verifies `X-Gmail-Reconnect-Signature` with its own code (the README's recipe, not the bot's), records every
request with the verdict, and can be told to answer the next ones with an error, to stall past the sender's
timeout, or to say 410 Gone.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import CIMultiDictProxy

TOLERANCE_SECONDS = 300


def signature_valid(secret: str, body: bytes, header: str, *, now: float | None = None) -> bool:
    """The receiver's check: t within five minutes, and v1 the HMAC-SHA256 of "<t>.<body>" under the secret."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
        expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    except (KeyError, ValueError):
        return False
    fresh = abs((time.time() if now is None else now) - timestamp) <= TOLERANCE_SECONDS
    return fresh and hmac.compare_digest(expected, parts.get("v1", ""))


@dataclass(frozen=True)
class Received:
    """One request the receiver got."""

    headers: CIMultiDictProxy[str]
    body: bytes
    signed: bool  # the signature checked out against the secret
    status: int  # what the receiver answered (0: it stalled and never answered)
    received_at: float  # time.time() on arrival

    @property
    def payload(self) -> Any:
        return json.loads(self.body)

    @property
    def event_id(self) -> str:
        return str(self.headers["X-Gmail-Reconnect-Delivery"])


class FakeReceiver:
    """A service's webhook endpoint at `url`; set `secret` to the one `webhook add` printed."""

    def __init__(self) -> None:
        self.secret: str | None = None
        self.received: list[Received] = []
        self._plan: list[int] = []  # what to answer next: an HTTP status, or 0 to stall
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    @property
    def accepted(self) -> list[Received]:
        """The deliveries it took: signed, and answered with 2xx."""
        return [item for item in self.received if item.signed and 200 <= item.status < 300]

    def fail(self, status: int, *, times: int = 1) -> None:
        """Answer the next `times` deliveries with `status` (e.g. 500, or 410 Gone)."""
        self._plan += [status] * times

    def stall(self, *, times: int = 1) -> None:
        """Never answer the next `times` deliveries (until the receiver closes)."""
        self._plan += [0] * times

    async def start(self) -> None:
        """Serve on an unused port of 127.0.0.1."""
        app = web.Application()
        app.router.add_post("/hooks", self._receive)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/hooks"

    async def close(self) -> None:
        """Stop serving (stalled requests end first)."""
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        signed = self.secret is not None and signature_valid(
            self.secret, body, request.headers.get("X-Gmail-Reconnect-Signature", "")
        )
        status = self._plan.pop(0) if self._plan else (204 if signed else 401)
        self.received.append(Received(request.headers, body, signed, status, time.time()))
        if status == 0:
            await self._released.wait()
            status = 503
        return web.Response(status=status)


@asynccontextmanager
async def fake_receiver() -> AsyncIterator[FakeReceiver]:
    """A started FakeReceiver, closed on exit."""
    receiver = FakeReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.close()
