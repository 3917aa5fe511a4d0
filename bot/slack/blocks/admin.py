"""What admins see: every account's health (/gmail-status all) and each run's summary in ADMIN_CHANNEL_ID."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)

from bot.fleet import Attention, FleetPatterns
from bot.slack.blocks.causes import admin_cause
from bot.slack.blocks.elements import (
    ADMIN_LIST_LIMIT,
    EMOJI,
    NUDGE_ALL_ACTION,
    SECTION_LIMIT,
    chunks,
    confirm_dialog,
    shorten,
)
from bot.slack.mrkdwn import Mrkdwn, mention, slack_text
from storage.models import Account, Status
from storage.outbox import RunDelivery
from storage.runs import Result

# chat.postMessage refuses blocks whose texts add up to more than about 12,000 characters (msg_blocks_too_long,
# undocumented): the list of accounts gets at most this many, the counts and patterns above it the rest.
LIST_TEXT_BUDGET = 8000
EMAIL_LIMIT = 80
PATTERN_NAMES = 10  # users named in the "reconnecting again and again" line before "…and N more"


@dataclass(frozen=True)
class Overview:
    """Every account's health, for admins: counts by status and the accounts that need attention."""

    counts: dict[Status, int]
    attention: list[Attention]
    nudgeable: int  # how many of those are linked to a Slack user
    patterns: FleetPatterns = field(default_factory=FleetPatterns)


