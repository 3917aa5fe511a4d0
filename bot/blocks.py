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
    ConfirmObject,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)

from bot.google_api import MailSummary
from bot.i18n import text
from bot.token_health import Cause
from storage.models import Account, Status
from storage.scopes import Capability

RECONNECT_ACTION = "reconnect_gmail"
SWITCH_ACTION = "switch_gmail_account"
DISCONNECT_ACTION = "disconnect_gmail"
LINK_ACTION = "link_gmail_account"
SNOOZE_ACTION = "snooze_reconnect_prompt"
NUDGE_ALL_ACTION = "nudge_all_unhealthy"
# Slack allows 50 blocks per message and 3,000 characters per section; the admin list stays well inside.
ADMIN_LIST_LIMIT = 40
SECTION_LIMIT = 2900
BUTTON_TEXT_LIMIT = 75
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
    offer: Account | None = None  # an unlinked row with the user's Slack email, offered for linking
    notice: str | None = None  # one line above the card saying what just happened (e.g. "Disconnected")


def status_card(view: StatusView, locale: str) -> list[dict[str, Any]]:
    """The /gmail-status card (also the App Home): account, status and cause, what works, and the buttons."""
    account, status = view.account, view.status
    blocks: list[Block] = [HeaderBlock(text=text(locale, "slack.status.title"))]
    if view.notice:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=view.notice)))
    if account is None:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=text(locale, "slack.status.no_account"))))
        if view.offer is not None:
            blocks.append(
                SectionBlock(
                    text=MarkdownTextObject(text=text(locale, "slack.status.offer", email=view.offer.email))
                )
            )
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
                    MarkdownTextObject(text=_last_fetch(account, locale)),
                ]
            )
        )
    if status is not Status.HEALTHY:
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=text(locale, "slack.status.lose"))]))
    blocks.append(DividerBlock())
    blocks.append(ActionsBlock(block_id="gmail_status_actions", elements=_buttons(view, locale)))
    return [block.to_dict() for block in blocks]


def _buttons(view: StatusView, locale: str) -> list[ButtonElement]:
    buttons = []
    if view.offer is not None:
        buttons.append(
            ButtonElement(
                text=_button_text(text(locale, "slack.button.link", email=view.offer.email)),
                action_id=LINK_ACTION,
                value=str(view.offer.id),
                style="primary",
            )
        )
    label = "slack.button.reconnect" if view.account is not None else "slack.button.connect"
    buttons.append(
        ButtonElement(
            text=text(locale, label),
            action_id=RECONNECT_ACTION,
            url=view.reconnect_url,
            style=None if view.status is Status.HEALTHY or view.offer is not None else "primary",
        )
    )
    if view.account is not None:
        buttons.append(
            ButtonElement(
                text=text(locale, "slack.button.switch"), action_id=SWITCH_ACTION, url=view.switch_url
            )
        )
    if view.account is not None and (view.account.has_access_token or view.account.has_refresh_token):
        buttons.append(
            ButtonElement(
                text=text(locale, "slack.button.disconnect"),
                action_id=DISCONNECT_ACTION,
                value=str(view.account.id),
                style="danger",
                confirm=_confirm(locale, "slack.confirm.disconnect", style="danger"),
            )
        )
    return buttons


def help_blocks(locale: str, *, admin: bool, notice: str | None = None) -> list[dict[str, Any]]:
    """The /gmail-status help text (with the admin commands for admins), after an optional notice."""
    lines = [text(locale, "slack.help")] + ([text(locale, "slack.help.admin")] if admin else [])
    return (notice_blocks(notice) if notice else []) + notice_blocks("\n\n".join(lines))


def notice_blocks(line: str) -> list[dict[str, Any]]:
    """One line of text as a message (answers to admin commands, notices)."""
    return [SectionBlock(text=MarkdownTextObject(text=_shorten(line, SECTION_LIMIT))).to_dict()]


def home_view(view: StatusView, locale: str) -> dict[str, Any]:
    """The App Home tab: a short introduction and the status card."""
    intro = SectionBlock(text=MarkdownTextObject(text=text(locale, "slack.home.intro"))).to_dict()
    return {"type": "home", "blocks": [intro, *status_card(view, locale)]}


@dataclass(frozen=True)
class PromptView:
    """What the Reconnect Gmail DM shows."""

    prompt_id: int
    cause: Cause
    email: str | None
    reconnect_url: str
    link_expires_at: datetime
    snoozed: bool = False
    first_connection: bool = False  # the user has no row yet: "Connect Gmail" rather than "Reconnect"


