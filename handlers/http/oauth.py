"""GET /oauth/google/start and GET /oauth/google/callback: the browser side of the reconnection."""

from __future__ import annotations

import re

from aiohttp import web

from bot.appkeys import SERVICES
from bot.i18n import pick_locale
from bot.reconnect.flow import STATE_TTL, Answer, new_browser_binding
from bot.reconnect.paths import CALLBACK_PATH, OAUTH_PREFIX, START_PATH
from handlers.http.pages import render

BINDING_COOKIE = "gmail_reconnect_binding"
_BINDING_SHAPE = re.compile(r"[A-Za-z0-9_-]{32,64}")


def register(app: web.Application) -> None:
    """Add the consent flow's routes."""
    app.router.add_get(START_PATH, oauth_start)
    app.router.add_get(CALLBACK_PATH, oauth_callback)


async def oauth_start(request: web.Request) -> web.StreamResponse:
    """Verify the link, start a fresh OAuth state bound to this browser, and redirect to Google."""
    binding = _binding(request) or new_browser_binding()
    answer = await request.app[SERVICES].reconnect.start(request.query.get("t"), browser_binding=binding)
    response = _respond(request, answer)
    if answer.location is not None:
        # Reuse the browser's existing value, so two tabs started from Slack both finish.
        response.set_cookie(
            BINDING_COOKIE,
            binding,
            max_age=int(STATE_TTL.total_seconds()) * 6,
            path=OAUTH_PREFIX,
            httponly=True,
            samesite="Lax",
            secure=request.app[SERVICES].settings.public_base_url.startswith("https://"),
        )
    return response


async def oauth_callback(request: web.Request) -> web.StreamResponse:
    """Finish the flow Google redirected back from; every outcome is a page, never an error 500."""
    answer = await request.app[SERVICES].reconnect.finish(
        dict(request.query), browser_binding=_binding(request)
    )
    request.app[SERVICES].metrics.callbacks.labels(answer.page).inc()
    return _respond(request, answer)


def locale_of(request: web.Request) -> str:
    """The visitor's language from Accept-Language, else DEFAULT_LOCALE."""
    return pick_locale(request.headers.get("Accept-Language"), request.app[SERVICES].settings.default_locale)


def _binding(request: web.Request) -> str | None:
    value = request.cookies.get(BINDING_COOKIE)
    return value if value and _BINDING_SHAPE.fullmatch(value) else None


def _respond(request: web.Request, answer: Answer) -> web.StreamResponse:
    if answer.location is not None:
        return web.Response(
            status=302,
            headers={
                "Location": answer.location,
                "Cache-Control": "no-store",
                "Referrer-Policy": "no-referrer",
            },
        )
    return render(answer.page, locale_of(request), status=answer.status, params=answer.params)
