"""Who may call the API: the key in `Authorization: Bearer gmr_…`, and the scope each endpoint needs.

A key outside its scope gets 403, audited under the key's name: someone we know tried it. A request without a
valid key (missing, malformed, unknown or revoked) gets 401 and is not audited, since anyone can send any number
of them and the audit log cannot be trimmed: it is counted in /metrics by reason, and logged at most once a
minute as a count, never with the key.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bot.appkeys import SERVICES
from storage import audit
from storage.api_keys import KEY_PREFIX, ApiKey, Scope

log = logging.getLogger(__name__)

NO_STORE = {"Cache-Control": "no-store"}
REFUSAL_LOG_INTERVAL = 60.0  # seconds between two warning lines about refused requests, per process
CREATE_HINT = "gmail-reconnect api-key create NAME --scope " + ",".join(map(str, Scope))

Endpoint = Callable[[web.Request, ApiKey], Awaitable[web.Response]]


class Refusal(enum.StrEnum):
    """Why a request had no valid key (the `reason` label of gmail_reconnect_api_refused_total)."""

    MISSING = "missing"  # no Authorization header, or an empty one
    MALFORMED = "malformed"  # not `Bearer gmr_…`
    UNKNOWN = "unknown"  # well-formed, but no key has this secret
    REVOKED = "revoked"  # the secret of a revoked key


class RefusalLog:
    """One warning line at most every `interval` seconds, saying how many requests were refused since the last.

    The counts are this process's; the metric has them all, the log only tells someone reading it that it
    happens. A refusal within the interval is counted and told in the next line (written by a later refusal)."""

    def __init__(
        self, interval: float = REFUSAL_LOG_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self.clock = clock
        self._pending: Counter[Refusal] = Counter()
        self._logged_at: float | None = None

    def note(self, reason: Refusal) -> None:
        """Count one refusal, and write the line if the last one is old enough."""
        self._pending[reason] += 1
        now = self.clock()
        if self._logged_at is not None and now - self._logged_at < self.interval:
            return
        total = sum(self._pending.values())
        by_reason = ", ".join(
            f"{reason} {self._pending[reason]}" for reason in Refusal if self._pending[reason]
        )
        log.warning(
            "API: refused %d request(s) without a valid API key (%s) since %s",
            total,
            by_reason,
            "start-up" if self._logged_at is None else "the last such line",
        )
        self._pending.clear()
        self._logged_at = now


REFUSALS = web.AppKey("api_refusals", RefusalLog)


def problem(status: int, error: str, message: str, **extra: Any) -> web.Response:
    """A JSON error answer: what went wrong (`error`) and what to do (`message`), never cached."""
    return web.json_response({"error": error, "message": message, **extra}, status=status, headers=NO_STORE)


def keyed(name: str, scope: Scope, endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The endpoint behind the key and scope checks, counted in the metrics by endpoint and status."""

    async def handler(request: web.Request) -> web.Response:
        key = await _authenticate(request)
        if isinstance(key, web.Response):
            response = key
        elif not key.allows(scope):
            response = await _forbidden(request, key, scope)
        else:
            response = await endpoint(request, key)
        request.app[SERVICES].metrics.api_requests.labels(name, str(response.status)).inc()
        return response

    return handler


async def _authenticate(request: web.Request) -> ApiKey | web.Response:
    header = request.headers.get("Authorization", "").strip()
    scheme, _, presented = header.partition(" ")
    presented = presented.strip()
    key = None
    if not header:
        reason = Refusal.MISSING
    elif scheme.lower() != "bearer" or not presented.startswith(KEY_PREFIX):
        reason = Refusal.MALFORMED
    else:
        key = await request.app[SERVICES].api_keys.identify(presented)
        if key is not None and key.active:
            return key
        reason = Refusal.UNKNOWN if key is None else Refusal.REVOKED
    request.app[SERVICES].metrics.api_refused.labels(str(reason)).inc()
    request.app[REFUSALS].note(reason)
    if reason is Refusal.MISSING:
        message = f"Send an API key as `Authorization: Bearer gmr_…` (create one with `{CREATE_HINT}`)."
    elif reason is Refusal.MALFORMED:
        message = "Send the API key as `Authorization: Bearer gmr_…`: this header is not one."
    else:  # unknown and revoked read the same: the answer does not tell which secrets were ever keys
        message = "This API key is not valid, or it was revoked."
    response = problem(401, "unauthorized", message)
    response.headers["WWW-Authenticate"] = 'Bearer realm="gmail-reconnect"'
    return response


async def _forbidden(request: web.Request, key: ApiKey, scope: Scope) -> web.Response:
    await audit.append(
        request.app[SERVICES].pool,
        actor=f"api:{key.name}",
        action="api.forbidden",
        details={"path": request.path, "method": request.method, "scope": str(scope)},
    )
    return problem(
        403,
        "forbidden",
        f"The API key {key.name!r} does not have the {scope!s} scope this endpoint needs "
        f"(it has {', '.join(key.scope_names)}). Create a key for it with "
        f"`gmail-reconnect api-key create NAME --scope {scope!s}`.",
        required_scope=str(scope),
        key_scopes=key.scope_names,
    )
