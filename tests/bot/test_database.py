"""Migrating the database the settings point at."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bot.config import Settings
from bot.database import apply_migrations
from storage.migrator import load_migrations


async def test_each_migration_is_logged_once(
    database_url: str, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    applied = await apply_migrations(make_settings(DATABASE_URL=database_url), database_url, init=True)

    assert [str(m) for m in applied] == [str(m) for m in load_migrations()]
    for migration in applied:
        lines = [record.getMessage() for record in caplog.records if str(migration) in record.getMessage()]
        assert lines == [f"Applying migration {migration}"]
