"""The one place unexpected errors become a response: logged with the traceback, shown as a generic page."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from bot.reconnect.paths import OAUTH_PREFIX
from handlers.http.oauth import locale_of
from handlers.http.pages import render
from storage.errors import DATABASE_OUTAGE

log = logging.getLogger(__name__)

# How long a client should wait before trying again during a database outage.
OUTAGE_RETRY_AFTER_SECONDS = 30

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn an unhandled exception into an answer that reveals nothing; HTTP errors pass through. A database
    outage is a 503 that says to try again soon (with Retry-After); anything else a 500, logged with its
    traceback."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except DATABASE_OUTAGE as error:
        # The path only: query strings may carry OAuth codes and link tokens.
        log.warning(
            "The database could not be reached for %s %s: %s",
            request.method,
            request.path,
            type(error).__name__,
        )
        return _unavailable(request)
    except Exception:
        log.exception("Unhandled error on %s %s", request.method, request.path)
        if request.path.startswith(OAUTH_PREFIX):
            # A person in a browser: a page in their language, never a traceback.
            return render("server_error", locale_of(request), status=500)
        return web.json_response(
            {"error": "internal error", "message": "Something went wrong on our side; it has been logged."},
            status=500,
        )


def _unavailable(request: web.Request) -> web.StreamResponse:
    headers = {"Retry-After": str(OUTAGE_RETRY_AFTER_SECONDS)}
    if request.path.startswith(OAUTH_PREFIX):
        # The same request again works once the database is back: nothing was used up (the OAuth state is
        # consumed in the transaction that failed), so "Try again" repeats it.
        response = render(
            "unavailable", locale_of(request), status=503, params={"retry_url": request.path_qs}
        )
        response.headers.update(headers)
        return response
    return web.json_response(
        {
            "error": "unavailable",
            "message": "The database cannot be reached right now; nothing was changed. Try again in a minute.",
        },
        status=503,
        headers={**headers, "Cache-Control": "no-store"},
    )
