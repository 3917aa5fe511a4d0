"""The gmail_tokens repository against a real PostgreSQL: lookups, linking, storing tokens, status, audit."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from bot.config import Settings
from bot.database import token_codec
from bot.google.scopes import Capability, capabilities_of
from storage import audit
from storage.accounts import Accounts
from storage.crypto import generate_key
from storage.errors import Conflict, NotFound, TokenUnreadable
from storage.models import Status, TokenGrant
from tests.helpers import UNREADABLE_CASES, account_by_user_id, load_legacy_seed, make_unreadable

GMAIL = "https://www.googleapis.com/auth/"


def grant(access: str = "ya29.new", refresh: str | None = "1//new-refresh", **kw: object) -> TokenGrant:
    return TokenGrant(
        access_token=access,
        refresh_token=refresh,
        expiry=kw.get("expiry", datetime(2026, 11, 21, 10, 0, tzinfo=UTC)),  # type: ignore[arg-type]
        scopes=kw.get("scopes", [GMAIL + "gmail.readonly", GMAIL + "gmail.send"]),  # type: ignore[arg-type]
    )


@pytest.fixture
async def legacy_accounts(database_url: str, make_settings: Callable[..., Settings]) -> Accounts:
    from storage.migrator import migrate
    from storage.pool import connect, create_pool

    await load_legacy_seed(database_url)
    conn = await connect(database_url)
    await migrate(conn)
    await conn.close()
    pool = await create_pool(database_url, min_size=1, max_size=4)
    yield Accounts(pool, token_codec(make_settings()))  # type: ignore[misc]
    await pool.close()


async def test_find_by_slack_id_and_user_id_on_legacy_rows(legacy_accounts: Accounts) -> None:
    heejae = await legacy_accounts.find_by_slack_id("U091UNVE41M")
    assert heejae is not None
    assert (heejae.user_id, heejae.email, heejae.robing_id) == ("heejae", "heejae@gmail.com", "rb8001")
    assert capabilities_of(heejae.scopes) == {Capability.READ, Capability.SEND}  # gmail.modify can send
    assert heejae.expiry == datetime(2025, 8, 18, 10, 0, tzinfo=UTC)
    assert heejae.has_refresh_token and heejae.is_equipped is False

    eagle = await account_by_user_id(legacy_accounts, "b6ea2ee0-a15a-5cf4-93a9-a9ca20d4c4a0")
    assert eagle is not None
    assert eagle.slack_user_id == "U0EAGLE0914"
    assert not eagle.has_access_token and not eagle.has_refresh_token and eagle.is_equipped is True
    assert await legacy_accounts.read_tokens(eagle.id) is None

    unknown = await account_by_user_id(legacy_accounts, "unknown")
    assert unknown is not None and capabilities_of(unknown.scopes) == frozenset()
    assert await legacy_accounts.find_by_slack_id("UNOBODY") is None
    assert await legacy_accounts.find_by_slack_id("") is None


async def test_list_filters_by_status(legacy_accounts: Accounts) -> None:
    everyone = await legacy_accounts.list()
    assert [a.user_id for a in everyone] == sorted(a.user_id for a in everyone) and len(everyone) == 6

    heejae = await account_by_user_id(legacy_accounts, "heejae")
    assert heejae is not None
    await legacy_accounts.set_status(
        heejae.id, status=Status.EXPIRED, cause="Token has been expired or revoked.", actor="test"
    )

    expired = await legacy_accounts.list(statuses=[Status.EXPIRED])
    assert [a.user_id for a in expired] == ["heejae"]
    assert expired[0].status_cause == "Token has been expired or revoked."
    assert len(await legacy_accounts.list(statuses=[Status.EXPIRED, Status.UNKNOWN])) == 6
    assert await legacy_accounts.count_by_status() == {Status.EXPIRED: 1, Status.UNKNOWN: 5}


async def test_link_slack_user(legacy_accounts: Accounts) -> None:
    linked = await legacy_accounts.link_slack_user(slack_user_id="U0TEST", user_id="test", actor="cli")
    assert linked.slack_user_id == "U0TEST" and linked.email == "test@gmail.com"
    assert linked.metadata["display_name"] == "테스트"  # the rest of metadata is kept

    again = await legacy_accounts.link_slack_user(slack_user_id="U0TEST", user_id="test", actor="cli")
    assert again.id == linked.id

    with pytest.raises(Conflict, match="already linked to user_id 'test'"):
        await legacy_accounts.link_slack_user(slack_user_id="U0TEST", user_id="unknown", actor="cli")
    with pytest.raises(Conflict, match="already linked to Slack user U091UNVE41M"):
        await legacy_accounts.link_slack_user(slack_user_id="U0OTHER", user_id="heejae", actor="cli")
    with pytest.raises(NotFound):
        await legacy_accounts.link_slack_user(slack_user_id="U0OTHER", user_id="nobody", actor="cli")

    events = await audit.recent(legacy_accounts.pool, slack_user_id="U0TEST")
    assert [(e.action, e.actor) for e in events] == [("account.linked", "cli")]


async def test_store_tokens_creates_a_row_for_a_new_slack_user(accounts: Accounts) -> None:
    account = await accounts.store_tokens(
        grant=grant(), actor="oauth", slack_user_id="U0NEW", metadata={"email": "new@gmail.com"}
    )

    assert (account.user_id, account.slack_user_id, account.email) == ("U0NEW", "U0NEW", "new@gmail.com")
    assert account.status is Status.HEALTHY and account.status_changed_at is not None
    assert account.refresh_token_issued_at is not None
    tokens = await accounts.read_tokens(account.id)
    assert tokens is not None and (tokens.access_token, tokens.refresh_token) == (
        "ya29.new",
        "1//new-refresh",
    )
    raw = await accounts.pool.fetchrow(
        "SELECT token_data->>'access_token' AS a, token_data->>'refresh_token' AS r FROM gmail_tokens WHERE id = $1",
        account.id,
    )
    assert (raw["a"], raw["r"]) == ("ya29.new", "1//new-refresh")  # plain JSONB, as legacy readers expect


async def test_a_grant_without_refresh_token_keeps_the_stored_one(legacy_accounts: Accounts) -> None:
    before = await legacy_accounts.find_by_slack_id("U091UNVE41M")
    assert before is not None and before.refresh_token_issued_at is None

    after = await legacy_accounts.store_tokens(
        grant=grant(access="ya29.refreshed", refresh=None, scopes=None),
        actor="refresh",
        slack_user_id="U091UNVE41M",
    )

    tokens = await legacy_accounts.read_tokens(after.id)
    assert tokens is not None
    assert (tokens.access_token, tokens.refresh_token) == ("ya29.refreshed", "1//heejae-refresh")
    assert after.refresh_token_issued_at is None  # no new refresh token was issued
    assert after.scopes == before.scopes  # scopes=None keeps the granted scopes
    assert after.expiry == datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    assert after.metadata["source_file"] == "heejae_gmail.json"


async def test_store_tokens_fills_a_null_token_row_of_seed_001(legacy_accounts: Accounts) -> None:
    account = await legacy_accounts.store_tokens(grant=grant(), actor="oauth", slack_user_id="U0HAPPYBELL")

    assert account.user_id == "1e16e9d5-59f3-54da-a661-8abeabff4230"  # the existing row, not a new one
    assert account.has_refresh_token and account.status is Status.HEALTHY
    assert len(await legacy_accounts.list()) == 6


async def test_store_tokens_refuses_a_row_linked_to_someone_else(legacy_accounts: Accounts) -> None:
    with pytest.raises(Conflict):
        await legacy_accounts.store_tokens(
            grant=grant(), actor="oauth", slack_user_id="U0OTHER", user_id="heejae"
        )
    tokens = await legacy_accounts.read_tokens((await account_by_user_id(legacy_accounts, "heejae")).id)  # type: ignore[union-attr]
    assert tokens is not None and tokens.access_token == "ya29.heejae-access"


async def test_set_status_audits_changes_only(accounts: Accounts) -> None:
    account = await accounts.store_tokens(grant=grant(), actor="oauth", slack_user_id="U0S")
    changed_at = account.status_changed_at

    same = await accounts.set_status(account.id, status=Status.HEALTHY, cause=None, actor="check")
    revoked = await accounts.set_status(
        account.id, status=Status.REVOKED, cause="Access was removed.", actor="check"
    )

    assert same.status_changed_at == changed_at and same.last_checked_at is not None
    assert revoked.status is Status.REVOKED and revoked.status_changed_at != changed_at
    events = await audit.recent(accounts.pool, account_id=account.id)
    assert [(e.action, e.details.get("to")) for e in events] == [
        ("status.changed", "revoked"),
        ("tokens.stored", None),
    ]
    assert (events[0].details["from"], events[0].user_id, events[0].slack_user_id) == (
        "healthy",
        account.user_id,
        "U0S",
    )
    with pytest.raises(NotFound):
        await accounts.set_status(999999, status=Status.HEALTHY, cause=None, actor="check")


async def test_audit_details_never_hold_secrets(accounts: Accounts) -> None:
    await audit.append(
        accounts.pool,
        actor="test",
        action="x",
        details={
            "refresh_token": "1//secret",
            "nested": {"client_secret": "GOCSPX-s", "code": "4/abc"},
            "n": 1,
        },
    )
    event = (await audit.recent(accounts.pool))[0]
    assert event.details == {
        "refresh_token": "[redacted]",
        "nested": {"client_secret": "[redacted]", "code": "[redacted]"},
        "n": 1,
    }


async def test_encryption_round_trip_and_rotation(
    pool: asyncpg.Pool, make_settings: Callable[..., Settings]
) -> None:
    old_key, new_key = generate_key(), generate_key()
    old = Accounts(pool, token_codec(make_settings(TOKEN_ENCRYPTION_KEYS=old_key)))
    account = await old.store_tokens(grant=grant(), actor="oauth", slack_user_id="U0ENC")

    raw = await pool.fetchval("SELECT token_data FROM gmail_tokens WHERE id = $1", account.id)
    assert "access_token" not in raw and "refresh_token" not in raw
    assert "ya29.new" not in str(raw) and "1//new-refresh" not in str(raw)
    assert account.has_access_token and account.has_refresh_token
    assert (await old.read_tokens(account.id)).refresh_token == "1//new-refresh"  # type: ignore[union-attr]

    rotated = Accounts(pool, token_codec(make_settings(TOKEN_ENCRYPTION_KEYS=f"{new_key},{old_key}")))
    assert await rotated.reencrypt_all(actor="cli") == 1
    assert await rotated.reencrypt_all(actor="cli") == 0

    only_new = Accounts(pool, token_codec(make_settings(TOKEN_ENCRYPTION_KEYS=new_key)))
    assert (await only_new.read_tokens(account.id)).access_token == "ya29.new"  # type: ignore[union-attr]
    with pytest.raises(TokenUnreadable, match="TOKEN_ENCRYPTION_KEYS does not hold"):
        await old.read_tokens(account.id)
    with pytest.raises(TokenUnreadable, match="TOKEN_ENCRYPTION_KEYS is not set"):
        await Accounts(pool, token_codec(make_settings())).read_tokens(account.id)


@pytest.mark.parametrize("case", UNREADABLE_CASES)
async def test_an_unreadable_row_says_why_and_new_tokens_replace_it_unread(
    pool: asyncpg.Pool, make_settings: Callable[..., Settings], case: str
) -> None:
    keys, reason = UNREADABLE_CASES[case]
    repo = Accounts(pool, token_codec(make_settings(TOKEN_ENCRYPTION_KEYS=keys)))
    victim = await repo.store_tokens(grant=grant(), actor="oauth", user_id="victim")
    await repo.store_tokens(grant=grant("ya29.other", "1//other"), actor="oauth", user_id="other")
    await make_unreadable(pool, case, "victim", other_user_id="other")

    with pytest.raises(TokenUnreadable) as raised:
        await repo.read_tokens(victim.id)
    assert reason in raised.value.reason and "victim" not in raised.value.reason
    assert "ya29" not in str(raised.value) and "1//" not in str(raised.value)
    token_data = await pool.fetchval("SELECT token_data FROM gmail_tokens WHERE id = $1", victim.id)
    assert repo.codec.problems(token_data, user_id="victim").keys() == {"access_token", "refresh_token"}

    # Without a refresh token the stored one would be kept, and it cannot be read: refused, nothing written.
    with pytest.raises(TokenUnreadable):
        await repo.store_tokens(grant=grant("ya29.again", None), actor="oauth", user_id="victim")
    # With one, the stored tokens are never read: they are replaced.
    await repo.store_tokens(grant=grant("ya29.fresh", "1//fresh"), actor="oauth", user_id="victim")
    tokens = await repo.read_tokens(victim.id)
    assert tokens is not None and (tokens.access_token, tokens.refresh_token) == ("ya29.fresh", "1//fresh")


async def test_rotation_encrypts_legacy_plain_rows(
    legacy_accounts: Accounts, make_settings: Callable[..., Settings]
) -> None:
    encrypting = Accounts(
        legacy_accounts.pool, token_codec(make_settings(TOKEN_ENCRYPTION_KEYS=generate_key()))
    )

    assert (
        await encrypting.reencrypt_all(actor="cli") == 3
    )  # the three imported legacy rows; NULL rows stay NULL

    heejae = await account_by_user_id(encrypting, "heejae")
    assert heejae is not None
    tokens = await encrypting.read_tokens(heejae.id)
    assert tokens is not None and tokens.refresh_token == "1//heejae-refresh"
    raw = await legacy_accounts.pool.fetchval("SELECT token_data FROM gmail_tokens WHERE id = $1", heejae.id)
    assert raw["token_type"] == "Bearer" and "1//heejae-refresh" not in str(raw)


async def test_concurrent_first_connections_create_one_row(accounts: Accounts) -> None:
    import asyncio

    results = await asyncio.gather(
        *(
            accounts.store_tokens(grant=grant(access=f"ya29.{i}"), actor="oauth", slack_user_id="U0RACE")
            for i in range(5)
        )
    )
    assert len({a.id for a in results}) == 1
    assert len(await accounts.list()) == 1
    assert results[0].expiry is not None and results[0].expiry > datetime(2026, 1, 1, tzinfo=UTC) - timedelta(
        days=1
    )


async def test_each_write_returns_the_account_as_a_read_after_it_finds_it(legacy_accounts: Accounts) -> None:
    # The legacy rows carry is_equipped, which the writes keep in step with the tokens after writing the row.
    before = await legacy_accounts.find_by_slack_id("U091UNVE41M")
    assert before is not None and before.is_equipped is False
    stored = await legacy_accounts.store_tokens(grant=grant(), actor="oauth", slack_user_id="U091UNVE41M")
    assert stored.id == before.id and stored.is_equipped is True
    assert stored == await legacy_accounts.get(stored.id)

    checked = await legacy_accounts.set_status(
        stored.id, status=Status.REVOKED, cause="Access was removed.", actor="check"
    )
    assert checked == await legacy_accounts.get(stored.id)

    cleared = await legacy_accounts.clear_tokens(
        stored.id, status=Status.REVOKED, cause="Access was removed.", actor="check"
    )
    assert cleared.is_equipped is False and not cleared.has_access_token and not cleared.has_refresh_token
    assert cleared == await legacy_accounts.get(stored.id)
