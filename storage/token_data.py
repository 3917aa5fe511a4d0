"""How tokens sit in gmail_tokens.token_data: plain JSONB as the legacy table stores them, or AES-256-GCM encrypted.

Plain:     {"access_token": "...", "refresh_token": "...", "token_type": "Bearer", ...}
Encrypted: {"token_type": "Bearer", "encrypted": {"access_token": "v1:<kid>:...", "refresh_token": "..."}, ...}

With encryption on, the plain keys are absent, so services that read `token_data->>'access_token'` get NULL
rather than ciphertext. Keys this module does not know are kept as they are.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from storage.crypto import DecryptionError, TokenCipher, key_id_in
from storage.errors import TokenUnreadable
from storage.models import TokenSet

TOKEN_FIELDS = ("access_token", "refresh_token")
ENCRYPTED = "encrypted"
# How the reason of a ciphertext made for another row (or altered) ends; doctor looks for its origin.
STRAY = "its ciphertext belongs to another row or field, or was altered"


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

    def problems(self, token_data: Any, *, user_id: str) -> dict[str, str]:
        """Why each token of a row cannot be read, by field (empty when the row reads), e.g. for doctor."""
        if not isinstance(token_data, dict):
            return {}
        found = {}
        for name in TOKEN_FIELDS:
            try:
                self._read(token_data, user_id, name)
            except TokenUnreadable as error:
                found[name] = error.reason
        return found

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
            value = str(encrypted[name])
            try:
                return self._decrypt(value, _context(user_id, name))
            except DecryptionError:
                reason = f"the {name} " + self._why_unreadable(value, user_id, name)
                raise TokenUnreadable(
                    f"The tokens of account {user_id!r} cannot be read: {reason}.", reason=reason
                ) from None
        plain = token_data.get(name)
        return str(plain) if plain else None

    def _why_unreadable(self, value: str, user_id: str, name: str) -> str:
        """Why a stored ciphertext does not decrypt as this row's field, in words that show no secret."""
        kid = key_id_in(value)
        if kid is None:
            return "is damaged: it is not an encrypted token in the v1 format"
        if self.cipher is None:
            return f"is encrypted (key id {kid}) but TOKEN_ENCRYPTION_KEYS is not set"
        if kid not in self.cipher.key_ids:
            return f"is encrypted with a key that TOKEN_ENCRYPTION_KEYS does not hold (key id {kid})"
        for other in TOKEN_FIELDS:
            if other != name and self._opens(value, _context(user_id, other)):
                return f"holds the ciphertext made for the {other}: the fields were swapped or copied"
        return f"does not decrypt as this row's {name} under key {kid}: {STRAY}"

    def _decrypt(self, value: str, context: str) -> str:
        if self.cipher is None:
            raise DecryptionError("TOKEN_ENCRYPTION_KEYS is not set")
        return self.cipher.decrypt(value, context=context)

    def _opens(self, value: str, context: str) -> bool:
        try:
            self._decrypt(value, context)
        except DecryptionError:
            return False
        return True

    def belongs_to(self, value: str, user_id: str) -> str | None:
        """The field of row `user_id` that a ciphertext was made for, or None (a doctor's search, one row)."""
        if self.cipher is None or key_id_in(value) not in self.cipher.key_ids:
            return None
        return next((name for name in TOKEN_FIELDS if self._opens(value, _context(user_id, name))), None)


def _context(user_id: str, name: str) -> str:
    # Bound as associated data: a ciphertext copied to another row or field no longer decrypts.
    return f"gmail_tokens:{user_id}:{name}"
