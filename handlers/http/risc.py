"""POST /google/risc: Google's security event tokens, pushed as RFC 8935 describes.

202 once the token is verified and what it changes is recorded; 400 with RFC 8935's `{"err", "description"}`
for a token we do not believe (nothing changes); 503 while Google's keys or our database cannot be reached, so
that Google delivers it again.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from bot.appkeys import SERVICES
from bot.google.risc import CONTENT_TYPE, RISC_PATH, IssuerUnavailable, SecurityEventRejected
from bot.metrics import Metrics

log = logging.getLogger(__name__)

# A security event token is a few hundred bytes; anything much larger is not one.
MAX_BODY = 64 * 1024
RETRY_AFTER_SECONDS = 60


def register(app: web.Application) -> None:
    """Add the receiver, and let the follow-ups it started finish before the application stops."""
    app.router.add_post(RISC_PATH, risc_receiver)
    app.on_shutdown.append(_drain)


async def risc_receiver(request: web.Request) -> web.Response:
    """Verify one security event token, record what it changes, and answer 202 (or say why not)."""
    received_at = time.monotonic()
    metrics = request.app[SERVICES].metrics
    if request.content_type != CONTENT_TYPE:
        return _refuse(
            metrics, "invalid_request", f"the body must be a security event token ({CONTENT_TYPE})"
        )
    if request.content_length is not None and request.content_length > MAX_BODY:
        return _refuse(metrics, "invalid_request", "the body is too large for a security event token")
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > MAX_BODY:
            return _refuse(metrics, "invalid_request", "the body is too large for a security event token")
    try:
        token = body.decode("ascii").strip()
    except UnicodeDecodeError:
        return _refuse(metrics, "invalid_request", "the body is not a compact JWT")
    services = request.app[SERVICES]
    try:
        verified = await services.risc.verify(token)
    except SecurityEventRejected as rejected:
        return _refuse(metrics, rejected.err, rejected.description)
    except IssuerUnavailable as error:
        log.warning("Could not check a security event token now: %s", error)
        return web.json_response(
            {"err": "temporarily_unavailable", "description": "the issuer's keys cannot be read right now"},
            status=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    receipt = await services.security_events.receive(verified, received_at=received_at)
    metrics.risc_events.labels("duplicate" if receipt.duplicate else "accepted").inc()
    return web.Response(status=202)


def _refuse(metrics: Metrics, err: str, description: str) -> web.Response:
    metrics.risc_events.labels(err).inc()
    # One line, never the token: it names a user of ours.
    log.warning("Refused a security event token: %s (%s)", err, description)
    return web.json_response({"err": err, "description": description}, status=400)


async def _drain(app: web.Application) -> None:
    if SERVICES in app:
        await app[SERVICES].security_events.drain()
