"""Reconnect links: signed, expiring, deterministic; anything damaged or foreign is a LinkError. LINK_TTL parsing."""

from __future__ import annotations

import base64
import json
import string
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from bot.config import Settings
from bot.errors import ConfigError
from bot.reconnect.links import LinkClaims, LinkError, LinkSigner, Purpose

SECRET = "test-secret-key-that-is-long-enough-0123456789"
BASE_URL = "https://bot.example.com"
T0 = datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=UTC)
_B64URL = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"


@pytest.fixture
def signer() -> LinkSigner:
    return LinkSigner(SECRET, public_base_url=BASE_URL, ttl=timedelta(hours=1))


def reencode(payload: dict[str, object]) -> str:
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode(body: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return data


def test_round_trip(signer: LinkSigner) -> None:
    claims = signer.new_claims("U0ALICE", slack_team_id="T0TEAM", now=T0)

    verified = signer.verify(signer.sign(claims), now=T0)

    assert verified == claims
    assert verified.purpose is Purpose.RECONNECT
    assert claims.expires_at == datetime(2026, 3, 1, 10, 30, 15, tzinfo=UTC)  # TTL later, whole seconds
    # Without a team, the claim stays None; surrounding whitespace (a copy-paste) is tolerated.
    alone = signer.new_claims("U0BOB", now=T0)
    assert signer.verify(f"  {signer.sign(alone)}\n", now=T0).slack_team_id is None


def test_new_claims_get_distinct_link_ids(signer: LinkSigner) -> None:
    first, second = signer.new_claims("U0ALICE", now=T0), signer.new_claims("U0ALICE", now=T0)
    assert first.link_id != second.link_id
    assert signer.sign(first) != signer.sign(second)


def test_same_claims_give_the_same_token(signer: LinkSigner) -> None:
    claims = signer.new_claims("U0ALICE", now=T0)
    twin = LinkSigner(SECRET, public_base_url="https://elsewhere.example.com", ttl=timedelta(days=3))

    assert signer.sign(claims) == signer.sign(claims) == twin.sign(claims)
    assert signer.url(claims) == signer.url(claims)


def test_another_purpose_changes_the_token_and_keeps_the_link(signer: LinkSigner) -> None:
    claims = signer.new_claims("U0ALICE", now=T0)
    switch = replace(claims, purpose=Purpose.SWITCH)  # as a refused switch's retry link is made

    assert signer.sign(switch) != signer.sign(claims)
    verified = signer.verify(signer.sign(switch), now=T0)
    assert verified.purpose is Purpose.SWITCH
    assert (verified.link_id, verified.expires_at, verified.slack_user_id) == (
        claims.link_id,
        claims.expires_at,
        "U0ALICE",
    )


def test_url_starts_the_consent_flow_with_the_token(signer: LinkSigner) -> None:
    claims = signer.new_claims("U0ALICE", now=T0)

    url = signer.url(claims)

    assert url.startswith(BASE_URL + "/oauth/google/start?t=")
    (token,) = parse_qs(urlsplit(url).query)["t"]
    assert token == signer.sign(claims)
    assert signer.verify(token, now=T0) == claims


def test_new_url_is_valid_now(signer: LinkSigner) -> None:
    url = signer.new_url("U0ALICE", slack_team_id="T0TEAM", purpose=Purpose.SWITCH)
    (token,) = parse_qs(urlsplit(url).query)["t"]

    claims = signer.verify(token)

    assert (claims.slack_user_id, claims.slack_team_id, claims.purpose) == (
        "U0ALICE",
        "T0TEAM",
        Purpose.SWITCH,
    )
    remaining = claims.expires_at - datetime.now(UTC)
    assert timedelta(minutes=58) < remaining <= timedelta(hours=1)


def test_a_tampered_payload_is_refused(signer: LinkSigner) -> None:
    body, _, signature = signer.sign(signer.new_claims("U0ALICE", now=T0)).partition(".")
    payload = decode(body)
    payload["u"] = "U0MALLORY"

    with pytest.raises(LinkError) as raised:
        signer.verify(f"{reencode(payload)}.{signature}", now=T0)
    assert not raised.value.expired


def test_an_extended_expiry_is_refused(signer: LinkSigner) -> None:
    body, _, signature = signer.sign(signer.new_claims("U0ALICE", now=T0)).partition(".")
    payload = decode(body)
    payload["e"] = int(payload["e"]) + 86_400  # type: ignore[call-overload]

    with pytest.raises(LinkError) as raised:
        signer.verify(f"{reencode(payload)}.{signature}", now=T0)
    assert not raised.value.expired


@pytest.mark.parametrize("position", [0, 10, 21])
def test_a_tampered_signature_is_refused(signer: LinkSigner, position: int) -> None:
    body, _, signature = signer.sign(signer.new_claims("U0ALICE", now=T0)).partition(".")
    flipped = _B64URL[(_B64URL.index(signature[position]) + 32) % 64]  # changes the high bits of that sextet
    tampered = signature[:position] + flipped + signature[position + 1 :]

    with pytest.raises(LinkError) as raised:
        signer.verify(f"{body}.{tampered}", now=T0)
    assert not raised.value.expired


@pytest.mark.parametrize("alteration", ["append '=='", "append '!!'", "append '..'", "last char low bit"])
def test_a_non_canonical_signature_is_refused(signer: LinkSigner, alteration: str) -> None:
    token = signer.sign(signer.new_claims("U0ALICE", now=T0))
    if alteration == "last char low bit":
        altered = token[:-1] + _B64URL[_B64URL.index(token[-1]) ^ 1]
    else:
        altered = token + alteration.split("'")[1]
    assert altered != token

    with pytest.raises(LinkError):
        signer.verify(altered, now=T0)


def test_a_token_signed_with_another_secret_key_is_refused(signer: LinkSigner) -> None:
    other = LinkSigner(
        "another-secret-key-that-is-long-enough-987654", public_base_url=BASE_URL, ttl=signer.ttl
    )
    token = other.sign(other.new_claims("U0ALICE", now=T0))
    assert other.verify(token, now=T0).slack_user_id == "U0ALICE"

    with pytest.raises(LinkError) as raised:
        signer.verify(token, now=T0)
    assert not raised.value.expired


def test_a_genuine_signature_over_an_unknown_purpose_is_refused(signer: LinkSigner) -> None:
    claims = signer.new_claims("U0ALICE", now=T0)
    odd = LinkClaims(claims.slack_user_id, None, "admin", claims.expires_at, claims.link_id)  # type: ignore[arg-type]

    with pytest.raises(LinkError) as raised:
        signer.verify(signer.sign(odd), now=T0)
    assert not raised.value.expired


def test_expiry(signer: LinkSigner) -> None:
    claims = signer.new_claims("U0ALICE", now=T0)
    token = signer.sign(claims)

    assert signer.verify(token, now=claims.expires_at - timedelta(seconds=1)) == claims
    for late in (claims.expires_at, claims.expires_at + timedelta(days=2)):
        with pytest.raises(LinkError) as raised:
            signer.verify(token, now=late)
        assert raised.value.expired


def test_an_expired_but_tampered_token_is_damaged_not_expired(signer: LinkSigner) -> None:
    body, _, signature = signer.sign(signer.new_claims("U0ALICE", now=T0)).partition(".")
    payload = decode(body)
    payload["u"] = "U0MALLORY"

    with pytest.raises(LinkError) as raised:
        signer.verify(f"{reencode(payload)}.{signature}", now=T0 + timedelta(days=30))
    assert not raised.value.expired


@pytest.mark.parametrize(
    "token",
    [
        "",
        " ",
        ".",
        "..",
        "abc",
        "a.b",
        "abc.",
        ".abc",
        "a.b.c",
        "%%%.###",
        "한글.토큰",
        "e30.e30",  # "{}" as payload and signature
        "\x00.\x00",
        "\ud800.\udfff",  # lone surrogates
        "a" * 100_000 + "." + "b" * 100_000,
        "W10." + "A" * 43,  # "[]" as payload
    ],
    ids=lambda token: repr(token[:12]),
)
def test_garbage_is_a_link_error(signer: LinkSigner, token: str) -> None:
    with pytest.raises(LinkError) as raised:
        signer.verify(token, now=T0)
    assert not raised.value.expired


# ---- Settings that shape links and pages ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("36h", timedelta(hours=36)),
        ("7d", timedelta(days=7)),
        ("90m", timedelta(minutes=90)),
        ("600", timedelta(seconds=600)),
        ("600s", timedelta(seconds=600)),
        (" 2D ", timedelta(days=2)),
    ],
)
def test_link_ttl_is_parsed(make_settings: Callable[..., Settings], value: str, expected: timedelta) -> None:
    assert make_settings(LINK_TTL=value).link_ttl == expected


