"""Slack users' languages as users.info last gave them, kept for about a week (table slack_locales)."""

from __future__ import annotations

import random
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
        await self.pool.execute(
            """INSERT INTO slack_locales (slack_user_id, locale, fetched_at, fresh_until)
               VALUES ($1, $2, now(), now() + $3::interval)
               ON CONFLICT (slack_user_id) DO UPDATE
                  SET locale = EXCLUDED.locale, fetched_at = EXCLUDED.fetched_at,
                      fresh_until = EXCLUDED.fresh_until""",
            slack_user_id,
            locale,
            FRESH_FOR + SPREAD * random.random(),
        )
