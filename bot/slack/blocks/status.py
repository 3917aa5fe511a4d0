"""The /gmail-status card, its help, notices, and the App Home tab that shows the same card."""

from __future__ import annotations

from dataclasses import dataclass
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

from bot.google.health import Cause
from bot.google.scopes import Capability, capabilities_of
from bot.slack.blocks.causes import briefing_meanwhile, user_cause
from bot.slack.blocks.elements import (
    DISCONNECT_ACTION,
    EMOJI,
    LINK_ACTION,
    RECONNECT_ACTION,
    SECTION_LIMIT,
    SWITCH_ACTION,
    button_text,
    confirm_dialog,
    local_time,
    shorten,
)
from bot.slack.mrkdwn import Mrkdwn, as_mrkdwn, slack_text
from storage.causes import CauseCode
from storage.models import Account, Status


@dataclass(frozen=True)
class StatusView:
    """What the status card shows for one Slack user."""

    account: Account | None
    status: Status
    reconnect_url: str
    switch_url: str
    zone: ZoneInfo  # where times are shown: BRIEFING_TIMEZONE
    code: CauseCode | None = None  # why the status is what it is (storage/causes.py)
    offer: Account | None = None  # an unlinked row with the user's Slack email, offered for linking
    notice: Mrkdwn | None = None  # one line above the card saying what just happened (e.g. "Disconnected")
    missing: tuple[Capability, ...] = ()  # the required permissions the account's grant lacks


def status_card(view: StatusView, locale: str) -> list[dict[str, Any]]:
    """The /gmail-status card (also the App Home): account, status and cause, what works, and the buttons."""
    account, status = view.account, view.status
    blocks: list[Block] = [HeaderBlock(text=slack_text(locale, "slack.status.title"))]
    if view.notice:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=view.notice)))
    if account is None:
        blocks.append(
            SectionBlock(text=MarkdownTextObject(text=slack_text(locale, "slack.status.no_account")))
        )
        if view.offer is not None:
            blocks.append(
                SectionBlock(
                    text=MarkdownTextObject(
                        text=slack_text(locale, "slack.status.offer", email=view.offer.email)
                    )
                )
            )
    else:
        email = account.email or slack_text(locale, "slack.status.unknown_email")
        lines = [
            slack_text(locale, "slack.status.account", email=email),
            slack_text(
                locale,
                "slack.status.state",
                emoji=EMOJI[status],
                label=slack_text(locale, f"slack.label.{status}"),
            ),
        ]
        if status.needs_user or status is Status.DISCONNECTED:
            ends = account.refresh_token_expires_at if account.has_refresh_token else None
            lines.append(user_cause(view.code, status, locale, access_ends_at=ends, zone=view.zone))
        if status is Status.DISABLED:
            reason = disabled_reason(account.metadata.get("google_disabled_reason"), locale)
            lines += [
                slack_text(locale, "slack.cause.disabled"),
                slack_text(locale, "slack.disabled.reason", reason=reason),
            ]
        blocks.append(SectionBlock(text=MarkdownTextObject(text="\n".join(lines))))
        capabilities = capabilities_of(account.scopes) if account.has_refresh_token else frozenset()
        blocks.append(
            ContextBlock(
                elements=[
                    MarkdownTextObject(
                        text=slack_text(
                            locale,
                            "slack.status.works",
                            read=_mark(Capability.READ in capabilities),
                            send=_mark(Capability.SEND in capabilities),
                        )
                    ),
                    MarkdownTextObject(
                        text=slack_text(
                            locale, "slack.status.expiry", when=local_time(account.expiry, locale, view.zone)
                        )
                    ),
                    MarkdownTextObject(
                        text=slack_text(
                            locale,
                            "slack.status.last_refresh",
                            when=local_time(account.last_refresh_at, locale, view.zone),
                        )
                    ),
                    MarkdownTextObject(text=_last_fetch(account, locale, view.zone)),
                    *_access_until(account, locale, view.zone),
                ]
            )
        )
    if status is not Status.HEALTHY:
        cause = Cause.of(status)
        meanwhile = (
            briefing_meanwhile(locale, cause, missing=view.missing)
            if cause is not None
            else slack_text(locale, "slack.status.lose")
        )
        if meanwhile is not None:
            blocks.append(ContextBlock(elements=[MarkdownTextObject(text=meanwhile)]))
    blocks.append(DividerBlock())
    blocks.append(ActionsBlock(block_id="gmail_status_actions", elements=_buttons(view, locale)))
    return [block.to_dict() for block in blocks]


