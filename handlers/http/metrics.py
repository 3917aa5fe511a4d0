"""GET /metrics: Prometheus metrics, counts only (no user, address or token appears in them)."""

from __future__ import annotations

from aiohttp import web

from bot.appkeys import SERVICES
from bot.metrics import CONTENT_TYPE
from handlers.http.api import NO_STORE


async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics (counts only: no user, address or token appears in them)."""
    services = request.app[SERVICES]
    body = await services.metrics.render(
        services.accounts,
        services.settings.required_capabilities,
        webhooks=services.webhooks,
        outbox=services.outbox,
    )
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE, **NO_STORE})


def register(app: web.Application) -> None:
    """Add GET /metrics."""
    app.router.add_get("/metrics", metrics)