def reconnect_dm(view: PromptView, locale: str) -> tuple[list[dict[str, Any]], str]:
    """The Reconnect Gmail DM (blocks, and the notification text): the cause, what is lost, the buttons."""
    cause = text(locale, f"slack.cause.{view.cause}")
    body = [text(locale, "slack.dm.title"), cause]
    if view.cause is not Cause.TESTING_EXPIRY:
        body.append(text(locale, "slack.status.lose"))
    blocks: list[Block] = [SectionBlock(text=MarkdownTextObject(text="\n".join(body)))]
    buttons = [
        ButtonElement(
            text=text(locale, "slack.button.connect" if view.first_connection else "slack.button.reconnect"),
            action_id=RECONNECT_ACTION,
            url=view.reconnect_url,
            style="primary",
        )
    ]
    if not view.snoozed:
        buttons.append(
            ButtonElement(
                text=text(locale, "slack.button.snooze"), action_id=SNOOZE_ACTION, value=str(view.prompt_id)
            )
        )
    blocks.append(ActionsBlock(block_id="reconnect_prompt_actions", elements=buttons))
    notes = [text(locale, "slack.dm.link_expires", when=_when(view.link_expires_at, locale))]
    if view.email:
        notes.insert(0, text(locale, "slack.dm.account", email=view.email))
    if view.snoozed:
        notes.insert(0, text(locale, "slack.dm.snoozed"))
    blocks.append(ContextBlock(elements=[MarkdownTextObject(text=note) for note in notes]))
    return [block.to_dict() for block in blocks], text(locale, "slack.dm.fallback", cause=cause)


def reconnected_dm(email: str | None, locale: str) -> tuple[list[dict[str, Any]], str]:
    """The Reconnect Gmail DM once the user has reconnected: no buttons left to press."""
    line = (
        text(locale, "slack.dm.reconnected", email=email)
        if email
        else text(locale, "slack.dm.reconnected_plain")
    )
    return [SectionBlock(text=MarkdownTextObject(text=line)).to_dict()], line


def reconnected_confirmation(email: str | None, locale: str) -> str:
    """The short message posted after a reconnection."""
    return text(locale, "slack.dm.confirmation", email=email or "Gmail")


@dataclass(frozen=True)
class Overview:
    """Every account's health, for admins: counts by status and the accounts that need attention."""

    counts: dict[Status, int]
    attention: list[tuple[Account, Status, str | None]]
    nudgeable: int  # how many of those are linked to a Slack user


def admin_overview(overview: Overview, locale: str) -> list[dict[str, Any]]:
    """The /gmail-status all card: counts by status, the accounts needing attention, and a Nudge-all button."""
    total = sum(overview.counts.values())
    blocks: list[Block] = [HeaderBlock(text=text(locale, "slack.admin.title", total=total))]
    counts = _status_counts(overview.counts, locale)
    blocks.append(SectionBlock(text=MarkdownTextObject(text="\n".join(counts) or "-")))
    blocks.append(DividerBlock())
    if not overview.attention:
        blocks.append(SectionBlock(text=MarkdownTextObject(text=text(locale, "slack.admin.all_healthy"))))
        return [block.to_dict() for block in blocks]
    rows = [_admin_row(account, status, cause, locale) for account, status, cause in overview.attention]
    shown = rows[:ADMIN_LIST_LIMIT]
    if len(rows) > len(shown):
        shown.append(text(locale, "slack.admin.more", count=len(rows) - len(shown)))
    heading = text(locale, "slack.admin.attention", count=len(rows))
    for chunk in _chunks([heading, *shown], SECTION_LIMIT):
        blocks.append(SectionBlock(text=MarkdownTextObject(text=chunk)))
    if overview.nudgeable:
        button = ButtonElement(
            text=text(locale, "slack.button.nudge_all", count=overview.nudgeable),
            action_id=NUDGE_ALL_ACTION,
            value="unhealthy",
            style="primary",
            confirm=_confirm(locale, "slack.confirm.nudge_all"),
        )
        blocks.append(ActionsBlock(block_id="admin_actions", elements=[button]))
    return [block.to_dict() for block in blocks]


@dataclass(frozen=True)
class RunSummaryView:
    """A run's admin summary as it stands now: what the run found, and who has reconnected since."""

    kind: str
    day: str
    total: int
    outcomes: dict[str, int]
    counts: dict[Status, int]
    # The accounts that needed their user when the run handled them, each with its status now.
    attention: list[tuple[Account, Status, str | None]]

    @property
    def still(self) -> int:
        """How many of them still need their user."""
        return sum(1 for _, status, _ in self.attention if status.needs_user)


_OUTCOMES = ("digest", "checked", "prompted", "snoozed", "unavailable", "skipped", "failed")