def _buttons(view: StatusView, locale: str) -> list[ButtonElement]:
    buttons = []
    if view.offer is not None:
        buttons.append(
            ButtonElement(
                text=button_text(slack_text(locale, "slack.button.link", email=view.offer.email)),
                action_id=LINK_ACTION,
                value=str(view.offer.id),
                style="primary",
            )
        )
    label = "slack.button.reconnect" if view.account is not None else "slack.button.connect"
    if view.status is not Status.DISABLED:  # reconnecting cannot help until Google enables the account again
        buttons.append(
            ButtonElement(
                text=slack_text(locale, label),
                action_id=RECONNECT_ACTION,
                url=view.reconnect_url,
                style=None if view.status is Status.HEALTHY or view.offer is not None else "primary",
            )
        )
    if view.account is not None:
        buttons.append(
            ButtonElement(
                text=slack_text(locale, "slack.button.switch"), action_id=SWITCH_ACTION, url=view.switch_url
            )
        )
    if view.account is not None and (view.account.has_access_token or view.account.has_refresh_token):
        buttons.append(
            ButtonElement(
                text=slack_text(locale, "slack.button.disconnect"),
                action_id=DISCONNECT_ACTION,
                value=str(view.account.id),
                style="danger",
                confirm=confirm_dialog(locale, "slack.confirm.disconnect", style="danger"),
            )
        )
    return buttons


def help_blocks(locale: str, *, admin: bool, notice: Mrkdwn | None = None) -> list[dict[str, Any]]:
    """The /gmail-status help text (with the admin commands for admins), after an optional notice."""
    lines = [slack_text(locale, "slack.help")] + ([slack_text(locale, "slack.help.admin")] if admin else [])
    return (notice_blocks(notice) if notice else []) + notice_blocks(Mrkdwn("\n\n").join(lines))


def notice_blocks(line: Mrkdwn) -> list[dict[str, Any]]:
    """One line of text as a message (answers to admin commands, notices)."""
    return [SectionBlock(text=MarkdownTextObject(text=shorten(line, SECTION_LIMIT))).to_dict()]


def home_view(view: StatusView, locale: str) -> dict[str, Any]:
    """The App Home tab: a short introduction and the status card."""
    intro = SectionBlock(text=MarkdownTextObject(text=slack_text(locale, "slack.home.intro"))).to_dict()
    return {"type": "home", "blocks": [intro, *status_card(view, locale)]}


def _last_fetch(account: Account, locale: str, zone: ZoneInfo) -> Mrkdwn:
    if account.last_fetch_at is None:
        result = Mrkdwn("")
    elif account.last_fetch_result == "ok":
        result = slack_text(locale, "slack.status.fetch_ok", count=account.last_fetch_messages or 0)
    else:
        result = slack_text(
            locale, "slack.status.fetch_failed", reason=shorten(account.last_fetch_result or "?", 200)
        )
    return slack_text(
        locale, "slack.status.last_fetch", when=local_time(account.last_fetch_at, locale, zone), result=result
    )


def _access_until(account: Account, locale: str, zone: ZoneInfo) -> list[MarkdownTextObject]:
    """When the time-based access the user allowed ends, for an account that has it."""
    ends = account.refresh_token_expires_at
    if ends is None or not account.has_refresh_token:
        return []
    return [
        MarkdownTextObject(
            text=slack_text(locale, "slack.status.access_until", when=local_time(ends, locale, zone))
        )
    ]


def _mark(ok: bool) -> str:
    return "✅" if ok else "❌"


# Google's reasons for disabling an account that the catalogue words (slack.disabled.reason.*).
KNOWN_DISABLED_REASONS = ("hijacking", "bulk-account")


def disabled_reason(reason: object, locale: str) -> Mrkdwn:
    """Why Google disabled an account, in the reader's words; a reason Google names that we do not know, as is."""
    if isinstance(reason, str) and reason and reason not in KNOWN_DISABLED_REASONS:
        return as_mrkdwn(reason)
    return slack_text(locale, f"slack.disabled.reason.{reason or 'none'}")
