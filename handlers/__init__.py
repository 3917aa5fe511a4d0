"""The surfaces, thin: HTTP routes (handlers.http) and Slack's listeners (handlers.slack), over bot.services."""

from __future__ import annotations

from aiohttp import web
from slack_bolt.async_app import AsyncApp

from bot.services import Services
from handlers import http, slack


def register_routes(app: web.Application) -> None:
    """Every HTTP route: health, the consent flow, the API, metrics, and Slack's requests at /slack/events."""
    http.register(app)
    slack.register_route(app)


def register_slack(bolt: AsyncApp, services: Services) -> None:
    """Every Bolt listener, the listeners' error handler, and what follows a reconnection in Slack."""
    slack.register(bolt, services)
