"""Block Kit for the Slack surface, built with slack_sdk.models so that nothing exceeds Slack's limits.

Builders only build: they take what to show and return blocks; sending them is the handlers' job.
"""

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
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)

from bot.i18n import text
from storage.models import Account, Status
from storage.scopes import Capability

RECONNECT_ACTION = "reconnect_gmail"
SWITCH_ACTION = "switch_gmail_account"
DISPLAY_ZONE = ZoneInfo("Asia/Seoul")
_EMOJI = {
    Status.HEALTHY: "✅",
    Status.UNKNOWN: "⏳",
    Status.EXPIRED: "⚠️",
    Status.REVOKED: "⚠️",
    Status.MISSING: "⚠️",
    Status.INSUFFICIENT_SCOPE: "⚠️",
    Status.DISCONNECTED: "⏸️",
}


@dataclass(frozen=True)
class StatusView:
    """What the status card shows for one Slack user."""

    account: Account | None
    status: Status
    reconnect_url: str
    switch_url: str


def status_card(view: StatusView, locale: str) -> list[dict[str, Any]]:
    """The /gmail-status card (also the App Home): account, status and cause, what works, and the buttons."""
    account, status = view.account, view.status
    blocks: list[Block] = [HeaderBlock(text=text(locale, "slack.status.title"))]
    if account is None:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=text(locale, "slack.status.no_account"))))
    else:
        email = account.email or text(locale, "slack.status.unknown_email")
        lines = [
            text(locale, "slack.status.account", email=email),
            text(
                locale,
                "slack.status.state",
                emoji=_EMOJI[status],
                label=text(locale, f"slack.label.{status}"),
            ),
        ]
        if status.needs_user or status is Status.DISCONNECTED:
            lines.append(text(locale, f"slack.cause.{status}"))
        blocks.append(SectionBlock(text=MarkdownTextObject(text="\n".join(lines))))
        capabilities = account.capabilities if account.has_refresh_token else frozenset()
        blocks.append(
            ContextBlock(
                elements=[
                    MarkdownTextObject(
                        text=text(
                            locale,
                            "slack.status.works",
                            read=_mark(Capability.READ in capabilities),
                            send=_mark(Capability.SEND in capabilities),
                        )
                    ),
                    MarkdownTextObject(
                        text=text(locale, "slack.status.expiry", when=_when(account.expiry, locale))
                    ),
                    MarkdownTextObject(
                        text=text(
                            locale, "slack.status.last_refresh", when=_when(account.last_refresh_at, locale)
                        )
                    ),
                ]
            )
        )
    if status is not Status.HEALTHY:
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=text(locale, "slack.status.lose"))]))
    blocks.append(DividerBlock())
    blocks.append(ActionsBlock(block_id="gmail_status_actions", elements=_buttons(view, locale)))
    return [block.to_dict() for block in blocks]


def _buttons(view: StatusView, locale: str) -> list[ButtonElement]:
    label = "slack.button.reconnect" if view.account is not None else "slack.button.connect"
    buttons = [
        ButtonElement(
            text=text(locale, label),
            action_id=RECONNECT_ACTION,
            url=view.reconnect_url,
            style=None if view.status is Status.HEALTHY else "primary",
        ),
    ]
    if view.account is not None:
        buttons.append(
            ButtonElement(
                text=text(locale, "slack.button.switch"), action_id=SWITCH_ACTION, url=view.switch_url
            )
        )
    return buttons


def help_blocks(locale: str, *, admin: bool) -> list[dict[str, Any]]:
    """The /gmail-status help text (with the admin commands for admins)."""
    lines = [text(locale, "slack.help")] + ([text(locale, "slack.help.admin")] if admin else [])
    return [SectionBlock(text=MarkdownTextObject(text="\n\n".join(lines))).to_dict()]


def home_view(view: StatusView, locale: str) -> dict[str, Any]:
    """The App Home tab: a short introduction and the status card."""
    intro = SectionBlock(text=MarkdownTextObject(text=text(locale, "slack.home.intro"))).to_dict()
    return {"type": "home", "blocks": [intro, *status_card(view, locale)]}


def _mark(ok: bool) -> str:
    return "✅" if ok else "❌"


def _when(moment: datetime | None, locale: str) -> str:
    if moment is None:
        return text(locale, "slack.status.never")
    return moment.astimezone(DISPLAY_ZONE).strftime("%Y-%m-%d %H:%M KST")