def run_summary(view: RunSummaryView, locale: str) -> tuple[list[dict[str, Any]], str]:
    """The admin channel's message about one run, edited as users reconnect: "3 → 1 need attention"."""
    kind = text(locale, f"slack.summary.kind.{view.kind}")
    outcomes = " · ".join(
        text(locale, f"slack.summary.outcome.{name}", count=view.outcomes[name])
        for name in _OUTCOMES
        if view.outcomes.get(name)
    )
    counts = _status_counts(view.counts, locale)
    before, now = len(view.attention), view.still
    if before == 0:
        verdict = text(locale, "slack.summary.none")
    elif now == 0:
        verdict = text(locale, "slack.summary.resolved", before=before)
    elif now == before:
        verdict = text(locale, "slack.summary.attention", count=before)
    else:
        verdict = text(locale, "slack.summary.attention_now", before=before, now=now)
    blocks: list[Block] = [
        HeaderBlock(text=text(locale, "slack.summary.title", kind=kind, day=view.day)),
        SectionBlock(
            text=MarkdownTextObject(
                text=text(locale, "slack.summary.accounts", total=view.total, outcomes=outcomes or "-")
                + "\n"
                + "\n".join(counts)
            )
        ),
        DividerBlock(),
    ]
    # Those still waiting first, then those who reconnected since.
    ordered = sorted(view.attention, key=lambda item: not item[1].needs_user)
    rows = [
        _admin_row(account, status, cause, locale)
        if status.needs_user
        else text(locale, "slack.summary.row_resolved", who=_who(account, locale), email=account.email or "-")
        for account, status, cause in ordered
    ]
    shown = rows[:ADMIN_LIST_LIMIT]
    if len(rows) > len(shown):
        shown.append(text(locale, "slack.admin.more", count=len(rows) - len(shown)))
    for chunk in _chunks([verdict, *shown], SECTION_LIMIT):
        blocks.append(SectionBlock(text=MarkdownTextObject(text=chunk)))
    fallback = text(locale, "slack.summary.fallback", kind=kind, day=view.day, now=now, total=view.total)
    return [block.to_dict() for block in blocks], fallback


def _status_counts(counts: dict[Status, int], locale: str) -> list[str]:
    """One line per status that has accounts ("✅ Connected: *12*"), in the order of Status."""
    return [
        text(
            locale,
            "slack.admin.count",
            emoji=_EMOJI[status],
            label=text(locale, f"slack.label.{status}"),
            count=n,
        )
        for status, n in sorted(counts.items(), key=lambda item: list(Status).index(item[0]))
        if n
    ]


def _who(account: Account, locale: str) -> str:
    if account.slack_user_id:
        return f"<@{account.slack_user_id}>"
    return text(locale, "slack.admin.not_linked", user_id=account.user_id)


def _admin_row(account: Account, status: Status, cause: str | None, locale: str) -> str:
    return text(
        locale,
        "slack.admin.row",
        who=_who(account, locale),
        email=account.email or "-",
        label=text(locale, f"slack.label.{status}"),
        cause=_shorten(cause or text(locale, f"slack.cause.{status}"), 300),
    )


def digest_blocks(mail: list[MailSummary], total: int, locale: str) -> tuple[list[dict[str, Any]], str]:
    """The email part of the briefing: the newest unread messages (sender, subject, snippet).

    Built as plain dicts rather than slack_sdk's block models: this runs once per account per run, and the
    models' validation cost more CPU than the rest of the message."""
    if not mail:
        line = text(locale, "slack.digest.none")
        return [_markdown_section(line)], line
    blocks = [_markdown_section(text(locale, "slack.digest.title", count=total))]
    for message in mail:
        item = text(
            locale,
            "slack.digest.item",
            subject=_escape(_shorten(message.subject or text(locale, "slack.digest.no_subject"), 200)),
            sender=_escape(_shorten(message.sender, 150)),
            snippet=_escape(_shorten(message.snippet, 300)),
        )
        blocks.append(_markdown_section(item))
    if total > len(mail):
        more = text(locale, "slack.digest.more", count=total - len(mail))
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": more}]})
    return blocks, text(locale, "slack.digest.fallback", count=total)


def _markdown_section(line: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _shorten(line, SECTION_LIMIT)}}


def _escape(value: str) -> str:
    """Mail text shown as Slack mrkdwn: &, < and > escaped, so a subject cannot mention or link."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _confirm(locale: str, key: str, *, style: str | None = None) -> ConfirmObject:
    """Slack's confirmation dialog, from the catalogue's `key`.title/.text/.yes/.no."""
    return ConfirmObject(
        title=text(locale, f"{key}.title"),
        text=text(locale, f"{key}.text"),
        confirm=text(locale, f"{key}.yes"),
        deny=text(locale, f"{key}.no"),
        style=style,
    )


def _chunks(lines: list[str], limit: int) -> list[str]:
    """Lines joined into texts of at most `limit` characters each."""
    chunks: list[str] = []
    current = ""
    for line in lines:
        if current and len(current) + 1 + len(line) > limit:
            chunks.append(current)
            current = ""
        current = f"{current}\n{line}" if current else line
    return [*chunks, current] if current else chunks


def _shorten(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _button_text(value: str) -> str:
    return _shorten(value, BUTTON_TEXT_LIMIT)


def _last_fetch(account: Account, locale: str) -> str:
    if account.last_fetch_at is None:
        result = ""
    elif account.last_fetch_result == "ok":
        result = text(locale, "slack.status.fetch_ok", count=account.last_fetch_messages or 0)
    else:
        result = text(
            locale, "slack.status.fetch_failed", reason=_shorten(account.last_fetch_result or "?", 200)
        )
    return text(locale, "slack.status.last_fetch", when=_when(account.last_fetch_at, locale), result=result)


def _mark(ok: bool) -> str:
    return "✅" if ok else "❌"


def _when(moment: datetime | None, locale: str) -> str:
    if moment is None:
        return text(locale, "slack.status.never")
    return moment.astimezone(DISPLAY_ZONE).strftime("%Y-%m-%d %H:%M KST")
