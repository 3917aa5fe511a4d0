"""Run records: the claim order (accounts whose language is known first) and what each claim costs."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import asyncpg
import pytest

from storage.accounts import Accounts
from storage.runs import _RECORD_AND_CLAIM, Done, Run, Runs

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
            "EXPLAIN (FORMAT JSON) " + _RECORD_AND_CLAIM, *runs._arguments(run, Done(1, "digest"), 0)
        )
    (plan,) = json.loads(explained) if isinstance(explained, str) else explained

    nodes = plan_nodes(plan["Plan"])
    scans = [node for node in nodes if node.get("Relation Name") == "briefing_run_items"]
    assert {node["Node Type"] for node in nodes} & {"Sort", "Incremental Sort"} == set()
    assert "briefing_run_items_claim_order_idx" in {node.get("Index Name") for node in scans}
    assert all(node["Node Type"] != "Seq Scan" for node in scans)


async def test_marking_never_waits_for_an_item_a_claim_holds(
    migrated_url: str, pool: asyncpg.Pool, accounts: Accounts
) -> None:
    # A claim locks the item it records done and the one it claims: a marking that waited for one of them while
    # holding others could deadlock with it. Here a lock wait fails at once instead of hanging.
    impatient = await asyncpg.create_pool(
        migrated_url, min_size=1, max_size=1, server_settings={"lock_timeout": "1"}
    )
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
