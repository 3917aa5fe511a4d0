"""The consent flow's pages as HTML: the mark before each title."""

from __future__ import annotations

import pytest

from handlers.http.pages import render


def mark(page: str, locale: str = "en") -> str:
    html = render(page, locale, params={"email": "x@gmail.com"}).text
    assert html is not None
    return html.split('<span class="mark" aria-hidden="true">')[1].split("</span>")[0]


@pytest.mark.parametrize("page", ["connected", "already_connected"])
def test_a_page_that_ends_well_is_marked_done(page: str) -> None:
    assert mark(page) == "✅"


def test_a_cancel_the_user_chose_is_not_marked_as_a_warning() -> None:
    assert mark("denied") == mark("denied", "ko") == "ℹ️"


@pytest.mark.parametrize(
    "page", ["link_expired", "state_wrong_browser", "google_unavailable", "server_error"]
)
def test_a_page_with_something_to_fix_is_marked_as_a_warning(page: str) -> None:
    assert mark(page) == "⚠️"
