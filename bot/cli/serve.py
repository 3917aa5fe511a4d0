"""`gmail-reconnect serve`: check the settings, then run the web application until stopped."""

from __future__ import annotations

import logging

from aiohttp import web

from bot import event_loop
from bot.app import create_app
from bot.config import Settings, ensure_secret_key

log = logging.getLogger(__name__)


def serve(settings: Settings) -> None:
    """Run the bot in the foreground; ConfigError before anything starts if a setting is missing."""
    settings.require_for_serve()
    if settings.uses_embedded_database:
        settings = ensure_secret_key(settings)
        log.info("DATABASE_URL is not set: using the embedded PostgreSQL in %s", settings.data_dir.resolve())
    if not settings.token_encryption_keys:
        log.warning(
            "TOKEN_ENCRYPTION_KEYS is not set: Gmail tokens are stored unencrypted in gmail_tokens.token_data "
            "(readable by anyone who can read the table)."
        )

    def listening(_banner: str) -> None:
        # web.run_app calls this once every site is bound and listening (its banner is not our log's format):
        # until then nothing answers on PORT, so the line is not logged before.
        log.info(
            "Listening on %s:%d; public URL %s; OAuth redirect URI %s",
            settings.host,
            settings.port,
            settings.public_base_url,
            settings.oauth_redirect_uri,
        )

    loop = event_loop.new_event_loop()
    log.debug("Event loop: %s", type(loop).__module__)
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        print=listening,
        access_log=None,
        loop=loop,
    )
