"""The Slack surface: Bolt listeners registered by surface, and the POST /slack/events route that feeds them."""

from __future__ import annotations

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp

from bot.appkeys import ACCOUNTS, BOLT, LINKS, LOCALES, SETTINGS
from bot.blocks import StatusView
from bot.config import Settings
from bot.links import Purpose
from bot.slack_client import Locales
from bot.token_health import effective_status
from storage.accounts import Accounts
from storage.models import Status

EVENTS_PATH = "/slack/events"


class Deps:
    """What the listeners need, read from the web application when they run (after start-up)."""

    def __init__(self, web_app: web.Application) -> None:
        self._web_app = web_app

    @property
    def settings(self) -> Settings:
        return self._web_app[SETTINGS]

    @property
    def accounts(self) -> Accounts:
        return self._web_app[ACCOUNTS]

    @property
    def locales(self) -> Locales:
        return self._web_app[LOCALES]

    def is_admin(self, slack_user_id: str) -> bool:
        """True for the users listed in ADMIN_SLACK_USER_IDS."""
        return slack_user_id in self.settings.admin_slack_user_ids

    async def status_view(self, slack_user_id: str, slack_team_id: str | None) -> StatusView:
        """The status card's content for one Slack user, with fresh links."""
        account = await self.accounts.find_by_slack_id(slack_user_id)
        status = Status.MISSING
        if account is not None:
            status, _ = effective_status(account, self.settings.required_capabilities)
        links = self._web_app[LINKS]
        return StatusView(
            account=account,
            status=status,
            reconnect_url=links.new_url(slack_user_id, slack_team_id=slack_team_id),
            switch_url=links.new_url(slack_user_id, slack_team_id=slack_team_id, purpose=Purpose.SWITCH),
        )


def register(web_app: web.Application) -> None:
    """Register every Bolt listener and mount Bolt at POST /slack/events (HTTP mode)."""
    from handlers.slack import actions, commands, events

    bolt = web_app[BOLT]
    deps = Deps(web_app)
    commands.register(bolt, deps)
    actions.register(bolt, deps)
    events.register(bolt, deps)
    web_app.router.add_post(EVENTS_PATH, slack_events)


async def slack_events(request: web.Request) -> web.Response:
    """Slack's HTTP requests (commands, interactions, events), verified and dispatched by Bolt."""
    bolt: AsyncApp = request.app[BOLT]
    return await to_aiohttp_response(await bolt.async_dispatch(await to_bolt_request(request)))
