"""The one place unexpected errors become a response: logged with the traceback, shown as a generic page."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from handlers.http.oauth import locale_of
from handlers.http.pages import render

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn an unhandled exception into a plain 500 that reveals nothing; HTTP errors pass through."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        # The path only: query strings may carry OAuth codes and link tokens.
        log.exception("Unhandled error on %s %s", request.method, request.path)
        if request.path.startswith("/oauth/"):
            # A person in a browser: a page in their language, never a traceback.
            return render("server_error", locale_of(request), status=500)
        return web.json_response(
            {"error": "internal error", "message": "Something went wrong on our side; it has been logged."},
            status=500,
        )
