"""The Google account's `sub`, by which Google's security events name it: stored at consent, filled at refresh."""

from __future__ import annotations

import aiohttp

from bot.appkeys import SERVICES
from tests.fakes.google import FakeGoogle, subject_for
from tests.fakes.slack import FakeSlack
from tests.helpers import Serve, healthy, owner_link, visit


async def test_the_sub_is_stored_at_consent(
    serve: Serve, fake_slack: FakeSlack, browser: aiohttp.ClientSession, fake_google: FakeGoogle
) -> None:
    app = await serve()
    fake_google.consent.email = "sub.user@gmail.com"

    status, _, _ = await visit(browser, owner_link(app, fake_slack, "U0SUB"))

    assert status == 200
    account = await app[SERVICES].accounts.find_by_slack_id("U0SUB")
    assert account is not None and account.metadata["google_sub"] == subject_for("sub.user@gmail.com")


async def test_an_id_token_that_does_not_verify_stores_no_sub(
    serve: Serve, fake_slack: FakeSlack, browser: aiohttp.ClientSession, fake_google: FakeGoogle
) -> None:
    app = await serve()
    fake_google.id_token_key = "unknown"  # signed by a key Google never published

    await visit(browser, owner_link(app, fake_slack, "U0NOSUB"))

    account = await app[SERVICES].accounts.find_by_slack_id("U0NOSUB")
    assert account is not None and "google_sub" not in account.metadata


async def test_an_existing_row_gets_its_sub_at_the_next_refresh(
    serve: Serve, fake_google: FakeGoogle
) -> None:
    app = await serve()
    account = await healthy(app, fake_google, "U0OLD", expiring=True)
    assert "google_sub" not in account.metadata  # connected before the sub was stored

    access = await app[SERVICES].tokens.access(account)

    assert access.ok
    stored = await app[SERVICES].accounts.get(account.id)
    assert stored.metadata["google_sub"] == subject_for("u0old@gmail.com")
    assert stored.email == "u0old@gmail.com"  # the rest of the metadata stays


async def test_a_refresh_without_openid_leaves_the_row_as_it_was(
    serve: Serve, fake_google: FakeGoogle
) -> None:
    app = await serve()
    account = await healthy(app, fake_google, "U0NOID", expiring=True)
    fake_google.omit_id_token = True

    assert (await app[SERVICES].tokens.access(account)).ok

    assert "google_sub" not in (await app[SERVICES].accounts.get(account.id)).metadata
