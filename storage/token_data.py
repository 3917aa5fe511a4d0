"""How tokens sit in gmail_tokens.token_data: plain JSONB as the legacy table stores them, or AES-256-GCM encrypted.

Plain:     {"access_token": "...", "refresh_token": "...", "token_type": "Bearer", ...}
Encrypted: {"token_type": "Bearer", "encrypted": {"access_token": "v1:<kid>:...", "refresh_token": "..."}, ...}

With encryption on, the plain keys are absent, so services that read `token_data->>'access_token'` get NULL
rather than ciphertext. Keys this module does not know are kept as they are.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from storage.crypto import DecryptionError, TokenCipher
from storage.errors import TokenUnreadable
from storage.models import TokenSet

TOKEN_FIELDS = ("access_token", "refresh_token")
ENCRYPTED = "encrypted"


class TokenCodec:
    """Packs tokens into token_data and unpacks them, encrypting when a cipher is configured."""

    def __init__(self, cipher: TokenCipher | None) -> None:
        self.cipher = cipher

    def pack(
        self, existing: Any, *, user_id: str, tokens: dict[str, str | None], token_type: str
    ) -> dict[str, Any]:
        """New token_data from the stored one and new token values (None removes that token)."""
        data = (
            {k: v for k, v in existing.items() if k not in (*TOKEN_FIELDS, ENCRYPTED)}
            if isinstance(existing, dict)
            else {}
        )
        data["token_type"] = token_type
        if self.cipher is None:
            data.update({name: value for name, value in tokens.items() if value})
            return data
        data[ENCRYPTED] = {
            name: self.cipher.encrypt(value, context=_context(user_id, name))
            for name, value in tokens.items()
            if value
        }
        return data

    def unpack(self, token_data: Any, *, user_id: str, expiry: datetime | None) -> TokenSet | None:
        """The decrypted tokens of a row, or None when it holds none (token_data NULL or empty)."""
        if not isinstance(token_data, dict):
            return None
        values = {name: self._read(token_data, user_id, name) for name in TOKEN_FIELDS}
        if not any(values.values()):
            return None
        return TokenSet(
            access_token=values["access_token"],
            refresh_token=values["refresh_token"],
            token_type=str(token_data.get("token_type") or "Bearer"),
            expiry=expiry,
        )

    def needs_rewrite(self, token_data: Any) -> bool:
        """True when a row's tokens are plain but should be encrypted, or encrypted under an old key."""
        if not isinstance(token_data, dict) or self.cipher is None:
            return False
        if any(token_data.get(name) for name in TOKEN_FIELDS):
            return True
        encrypted = token_data.get(ENCRYPTED)
        if not isinstance(encrypted, dict):
            return False
        return any(
            self.cipher.needs_reencryption(value) for value in encrypted.values() if isinstance(value, str)
        )

    def _read(self, token_data: dict[str, Any], user_id: str, name: str) -> str | None:
        encrypted = token_data.get(ENCRYPTED)
        if isinstance(encrypted, dict) and encrypted.get(name):
            if self.cipher is None:
                raise TokenUnreadable(
                    f"The {name} of account {user_id!r} is encrypted, but TOKEN_ENCRYPTION_KEYS is not set: "
                    "set it to the keys the tokens were encrypted with."
                )
            try:
                return self.cipher.decrypt(str(encrypted[name]), context=_context(user_id, name))
            except DecryptionError as error:
                raise TokenUnreadable(f"The {name} of account {user_id!r} cannot be read: {error}") from error
        value = token_data.get(name)
        return str(value) if value else None


def _context(user_id: str, name: str) -> str:
    # Bound as associated data: a ciphertext copied to another row or field no longer decrypts.
    return f"gmail_tokens:{user_id}:{name}"
