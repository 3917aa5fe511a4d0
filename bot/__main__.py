"""`python -m bot` does what the `gmail-reconnect` console script does."""

from bot.cli import main

raise SystemExit(main())
