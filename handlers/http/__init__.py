"""The browser and service side over HTTP: the consent flow's pages, the API, metrics, health, and the error page."""

from __future__ import annotations

from aiohttp import web

from handlers.http import api, health, metrics, oauth, risc


def register(app: web.Application) -> None:
    """Add the HTTP routes of every module."""
    health.register(app)
    api.register(app)
    metrics.register(app)
    oauth.register(app)
    risc.register(app)
