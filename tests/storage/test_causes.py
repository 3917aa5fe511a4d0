"""The cause codes: one for every status that is not healthy, words for each in both languages, and a row of
the README's table for each."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.i18n import LOCALES, catalogue
from storage.causes import CauseCode, code_of, default_code
from storage.models import Status

README = Path(__file__).parents[2] / "README.md"


def test_every_status_but_healthy_has_a_default_code() -> None:
    assert default_code(Status.HEALTHY) is None
    assert [
        status for status in Status if status is not Status.HEALTHY and default_code(status) is None
    ] == []


def test_a_code_this_version_does_not_know_reads_as_none() -> None:
    assert code_of("refresh_token_revoked") is CauseCode.REFRESH_TOKEN_REVOKED
    assert code_of("grant_from_the_future") is None and code_of(None) is None


@pytest.mark.parametrize("locale", LOCALES)
def test_every_code_has_words_for_admins_and_for_users(locale: str) -> None:
    texts = catalogue(locale)
    assert [code for code in CauseCode if f"cause.{code}" not in texts] == []
    assert [code for code in CauseCode if f"cause.{code}.user" not in texts] == []


def test_the_readme_explains_every_code() -> None:
    rows = {line.split("|")[1].strip() for line in README.read_text().splitlines() if line.startswith("| `")}
    assert [code for code in CauseCode if f"`{code}`" not in rows] == []
