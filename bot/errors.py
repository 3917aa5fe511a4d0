"""The bot's own error classes: one base class, one documented class per kind of failure."""

from __future__ import annotations


class GmailReconnectError(Exception):
    """Base class of every error the bot raises on purpose; its message is safe to show to an operator."""


class ConfigError(GmailReconnectError):
    """The configuration is incomplete or wrong; each problem names the variable and what to set."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            "The configuration has "
            + (f"{len(problems)} problems" if len(problems) > 1 else "a problem")
            + ":\n"
            + "\n".join(f"  - {problem}" for problem in problems)
        )
