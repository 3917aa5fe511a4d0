"""Import token files as the original gmail_tokens import did (Google's authorized-user JSON), recording where each came from."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.errors import GmailReconnectError
from bot.google.endpoints import GOOGLE_AUTH_URI
from bot.google.health import offline_assessment, offline_code
from bot.google.scopes import Capability
from storage.accounts import Accounts
from storage.models import Account, TokenGrant
from storage.scopes import normalize_scopes


class TokenFileError(GmailReconnectError):
    """A token file cannot be imported; the message names the file and what is wrong."""


@dataclass(frozen=True)
class TokenFile:
    """What one authorized-user JSON file holds."""

    path: Path
    grant: TokenGrant
    oauth_config: dict[str, Any]
    email: str | None


def default_user_id(path: Path) -> str:
    """The user_id the original import derived from a file name: tokens/heejae_gmail.json → heejae."""
    stem = path.stem
    return stem.removesuffix("_gmail").removesuffix("_token") or stem


def read_token_file(path: Path) -> TokenFile:
    """Parse and check one file: it needs a refresh token or an access token, and a client id."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TokenFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise TokenFileError(f"{path}: not a JSON token file ({type(error).__name__})") from None
    if not isinstance(document, dict):
        raise TokenFileError(f"{path}: expected a JSON object with token and refresh_token")
    access_token = _text(document, "token") or _text(document, "access_token")
    refresh_token = _text(document, "refresh_token")
    if not (access_token or refresh_token):
        raise TokenFileError(f"{path}: has neither 'token' nor 'refresh_token'; nothing to import")
    return TokenFile(
        path=path,
        grant=TokenGrant(
            access_token=access_token,
            refresh_token=refresh_token,
            expiry=_expiry(path, document.get("expiry")),
            scopes=normalize_scopes(document.get("scopes") or document.get("scope")),
        ),
        oauth_config={
            key: document[key]
            for key in ("client_id", "client_secret", "token_uri", "auth_uri")
            if isinstance(document.get(key), str)
        }
        | ({} if document.get("auth_uri") else {"auth_uri": GOOGLE_AUTH_URI}),
        email=_text(document, "account") or _text(document, "email"),
    )


async def import_token_file(
    accounts: Accounts,
    token_file: TokenFile,
    *,
    user_id: str,
    slack_user_id: str | None,
    required: list[Capability],
    actor: str,
) -> Account:
    """Store one file's tokens on `user_id` (creating the row), with source_file and imported_at."""
    status, cause = offline_assessment(
        has_access_token=bool(token_file.grant.access_token),
        has_refresh_token=bool(token_file.grant.refresh_token),
        scopes=token_file.grant.scopes or [],
        required=required,
    )
    code = offline_code(
        status,
        has_access_token=bool(token_file.grant.access_token),
        scopes=token_file.grant.scopes or [],
        required=required,
    )
    metadata: dict[str, Any] = {
        "source_file": token_file.path.name,
        "imported_at": datetime.now(UTC).date().isoformat(),
    }
    if token_file.email:
        metadata["email"] = token_file.email
    return await accounts.store_tokens(
        grant=token_file.grant,
        actor=actor,
        user_id=user_id,
        slack_user_id=slack_user_id,
        metadata=metadata,
        oauth_config=token_file.oauth_config or None,
        status=status,
        cause=cause if status.needs_user else "Imported from a file; not checked with Google yet.",
        code=code,
        action="tokens.imported",
        details={"source_file": token_file.path.name},
    )


def _text(document: dict[str, Any], key: str) -> str | None:
    value = document.get(key)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _expiry(path: Path, value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise TokenFileError(f"{path}: 'expiry' is not an ISO 8601 time: {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
