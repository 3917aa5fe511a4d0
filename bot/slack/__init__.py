"""Slack: the Web API client and users' languages, the Reconnect Gmail DM, and the Block Kit of every message."""
