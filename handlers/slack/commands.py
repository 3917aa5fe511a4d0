"""/gmail-status: the user's own card, help, and (for admins) every account's health and nudges."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.services import Services
from bot.slack.blocks.status import help_blocks, status_card
from bot.slack.mrkdwn import slack_text
from handlers.slack import admin
from handlers.slack.errors import acknowledging
from handlers.slack.status_view import status_view

log = logging.getLogger(__name__)

COMMAND = "/gmail-status"
HELP_WORDS = frozenset({"help", "도움말"})


def register(bolt: Any, services: Services) -> None:
    """Add the slash command."""

    bolt.command(COMMAND)(acknowledging(services, gmail_status))


async def gmail_status(
    services: Services, *, body: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond
) -> None:
    """Answer (after the ack) with an ephemeral message in the user's language."""
    user_id = body["user_id"]
    words = (body.get("text") or "").split()
    verb = words[0].lower() if words else ""
    locale = await services.users.locale(user_id)
    if verb in admin.VERBS:
        blocks, fallback = await admin.answer(services, user_id, verb, words[1:], locale)
    elif verb:
        notice = (
            None
            if verb in HELP_WORDS
            else slack_text(locale, "slack.status.unknown_argument", argument=words[0][:50])
        )
        blocks = help_blocks(locale, admin=services.settings.is_admin(user_id), notice=notice)
        fallback = slack_text(locale, "slack.help")
    else:
        view = await status_view(services, user_id, body.get("team_id"))
        blocks = status_card(view, locale)
        fallback = slack_text(locale, "slack.status.title")
    await post_ephemeral(
        client, respond, channel=body["channel_id"], user=user_id, blocks=blocks, text=fallback
    )


async def post_ephemeral(
    client: AsyncWebClient,
    respond: AsyncRespond,
    *,
    channel: str,
    user: str,
    blocks: list[dict[str, Any]],
    text: str,
) -> None:
    """chat.postEphemeral, or the command's response_url where the bot cannot post (a channel it is not in)."""
    try:
        await client.chat_postEphemeral(channel=channel, user=user, blocks=blocks, text=text)
    except SlackApiError as error:
        log.info(
            "chat.postEphemeral failed (%s); answering through the response URL", error.response.get("error")
        )
        await respond(blocks=blocks, text=text, response_type="ephemeral")
