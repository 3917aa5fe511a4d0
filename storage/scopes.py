"""Google OAuth scope names as stored: the full URL form, sorted and unique."""

from __future__ import annotations

from collections.abc import Iterable

GOOGLE_SCOPE_PREFIX = "https://www.googleapis.com/auth/"
_OPENID_SHORT_NAMES = frozenset({"openid", "email", "profile"})


def normalize_scope(scope: str) -> str:
    """The full URL form of a scope: 'gmail.send' becomes https://www.googleapis.com/auth/gmail.send."""
    scope = scope.strip()
    if scope in _OPENID_SHORT_NAMES or "://" in scope:
        return scope
    return GOOGLE_SCOPE_PREFIX + scope


def normalize_scopes(scopes: object) -> list[str]:
    """Scopes as a sorted list of unique full names, from a list, a space-separated string or None."""
    if scopes is None:
        return []
    if isinstance(scopes, str):
        items: Iterable[object] = scopes.split()
    elif isinstance(scopes, list | tuple | set | frozenset):
        items = scopes
    else:
        return []
    return sorted({normalize_scope(item) for item in items if isinstance(item, str) and item.strip()})
