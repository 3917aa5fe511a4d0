"""Scopes are judged by what they allow (Google's Gmail API documentation), not by seed 000's table."""

from __future__ import annotations

import pytest

from bot.google.health import offline_assessment
from bot.google.scopes import Capability, capabilities_of, missing_capabilities
from storage.models import Status

G = "https://www.googleapis.com/auth/"
BOTH = {Capability.READ, Capability.SEND}


@pytest.mark.parametrize(
    ("scopes", "expected"),
    [
        ([G + "gmail.modify"], BOTH),  # seed 000's heejae: modify reads and sends
        ([G + "gmail.send", G + "gmail.modify"], BOTH),  # seed 000's test
        (["openid", G + "userinfo.email", G + "userinfo.profile"], set()),  # seed 000's unknown
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
