"""Run records: the claim order (accounts whose language is known first) and what each claim costs."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import asyncpg
import pytest

from bot.briefing.claims import CLAIM_BATCH
from storage.accounts import Accounts
from storage.runs import _RECORD_AND_CLAIM, Digest, Done, Run, Runs

ACCOUNTS = 10_000


async def linked_accounts(pool: asyncpg.Pool, count: int) -> None:
    await pool.execute(
        """INSERT INTO gmail_tokens (user_id, metadata)
           SELECT 'user-' || n, jsonb_build_object('slack_user_id', format('U%s', lpad(n::text, 6, '0')))
             FROM generate_series(1, $1) AS n""",
        count,
    )


def slack_id(n: int) -> str:
    return f"U{n:06d}"


async def claimed_users(runs: Runs, run: Run, count: int, *, worker: int = 0) -> list[str | None]:
    """The Slack users of the next `count` claims of a new worker, each recording the one before as done (the
    last one it keeps)."""
    users: list[str | None] = []
    after = None
    for _ in range(count):
        claim = await runs.claim(run, after=after, worker=worker)
        assert claim is not None and claim.account is not None
        users.append(claim.account.slack_user_id)
        after = Done(claim.account_id, "digest")
    return users


async def test_accounts_waiting_for_their_language_are_claimed_after_the_others(
    pool: asyncpg.Pool, accounts: Accounts
) -> None:
    await linked_accounts(pool, 6)
    runs = Runs(accounts)
    run = await runs.begin("briefing", date(2025, 1, 2))

    await runs.languages_pending(run, [slack_id(1), slack_id(2), slack_id(4)])
    first = await claimed_users(runs, run, 2, worker=1)
    await runs.languages_known(run, [slack_id(4)])  # a users.list page had this one
    second = await claimed_users(runs, run, 3, worker=2)  # then the accounts still waiting: not stuck
    await runs.languages_known(run, None)  # the pages ended
    third = await claimed_users(runs, run, 1, worker=3)

    assert first + second + third == [slack_id(n) for n in (3, 5, 4, 6, 1, 2)]
    assert await pool.fetchval("SELECT count(*) FROM briefing_run_items WHERE language_pending") == 0


def plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of an EXPLAIN (FORMAT JSON) plan, depth first."""
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes += plan_nodes(child)
    return nodes


@pytest.mark.parametrize("plan_cache_mode", ["force_custom_plan", "force_generic_plan"])
async def test_a_claim_reads_the_claim_index_in_order_without_sorting_the_run(
    pool: asyncpg.Pool, accounts: Accounts, plan_cache_mode: str
) -> None:
    await linked_accounts(pool, ACCOUNTS)
    runs = Runs(accounts)
    run = await runs.begin("briefing", date(2025, 1, 2))
    await runs.languages_pending(run, [slack_id(n) for n in range(1, ACCOUNTS, 7)])
    await claimed_users(runs, run, 50)
    await pool.execute("ANALYZE briefing_run_items")

    async with pool.acquire() as conn:
        await conn.execute(f"SET plan_cache_mode = {plan_cache_mode}")
        explained = await conn.fetchval(
            "EXPLAIN (FORMAT JSON) " + _RECORD_AND_CLAIM,
            *runs._arguments(run, [Done(1, "digest")], CLAIM_BATCH, 0, [2, 3]),
        )
    (plan,) = json.loads(explained) if isinstance(explained, str) else explained

    nodes = plan_nodes(plan["Plan"])
    scans = [node for node in nodes if node.get("Relation Name") == "briefing_run_items"]
    assert {node["Node Type"] for node in nodes} & {"Sort", "Incremental Sort"} == set()
    assert "briefing_run_items_claim_order_idx" in {node.get("Index Name") for node in scans}
    assert all(node["Node Type"] != "Seq Scan" for node in scans)


async def impatient_pool(url: str) -> asyncpg.Pool:
    """A pool whose statements fail at once rather than wait for a lock."""
    return await asyncpg.create_pool(url, min_size=1, max_size=1, server_settings={"lock_timeout": "1"})