def test_link_ttl_defaults_to_three_days(make_settings: Callable[..., Settings]) -> None:
    assert make_settings().link_ttl == timedelta(days=3)


@pytest.mark.parametrize("value", ["0", "0d", "soon", "-1d", "1.5h", "7w", "d"])
def test_a_bad_link_ttl_names_the_variable(make_settings: Callable[..., Settings], value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        make_settings(LINK_TTL=value)
    assert "LINK_TTL" in str(raised.value)
    assert len(raised.value.problems) == 1


@pytest.mark.parametrize(("value", "expected"), [("en", "en"), ("ko", "ko"), ("EN", "en")])
def test_default_locale(make_settings: Callable[..., Settings], value: str, expected: str) -> None:
    assert make_settings(DEFAULT_LOCALE=value).default_locale == expected


def test_default_locale_defaults_to_korean(make_settings: Callable[..., Settings]) -> None:
    assert make_settings().default_locale == "ko"


def test_an_unsupported_default_locale_names_the_variable(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError) as raised:
        make_settings(DEFAULT_LOCALE="fr")
    assert "DEFAULT_LOCALE" in str(raised.value) and "'fr'" in str(raised.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("false", False),
        ("0", False),
        ("no", False),
    ],
)
def test_google_testing_mode_flag(make_settings: Callable[..., Settings], value: str, expected: bool) -> None:
    assert make_settings(GOOGLE_OAUTH_TESTING_MODE=value).google_testing_mode is expected


def test_google_testing_mode_defaults_to_off(make_settings: Callable[..., Settings]) -> None:
    assert make_settings().google_testing_mode is False


def test_a_bad_testing_mode_flag_names_the_variable(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError) as raised:
        make_settings(GOOGLE_OAUTH_TESTING_MODE="maybe")
    assert "GOOGLE_OAUTH_TESTING_MODE" in str(raised.value)
