"""The Slack surface: Bolt listeners registered by surface, and the POST /slack/events route that feeds them."""

from __future__ import annotations

from functools import partial

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp

from bot.appkeys import BOLT
from bot.services import Services
from handlers.slack import actions, admin, commands, errors, events, reconnected

EVENTS_PATH = "/slack/events"


def register(bolt: AsyncApp, services: Services) -> None:
    """Register every Bolt listener, the error handler, and the steps that follow a reconnection."""
    commands.register(bolt, services)
    actions.register(bolt, services)
    admin.register(bolt, services)
    events.register(bolt, services)
    errors.register(bolt, services)
    services.hooks.register(partial(reconnected.after_reconnection, services))


def register_route(app: web.Application) -> None:
    """Mount Bolt at POST /slack/events."""
    app.router.add_post(EVENTS_PATH, slack_events)


async def slack_events(request: web.Request) -> web.Response:
    """Slack's HTTP requests (commands, interactions, events), verified and dispatched by Bolt."""
    bolt: AsyncApp = request.app[BOLT]
    return await to_aiohttp_response(await bolt.async_dispatch(await to_bolt_request(request)))