async def test_marking_never_waits_for_an_item_a_claim_holds(
    migrated_url: str, pool: asyncpg.Pool, accounts: Accounts
) -> None:
    # A claim locks the items it records done and those it claims: a marking that waited for one of them while
    # holding others could deadlock with it. Here a lock wait fails at once instead of hanging.
    impatient = await impatient_pool(migrated_url)
    await linked_accounts(pool, 3)
    runs = Runs(accounts)
    run = await runs.begin("briefing", date(2025, 1, 2))
    await runs.languages_pending(run, [slack_id(n) for n in (1, 2, 3)])
    claiming = await asyncpg.connect(migrated_url)
    try:
        async with claiming.transaction():
            await claiming.execute(
                """SELECT 1 FROM briefing_run_items AS i JOIN gmail_tokens AS g ON g.id = i.account_id
                    WHERE g.metadata->>'slack_user_id' = $1 FOR UPDATE OF i""",
                slack_id(2),
            )
            await Runs(Accounts(impatient, accounts.codec)).languages_known(run, None)
    finally:
        await claiming.close()
        await impatient.close()

    flagged = await pool.fetch(
        """SELECT g.metadata->>'slack_user_id' AS slack_user_id
             FROM briefing_run_items AS i JOIN gmail_tokens AS g ON g.id = i.account_id
            WHERE i.language_pending"""
    )
    assert [row["slack_user_id"] for row in flagged] == [slack_id(2)]  # skipped: a claim had it
    handled, after = [], None
    while (claim := await runs.claim(run, after=after)) is not None:
        assert claim.account is not None
        handled.append(claim.account.slack_user_id)
        after = Done(claim.account_id, "digest")
    assert handled == [slack_id(1), slack_id(3), slack_id(2)]
    # Recorded done: its mark went with it.
    assert await pool.fetchval("SELECT count(*) FROM briefing_run_items WHERE language_pending") == 0


async def claimed_rows(pool: asyncpg.Pool) -> dict[int, tuple[str, str | None]]:
    rows = await pool.fetch(
        "SELECT account_id, state, claimed_by FROM briefing_run_items ORDER BY account_id"
    )
    return {row["account_id"]: (row["state"], row["claimed_by"]) for row in rows}


async def test_one_statement_records_a_batch_and_claims_the_next_in_claim_order(
    pool: asyncpg.Pool, accounts: Accounts
) -> None:
    await linked_accounts(pool, 10)
    runs = Runs(accounts)
    run = await runs.begin("briefing", date(2025, 1, 2))
    await runs.languages_pending(run, [slack_id(2)])

    recorded, first = await runs.record_and_claim_many(run, [], count=4, worker=1)
    assert recorded == set()
    assert [claim.account.slack_user_id for claim in first if claim.account] == [
        slack_id(n) for n in (1, 3, 4, 5)
    ]
    handled = [Done(claim.account_id, "digest") for claim in first[:3]]
    recorded, second = await runs.record_and_claim_many(
        run, handled, count=3, worker=1, held=[first[3].account_id]
    )

    assert recorded == {claim.account_id for claim in first[:3]}
    assert [claim.account.slack_user_id for claim in second if claim.account] == [
        slack_id(n) for n in (6, 7, 8)
    ]
    states = await claimed_rows(pool)
    assert [states[claim.account_id][0] for claim in first[:3]] == ["done"] * 3
    assert {states[claim.account_id] for claim in [first[3], *second]} == {("claimed", f"{runs.worker}/1")}


async def test_claims_whose_answer_was_lost_are_claimed_again_by_their_claimer_only(
    pool: asyncpg.Pool, accounts: Accounts
) -> None:
    await linked_accounts(pool, 6)
    runs, other = Runs(accounts), Runs(accounts)
    run = await runs.begin("briefing", date(2025, 1, 2))
    _, kept = await runs.record_and_claim_many(run, [], count=1, worker=1)
    # This statement commits, but its answer never comes back: the claimer does not know it holds these.
    await runs.record_and_claim_many(run, [], count=3, worker=1, held=[kept[0].account_id])

    _, others = await other.record_and_claim_many(run, [], count=6, worker=1)
    _, again = await runs.record_and_claim_many(run, [], count=3, worker=1, held=[kept[0].account_id])

    # The other process gets only the two accounts nobody claimed; the lost three come back to their claimer,
    # and not the one it knows it holds.
    assert [claim.account_id for claim in others] == [5, 6]
    assert [claim.account_id for claim in again] == [2, 3, 4]
    assert all(claim.taken_over for claim in again)  # as Claim says: a lost statement's claim is taken over


