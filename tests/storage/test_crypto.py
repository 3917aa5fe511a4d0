import base64
import os
import random
import re
import string

import pytest

from storage.crypto import (
    DecryptionError,
    KeyFormatError,
    TokenCipher,
    generate_key,
    is_encrypted,
    key_id,
    parse_keys,
)

CONTEXT = "gmail_tokens:U123:refresh_token"


def assert_no_key_text(message: str, *key_texts: str) -> None:
    """Fail if any run of 6 or more characters of a key's text appears in message."""
    for text in key_texts:
        # Every longer substring contains a 6-character one, so checking those is enough.
        for start in range(len(text) - 5):
            fragment = text[start : start + 6]
            assert fragment not in message, f"message leaks key text {fragment!r}: {message}"


def flip_char(text: str, index: int) -> str:
    replacement = "A" if text[index] != "A" else "B"
    return text[:index] + replacement + text[index + 1 :]


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def cipher(key: bytes) -> TokenCipher:
    return TokenCipher([key])


# Round trips


@pytest.mark.parametrize("plaintext", ["1//0gLrefresh-token", "pässwörd ✓ 🔑 日本語", ""])
def test_round_trip(cipher: TokenCipher, plaintext: str) -> None:
    token = cipher.encrypt(plaintext, context=CONTEXT)

    assert token.isascii()
    assert token.startswith(f"v1:{cipher.current_key_id}:")
    assert "=" not in token
    assert cipher.decrypt(token, context=CONTEXT) == plaintext


def test_same_plaintext_encrypts_differently(cipher: TokenCipher) -> None:
    first = cipher.encrypt("same", context=CONTEXT)
    second = cipher.encrypt("same", context=CONTEXT)

    assert first != second
    assert cipher.decrypt(first, context=CONTEXT) == cipher.decrypt(second, context=CONTEXT) == "same"


def test_ciphertext_does_not_contain_plaintext(cipher: TokenCipher) -> None:
    token = cipher.encrypt("ya29.secret-access-token", context=CONTEXT)

    assert "secret" not in token


# Decryption failures


def test_other_context_fails(cipher: TokenCipher) -> None:
    token = cipher.encrypt("refresh-token-value", context="gmail_tokens:U1:refresh_token")

    with pytest.raises(DecryptionError, match="wrong context") as caught:
        cipher.decrypt(token, context="gmail_tokens:U2:refresh_token")

    assert caught.value.key_id == cipher.current_key_id
    assert "refresh-token-value" not in str(caught.value)
    assert token.split(":")[2] not in str(caught.value)


