"""`gmail-reconnect serve`: check the settings, then run the web application until stopped."""

from __future__ import annotations

import ipaddress
import logging
from urllib.parse import urlsplit

from aiohttp import web

from bot import event_loop
from bot.app import create_app
from bot.config import Settings, ensure_secret_key
from bot.reconnect.paths import CALLBACK_PATH

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"http": 80, "https": 443}


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
    for warning in (settings.identity_warning(), port_mismatch(settings)):
        if warning is not None:
            log.warning("%s", warning)

    def listening(_banner: str) -> None:
        # web.run_app calls this once every site is bound and listening (its banner is not our log's format):
        # until then nothing answers on PORT, so the line is not logged before.
        log.info(
            "Listening on %s:%d; public URL %s; OAuth redirect URI %s%s",
            settings.host,
            settings.port,
            settings.public_base_url,
            settings.oauth_redirect_uri,
            f"; Slack sign-in redirect URL {settings.slack_redirect_uri}" if settings.checks_identity else "",
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


def port_mismatch(settings: Settings) -> str | None:
    """A warning when PUBLIC_BASE_URL is this machine (localhost, a loopback address) on a port other than PORT:
    the reconnect links and the OAuth redirect URI would point at a port the bot does not listen on."""
    url = urlsplit(settings.public_base_url)
    host = (url.hostname or "").lower()
    if not (host == "localhost" or host.endswith(".localhost") or _is_loopback(host)):
        return None
    try:
        port = url.port or DEFAULT_PORTS.get(url.scheme)
    except ValueError:  # not a port number: the settings would have refused it, so nothing to compare
        return None
    if port is None or port == settings.port:
        return None
    host_part = url.netloc if url.port is None else url.netloc[: url.netloc.rindex(":")]
    suggested = f"{url.scheme}://{host_part}:{settings.port}"
    return (
        f"PUBLIC_BASE_URL is {settings.public_base_url} but PORT is {settings.port}: the reconnect links and the "
        f"OAuth redirect URI ({settings.oauth_redirect_uri}) point at port {port}, where this bot does not "
        f"listen. Set PUBLIC_BASE_URL={suggested} (and register {suggested}{CALLBACK_PATH} on the Google OAuth "
        f"client), unless a proxy on port {port} forwards to port {settings.port}."
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
