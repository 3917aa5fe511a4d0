"""Google OAuth scopes judged by capability (can read mail, can send mail), from Google's documented lists."""

from __future__ import annotations

import enum
from collections.abc import Iterable

from storage.scopes import FULL_MAIL_SCOPE, GOOGLE_SCOPE_PREFIX, normalize_scopes


class Capability(enum.StrEnum):
    """Something a Gmail connection can do."""

    READ = "read"
    SEND = "send"


# The scopes Google's Gmail discovery document allows for users.messages.list with a `q` query and
# users.messages.get (the briefing's calls). gmail.metadata is left out: it cannot use `q` or read snippets.
_READ_SCOPES = frozenset(
    {
        FULL_MAIL_SCOPE,
        GOOGLE_SCOPE_PREFIX + "gmail.readonly",
        GOOGLE_SCOPE_PREFIX + "gmail.modify",
    }
)
# The scopes the discovery document allows for users.messages.send. gmail.modify is among them ("Read,
# compose, and send emails"). gmail.addons.current.action.compose is left out: it works only inside an add-on.
_SEND_SCOPES = frozenset(
    {
        FULL_MAIL_SCOPE,
        GOOGLE_SCOPE_PREFIX + "gmail.send",
        GOOGLE_SCOPE_PREFIX + "gmail.compose",
        GOOGLE_SCOPE_PREFIX + "gmail.modify",
    }
)


def capabilities_of(scopes: object) -> frozenset[Capability]:
    """What a set of granted scopes lets the bot do with the mailbox."""
    granted = set(normalize_scopes(scopes))
    found = set()
    if granted & _READ_SCOPES:
        found.add(Capability.READ)
    if granted & _SEND_SCOPES:
        found.add(Capability.SEND)
    return frozenset(found)


def missing_capabilities(scopes: object, required: Iterable[Capability]) -> list[Capability]:
    """The required capabilities the granted scopes lack, in a stable order (read before send)."""
    have = capabilities_of(scopes)
    return [capability for capability in Capability if capability in set(required) and capability not in have]