@pytest.mark.parametrize("position", ["nonce", "middle", "tag"])
def test_flipped_character_fails(cipher: TokenCipher, position: str) -> None:
    token = cipher.encrypt("refresh-token-value", context=CONTEXT)
    prefix_length = len("v1:") + 8 + 1
    payload_length = len(token) - prefix_length
    # Not the very last character: its low bits may be padding the decoder ignores.
    offset = {"nonce": 2, "middle": payload_length // 2, "tag": payload_length - 4}[position]
    altered = flip_char(token, prefix_length + offset)

    assert altered != token
    with pytest.raises(DecryptionError, match="the data was altered") as caught:
        cipher.decrypt(altered, context=CONTEXT)
    assert_no_key_text(str(caught.value), token.split(":")[2])


def test_other_key_with_forged_id_fails(key: bytes) -> None:
    token = TokenCipher([os.urandom(32)]).encrypt("value", context=CONTEXT)
    forged = f"v1:{key_id(key)}:{token.split(':')[2]}"

    with pytest.raises(DecryptionError, match="wrong key"):
        TokenCipher([key]).decrypt(forged, context=CONTEXT)


def test_unknown_key_id_is_named(cipher: TokenCipher) -> None:
    other_key = os.urandom(32)
    token = TokenCipher([other_key]).encrypt("value", context=CONTEXT)

    with pytest.raises(DecryptionError) as caught:
        cipher.decrypt(token, context=CONTEXT)

    message = str(caught.value)
    assert key_id(other_key) in message
    assert "not in TOKEN_ENCRYPTION_KEYS" in message
    assert caught.value.key_id == key_id(other_key)
    assert_no_key_text(message, base64.b64encode(other_key).decode(), token.split(":")[2])


@pytest.mark.parametrize(
    "token",
    [
        "",
        "ya29.a0AfB_byC1234567890abcdefghijklmnopqrstuvwxyz",
        "v1:zzzzzzzz:" + "A" * 40,
        "v1:abcd1234:" + "A" * 10,
        "v1:abcd1234:" + "A" * 40 + "\n",
        "v1:abcd1234:" + "A" * 40 + "!",
        "v1:abcd1234:" + "A" * 41,
        "v2:abcd1234:" + "A" * 40,
    ],
)
def test_malformed_token_fails(cipher: TokenCipher, token: str) -> None:
    with pytest.raises(DecryptionError, match="not an encrypted token in the v1 format") as caught:
        cipher.decrypt(token, context=CONTEXT)
    assert caught.value.key_id is None

    with pytest.raises(DecryptionError):
        cipher.key_id_of(token)


# Rotation


def test_rotation() -> None:
    old, new = os.urandom(32), os.urandom(32)
    old_token = TokenCipher([old]).encrypt("refresh-token", context=CONTEXT)
    rotated = TokenCipher([new, old])

    assert rotated.current_key_id == key_id(new)
    assert rotated.key_ids == (key_id(new), key_id(old))
    assert rotated.key_id_of(old_token) == key_id(old)
    assert rotated.decrypt(old_token, context=CONTEXT) == "refresh-token"
    assert rotated.needs_reencryption(old_token) is True

    fresh = rotated.encrypt("refresh-token", context=CONTEXT)
    assert rotated.key_id_of(fresh) == key_id(new)
    assert rotated.needs_reencryption(fresh) is False

    # Once the old key is dropped, the old token is unreadable and the error says which key to bring back.
    with pytest.raises(DecryptionError, match=key_id(old)):
        TokenCipher([new]).decrypt(old_token, context=CONTEXT)


# Keys and ids


def test_key_id_is_short_stable_and_distinct(key: bytes) -> None:
    kid = key_id(key)

    assert len(kid) == 8
    assert all(char in "0123456789abcdef" for char in kid)
    assert key_id(key) == kid
    assert key_id(os.urandom(32)) != kid


def test_generate_key_parses() -> None:
    text = generate_key()

    assert parse_keys(text) == [base64.b64decode(text)]
    assert generate_key() != text


def test_cipher_needs_a_key() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        TokenCipher([])


def test_cipher_rejects_wrong_length_key() -> None:
    short = os.urandom(16)

    with pytest.raises(ValueError, match="must be 32 bytes") as caught:
        TokenCipher([os.urandom(32), short])
    assert_no_key_text(str(caught.value), base64.b64encode(short).decode(), short.hex())


def test_cipher_rejects_duplicate_key(key: bytes) -> None:
    with pytest.raises(ValueError, match="same key id"):
        TokenCipher([key, key])


def test_repr_shows_only_key_ids() -> None:
    keys = [os.urandom(32), os.urandom(32)]
    text = repr(TokenCipher(keys))

    assert text == f"TokenCipher(key_ids=({key_id(keys[0])!r}, {key_id(keys[1])!r}))"
    for key in keys:
        assert_no_key_text(text, base64.b64encode(key).decode(), key.hex())
        assert repr(key) not in text


# parse_keys


def test_parse_keys_in_order() -> None:
    first, second = generate_key(), generate_key()

    assert parse_keys(f"{first},{second}") == [base64.b64decode(first), base64.b64decode(second)]


def test_parse_keys_strips_whitespace() -> None:
    first, second = generate_key(), generate_key()

    assert parse_keys(f"  {first} ,\n\t{second}  ") == [base64.b64decode(first), base64.b64decode(second)]


def test_parse_keys_allows_trailing_comma() -> None:
    text = generate_key()

    assert parse_keys(f"{text}, ") == [base64.b64decode(text)]


@pytest.mark.parametrize("value", ["", "   ", "\n"])
def test_parse_keys_empty_setting(value: str) -> None:
    assert parse_keys(value) == []


def bad_base64() -> str:
    text = generate_key()
    return text[:10] + "*" + text[11:]


def urlsafe_key() -> str:
    # Standard base64 is required; a URL-safe key is a plausible mistake.
    while True:
        text = base64.urlsafe_b64encode(os.urandom(32)).decode()
        if "-" in text or "_" in text:
            return text


@pytest.mark.parametrize("bad_first", [False, True])
def test_parse_keys_rejects_bad_base64(bad_first: bool) -> None:
    good, bad = generate_key(), bad_base64()
    value, position = (f"{bad},{good}", 1) if bad_first else (f"{good},{bad}", 2)

    with pytest.raises(KeyFormatError) as caught:
        parse_keys(value)

    message = str(caught.value)
    assert f"entry {position} of TOKEN_ENCRYPTION_KEYS is not valid standard base64" in message
    assert "os.urandom(32)" in message
    # The decoder's own exception is suppressed so a traceback cannot echo the input either.
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__ is True
    assert_no_key_text(message, good, bad)


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (urlsafe_key(), "is not valid standard base64"),
        (base64.b64encode(os.urandom(32)).decode().rstrip("="), "is not valid standard base64"),
        ("ünïcødé-" + generate_key(), "is not valid standard base64"),
        (base64.b64encode(os.urandom(16)).decode(), "decodes to 16 bytes, needs 32"),
        (base64.b64encode(os.urandom(48)).decode(), "decodes to 48 bytes, needs 32"),
    ],
)
def test_parse_keys_rejects_bad_entry(entry: str, problem: str) -> None:
    good = generate_key()

    with pytest.raises(KeyFormatError) as caught:
        parse_keys(f"{good}, {entry}")

    message = str(caught.value)
    assert f"entry 2 of TOKEN_ENCRYPTION_KEYS {problem}" in message
    assert_no_key_text(message, good, entry)


