"""Application-level encryption of OAuth tokens at rest (AES-256-GCM).

TOKEN_ENCRYPTION_KEYS holds comma-separated base64 keys of 32 bytes each. The first key encrypts and every
key decrypts, so a key is rotated by putting the new one first, re-encrypting, then dropping the old one.
"""

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12  # 96 bits: the size GCM is designed for; random nonces are safe well past our volumes
TAG_BYTES = 16
MAKE_KEY_HINT = 'make one: python -c "import base64,os; print(base64.b64encode(os.urandom(32)).decode())"'

# 38 characters is the unpadded base64 of the shortest possible payload: nonce + tag, empty plaintext.
_TOKEN_SHAPE = re.compile(r"v1:([0-9a-f]{8}):([A-Za-z0-9_-]{38,})")
TOKEN_PREFIX = "v1:"  # what every token starts with, and no JSON text does
_TOKEN_PREFIX = re.compile(r"v1:([0-9a-f]{8}):")
_SHORTEST_PAYLOAD = 38
_FROM_BASE64URL = bytes.maketrans(b"-_", b"+/")
_KEY_ID_DOMAIN = b"gmail-reconnect key id\x00"


class KeyFormatError(ValueError):
    """TOKEN_ENCRYPTION_KEYS is malformed; the message names the entry but never shows key material."""


class DecryptionError(Exception):
    """A stored token could not be decrypted; the message never shows plaintext, ciphertext or keys."""

    def __init__(self, message: str, *, key_id: str | None = None) -> None:
        super().__init__(message)
        self.key_id = key_id


def _entry_error(position: int, problem: str) -> KeyFormatError:
    return KeyFormatError(f"entry {position} of TOKEN_ENCRYPTION_KEYS {problem}; {MAKE_KEY_HINT}")


def parse_keys(value: str) -> list[bytes]:
    """Parse TOKEN_ENCRYPTION_KEYS into raw 32-byte keys, first (encrypting) key first."""
    if not value.strip():
        return []
    entries = [entry.strip() for entry in value.split(",")]
    if len(entries) > 1 and not entries[-1]:
        # A trailing comma drops no key, so allow it; an empty middle entry may be a lost key and fails below.
        entries.pop()
    keys: list[bytes] = []
    for position, entry in enumerate(entries, start=1):
        if not entry:
            raise _entry_error(position, "is empty")
        try:
            key = base64.b64decode(entry, validate=True)
        except ValueError:  # binascii.Error, or a non-ASCII character
            # `from None`: the decoder's own message is not needed and must not risk echoing the input.
            raise _entry_error(position, "is not valid standard base64") from None
        if len(key) != KEY_BYTES:
            raise _entry_error(position, f"decodes to {len(key)} bytes, needs {KEY_BYTES}")
        if key in keys:
            raise _entry_error(position, f"duplicates entry {keys.index(key) + 1}")
        keys.append(key)
    return keys


def generate_key() -> str:
    """Return a new random key in the TOKEN_ENCRYPTION_KEYS format."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def key_id(key: bytes) -> str:
    """Return a short public identifier of a key that reveals nothing about it."""
    return hashlib.sha256(_KEY_ID_DOMAIN + key).hexdigest()[:8]


def is_encrypted(value: object) -> bool:
    """Tell whether a value looks like a token produced by TokenCipher.encrypt."""
    return key_id_in(value) is not None


def key_id_in(value: object) -> str | None:
    """The key id of an encrypted token, or None for anything else (no key needed to read it)."""
    match = _TOKEN_SHAPE.fullmatch(value) if isinstance(value, str) else None
    return match.group(1) if match else None


def _split(token: str) -> tuple[str, bytes]:
    """The key id and the decoded payload of a token; DecryptionError unless it has _TOKEN_SHAPE.

    The payload is checked by the strict base64 decoder itself (once '+', '/' and '=', which base64url does not
    use, are ruled out), not by the regular expression as well: a queued Slack message is a token of several
    KB, and each check walks all of it."""
    prefix = _TOKEN_PREFIX.match(token) if isinstance(token, str) else None
    if prefix is None:
        raise DecryptionError("value is not an encrypted token in the v1 format")
    payload = token[prefix.end() :]
    try:
        raw = payload.encode("ascii")
        if len(raw) < _SHORTEST_PAYLOAD or b"+" in raw or b"/" in raw or b"=" in raw:
            raise ValueError("not base64url")
        data = binascii.a2b_base64(raw.translate(_FROM_BASE64URL) + b"=" * (-len(raw) % 4), strict_mode=True)
    except ValueError:  # binascii.Error and UnicodeEncodeError too
        raise DecryptionError("value is not an encrypted token in the v1 format") from None
    if len(data) < NONCE_BYTES + TAG_BYTES:
        raise DecryptionError("value is not an encrypted token in the v1 format")
    return prefix.group(1), data


class TokenCipher:
    """Encrypts with the first key and decrypts with any of the configured keys."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("TokenCipher needs at least one key (set TOKEN_ENCRYPTION_KEYS)")
        self._ciphers: dict[str, AESGCM] = {}
        for position, key in enumerate(keys, start=1):
            if not isinstance(key, bytes) or len(key) != KEY_BYTES:
                raise ValueError(f"key {position} must be {KEY_BYTES} bytes")
            kid = key_id(key)
            if kid in self._ciphers:
                # Ids select the key on decryption, so two keys must never share one.
                raise ValueError(f"key {position} has the same key id ({kid}) as an earlier key")
            self._ciphers[kid] = AESGCM(key)
        self._current = next(iter(self._ciphers))

    @property
    def current_key_id(self) -> str:
        """Id of the key that new encryptions use."""
        return self._current

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Ids of every key that can decrypt, current key first."""
        return tuple(self._ciphers)

    def encrypt(self, plaintext: str, *, context: str) -> str:
        """Encrypt plaintext with the current key, bound to context (e.g. table, row and field)."""
        nonce = os.urandom(NONCE_BYTES)
        cipher = self._ciphers[self._current]
        sealed = cipher.encrypt(nonce, plaintext.encode("utf-8"), context.encode("utf-8"))
        payload = base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")
        return f"v1:{self._current}:{payload}"

    def key_id_of(self, token: str) -> str:
        """Return the id of the key a token was encrypted with."""
        return _split(token)[0]

    def decrypt(self, token: str, *, context: str) -> str:
        """Decrypt a token made by encrypt with the same context."""
        kid, data = _split(token)
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise DecryptionError(
                f"value was encrypted with key {kid}, which is not in TOKEN_ENCRYPTION_KEYS; "
                "add that key back (after the current one) to read it",
                key_id=kid,
            )
        try:
            plaintext = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], context.encode("utf-8"))
        except InvalidTag:
            raise DecryptionError(
                f"value could not be decrypted with key {kid}: "
                "wrong key, wrong context, or the data was altered",
                key_id=kid,
            ) from None
        return plaintext.decode("utf-8")

    def needs_reencryption(self, token: str) -> bool:
        """Tell whether a token was encrypted under a key other than the current one."""
        return self.key_id_of(token) != self._current

    def __repr__(self) -> str:
        return f"TokenCipher(key_ids={self.key_ids!r})"
