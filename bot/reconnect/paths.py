"""Where the consent flow is served: the links in Slack start it, Slack's sign-in and Google's redirect come
back to it."""

from __future__ import annotations

OAUTH_PREFIX = "/oauth/google/"
START_PATH = OAUTH_PREFIX + "start"
CALLBACK_PATH = OAUTH_PREFIX + "callback"
SLACK_CALLBACK_PATH = "/oauth/slack/callback"
# The flow's cookies (the browser binding, the verified identity) are sent to both callbacks and nowhere else.
COOKIE_PATH = "/oauth/"
