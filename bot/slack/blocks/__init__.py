"""Block Kit for every Slack message, one module per surface, built with slack_sdk.models so that nothing exceeds Slack's limits.

Builders only build: they take what to show and return blocks; sending them is the handlers' job.
"""