async def test_a_batch_repeated_after_its_answer_was_lost_counts_its_own_record_once(
    pool: asyncpg.Pool, accounts: Accounts
) -> None:
    await linked_accounts(pool, 4)
    runs = Runs(accounts)
    run = await runs.begin("briefing", date(2025, 1, 2))
    _, claims = await runs.record_and_claim_many(run, [], count=2, worker=1)
    handled = [
        Done(claim.account_id, "digest", digest=Digest(f"D{claim.account_id}", "sealed", None))
        for claim in claims
    ]
    # This statement commits, but its answer never comes back: the claimer sends the same one again.
    await runs.record_and_claim_many(run, handled, count=1, worker=1)

    recorded, again = await runs.record_and_claim_many(run, handled, count=1, worker=1)

    assert recorded == {1, 2}  # the earlier statement's record, this claimer's own: its reports count
    assert [claim.account_id for claim in again] == [3]  # the claim the lost answer held, claimed again
    assert await pool.fetchval("SELECT count(*) FROM slack_outbox") == 2  # each digest queued once
    assert await pool.fetchval("SELECT count(*) FROM briefing_run_items WHERE state = 'done'") == 2
    # Another claimer repeating it finds no record of its own.
    other, _ = await Runs(accounts).record_and_claim_many(run, handled, count=0, worker=1)
    assert other == set()


async def test_a_batch_records_only_the_accounts_its_claimer_still_holds(
    pool: asyncpg.Pool, accounts: Accounts
) -> None:
    await linked_accounts(pool, 3)
    runs, other = Runs(accounts), Runs(accounts)
    run = await runs.begin("briefing", date(2025, 1, 2))
    _, claims = await runs.record_and_claim_many(run, [], count=3, worker=1)
    await pool.execute(
        "UPDATE briefing_run_items SET lease_until = now() - interval '1 second' WHERE account_id = 2"
    )
    _, taken = await other.record_and_claim_many(run, [], count=3, worker=1)
    assert [(claim.account_id, claim.taken_over) for claim in taken] == [(2, True)]

    recorded, _ = await runs.record_and_claim_many(
        run, [Done(claim.account_id, "digest") for claim in claims], count=0, worker=1
    )

    assert recorded == {1, 3}
    states = await claimed_rows(pool)
    assert states[2] == ("claimed", f"{other.worker}/1")  # left to the process that took it over
    assert states[1][0] == states[3][0] == "done"


async def test_renewing_never_waits_for_an_item_a_claim_holds(
    migrated_url: str, pool: asyncpg.Pool, accounts: Accounts
) -> None:
    # A batch locks the items it records in an order of its own: a renewal that waited for one of them while
    # holding others could deadlock with it. Here a lock wait fails at once instead of hanging.
    impatient = await impatient_pool(migrated_url)
    await linked_accounts(pool, 3)
    runs = Runs(accounts)
    run = await runs.begin("briefing", date(2025, 1, 2))
    _, claims = await runs.record_and_claim_many(run, [], count=3, worker=1)
    claiming = await asyncpg.connect(migrated_url)
    try:
        async with claiming.transaction():
            await claiming.execute("SELECT 1 FROM briefing_run_items WHERE account_id = 2 FOR UPDATE")
            renewing = Runs(Accounts(impatient, accounts.codec))
            renewing.worker, renewing._prefix = runs.worker, runs.claim_prefix  # the same process
            renewed = await renewing.renew(run, [claim.account_id for claim in claims])
    finally:
        await claiming.close()
        await impatient.close()

    assert renewed == 2  # the locked one is being recorded or claimed: skipped, not waited for
