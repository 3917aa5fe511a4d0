"""The token service on a row whose tokens cannot be decrypted: disconnecting still wipes them."""

from __future__ import annotations

from bot.appkeys import SERVICES
from storage.models import Status
from tests.fakes.google import FakeGoogle
from tests.helpers import SERVING_KEY, Serve, healthy, make_unreadable


async def test_disconnecting_an_unreadable_row_wipes_it_and_says_google_was_not_asked(
    serve: Serve, fake_google: FakeGoogle
) -> None:
    app = await serve(TOKEN_ENCRYPTION_KEYS=SERVING_KEY)
    account = await healthy(app, fake_google, "U0VICTIM")
    await make_unreadable(app[SERVICES].pool, "wrong_key", "U0VICTIM", other_user_id="nobody")

    done = await app[SERVICES].tokens.disconnect(account.id, actor="slack:U0VICTIM")

    assert done.had_tokens and not done.revoked_at_google
    assert done.cause is not None and "Google was not asked to revoke" in done.cause
    assert "TOKEN_ENCRYPTION_KEYS does not hold" in done.cause
    assert fake_google.calls_to("/revoke") == []
    assert done.account.status is Status.DISCONNECTED
    assert not (done.account.has_access_token or done.account.has_refresh_token)
    assert await app[SERVICES].accounts.read_tokens(account.id) is None
