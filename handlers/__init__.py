"""Request handlers, one module per surface (health, and later OAuth and Slack)."""
