"""Where the consent flow is served: the links in Slack start it, Google's redirect comes back to it."""

from __future__ import annotations

OAUTH_PREFIX = "/oauth/google/"
START_PATH = OAUTH_PREFIX + "start"
CALLBACK_PATH = OAUTH_PREFIX + "callback"