def admin_overview(overview: Overview, locale: str) -> list[dict[str, Any]]:
    """The /gmail-status all card: counts by status, the accounts needing attention, and a Nudge-all button."""
    total = sum(overview.counts.values())
    blocks: list[Block] = [HeaderBlock(text=slack_text(locale, "slack.admin.title", total=total))]
    counts = _status_counts(overview.counts, locale)
    blocks.append(SectionBlock(text=MarkdownTextObject(text="\n".join(counts) or "-")))
    blocks += _pattern_blocks(overview.patterns, locale)
    blocks.append(DividerBlock())
    if not overview.attention:
        blocks.append(
            SectionBlock(text=MarkdownTextObject(text=slack_text(locale, "slack.admin.all_healthy")))
        )
        return [block.to_dict() for block in blocks]
    rows = [_admin_row(item, locale) for item in overview.attention]
    heading = slack_text(locale, "slack.admin.attention", count=len(rows))
    blocks += _listed(heading, rows, locale)
    if overview.nudgeable:
        button = ButtonElement(
            text=slack_text(locale, "slack.button.nudge_all", count=overview.nudgeable),
            action_id=NUDGE_ALL_ACTION,
            value="unhealthy",
            style="primary",
            confirm=confirm_dialog(locale, "slack.confirm.nudge_all"),
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
    attention: list[Attention]
    patterns: FleetPatterns = field(default_factory=FleetPatterns)
    # How the run's messages went through the delivery queue, when it sent any; `last_sent` in the run's time.
    delivery: RunDelivery | None = None
    last_sent: str | None = None

    @property
    def still(self) -> int:
        """How many of them still need their user."""
        return sum(1 for item in self.attention if item.status.needs_user)


def _delivery(view: RunSummaryView, locale: str) -> list[Mrkdwn]:
    """How long the run's messages took to deliver, from the first queued to the last one Slack took."""
    delivery = view.delivery
    if delivery is None or delivery.sent == 0 or delivery.seconds is None:
        return []
    took = duration(delivery.seconds, locale)
    if delivery.open:
        return [
            slack_text(
                locale, "slack.summary.delivery_open", sent=delivery.sent, took=took, open=delivery.open
            )
        ]
    return [
        slack_text(
            locale, "slack.summary.delivery", sent=delivery.sent, took=took, last=view.last_sent or "-"
        )
    ]


def duration(seconds: float, locale: str) -> Mrkdwn:
    """A duration as people say it: "42 s", "17 min 5 s", "2 h 3 min" (in `locale`)."""
    whole = round(seconds)
    if whole < 60:
        return slack_text(locale, "slack.summary.duration.seconds", seconds=whole)
    if whole < 3600:
        return slack_text(locale, "slack.summary.duration.minutes", minutes=whole // 60, seconds=whole % 60)
    return slack_text(locale, "slack.summary.duration.hours", hours=whole // 3600, minutes=whole % 3600 // 60)


def run_summary(view: RunSummaryView, locale: str) -> tuple[list[dict[str, Any]], str]:
    """The admin channel's message about one run, edited as users reconnect: "3 → 1 need attention"."""
    kind = slack_text(locale, f"slack.summary.kind.{view.kind}")
    outcomes = Mrkdwn(" · ").join(
        slack_text(locale, f"slack.summary.outcome.{name}", count=view.outcomes[name])
        for name in Result
        if view.outcomes.get(name)
    )
    counts = _status_counts(view.counts, locale)
    before, now = len(view.attention), view.still
    if before == 0:
        verdict = slack_text(locale, "slack.summary.none")
    elif now == 0:
        verdict = slack_text(locale, "slack.summary.resolved", before=before)
    elif now == before:
        verdict = slack_text(locale, "slack.summary.attention", count=before)
    else:
        verdict = slack_text(locale, "slack.summary.attention_now", before=before, now=now)
    blocks: list[Block] = [
        HeaderBlock(text=slack_text(locale, "slack.summary.title", kind=kind, day=view.day)),
        SectionBlock(
            text=MarkdownTextObject(
                text=slack_text(locale, "slack.summary.accounts", total=view.total, outcomes=outcomes or "-")
                + "\n"
                + "\n".join([*counts, *_delivery(view, locale)])
            )
        ),
        *_pattern_blocks(view.patterns, locale),
        DividerBlock(),
    ]
    # Those still waiting first, then those who reconnected since.
    ordered = sorted(view.attention, key=lambda item: not item.status.needs_user)
    rows = [
        _admin_row(item, locale)
        if item.status.needs_user
        else slack_text(
            locale, "slack.summary.row_resolved", who=_who(item.account, locale), email=_email(item.account)
        )
        for item in ordered
    ]
    blocks += _listed(verdict, rows, locale)
    fallback = slack_text(
        locale, "slack.summary.fallback", kind=kind, day=view.day, now=now, total=view.total
    )
    return [block.to_dict() for block in blocks], fallback


def _status_counts(counts: dict[Status, int], locale: str) -> list[Mrkdwn]:
    """One line per status that has accounts ("✅ Connected: *12*"), in the order of Status."""
    return [
        slack_text(
            locale,
            "slack.admin.count",
            emoji=EMOJI[status],
            label=slack_text(locale, f"slack.label.{status}"),
            count=n,
        )
        for status, n in sorted(counts.items(), key=lambda item: list(Status).index(item[0]))
        if n
    ]


def _who(account: Account, locale: str) -> Mrkdwn:
    if account.slack_user_id:
        return mention(account.slack_user_id)
    return slack_text(locale, "slack.admin.not_linked", user_id=account.user_id)


def _admin_row(item: Attention, locale: str) -> Mrkdwn:
    return slack_text(
        locale,
        "slack.admin.row",
        who=_who(item.account, locale),
        email=_email(item.account),
        label=slack_text(locale, f"slack.label.{item.status}"),
        cause=admin_cause(item.code, item.detail, item.status, locale),
    )


def _email(account: Account) -> str:
    return shorten(account.email or "-", EMAIL_LIMIT)


def _listed(heading: Mrkdwn, rows: list[Mrkdwn], locale: str) -> list[Block]:
    """The heading and as many rows as Slack's limits leave room for (ADMIN_LIST_LIMIT rows, LIST_TEXT_BUDGET
    characters), then "…and N more", in sections of at most SECTION_LIMIT characters."""
    shown: list[Mrkdwn] = []
    used = len(heading)
    for row in rows[:ADMIN_LIST_LIMIT]:
        if used + 1 + len(row) > LIST_TEXT_BUDGET:
            break
        shown.append(row)
        used += 1 + len(row)
    if len(rows) > len(shown):
        shown.append(slack_text(locale, "slack.admin.more", count=len(rows) - len(shown)))
    return [
        SectionBlock(text=MarkdownTextObject(text=chunk))
        for chunk in chunks([heading, *shown], SECTION_LIMIT)
    ]


def _pattern_blocks(patterns: FleetPatterns, locale: str) -> list[Block]:
    """One section with what several accounts show together, or none."""
    lines: list[Mrkdwn] = []
    if patterns.testing_deaths:
        lines.append(
            slack_text(
                locale, "slack.pattern.testing_mode", count=patterns.testing_deaths, broken=patterns.broken
            )
        )
    if patterns.reconnecting:
        names = [
            slack_text(locale, "slack.pattern.reconnected_times", who=mention(slack_user_id), count=times)
            for slack_user_id, times in patterns.reconnecting[:PATTERN_NAMES]
        ]
        if len(patterns.reconnecting) > PATTERN_NAMES:
            names.append(
                slack_text(locale, "slack.pattern.more", count=len(patterns.reconnecting) - PATTERN_NAMES)
            )
        lines.append(
            slack_text(
                locale, "slack.pattern.reconnecting", days=patterns.window_days, who=Mrkdwn(", ").join(names)
            )
        )
    if not lines:
        return []
    return [SectionBlock(text=MarkdownTextObject(text="\n".join(lines)))]
