"""Secrets that reach a log line anyway are masked, in the message and in tracebacks; libraries' noise is kept
out of the log."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from bot.appkeys import SERVICES
from bot.logs import MASK, SecretMaskingFilter
from tests.helpers import Serve


def test_secret_values_are_masked(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.masking")
    masking = SecretMaskingFilter(["xoxb-very-secret-token", "short"])
    logger.addFilter(masking)
    try:
        with caplog.at_level(logging.INFO, logger="test.masking"):
            logger.info("calling Slack with %s", "xoxb-very-secret-token")
            try:
                raise RuntimeError("bad token xoxb-very-secret-token")
            except RuntimeError:
                logger.exception("failed")
    finally:
        logger.removeFilter(masking)
    assert caplog.records[0].getMessage() == f"calling Slack with {MASK}"
    assert "xoxb-very-secret-token" not in caplog.text
    assert MASK in (caplog.records[1].exc_text or "")


def test_the_slack_web_clients_do_not_build_debug_lines_that_would_be_dropped() -> None:
    # slack_sdk formats each request and answer for a debug line when its client logger's own level is at
    # most DEBUG; quiet_noisy_loggers (run for every test, as in production) gives those loggers a level.
    from slack_sdk.web import WebClient
    from slack_sdk.web.async_client import AsyncWebClient

    for client in (AsyncWebClient(token="xoxb-unused"), WebClient(token="xoxb-unused")):
        assert client.logger.level > logging.DEBUG, client.logger.name


async def test_an_over_long_url_is_refused_with_400_and_one_line_without_a_traceback(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    app = await serve()
    # A link token or an OAuth code at the start of the query string must not reach the log either.
    url = app[SERVICES].links.public_base_url + "/oauth/google/callback?code=4/0Secret-code&q=" + "x" * 10_000
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 400

    server_lines = [record for record in caplog.records if record.name.startswith("aiohttp")]
    assert [(r.levelno, r.getMessage()) for r in server_lines] == [
        (logging.WARNING, "Refused a malformed request from 127.0.0.1 with 400: LineTooLong")
    ]
    assert not any(record.exc_info for record in caplog.records)
    assert "Secret-code" not in caplog.text
