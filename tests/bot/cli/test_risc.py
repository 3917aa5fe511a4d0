"""`gmail-reconnect risc register | verify | status` against the fake RISC API, with a service-account file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from bot.appkeys import SERVICES
from tests.fakes.google import FakeGoogle
from tests.fakes.risc import FakeRisc, fake_risc_server
from tests.helpers import BASE_ENV, Serve, cli_process_env, google_env, run_async

EVENTS = {
    "https://schemas.openid.net/secevent/oauth/event-type/tokens-revoked",
    "https://schemas.openid.net/secevent/oauth/event-type/token-revoked",
    "https://schemas.openid.net/secevent/risc/event-type/sessions-revoked",
    "https://schemas.openid.net/secevent/risc/event-type/account-disabled",
    "https://schemas.openid.net/secevent/risc/event-type/account-enabled",
    "https://schemas.openid.net/secevent/risc/event-type/account-credential-change-required",
    "https://schemas.openid.net/secevent/risc/event-type/verification",
}


@pytest.fixture
async def fake_risc(fake_google: FakeGoogle) -> AsyncIterator[FakeRisc]:
    async with fake_risc_server(client_id=fake_google.client_id) as fake:
        yield fake


async def risc(
    app: web.Application, fake: FakeRisc, google: FakeGoogle, tmp_path: Path, *args: str, **env: str
) -> tuple[int, str, str]:
    settings = app[SERVICES].settings
    assert settings.database_url is not None
    full = {
        **BASE_ENV,
        **google_env(google),
        "DATABASE_URL": settings.database_url.reveal(),
        "PUBLIC_BASE_URL": settings.public_base_url,
        "GOOGLE_RISC_API_URL": fake.api_url,
        "GOOGLE_RISC_SERVICE_ACCOUNT_FILE": str(
            fake.write_service_account_file(tmp_path / "risc-admin.json")
        ),
        **env,
    }
    return await run_async("risc", *args, env=cli_process_env(full), cwd=tmp_path)


async def test_register_then_status_then_verify_round_trip(
    serve: Serve, fake_google: FakeGoogle, fake_risc: FakeRisc, tmp_path: Path
) -> None:
    app = await serve(GOOGLE_RISC_CONFIG_URI=fake_risc.config_uri)
    receiver = app[SERVICES].settings.public_base_url + "/google/risc"

    code, out, err = await risc(app, fake_risc, fake_google, tmp_path, "register")
    assert (code, err) == (0, ""), err
    assert receiver in out
    delivery = fake_risc.stream.configuration["delivery"]
    assert delivery == {
        "delivery_method": "https://schemas.openid.net/secevent/risc/delivery-method/push",
        "url": receiver,
    }
    assert set(fake_risc.stream.configuration["events_requested"]) == EVENTS

    code, out, err = await risc(app, fake_risc, fake_google, tmp_path, "status")
    assert code == 0, err
    assert f"Receiver: {receiver}" in out and "Status:   enabled" in out
    assert "https://schemas.openid.net/secevent/oauth/event-type/tokens-revoked" in out

    code, out, err = await risc(app, fake_risc, fake_google, tmp_path, "verify", "--wait", "20")
    assert code == 0, (out, err)
    assert "the stream works" in out
    (pushed,) = fake_risc.deliveries
    assert pushed.status == 202
    # Every call carried the service account's self-signed JWT (the fake answers 401 otherwise).
    assert [status for _, _, status in fake_risc.api_calls] == [200, 200, 200, 200]


async def test_a_missing_or_broken_service_account_file_exits_2(
    serve: Serve, fake_google: FakeGoogle, fake_risc: FakeRisc, tmp_path: Path
) -> None:
    app = await serve()
    broken = tmp_path / "broken.json"
    broken.write_text('{"type": "service_account", "private_key": "not a key"')

    missing = await risc(
        app,
        fake_risc,
        fake_google,
        tmp_path,
        "status",
        GOOGLE_RISC_SERVICE_ACCOUNT_FILE=str(tmp_path / "nope.json"),
    )
    unreadable = await risc(
        app, fake_risc, fake_google, tmp_path, "status", GOOGLE_RISC_SERVICE_ACCOUNT_FILE=str(broken)
    )
    unset = await risc(app, fake_risc, fake_google, tmp_path, "register", GOOGLE_RISC_SERVICE_ACCOUNT_FILE="")

    for code, _out, err in (missing, unreadable, unset):
        assert code == 2 and "GOOGLE_RISC_SERVICE_ACCOUNT_FILE" in err and "Traceback" not in err, err
    assert "does not exist" in missing[2] and "not a service account's JSON key" in unreadable[2]
    assert fake_risc.api_calls == []


async def test_google_refusing_exits_1_with_its_message(
    serve: Serve, fake_google: FakeGoogle, fake_risc: FakeRisc, tmp_path: Path
) -> None:
    app = await serve()
    fake_risc.refuse_next(403, "The delivery endpoint must be an HTTPS URL.")

    code, _out, err = await risc(app, fake_risc, fake_google, tmp_path, "register")

    assert code == 1 and "Traceback" not in err
    assert "Google refused stream:update (HTTP 403): The delivery endpoint must be an HTTPS URL." in err


async def test_a_service_account_key_google_does_not_know_is_refused(
    serve: Serve, fake_google: FakeGoogle, fake_risc: FakeRisc, tmp_path: Path
) -> None:
    app = await serve()
    other = FakeRisc(
        client_id=fake_google.client_id
    )  # another key pair: its file signs tokens the fake refuses
    stranger = other.write_service_account_file(tmp_path / "stranger.json")

    code, _out, err = await risc(
        app, fake_risc, fake_google, tmp_path, "status", GOOGLE_RISC_SERVICE_ACCOUNT_FILE=str(stranger)
    )

    assert code == 1 and "HTTP 401" in err and "Traceback" not in err
    assert fake_risc.api_calls == [("GET", "/v1beta/stream", 401)]
