"""The command line: `gmail-reconnect` (also `python -m bot`), its subcommands, doctor and the token-file importer."""
