"""The Slack surface: Bolt listeners registered by surface, and the POST /slack/events route that feeds them."""

from __future__ import annotations

import logging
from functools import partial

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_sdk.signature import SignatureVerifier

from bot.appkeys import BOLT, SERVICES
from bot.services import Services
from handlers.slack import actions, admin, commands, errors, events, reconnected, redelivery
from handlers.slack.verification import Malformed, Refused, bolt_request, first_time, verify

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"


def register(bolt: AsyncApp, services: Services) -> None:
    """Register every Bolt listener, the error handler, and the steps that follow a reconnection."""
    redelivery.register(bolt, services.slack_deliveries)
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
    """Slack's HTTP requests (commands, interactions, events): verified on the raw bytes before anything reads
    them, each taken once, then dispatched by Bolt. The body never reaches a log line: it carries response
    URLs, which act for the user who clicked."""
    services = request.app[SERVICES]
    raw = await request.read()
    secret = services.settings.slack_signing_secret
    assert secret is not None  # create_app refuses to start without it
    try:
        signed = verify(SignatureVerifier(secret.reveal()), raw, request.headers)
        built = bolt_request(raw, request)
    except Refused as refusal:
        log.info("Refused a request to %s (401): %s", EVENTS_PATH, refusal)
        return web.Response(status=401, text="invalid request signature")
    except Malformed as malformed:
        log.info("Refused a signed request to %s (400): %s", EVENTS_PATH, malformed)
        return web.Response(status=400, text=f"malformed request: {malformed}")
    if not await first_time(services.slack_deliveries, signed):
        log.info("Ignored a replay of a Slack request signed at %d", signed.timestamp)
        return web.Response(status=200)
    bolt: AsyncApp = request.app[BOLT]
    return await to_aiohttp_response(await bolt.async_dispatch(built))
