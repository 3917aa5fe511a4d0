"""Slack's identifiers as the bot reads and writes them: user and channel IDs, mentions, and audit actors."""

from __future__ import annotations

import re

# U… for users, W… for Enterprise Grid users; C… for channels, G… for private channels and older groups.
USER_ID = r"[UW][A-Z0-9]{2,20}"
SLACK_USER_ID = re.compile(USER_ID)
SLACK_CHANNEL_ID = re.compile(r"[CG][A-Z0-9]{2,20}")
# A user as a command's text names them: <@U123|name> (Slack's escaping), @U123 or U123.
MENTION = re.compile(rf"<@({USER_ID})(?:\|[^>]*)?>|@?({USER_ID})")


def is_user_id(value: str) -> bool:
    """True for a Slack user ID such as U0123ABCD."""
    return SLACK_USER_ID.fullmatch(value) is not None


def mentioned_user(value: str) -> str | None:
    """The user ID in `<@U123|name>`, `@U123` or `U123`; None for anything else."""
    match = MENTION.fullmatch(value)
    return (match.group(1) or match.group(2)) if match else None


def slack_actor(slack_user_id: str) -> str:
    """The audit log's actor for something a Slack user did."""
    return f"slack:{slack_user_id}"
