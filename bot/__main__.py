"""`python -m bot` does what the `gmail-reconnect` console script does."""

from bot.cli.commands import main

raise SystemExit(main())
