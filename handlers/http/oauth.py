"""The browser side of the reconnection: GET /oauth/google/start (the link), GET /oauth/slack/callback (Sign in
with Slack's redirect back) and GET /oauth/google/callback (Google's)."""

from __future__ import annotations

import re

from aiohttp import web

from bot.appkeys import SERVICES
from bot.i18n import pick_locale
from bot.reconnect.answer import STATE_TTL, Answer
from bot.reconnect.flow import new_browser_binding
from bot.reconnect.identity import IDENTITY_COOKIE
from bot.reconnect.paths import CALLBACK_PATH, COOKIE_PATH, SLACK_CALLBACK_PATH, START_PATH
from handlers.http.pages import render

BINDING_COOKIE = "gmail_reconnect_binding"
_BINDING_SHAPE = re.compile(r"[A-Za-z0-9_-]{32,64}")


def register(app: web.Application) -> None:
    """Add the consent flow's routes."""
    app.router.add_get(START_PATH, oauth_start)
    app.router.add_get(SLACK_CALLBACK_PATH, slack_callback)
    app.router.add_get(CALLBACK_PATH, oauth_callback)


async def oauth_start(request: web.Request) -> web.StreamResponse:
    """Verify the link and send the browser on: to Slack's sign-in, or with a fresh state to Google."""
    services = request.app[SERVICES]
    binding = _binding(request) or new_browser_binding()
    identity = services.identity_cookie.read(request.cookies.get(IDENTITY_COOKIE))
    answer = await services.reconnect.start(
        request.query.get("t"), browser_binding=binding, identity=identity
    )
    response = _respond(request, answer)
    if answer.location is not None:
        # Reuse the browser's existing value, so two tabs started from Slack both finish.
        _set_cookie(request, response, BINDING_COOKIE, binding, max_age=int(STATE_TTL.total_seconds()) * 6)
    return response


async def slack_callback(request: web.Request) -> web.StreamResponse:
    """Finish Slack's sign-in: remember who the browser is and go on to Google, or refuse someone else."""
    services = request.app[SERVICES]
    binding = _binding(request)
    answer = await services.reconnect.signed_in(dict(request.query), browser_binding=binding)
    services.metrics.sign_ins.labels("identified" if answer.location else answer.page).inc()
    response = _respond(request, answer)
    if answer.identity is not None:
        value = services.identity_cookie.issue(answer.identity)
        _set_cookie(
            request,
            response,
            IDENTITY_COOKIE,
            value,
            max_age=int(services.identity_cookie.ttl.total_seconds()),
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


def _set_cookie(
    request: web.Request, response: web.StreamResponse, name: str, value: str, *, max_age: int
) -> None:
    # Lax: the cookies must come along on the top-level redirects back from Slack and Google.
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="Lax",
        secure=request.app[SERVICES].settings.public_base_url.startswith("https://"),
    )


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
