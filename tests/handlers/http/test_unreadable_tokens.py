"""A row whose tokens cannot be decrypted, over real HTTP: the API answers 409 (never 500) and the user's own
reconnect replaces the tokens, whatever made them unreadable."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from bot.appkeys import SERVICES
from bot.google.token_service import Outcome
from storage import audit
from storage.api_keys import Scope
from storage.models import Status
from tests.fakes.google import Consent, FakeGoogle
from tests.fakes.slack import FakeSlack
from tests.helpers import (
    UNREADABLE_CASES,
    Serve,
    block_text,
    call,
    dms,
    healthy,
    make_unreadable,
    owner_link,
    visit,
)

VICTIM, OTHER = "U0VICTIM", "U0OTHER"
CREDENTIALS = f"/api/v1/accounts/{VICTIM}/credentials"
UNREADABLE_DM = "The bot can no longer decrypt your stored Gmail connection"


async def unreadable_app(
    serve: Serve, fake_google: FakeGoogle, fake_slack: FakeSlack, case: str
) -> web.Application:
    keys, _ = UNREADABLE_CASES[case]
    app = await serve(TOKEN_ENCRYPTION_KEYS=keys)
    for slack_id in (VICTIM, OTHER):
        fake_slack.add_user(slack_id, locale="en-US")
        await healthy(app, fake_google, slack_id)
    await make_unreadable(app[SERVICES].pool, case, VICTIM, other_user_id=OTHER)
    # Who signs in at Google's consent screen, every time.
    fake_google.consent = Consent(email=f"{VICTIM.lower()}@gmail.com", sticky=True)
    return app


async def status_changes(app: web.Application) -> list[dict[str, object]]:
    events = await audit.recent(app[SERVICES].pool, slack_user_id=VICTIM)
    return [event.details for event in events if event.action == "status.changed"]


@pytest.mark.parametrize("case", UNREADABLE_CASES)
async def test_credentials_answer_409_and_the_users_reconnect_heals_the_row(
    serve: Serve,
    fake_google: FakeGoogle,
    fake_slack: FakeSlack,
    browser: aiohttp.ClientSession,
    case: str,
) -> None:
    app = await unreadable_app(serve, fake_google, fake_slack, case)
    _, reason = UNREADABLE_CASES[case]
    _, key = await app[SERVICES].api_keys.create("skill-email", scopes=Scope, actor="test")

    first = await call(app, "GET", CREDENTIALS, key=key)
    again = await call(app, "GET", CREDENTIALS, key=key)

    assert first.status == 409, first.text
    answer = first.json()
    # As every needs-user answer.
    assert answer.keys() == {"error", "status", "cause", "cause_detail", "reconnect_prompted"}
    assert (answer["error"], answer["status"], answer["reconnect_prompted"]) == (
        "reconnect_required",
        "unreadable",
        True,
    )
    assert answer["cause"] == "tokens_unreadable"
    assert answer["cause_detail"].startswith("The stored tokens cannot be decrypted: the access_token ")
    assert reason in answer["cause_detail"]
    assert again.status == 409 and again.json() == answer
    (dm,) = dms(fake_slack, VICTIM)  # asked once: the second answer found the DM open
    assert UNREADABLE_DM in block_text(dm["blocks"])
    assert [(d["from"], d["to"]) for d in await status_changes(app)] == [("healthy", "unreadable")]
    assert fake_google.calls_to("/token") == []  # reading failed here: Google was never asked
    for secret in fake_google.issued_secrets:
        assert secret not in first.text + str(fake_slack.calls)

    # Google sends no refresh token this time: the unreadable one cannot be kept, so nothing is stored.
    fake_google.omit_refresh_token = True
    refused, page, _ = await visit(browser, owner_link(app, fake_slack, VICTIM), **{"Accept-Language": "en"})
    assert refused == 502 and "did not grant lasting access" in page
    assert (await app[SERVICES].accounts.find_by_slack_id(VICTIM)).status is Status.UNREADABLE  # type: ignore[union-attr]

    fake_google.omit_refresh_token = False
    connected, page, _ = await visit(browser, owner_link(app, fake_slack, VICTIM))

    assert connected == 200, page
    account = await app[SERVICES].accounts.find_by_slack_id(VICTIM)
    assert account is not None and (account.status, account.status_cause) == (Status.HEALTHY, None)
    tokens = await app[SERVICES].accounts.read_tokens(account.id)
    assert tokens is not None and tokens.refresh_token in fake_google.issued_secrets
    healed = await call(app, "GET", CREDENTIALS, key=key)
    assert healed.status == 200 and healed.json()["access_token"] == tokens.access_token
    await app[SERVICES].hooks.drain()
    assert "Reconnected" in block_text(dms(fake_slack, VICTIM)[0]["blocks"])


async def test_a_reconnect_without_a_refresh_token_on_a_row_not_yet_marked_is_refused_not_500(
    serve: Serve, fake_google: FakeGoogle, fake_slack: FakeSlack, browser: aiohttp.ClientSession
) -> None:
    app = await unreadable_app(serve, fake_google, fake_slack, "wrong_key")
    fake_google.omit_refresh_token = True

    status, page, _ = await visit(browser, owner_link(app, fake_slack, VICTIM), **{"Accept-Language": "en"})

    assert status == 502 and "did not grant lasting access" in page
    account = await app[SERVICES].accounts.find_by_slack_id(VICTIM)
    assert account is not None and account.status is Status.HEALTHY  # unchanged: the row was not rewritten
    assert (await app[SERVICES].tokens.access(account)).outcome is Outcome.NEEDS_USER


async def test_a_key_put_back_makes_an_unreadable_row_work_again_at_its_next_request(
    serve: Serve, fake_google: FakeGoogle, fake_slack: FakeSlack
) -> None:
    app = await unreadable_app(serve, fake_google, fake_slack, "swapped_fields")
    _, key = await app[SERVICES].api_keys.create("skill-email", scopes=Scope, actor="test")
    assert (await call(app, "GET", CREDENTIALS, key=key)).status == 409
    # Swapping the fields back is what restoring the right key is for a wrong one: the row reads again.
    await make_unreadable(app[SERVICES].pool, "swapped_fields", VICTIM, other_user_id=OTHER)

    reply = await call(app, "GET", CREDENTIALS, key=key)

    assert reply.status == 200, reply.text
    account = await app[SERVICES].accounts.find_by_slack_id(VICTIM)
    assert account is not None and account.status is Status.HEALTHY
    assert len(fake_google.calls_to("/token")) == 1  # checked with Google once, which set the status anew
