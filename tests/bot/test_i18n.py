"""The Korean and English catalogues match key for key and placeholder for placeholder; Accept-Language picking."""

from __future__ import annotations

import json
import string
from importlib import resources

import pytest

from bot.i18n import LOCALES, catalogue, pick_locale, text


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def raw_pairs(locale: str) -> list[tuple[str, object]]:
    data = resources.files("bot").joinpath("locales", f"{locale}.json").read_text(encoding="utf-8")
    pairs: list[tuple[str, object]] = []
    json.loads(data, object_pairs_hook=lambda items: pairs.extend(items) or dict(items))
    return pairs


def test_both_languages_are_catalogued() -> None:
    assert set(LOCALES) == {"ko", "en"}
    for locale in LOCALES:
        assert len(catalogue(locale)) > 10


def test_catalogues_have_the_same_keys() -> None:
    ko, en = catalogue("ko"), catalogue("en")
    assert sorted(set(ko) - set(en)) == []
    assert sorted(set(en) - set(ko)) == []


@pytest.mark.parametrize("locale", LOCALES)
def test_no_key_is_written_twice(locale: str) -> None:
    # json.loads keeps the last of duplicate keys silently, which would hide a text.
    keys = [key for key, _ in raw_pairs(locale)]
    assert sorted(key for key in set(keys) if keys.count(key) > 1) == []


@pytest.mark.parametrize("locale", LOCALES)
def test_every_text_is_a_non_empty_string(locale: str) -> None:
    texts = catalogue(locale)
    assert [key for key, value in texts.items() if not isinstance(value, str) or not value.strip()] == []


def test_placeholders_match_between_languages() -> None:
    ko, en = catalogue("ko"), catalogue("en")
    mismatched = {
        key: (placeholders(ko[key]), placeholders(en[key]))
        for key in ko.keys() & en.keys()
        if placeholders(ko[key]) != placeholders(en[key])
    }
    assert mismatched == {}


@pytest.mark.parametrize("locale", LOCALES)
def test_placeholders_are_named(locale: str) -> None:
    # A positional "{}" or "{0}" could never be filled by text(..., **params).
    texts = catalogue(locale)
    positional = {
        key: names
        for key, value in texts.items()
        if (names := placeholders(value)) and not all(name.isidentifier() for name in names)
    }
    assert positional == {}


@pytest.mark.parametrize("locale", LOCALES)
def test_every_text_formats_with_its_placeholders(locale: str) -> None:
    for key, template in catalogue(locale).items():
        params = {name: f"<{name}>" for name in placeholders(template)}
        rendered = text(locale, key, **params) if params else text(locale, key)
        for name in params:
            assert f"<{name}>" in rendered, key
        # Text without placeholders is shown unformatted, so a brace in it would reach the user as is.
        assert "{" not in rendered and "}" not in rendered, key


def test_text_fills_placeholders() -> None:
    key = next(key for key, value in catalogue("en").items() if placeholders(value) == {"email"})

    assert "someone@example.com" in text("en", key, email="someone@example.com")
    assert "someone@example.com" in text("ko", key, email="someone@example.com")
    assert text("en", key, email="x@y.z") != text("ko", key, email="x@y.z")


@pytest.mark.parametrize("unsupported", ["fr", "", "EN", "ko-KR"])
def test_text_falls_back_to_korean(unsupported: str) -> None:
    for key in catalogue("ko"):
        assert text(unsupported, key) == catalogue("ko")[key]


def test_text_of_an_unknown_key_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        text("en", "no.such.key")


@pytest.mark.parametrize(
    ("header", "default", "expected"),
    [
        (None, "ko", "ko"),
        (None, "en", "en"),
        ("", "en", "en"),
        ("en-US,en;q=0.9", "ko", "en"),
        ("ko-KR,ko;q=0.9,en;q=0.8", "en", "ko"),
        ("fr-FR,en;q=0.5", "ko", "en"),
        ("en;q=0.1,ko;q=0.9", "en", "ko"),
        ("fr", "ko", "ko"),
        ("fr", "en", "en"),
        ("en;q=0", "ko", "ko"),
        ("en;q=0", "en", "en"),
        ("en;q=abc, ko", "en", "ko"),
        ("EN-gb", "ko", "en"),
        (" ko ; q=0.5 , en ; q=0.4 ", "en", "ko"),
        ("ko;q=0.5,en;q=0.5", "en", "ko"),  # a tie goes to the first listed
        ("en;q=0.5,ko;q=0.5", "ko", "en"),
        ("*", "en", "en"),
        (",,;;,", "en", "en"),
    ],
)
def test_pick_locale(header: str | None, default: str, expected: str) -> None:
    assert pick_locale(header, default) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [("en;Q=0.9, ko;q=0.5", "en"), ("ko;level=1;q=0.2, en;q=0.8", "en"), ("en; q=0.3 ,ko; q=0.4", "ko")],
)
def test_pick_locale_reads_the_quality_wherever_and_however_it_is_written(header: str, expected: str) -> None:
    assert pick_locale(header, "ko") == expected
