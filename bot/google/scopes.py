"""Google OAuth scopes judged by capability (can read mail, can send mail), from Gmail's discovery document."""

from __future__ import annotations

import enum
import functools
import json
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from googleapiclient.discovery_cache import get_static_doc

from storage.scopes import normalize_scope, normalize_scopes

# The sign-in scopes: they say who the user is (the email that must match the linked mailbox), and Google's
# granular consent screen has no box for unticking them.
IDENTITY_SCOPES = frozenset(
    {
        "openid",
        "email",
        "profile",
        "https://www.googleapis.com/auth/userinfo.email",
        "https://www.googleapis.com/auth/userinfo.profile",
    }
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")  # a dot inside a scope name (gmail.metadata) ends no sentence
_ADD_ON = re.compile(r"\badd-?ons?\b", re.IGNORECASE)


class Capability(enum.StrEnum):
    """Something a Gmail connection can do."""

    READ = "read"
    SEND = "send"


def derive_capability_scopes(document: Mapping[str, Any]) -> dict[Capability, frozenset[str]]:
    """The scopes that grant each capability, by a parsed Gmail discovery document."""
    messages = document["resources"]["users"]["resources"]["messages"]["methods"]
    scopes = document["auth"]["oauth2"]["scopes"]
    # The briefing lists messages with a `q` query, then gets each one. A scope that the description of `q`
    # rules out (today gmail.metadata, which cannot read snippets either) cannot search as the briefing does.
    read = _allowed(messages["list"]) & _allowed(messages["get"])
    read -= _ruled_out(messages["list"]["parameters"]["q"].get("description", ""), known=scopes)
    # An add-on scope such as gmail.addons.current.action.compose is allowed to send, but only from inside a
    # Gmail add-on the user is interacting with, never from this bot.
    send = _allowed(messages["send"]) - {
        name for name, about in scopes.items() if _ADD_ON.search(about.get("description", ""))
    }
    return {Capability.READ: frozenset(read), Capability.SEND: frozenset(send)}


def scopes_granting(capability: Capability) -> frozenset[str]:
    """The scopes that grant a capability, by the Gmail discovery document google-api-python-client ships."""
    return _shipped_capability_scopes()[capability]


def capabilities_of(scopes: object) -> frozenset[Capability]:
    """What a set of granted scopes lets the bot do with the mailbox."""
    if isinstance(scopes, list | tuple) and all(isinstance(scope, str) for scope in scopes):
        # A run asks this of every account, whose stored scopes are one of a few lists: judged once each.
        return _capabilities_of_names(tuple(scopes))
    return _capabilities_of(frozenset(normalize_scopes(scopes)))


@functools.lru_cache(maxsize=256)
def _capabilities_of_names(scopes: tuple[str, ...]) -> frozenset[Capability]:
    return _capabilities_of(frozenset(normalize_scopes(scopes)))


@functools.lru_cache(maxsize=256)
def _capabilities_of(granted: frozenset[str]) -> frozenset[Capability]:
    return frozenset(capability for capability in Capability if granted & scopes_granting(capability))


def missing_capabilities(scopes: object, required: Iterable[Capability]) -> list[Capability]:
    """The required capabilities the granted scopes lack, in a stable order (read before send)."""
    have = capabilities_of(scopes)
    return [capability for capability in Capability if capability in set(required) and capability not in have]


def scopes_to_ask(configured: Iterable[str], lacking: Iterable[Capability]) -> list[str]:
    """Of the configured scopes, those an incremental request asks for: the sign-in ones and those that grant
    a lacking capability (Google keeps the rest with include_granted_scopes)."""
    wanted = set(lacking)
    return [
        scope
        for scope in configured
        if normalize_scope(scope) in IDENTITY_SCOPES or capabilities_of([scope]) & wanted
    ]


@functools.cache
def _shipped_capability_scopes() -> Mapping[Capability, frozenset[str]]:
    """The shipped document's answer, parsed and derived once per process (read-only, as it is shared)."""
    text = get_static_doc("gmail", "v1")
    if text is None:
        raise RuntimeError("google-api-python-client ships no Gmail v1 discovery document (gmail.v1.json)")
    return MappingProxyType(derive_capability_scopes(json.loads(text)))


def _allowed(method: Mapping[str, Any]) -> set[str]:
    """The scopes a discovery method lists as allowed for it."""
    return {normalize_scope(scope) for scope in method.get("scopes", [])}


def _ruled_out(description: str, *, known: Iterable[str]) -> set[str]:
    """The known scopes named in the sentences of a parameter's description that say it cannot be used."""
    named = set()
    for sentence in _SENTENCE_END.split(description):
        if "cannot be used" in sentence.lower():
            named |= {normalize_scope(word.strip("`'\"()[],;:.")) for word in sentence.split()}
    return named & set(known)