def test_parse_keys_rejects_empty_middle_entry() -> None:
    first, last = generate_key(), generate_key()

    with pytest.raises(KeyFormatError, match="entry 2 of TOKEN_ENCRYPTION_KEYS is empty") as caught:
        parse_keys(f"{first}, ,{last}")
    assert_no_key_text(str(caught.value), first, last)


@pytest.mark.parametrize(("value", "position"), [(",{key}", 1), ("{key},,", 2), (",", 1)])
def test_parse_keys_rejects_other_empty_entries(value: str, position: int) -> None:
    text = generate_key()

    with pytest.raises(KeyFormatError, match=f"entry {position} of TOKEN_ENCRYPTION_KEYS is empty") as caught:
        parse_keys(value.format(key=text))
    assert_no_key_text(str(caught.value), text)


def test_parse_keys_rejects_duplicate() -> None:
    first, second = generate_key(), generate_key()

    with pytest.raises(KeyFormatError, match="entry 3 of TOKEN_ENCRYPTION_KEYS duplicates entry 1") as caught:
        parse_keys(f"{first},{second}, {first}")
    assert_no_key_text(str(caught.value), first, second)


def test_key_format_error_is_a_value_error() -> None:
    assert issubclass(KeyFormatError, ValueError)


# is_encrypted


def test_is_encrypted_true_for_cipher_output(cipher: TokenCipher) -> None:
    assert is_encrypted(cipher.encrypt("value", context=CONTEXT))
    assert is_encrypted(cipher.encrypt("", context=CONTEXT))


@pytest.mark.parametrize(
    "value",
    [
        "ya29.a0AfB_byC1234567890abcdefghijklmnopqrstuvwxyz",
        "1//0gLrefresh-token-abcdefghijklmnopqrstuvwxyz0123456789",
        "",
        "v1:",
        "v1:ABCD1234:" + "A" * 40,
        "v1:abcd1234:" + "A" * 37,
        "v1:abcd1234:" + "A" * 40 + "==",
        None,
        b"v1:abcd1234:" + b"A" * 40,
        42,
    ],
)
def test_is_encrypted_false(value: object) -> None:
    assert is_encrypted(value) is False


def test_a_value_is_read_as_a_token_exactly_when_it_has_the_documented_shape() -> None:
    # The format: "v1:", a key id of 8 lowercase hex digits, ":", then at least 38 characters of unpadded base64url
    # that decode to at least a nonce and a tag. Random near misses of every part, and real tokens, against it.
    shape = re.compile(r"v1:([0-9a-f]{8}):([A-Za-z0-9_-]{38,})")

    def documented(value: str) -> str | None:
        found = shape.fullmatch(value)
        if found is None:
            return None
        try:
            data = base64.urlsafe_b64decode(found[2] + "=" * (-len(found[2]) % 4))
        except ValueError:
            return None
        return found[1] if len(data) >= 28 else None

    base64url = string.ascii_letters + string.digits + "-_"
    odd = base64url + "+/= \n!.é٣"
    rng = random.Random(7)
    cipher = TokenCipher([os.urandom(32)])
    values = [cipher.encrypt("x" * size, context="c") for size in (0, 1, 500, 5000)]
    for _ in range(20_000):
        kid = "".join(rng.choice("0123456789abcdefA:") for _ in range(rng.choice([7, 8, 8, 9])))
        payload = "".join(
            rng.choice(odd if rng.random() < 0.03 else base64url)
            for _ in range(rng.choice([0, 37, 38, 39, 40, 60]))
        )
        values.append(rng.choice(["v1:", "v1:", "v2:"]) + kid + rng.choice([":", ":", ";"]) + payload)
        values.append(values[-1] + "\n")
    tokens = 0
    for value in values:
        expected = documented(value)
        if expected is None:
            with pytest.raises(DecryptionError, match="not an encrypted token in the v1 format"):
                cipher.key_id_of(value)
        else:
            assert cipher.key_id_of(value) == expected, value
            tokens += 1
    assert 4 < tokens < len(values) // 2  # both sides are well represented
