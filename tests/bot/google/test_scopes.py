"""Scopes are judged by what they allow (Google's Gmail discovery document), not by a hand-kept table."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from googleapiclient.discovery_cache import get_static_doc

from bot.google.health import offline_assessment
from bot.google.scopes import (
    Capability,
    capabilities_of,
    derive_capability_scopes,
    missing_capabilities,
    scopes_granting,
)
from storage.models import Status

G = "https://www.googleapis.com/auth/"
BOTH = {Capability.READ, Capability.SEND}
READ = {"https://mail.google.com/", G + "gmail.readonly", G + "gmail.modify"}
SEND = {"https://mail.google.com/", G + "gmail.send", G + "gmail.compose", G + "gmail.modify"}


@pytest.mark.parametrize(
    ("scopes", "expected"),
    [
        ([G + "gmail.modify"], BOTH),  # the legacy heejae row: modify reads and sends
        ([G + "gmail.send", G + "gmail.modify"], BOTH),  # the legacy test row
        (["openid", G + "userinfo.email", G + "userinfo.profile"], set()),  # the legacy unknown row
        ([G + "gmail.readonly"], {Capability.READ}),
        ([G + "gmail.send"], {Capability.SEND}),
        ([G + "gmail.compose"], {Capability.SEND}),
        ([G + "gmail.metadata"], set()),  # cannot search with q= nor read snippets
        (["https://mail.google.com/"], BOTH),
        ("openid email gmail.readonly gmail.send", BOTH),  # a space-separated string with short names
        (None, set()),
        ({"not": "a list"}, set()),
    ],
)
def test_capabilities(scopes: object, expected: set[Capability]) -> None:
    assert capabilities_of(scopes) == expected


def test_missing() -> None:
    assert missing_capabilities([G + "gmail.readonly"], BOTH) == [Capability.SEND]
    assert missing_capabilities([G + "gmail.modify"], BOTH) == []


def test_offline_assessment() -> None:
    full = [G + "gmail.readonly", G + "gmail.send"]
    status, cause = offline_assessment(
        has_access_token=False, has_refresh_token=False, scopes=[], required=BOTH, is_equipped=True
    )
    assert status is Status.MISSING and "is_equipped" in cause
    status, cause = offline_assessment(
        has_access_token=True, has_refresh_token=False, scopes=full, required=BOTH
    )
    assert status is Status.MISSING and "refresh token" in cause
    status, cause = offline_assessment(
        has_access_token=True, has_refresh_token=True, scopes=[G + "gmail.readonly"], required=BOTH
    )
    assert status is Status.INSUFFICIENT_SCOPE and "gmail.send" in cause and "gmail.readonly" not in cause
    status, _ = offline_assessment(has_access_token=True, has_refresh_token=True, scopes=full, required=BOTH)
    assert status is Status.UNKNOWN


def test_shipped_document_gives_the_known_answer() -> None:
    # Fails when a google-api-python-client release ships a Gmail document that changes who can read or send:
    # look at what Google changed before accepting the new sets here.
    assert scopes_granting(Capability.READ) == READ
    assert scopes_granting(Capability.SEND) == SEND


def gmail_document() -> dict[str, Any]:
    """A fresh parse of the shipped document, so a test can change it without touching the cached one."""
    return json.loads(get_static_doc("gmail", "v1"))


def messages(document: dict[str, Any]) -> dict[str, Any]:
    return document["resources"]["users"]["resources"]["messages"]["methods"]


def scope_about(document: dict[str, Any], short_name: str) -> dict[str, Any]:
    return document["auth"]["oauth2"]["scopes"][G + short_name]


def q_rules_out_readonly_too(document: dict[str, Any]) -> None:
    messages(document)["list"]["parameters"]["q"]["description"] = (
        "Only return messages matching the specified query. Parameter cannot be used when accessing the api "
        "using the gmail.metadata or `gmail.readonly` scopes. Other text naming gmail.modify is not a rule."
    )


def q_rules_out_nothing(document: dict[str, Any]) -> None:
    messages(document)["list"]["parameters"]["q"]["description"] = "Only return messages matching the query."


def get_drops_modify(document: dict[str, Any]) -> None:
    messages(document)["get"]["scopes"].remove(G + "gmail.modify")


def compose_becomes_add_on_only(document: dict[str, Any]) -> None:
    scope_about(document, "gmail.compose")["description"] = "Manage drafts and send emails from the Add-on"


def add_on_compose_no_longer_says_add_on(document: dict[str, Any]) -> None:
    scope_about(document, "gmail.addons.current.action.compose")["description"] = (
        "Manage drafts and send emails"
    )


@pytest.mark.parametrize(
    ("change", "read", "send"),
    [
        (q_rules_out_readonly_too, READ - {G + "gmail.readonly"}, SEND),
        (q_rules_out_nothing, READ | {G + "gmail.metadata"}, SEND),
        (get_drops_modify, READ - {G + "gmail.modify"}, SEND),
        (compose_becomes_add_on_only, READ, SEND - {G + "gmail.compose"}),
        (add_on_compose_no_longer_says_add_on, READ, SEND | {G + "gmail.addons.current.action.compose"}),
    ],
)
def test_derivation_reads_the_document(
    change: Callable[[dict[str, Any]], None], read: set[str], send: set[str]
) -> None:
    document = gmail_document()
    assert derive_capability_scopes(document) == {Capability.READ: READ, Capability.SEND: SEND}
    change(document)
    assert derive_capability_scopes(document) == {Capability.READ: read, Capability.SEND: send}
    assert scopes_granting(Capability.READ) == READ  # the shipped answer, parsed once, is not touched
