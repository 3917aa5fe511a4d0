"""Local fakes of the external services the bot talks to, served over real HTTP for tests."""
