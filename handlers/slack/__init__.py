"""The Slack surface: Bolt listeners registered by surface, and the POST /slack/events route that feeds them."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp

from bot.appkeys import (
    ACCOUNTS,
    BOLT,
    BRIEFING,
    HOOKS,
    LINKS,
    POOL,
    PROMPTER,
    SETTINGS,
    SLACK_USERS,
    TOKENS,
)
from bot.config import Settings
from bot.google.health import effective_status
from bot.google.token_service import TokenService
from bot.reconnect.hooks import Reconnected
from bot.reconnect.links import Purpose
from bot.slack.blocks.status import StatusView
from bot.slack.client import SlackUsers
from bot.slack.prompter import Prompter
from storage import audit
from storage.accounts import Accounts
from storage.models import Account, Status

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
    def users(self) -> SlackUsers:
        return self._web_app[SLACK_USERS]

    @property
    def tokens(self) -> TokenService:
        return self._web_app[TOKENS]

    @property
    def prompter(self) -> Prompter:
        return self._web_app[PROMPTER]

    def is_admin(self, slack_user_id: str) -> bool:
        """True for the users listed in ADMIN_SLACK_USER_IDS."""
        return slack_user_id in self.settings.admin_slack_user_ids

    async def audit(self, slack_user_id: str, action: str, **details: Any) -> None:
        """Record what a Slack user did (admin actions, refusals) in the audit log."""
        await audit.append(
            self._web_app[POOL],
            actor=f"slack:{slack_user_id}",
            action=action,
            slack_user_id=slack_user_id,
            details=details,
        )

    async def status_view(
        self, slack_user_id: str, slack_team_id: str | None, *, notice: str | None = None
    ) -> StatusView:
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
            offer=None if account is not None else await self.linkable_account(slack_user_id),
            notice=notice,
        )

    async def linkable_account(self, slack_user_id: str) -> Account | None:
        """The one unlinked row whose email is this user's Slack profile email (none if zero or several)."""
        email = await self.users.email(slack_user_id)
        if not email:
            return None
        found = await self.accounts.find_unlinked_by_email(email)
        return found[0] if len(found) == 1 else None


def register(web_app: web.Application) -> None:
    """Register every Bolt listener and the reconnection hook, and mount Bolt at POST /slack/events."""
    from handlers.slack import actions, admin, commands, events

    bolt = web_app[BOLT]
    deps = Deps(web_app)
    commands.register(bolt, deps)
    actions.register(bolt, deps)
    admin.register(bolt, deps)
    events.register(bolt, deps)

    async def on_reconnected(event: Reconnected) -> None:
        await deps.prompter.reconnected(event)
        # After the confirmation, so the DM reads in order: reconnected, then today's missed email.
        await web_app[BRIEFING].reconnected(event.account)
        await events.refresh_home(deps, bolt.client, event.slack_user_id, event.slack_team_id)

    web_app[HOOKS].register(on_reconnected)
    web_app.router.add_post(EVENTS_PATH, slack_events)


async def slack_events(request: web.Request) -> web.Response:
    """Slack's HTTP requests (commands, interactions, events), verified and dispatched by Bolt."""
    bolt: AsyncApp = request.app[BOLT]
    return await to_aiohttp_response(await bolt.async_dispatch(await to_bolt_request(request)))
