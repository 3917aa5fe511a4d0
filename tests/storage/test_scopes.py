"""Scopes are stored in their full URL form, sorted and unique, whatever form they arrive in."""

from __future__ import annotations

from storage.scopes import normalize_scopes

G = "https://www.googleapis.com/auth/"


def test_normalize() -> None:
    assert normalize_scopes(["gmail.send", " openid ", G + "gmail.send", ""]) == [G + "gmail.send", "openid"]
