"""gmail-reconnect: keeps every Slack user's Gmail connection alive, with a one-click reconnect in Slack."""

__version__ = "0.1.0"
