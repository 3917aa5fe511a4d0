"""Button clicks on the status card, the App Home and the Reconnect Gmail DM.

Link buttons open the consent page in the browser; Slack still sends the click, which must be acknowledged,
or Slack shows a warning next to the button. Other buttons are acknowledged first and do their work after.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.services import Services
from bot.slack.blocks.elements import (
    DISCONNECT_ACTION,
    LINK_ACTION,
    RECONNECT_ACTION,
    SNOOZE_ACTION,
    SWITCH_ACTION,
)
from bot.slack.blocks.status import status_card
from bot.slack.ids import slack_actor
from bot.slack.mrkdwn import Mrkdwn, slack_text
from handlers.slack.errors import acknowledging
from handlers.slack.events import refresh_home
from handlers.slack.status_view import linkable_account, status_view
from storage.errors import Conflict, NotFound

log = logging.getLogger(__name__)


def register(bolt: Any, services: Services) -> None:
    """Add the button listeners."""

    bolt.action(RECONNECT_ACTION)(link_button)
    bolt.action(SWITCH_ACTION)(link_button)
    bolt.action(SNOOZE_ACTION)(acknowledging(services, snooze))
    bolt.action(DISCONNECT_ACTION)(acknowledging(services, disconnect))
    bolt.action(LINK_ACTION)(acknowledging(services, link_account))


async def link_button(ack: AsyncAck) -> None:
    """A Reconnect / Connect / Use a different account click: the browser does the rest."""
    await ack()


async def snooze(services: Services, *, body: dict[str, Any], **_: Any) -> None:
    """The Reconnect Gmail DM's Remind me tomorrow button."""
    user_id = body["user"]["id"]
    prompt_id = _clicked_id(body)
    if prompt_id is None:
        return
    snoozed = await services.prompter.snooze(prompt_id, slack_user_id=user_id, actor=slack_actor(user_id))
    if snoozed is None:
        log.info("Snooze of prompt %s by %s ignored: not their open prompt", prompt_id, user_id)


async def disconnect(
    services: Services, *, body: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond
) -> None:
    """Disconnect (confirmed in Slack's dialog): revoke at Google, delete the tokens, show the new state."""
    user_id = body["user"]["id"]
    locale = await services.users.locale(user_id)
    account = await services.accounts.find_by_slack_id(user_id)
    if account is None or str(account.id) != _clicked_value(body):
        await _show(services, body, client, respond, notice=slack_text(locale, "slack.status.not_yours"))
        return
    done = await services.tokens.disconnect(account.id, actor=slack_actor(user_id))
    await services.prompter.dismiss(user_id, actor=slack_actor(user_id))
    key = (
        "slack.status.disconnected_done"
        if done.revoked_at_google or not done.had_tokens
        else ("slack.status.disconnected_not_revoked")
    )
    await _show(services, body, client, respond, notice=slack_text(locale, key))


async def link_account(
    services: Services, *, body: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond
) -> None:
    """Link x@gmail.com: attach the unlinked row whose email is the user's Slack email to this user."""
    user_id = body["user"]["id"]
    locale = await services.users.locale(user_id)
    offered = await linkable_account(services, user_id)
    if offered is None or str(offered.id) != _clicked_value(body):
        await _show(
            services, body, client, respond, notice=slack_text(locale, "slack.status.link_unavailable")
        )
        return
    try:
        linked = await services.accounts.link_slack_user(
            slack_user_id=user_id, user_id=offered.user_id, actor=slack_actor(user_id)
        )
    except (Conflict, NotFound) as error:
        log.info("Linking %s to Slack user %s refused: %s", offered.user_id, user_id, error)
        await _show(
            services, body, client, respond, notice=slack_text(locale, "slack.status.link_unavailable")
        )
        return
    await _show(
        services, body, client, respond, notice=slack_text(locale, "slack.status.linked", email=linked.email)
    )


async def _show(
    services: Services, body: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond, *, notice: Mrkdwn
) -> None:
    """Redraw the card the click came from (the App Home, or the ephemeral /gmail-status card)."""
    user_id = body["user"]["id"]
    team_id = (body.get("team") or {}).get("id")
    if (body.get("container") or {}).get("type") == "view":
        await refresh_home(services, client, user_id, team_id, notice=notice)
        return
    locale = await services.users.locale(user_id)
    view = await status_view(services, user_id, team_id, notice=notice)
    await respond(
        blocks=status_card(view, locale),
        text=notice,
        response_type="ephemeral",
        replace_original=True,
    )


def _clicked_value(body: dict[str, Any]) -> str:
    actions = body.get("actions") or [{}]
    return str(actions[0].get("value") or "")


def _clicked_id(body: dict[str, Any]) -> int | None:
    value = _clicked_value(body)
    return int(value) if value.isdigit() else None
