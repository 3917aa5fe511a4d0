"""Slack users' languages as users.info last gave them, kept for about a week (table slack_locales)."""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import timedelta

import asyncpg

# How long a stored language is used before Slack is asked again; each row adds up to SPREAD at random.
FRESH_FOR = timedelta(days=6)
SPREAD = timedelta(days=2)


class SlackLocales:
    """Repository over slack_locales."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def get(self, slack_user_id: str) -> str | None:
        """The user's stored language, if it is still fresh."""
        return await self.pool.fetchval(
            "SELECT locale FROM slack_locales WHERE slack_user_id = $1 AND fresh_until > now()", slack_user_id
        )

    async def put(self, slack_user_id: str, locale: str) -> None:
        """Store the language Slack just gave for the user, fresh for FRESH_FOR plus up to SPREAD."""
        await self.put_many([(slack_user_id, locale)])

    async def put_many(self, languages: Iterable[tuple[str, str]]) -> None:
        """Store (Slack user id, Slack locale) pairs, each fresh for FRESH_FOR plus up to SPREAD."""
        rows = list(languages)
        await self.pool.execute(
            """INSERT INTO slack_locales (slack_user_id, locale, fetched_at, fresh_until)
               SELECT user_id, locale, now(), now() + fresh_for
                 FROM unnest($1::text[], $2::text[], $3::interval[]) AS given (user_id, locale, fresh_for)
               ON CONFLICT (slack_user_id) DO UPDATE
                  SET locale = EXCLUDED.locale, fetched_at = EXCLUDED.fetched_at,
                      fresh_until = EXCLUDED.fresh_until""",
            [user_id for user_id, _ in rows],
            [locale for _, locale in rows],
            [FRESH_FOR + SPREAD * random.random() for _ in rows],
        )

    async def linked_without(self) -> list[str]:
        """The Slack users linked to an account whose language is not stored, or no longer fresh."""
        rows = await self.pool.fetch(
            """SELECT g.metadata->>'slack_user_id' AS slack_user_id
                 FROM gmail_tokens AS g
                 LEFT JOIN slack_locales AS l
                        ON l.slack_user_id = g.metadata->>'slack_user_id' AND l.fresh_until > now()
                WHERE coalesce(g.metadata->>'slack_user_id', '') <> '' AND l.slack_user_id IS NULL
                ORDER BY 1"""
        )
        return [row["slack_user_id"] for row in rows]
