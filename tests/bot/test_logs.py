"""Secrets that reach a log line anyway are masked, in the message and in tracebacks."""

from __future__ import annotations

import logging

import pytest

from bot.logs import MASK, SecretMaskingFilter


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
