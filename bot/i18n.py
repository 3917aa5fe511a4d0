"""User-facing text in Korean and English: one catalogue per language (bot/locales/*.json), never in code."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

LOCALES = ("ko", "en")


@cache
def catalogue(locale: str) -> dict[str, str]:
    """Every text of one language, by key."""
    data = resources.files("bot").joinpath("locales", f"{locale}.json").read_text(encoding="utf-8")
    texts: dict[str, str] = json.loads(data)
    return texts


def text(locale: str, key: str, **params: Any) -> str:
    """The text `key` in `locale` (falling back to Korean, the default), with {placeholders} filled in."""
    texts = catalogue(locale if locale in LOCALES else "ko")
    return texts[key].format(**params) if params else texts[key]


def pick_locale(accept_language: str | None, default: str) -> str:
    """The first supported language of an Accept-Language header, by preference; `default` if none."""
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate((accept_language or "").split(",")):
        tag, *params = item.split(";")
        quality = 1.0
        for param in params:
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        language = tag.strip().lower().split("-")[0]
        if language in LOCALES and quality > 0:
            ranked.append((-quality, position, language))
    return min(ranked)[2] if ranked else default
