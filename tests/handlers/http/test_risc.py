"""POST /google/risc over real HTTP: Google's security event tokens from the fake issuer, acted on at once."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bot.appkeys import SERVICES
from bot.briefing.account import Kind
from bot.slack.blocks.elements import RECONNECT_ACTION
from storage import audit
from storage.crypto import generate_key
from storage.models import Account, Status, TokenGrant
from storage.webhooks import EVENTS
from tests.fakes.google import FakeGoogle, subject_for
from tests.fakes.risc import FakeRisc, fake_risc_server
from tests.fakes.slack import FakeSlack, slash_command_body
from tests.fakes.webhooks import fake_receiver
from tests.helpers import (
    Serve,
    block_text,
    buttons,
    delivered,
    dms,
    eventually,
    healthy,
    metric,
    post,
    scrape_metrics,
    settled,
)


@pytest.fixture
async def fake_risc(fake_google: FakeGoogle) -> AsyncIterator[FakeRisc]:
    async with fake_risc_server(client_id=fake_google.client_id) as fake:
        yield fake


@pytest.fixture
def start(serve: Serve, fake_risc: FakeRisc) -> Serve:
    async def started(**env: str | None) -> web.Application:
        return await serve(GOOGLE_RISC_CONFIG_URI=fake_risc.config_uri, **env)

    return started


def receiver(app: web.Application) -> str:
    return app[SERVICES].settings.public_base_url + "/google/risc"


async def connected(app: web.Application, google: FakeGoogle, slack_id: str) -> Account:
    """A healthy account whose Google `sub` is known (filled by a refresh, as for rows connected before)."""
    await healthy(app, google, slack_id)
    access = await app[SERVICES].tokens.access(
        (await app[SERVICES].accounts.find_by_slack_id(slack_id)).id, force_refresh=True
    )  # type: ignore[union-attr]
    assert access.ok and access.account.metadata.get("google_sub") == subject_for(access.account.email or "")
    return access.account


async def risc_audit(app: web.Application) -> list[audit.AuditEvent]:
    return [
        event
        for event in await audit.recent(app[SERVICES].pool, limit=200)
        if event.action.startswith("risc.")
    ]


async def test_a_revocation_sets_revoked_and_sends_the_reconnect_dm_at_once(
    start: Serve, fake_google: FakeGoogle, fake_risc: FakeRisc, fake_slack: FakeSlack
) -> None:
    app = await start()
    fake_slack.add_user("U0RISC", locale="en-US")
    account = await connected(app, fake_google, "U0RISC")
    sub = account.metadata["google_sub"]
    # The issuer's configuration and keys are read once per process; the timeline below is of a warm one.
    warm_up = fake_risc.sign(fake_risc.event("verification", state="warm-up"))
    assert (await fake_risc.deliver(receiver(app), warm_up)).status == 202

    delivery = await fake_risc.deliver(
        receiver(app), fake_risc.sign(fake_risc.event("tokens-revoked", sub=sub))
    )

    assert (delivery.status, delivery.body) == (202, "")
    # Written before the answer: a 202 means it is recorded.
    now = await app[SERVICES].accounts.get(account.id)
    assert now.status is Status.REVOKED
    assert now.status_cause is not None and "removed this app's access" in now.status_cause
    (call,) = await settled(fake_slack, "chat.postMessage")
    (message,) = dms(fake_slack, "U0RISC")
    assert "You removed this app's access in your Google Account" in block_text(message["blocks"])
    assert RECONNECT_ACTION in buttons(message["blocks"])
    event, _ = await risc_audit(app)  # newest first: the revocation, then the warm-up
    assert (event.action, event.account_id, event.details["sub"]) == ("risc.tokens-revoked", account.id, sub)
    print(
        "\nrevocation timeline: event sent → 202 (status written) "
        f"{(delivery.answered_at - delivery.sent_at) * 1000:.1f} ms → DM posted "
        f"{(call.at - delivery.sent_at) * 1000:.1f} ms"
    )
    assert metric(await scrape_metrics(app), "gmail_reconnect_risc_events_total", outcome="accepted") == 2


async def test_a_replayed_jti_changes_nothing(
    start: Serve, fake_google: FakeGoogle, fake_risc: FakeRisc, fake_slack: FakeSlack
) -> None:
    app = await start()
    account = await connected(app, fake_google, "U0REPLAY")
    token = fake_risc.sign(fake_risc.event("tokens-revoked", sub=account.metadata["google_sub"]))
    assert (await fake_risc.deliver(receiver(app), token)).status == 202
    await settled(fake_slack, "chat.postMessage")
    await app[SERVICES].security_events.drain()
    await delivered(app)
    # The user reconnects; then the same token comes again.
    await healthy(app, fake_google, "U0REPLAY")

    again = await fake_risc.deliver(receiver(app), token)

    assert again.status == 202
    await app[SERVICES].security_events.drain()
    await delivered(app)
    assert (await app[SERVICES].accounts.get(account.id)).status is Status.HEALTHY
    assert len(fake_slack.calls_to("chat.postMessage")) == 1
    assert len(await risc_audit(app)) == 1
    assert metric(await scrape_metrics(app), "gmail_reconnect_risc_events_total", outcome="duplicate") == 1


@pytest.mark.parametrize(
    ("forgery", "err"),
    [
        ({"key": "unknown"}, "invalid_key"),
        ({"aud": "another-client.apps.googleusercontent.com"}, "invalid_audience"),
        ({"iss": "https://accounts.example.com/"}, "invalid_issuer"),
        ({"key": "none"}, "invalid_request"),
        ({"exp": time.time() - 3600}, "invalid_request"),
        ({"iat": time.time() - 30 * 86400}, "invalid_request"),
    ],
)
async def test_a_forged_token_is_refused_and_changes_nothing(
    start: Serve,
    fake_google: FakeGoogle,
    fake_risc: FakeRisc,
    fake_slack: FakeSlack,
    forgery: dict[str, object],
    err: str,
) -> None:
    app = await start()
    account = await connected(app, fake_google, "U0FORGE")
    token = fake_risc.sign(fake_risc.event("tokens-revoked", sub=account.metadata["google_sub"]), **forgery)  # type: ignore[arg-type]

    delivery = await fake_risc.deliver(receiver(app), token)

    assert delivery.status == 400
    answer = json.loads(delivery.body)
    assert answer["err"] == err and answer["description"]
    await asyncio.sleep(0.1)
    assert (await app[SERVICES].accounts.get(account.id)).status is Status.HEALTHY
    assert fake_slack.calls_to("chat.postMessage") == []
    assert await risc_audit(app) == []


async def test_a_token_signed_with_a_key_rotated_in_since_the_last_fetch_is_not_lost(
    start: Serve, fake_google: FakeGoogle, fake_risc: FakeRisc, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = await start()
    account = await connected(app, fake_google, "U0ROTATE")
    verification = fake_risc.sign(fake_risc.event("verification", state="before"))
    assert (await fake_risc.deliver(receiver(app), verification)).status == 202  # the keys are read now
    fake_risc.rotate()
    revoked = fake_risc.sign(fake_risc.event("tokens-revoked", sub=account.metadata["google_sub"]))

    # Within a minute of the last fetch the keys are not fetched again: Google is asked to deliver it later,
    # rather than told that the token is bad (a 400 it would not retry).
    early = await fake_risc.deliver(receiver(app), revoked)

    assert early.status == 503 and early.headers["Retry-After"] == "60"
    assert (await app[SERVICES].accounts.get(account.id)).status is Status.HEALTHY
    assert fake_risc.jwks_fetches == 1
    monkeypatch.setattr("bot.signing_keys.REFETCH_UNKNOWN_AFTER_SECONDS", 0)
    again = await fake_risc.deliver(receiver(app), revoked)
    assert again.status == 202 and fake_risc.jwks_fetches == 2
    await app[SERVICES].security_events.drain()
    await delivered(app)
    assert (await app[SERVICES].accounts.get(account.id)).status is Status.REVOKED
    # A key that is still unknown right after a fetch is refused for good.
    forged = await fake_risc.deliver(
        receiver(app), fake_risc.sign(fake_risc.event("verification"), key="unknown")
    )
    assert forged.status == 400 and json.loads(forged.body)["err"] == "invalid_key"


async def test_garbage_and_the_wrong_content_type_get_400(start: Serve, fake_risc: FakeRisc) -> None:
    app = await start()
    token = fake_risc.sign(fake_risc.event("verification", state="x"))

    garbage = await fake_risc.deliver(receiver(app), "not.a.jwt")
    binary = await fake_risc.deliver(
        receiver(app), "\udcff".encode("utf-8", "surrogateescape").decode("latin-1")
    )
    wrong_type = await fake_risc.deliver(receiver(app), token, content_type="application/json")
    huge = await fake_risc.deliver(receiver(app), "a" * 100_000)

    for answer in (garbage, binary, wrong_type, huge):
        assert answer.status == 400 and '"err": "invalid_request"' in answer.body, answer
    assert await risc_audit(app) == []


async def test_an_unknown_subject_is_audited_and_accepted(start: Serve, fake_risc: FakeRisc) -> None:
    app = await start()

    delivery = await fake_risc.deliver(
        receiver(app),
        fake_risc.sign(fake_risc.event("account-disabled", sub="109999999999999999999", reason="hijacking")),
    )

    assert delivery.status == 202
    (event,) = await risc_audit(app)
    assert (event.action, event.account_id) == ("risc.account-disabled", None)
    assert event.details["sub"] == "109999999999999999999" and event.details["matched"] == 0


async def test_account_disabled_stops_the_briefing_and_shows_why_on_gmail_status(
    start: Serve, fake_google: FakeGoogle, fake_risc: FakeRisc, fake_slack: FakeSlack
) -> None:
    app = await start()
    fake_slack.add_user("U0HIJACK", locale="ko-KR")
    account = await connected(app, fake_google, "U0HIJACK")
    token = fake_risc.sign(
        fake_risc.event("account-disabled", sub=account.metadata["google_sub"], reason="hijacking")
    )

    assert (await fake_risc.deliver(receiver(app), token)).status == 202

    disabled = await app[SERVICES].accounts.get(account.id)
    assert disabled.status is Status.DISABLED and "hijacking" in (disabled.status_cause or "")
    (told,) = await settled(fake_slack, "chat.postMessage")
    assert "사용 중지" in told.args["text"] and "도용" in told.args["text"] and "blocks" not in told.args
    # The card says why the briefing stops, and offers no Reconnect (reconnecting cannot help).
    status, _ = await post(app, slash_command_body(user_id="U0HIJACK"))
    assert status == 200
    (card,) = await settled(fake_slack, "chat.postEphemeral")
    text = block_text(card.args["blocks"])
    assert "Google이 사용 중지함" in text and "다른 사람이 계정을 도용한 흔적" in text
    assert "브리핑에 이메일 부분이 빠집니다" in text
    assert RECONNECT_ACTION not in buttons(card.args["blocks"])
    # The briefing skips it, and no credentials are handed out for it.
    report = await app[SERVICES].briefing.one.process(disabled, Kind.BRIEFING)
    assert report.status is Status.DISABLED and str(report.result) == "skipped"
    assert not (await app[SERVICES].tokens.access(disabled)).ok
    counts = await app[SERVICES].accounts.count_by_status()
    assert counts[Status.DISABLED] == 1


async def test_account_enabled_checks_with_google_and_restores_the_account(
    start: Serve, fake_google: FakeGoogle, fake_risc: FakeRisc, fake_slack: FakeSlack
) -> None:
    app = await start()
    account = await connected(app, fake_google, "U0BACK")
    sub = account.metadata["google_sub"]
    await fake_risc.deliver(receiver(app), fake_risc.sign(fake_risc.event("account-disabled", sub=sub)))
    await app[SERVICES].security_events.drain()
    await delivered(app)
    refreshes = len(fake_google.calls_to("/token"))

    assert (
        await fake_risc.deliver(receiver(app), fake_risc.sign(fake_risc.event("account-enabled", sub=sub)))
    ).status == 202
    await app[SERVICES].security_events.drain()
    await delivered(app)

    restored = await app[SERVICES].accounts.get(account.id)
    assert restored.status is Status.HEALTHY and "google_disabled_reason" not in restored.metadata
    assert len(fake_google.calls_to("/token")) == refreshes + 1


async def test_sessions_revoked_triggers_a_check_that_finds_the_grant_gone(
    start: Serve, fake_google: FakeGoogle, fake_risc: FakeRisc, fake_slack: FakeSlack
) -> None:
    app = await start()
    fake_slack.add_user("U0SESS", locale="en-US")
    account = await connected(app, fake_google, "U0SESS")
    fake_google.revoke_refresh_token("1//U0SESS")
    refreshes = len(fake_google.calls_to("/token"))

    delivery = await fake_risc.deliver(
        receiver(app), fake_risc.sign(fake_risc.event("sessions-revoked", sub=account.metadata["google_sub"]))
    )

    assert delivery.status == 202
    await app[SERVICES].security_events.drain()
    await delivered(app)
    assert len(fake_google.calls_to("/token")) == refreshes + 1  # the check asked Google
    checked = await app[SERVICES].accounts.get(account.id)
    assert checked.status.needs_user
    (message,) = dms(fake_slack, "U0SESS")
    assert RECONNECT_ACTION in buttons(message["blocks"])


async def test_a_healthy_grant_survives_a_credential_change_check(
    start: Serve, fake_google: FakeGoogle, fake_risc: FakeRisc, fake_slack: FakeSlack
) -> None:
    app = await start()
    account = await connected(app, fake_google, "U0CRED")

    event = fake_risc.event("account-credential-change-required", sub=account.metadata["google_sub"])
    assert (await fake_risc.deliver(receiver(app), fake_risc.sign(event))).status == 202
    await app[SERVICES].security_events.drain()
    await delivered(app)

    assert (await app[SERVICES].accounts.get(account.id)).status is Status.HEALTHY
    assert fake_slack.calls_to("chat.postMessage") == []
    (audited,) = await risc_audit(app)
    assert audited.action == "risc.account-credential-change-required"


def double_hash(token: str) -> str:
    return base64.b64encode(hashlib.sha512(hashlib.sha512(token.encode()).digest()).digest()).decode()


@pytest.mark.parametrize("alg", ["hash_base64_sha512_sha512", "prefix"])
async def test_token_revoked_finds_the_account_by_its_refresh_token(
    start: Serve, fake_google: FakeGoogle, fake_risc: FakeRisc, fake_slack: FakeSlack, alg: str
) -> None:
    app = await start(TOKEN_ENCRYPTION_KEYS=generate_key())
    refresh = "1//U0ONETOKEN-" + "x" * 20
    account = await healthy(app, fake_google, "U0ONETOKEN")
    other = await healthy(app, fake_google, "U0OTHER")
    fake_google.add_refresh_token(refresh, email="one@gmail.com", scopes=["openid"])
    await app[SERVICES].accounts.store_tokens(
        grant=TokenGrant("ya29.x", refresh, None, None),
        actor="test",
        slack_user_id="U0ONETOKEN",
    )
    identifier = double_hash(refresh) if alg != "prefix" else refresh[:16]
    subject = {
        "subject_type": "oauth_token",
        "token_type": "refresh_token",
        "token_identifier_alg": alg,
        "token": identifier,
    }
    token = fake_risc.sign(
        {"https://schemas.openid.net/secevent/oauth/event-type/token-revoked": {"subject": subject}}
    )

    assert (await fake_risc.deliver(receiver(app), token)).status == 202

    assert (await app[SERVICES].accounts.get(account.id)).status is Status.REVOKED
    assert (await app[SERVICES].accounts.get(other.id)).status is Status.HEALTHY
    await settled(fake_slack, "chat.postMessage")
    (event,) = await risc_audit(app)
    assert event.details["token_identifier_alg"] == alg and identifier not in str(event.details)


async def test_a_verification_event_is_audited_with_its_state(start: Serve, fake_risc: FakeRisc) -> None:
    app = await start()

    delivery = await fake_risc.deliver(
        receiver(app), fake_risc.sign(fake_risc.event("verification", state="hello"))
    )

    assert delivery.status == 202
    (event,) = await risc_audit(app)
    assert (event.action, event.details["verification_state"]) == ("risc.verification", "hello")
    assert await app[SERVICES].security_events.events.verification_received("hello")


async def test_the_issuer_keys_are_fetched_once(
    start: Serve, fake_google: FakeGoogle, fake_risc: FakeRisc
) -> None:
    app = await start()
    for state in ("a", "b", "c"):
        assert (
            await fake_risc.deliver(
                receiver(app), fake_risc.sign(fake_risc.event("verification", state=state))
            )
        ).status == 202
    assert fake_risc.jwks_fetches == 1


async def test_a_revocation_reaches_the_user_and_the_services_that_use_the_api(
    start: Serve, fake_google: FakeGoogle, fake_risc: FakeRisc, fake_slack: FakeSlack
) -> None:
    """The whole timeline: Google's event → status written (202) → Reconnect DM → signed connection.broken."""
    app = await start()
    async with fake_receiver() as services_receiver:
        _, services_receiver.secret = await app[SERVICES].webhooks.add(
            services_receiver.url, events=EVENTS, actor="test"
        )
        fake_slack.add_user("U0BOTH", locale="en-US")
        account = await connected(app, fake_google, "U0BOTH")
        warm_up = fake_risc.sign(fake_risc.event("verification", state="warm-up"))
        assert (await fake_risc.deliver(receiver(app), warm_up)).status == 202

        wall_sent = time.time()  # the receiver of the services stamps with the wall clock
        delivery = await fake_risc.deliver(
            receiver(app),
            fake_risc.sign(fake_risc.event("tokens-revoked", sub=account.metadata["google_sub"])),
        )

        assert delivery.status == 202
        (dm_call,) = await settled(fake_slack, "chat.postMessage")
        await eventually(lambda: len(services_receiver.accepted) == 1, seconds=10)
        (webhook,) = services_receiver.accepted
        assert webhook.signed and webhook.payload["type"] == "connection.broken"
        assert (webhook.payload["slack_user_id"], webhook.payload["status"]) == ("U0BOTH", "revoked")
        print(
            "\nrevocation timeline: 202 (status written) "
            f"{(delivery.answered_at - delivery.sent_at) * 1000:.0f} ms → DM "
            f"{(dm_call.at - delivery.sent_at) * 1000:.0f} ms → webhook "
            f"{(webhook.received_at - wall_sent) * 1000:.0f} ms"
        )
