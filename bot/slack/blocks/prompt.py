"""The Reconnect Gmail DM: the cause in plain words, what is lost, and the buttons; and the DM once reconnected."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    MarkdownTextObject,
    SectionBlock,
)

from bot.google.health import Cause
from bot.google.scopes import Capability
from bot.slack.blocks.causes import briefing_meanwhile, prompt_cause
from bot.slack.blocks.elements import RECONNECT_ACTION, SNOOZE_ACTION, local_time
from bot.slack.mrkdwn import Mrkdwn, slack_text
from storage.causes import CauseCode


@dataclass(frozen=True)
class PromptView:
    """What the Reconnect Gmail DM shows."""

    prompt_id: int
    cause: Cause
    email: str | None
    reconnect_url: str
    link_expires_at: datetime
    zone: ZoneInfo  # where times are shown: BRIEFING_TIMEZONE
    snoozed: bool = False
    first_connection: bool = False  # the user has no row yet: "Connect Gmail" rather than "Reconnect"
    code: CauseCode | None = (
        None  # the account's recorded cause, said instead of `cause` when it is one of it
    )
    missing: tuple[Capability, ...] = ()  # the required permissions the grant lacks
    access_ends_at: datetime | None = None  # time-based access: when the access the user allowed ends


def reconnect_dm(view: PromptView, locale: str) -> tuple[list[dict[str, Any]], str]:
    """The Reconnect Gmail DM (blocks, and the notification text): the cause, what is lost, the buttons."""
    cause = prompt_cause(
        view.cause,
        view.code,
        locale,
        missing=view.missing,
        access_ends_at=view.access_ends_at,
        zone=view.zone,
    )
    body = [slack_text(locale, "slack.dm.title"), cause]
    meanwhile = briefing_meanwhile(locale, view.cause, missing=view.missing)
    if meanwhile is not None:
        body.append(meanwhile)
    blocks: list[Block] = [SectionBlock(text=MarkdownTextObject(text="\n".join(body)))]
    buttons = [
        ButtonElement(
            text=slack_text(
                locale, "slack.button.connect" if view.first_connection else "slack.button.reconnect"
            ),
            action_id=RECONNECT_ACTION,
            url=view.reconnect_url,
            style="primary",
        )
    ]
    if not view.snoozed:
        buttons.append(
            ButtonElement(
                text=slack_text(locale, "slack.button.snooze"),
                action_id=SNOOZE_ACTION,
                value=str(view.prompt_id),
            )
        )
    blocks.append(ActionsBlock(block_id="reconnect_prompt_actions", elements=buttons))
    notes = [
        slack_text(locale, "slack.dm.link_expires", when=local_time(view.link_expires_at, locale, view.zone))
    ]
    if view.email:
        notes.insert(0, slack_text(locale, "slack.dm.account", email=view.email))
    if view.snoozed:
        notes.insert(0, slack_text(locale, "slack.dm.snoozed"))
    blocks.append(ContextBlock(elements=[MarkdownTextObject(text=note) for note in notes]))
    return [block.to_dict() for block in blocks], slack_text(locale, "slack.dm.fallback", cause=cause)


def reconnected_dm(email: str | None, locale: str) -> tuple[list[dict[str, Any]], str]:
    """The Reconnect Gmail DM once the user has reconnected: no buttons left to press."""
    line = (
        slack_text(locale, "slack.dm.reconnected", email=email)
        if email
        else slack_text(locale, "slack.dm.reconnected_plain")
    )
    return [SectionBlock(text=MarkdownTextObject(text=line)).to_dict()], line


def reconnected_confirmation(email: str | None, locale: str) -> Mrkdwn:
    """The short message posted after a reconnection."""
    return slack_text(locale, "slack.dm.confirmation", email=email or "Gmail")
