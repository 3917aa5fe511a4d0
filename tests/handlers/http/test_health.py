"""/healthz and /readyz through the real application over real HTTP."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp.test_utils import TestClient

from bot.app import create_app
from bot.config import Settings


async def test_health_and_readiness(
    aiohttp_client: Callable[..., TestClient], migrated_url: str, make_settings: Callable[..., Settings]
) -> None:
    client = await aiohttp_client(create_app(make_settings(DATABASE_URL=migrated_url)))

    health = await client.get("/healthz")
    ready = await client.get("/readyz")

    assert health.status == 200 and await health.json() == {"status": "ok"}
    assert ready.status == 200 and await ready.json() == {"status": "ready"}


async def test_readiness_reports_pending_migrations(
    aiohttp_client: Callable[..., TestClient], migrated_url: str, make_settings: Callable[..., Settings]
) -> None:
    client = await aiohttp_client(create_app(make_settings(DATABASE_URL=migrated_url)))
    from bot.appkeys import SERVICES

    await client.app[SERVICES].pool.execute("DELETE FROM schema_migrations WHERE version = 2")
    ready = await client.get("/readyz")

    assert ready.status == 503
    assert await ready.json() == {
        "status": "unavailable",
        "reason": "pending migrations",
        "pending": ["0002_reconnect_tables"],
    }


async def test_unknown_path_is_404(
    aiohttp_client: Callable[..., TestClient], migrated_url: str, make_settings: Callable[..., Settings]
) -> None:
    client = await aiohttp_client(create_app(make_settings(DATABASE_URL=migrated_url)))
    assert (await client.get("/nope")).status == 404
