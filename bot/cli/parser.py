"""The command line's grammar: every subcommand, its arguments, and its --help."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from bot import __version__
from bot.cli.risc import add_parser as add_risc_parser
from bot.cli.webhooks import add_webhook_parser
from bot.slack.ids import is_user_id
from storage.api_keys import Scope
from storage.models import Status

VALID_SCOPES = ", ".join(map(str, Scope))
SCOPE_HELP = (
    "what the key may do, comma-separated: credentials (read access tokens), registry (list the accounts and "
    "read one's status), report (report a failed token)"
)


def slack_user_id(value: str) -> str:
    """An argument that must be a Slack user ID (argparse's `type`): a clear error, exit 2, otherwise."""
    if not is_user_id(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a Slack user ID: use the member ID, like U0123ABCD "
            "(Slack profile → ⋮ → Copy member ID)"
        )
    return value


def scopes(value: str) -> frozenset[Scope]:
    """An argument naming one or more API-key scopes, comma-separated (argparse's `type`)."""
    names = [name.strip().lower() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in set(Scope)]
    if unknown or not names:
        what = f"unknown scope {', '.join(map(repr, unknown))}" if unknown else "no scope given"
        raise argparse.ArgumentTypeError(
            f"{what}: use one or more of {VALID_SCOPES}, comma-separated (e.g. --scope registry,report)"
        )
    return frozenset(Scope(name) for name in names)


def parse_command_line(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The parsed command line; errors print the usage and exit 2, as argparse's own do."""
    parser, create_key = _build()
    args = parser.parse_args(argv)
    if args.command == "api-key" and args.api_key_command == "create" and args.scopes is None:
        # Not `required=True`: argparse would then name the option without saying what to give it.
        create_key.error(f"--scope is required: give one or more of {VALID_SCOPES}, comma-separated")
    return args


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand with its own --help."""
    return _build()[0]


def _build() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(
        prog="gmail-reconnect",
        description="Keeps every Slack user's Gmail connection alive, with a one-click reconnect in Slack.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--env-file",
        type=Path,
        default=None,
        help="settings file read under the environment (default: .env, if there is one)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("serve", help="run the web server (applies pending migrations first)")

    migrate = commands.add_parser("migrate", help="apply pending database migrations")
    migrate.add_argument(
        "--init",
        action="store_true",
        help="allow creating gmail_tokens in a DATABASE_URL database that has none (a new installation)",
    )

    accounts = commands.add_parser("accounts", help="list every account with its health")
    accounts.add_argument(
        "--status", action="append", choices=[str(s) for s in Status], help="only this status (repeatable)"
    )
    accounts.add_argument("--json", action="store_true", help="print JSON instead of a table")

    link = commands.add_parser("link", help="link a Slack user to an existing gmail_tokens row")
    link.add_argument("slack_user_id", metavar="SLACK_USER_ID", type=slack_user_id)
    link.add_argument("user_id", metavar="USER_ID")

    unlink = commands.add_parser(
        "unlink", help="remove a Slack user's link to their gmail_tokens row (the row and its tokens stay)"
    )
    unlink.add_argument("slack_user_id", metavar="SLACK_USER_ID", type=slack_user_id)

    importer = commands.add_parser("import", help="import Google authorized-user token JSON files")
    importer.add_argument("files", nargs="+", type=Path, metavar="FILE")
    importer.add_argument(
        "--user-id", help="gmail_tokens.user_id (default: from the file name, heejae_gmail.json → heejae)"
    )
    importer.add_argument("--slack-user-id", type=slack_user_id, help="the Slack user to link the account to")

    commands.add_parser(
        "rotate-keys", help="re-encrypt every stored token under the first TOKEN_ENCRYPTION_KEYS key"
    )
    commands.add_parser("doctor", help="check the configuration and the database, and say what is wrong")

    reconnect_link = commands.add_parser(
        "reconnect-link", help="print a Reconnect Gmail link for a Slack user (to send it by hand)"
    )
    reconnect_link.add_argument("slack_user_id", metavar="SLACK_USER_ID", type=slack_user_id)
    reconnect_link.add_argument(
        "--team", metavar="TEAM_ID", help="the Slack team id (for the back-to-Slack link)"
    )
    reconnect_link.add_argument(
        "--switch",
        action="store_true",
        help="allow connecting a different Google account than the stored one",
    )

    disconnect = commands.add_parser(
        "disconnect", help="revoke a Slack user's Gmail access at Google and wipe the stored tokens"
    )
    disconnect.add_argument("slack_user_id", metavar="SLACK_USER_ID", type=slack_user_id)

    run = commands.add_parser(
        "run-briefing",
        help="run today's briefing now: check and refresh every linked account, prompt, post the email part",
    )
    run.add_argument(
        "--preflight", action="store_true", help="run the early check instead (prompts only, no email part)"
    )
    run.add_argument(
        "--dry-run", action="store_true", help="change and send nothing; print what would happen"
    )
    run.add_argument(
        "--user",
        dest="users",
        action="append",
        metavar="SLACK_ID",
        type=slack_user_id,
        help="only this Slack user (repeatable); outside today's run record, so it runs even if that is done",
    )

    api_key = commands.add_parser("api-key", help="create, list or revoke API keys for other services")
    api_key_commands = api_key.add_subparsers(dest="api_key_command", required=True, metavar="ACTION")
    create = api_key_commands.add_parser(
        "create",
        help="create a key and print it (once: only a hash is kept)",
        usage="%(prog)s NAME --scope SCOPE[,SCOPE]",  # argparse would show the required --scope as optional
    )
    create.add_argument("name", metavar="NAME", help="who uses it, e.g. skill-email")
    create.add_argument(
        "--scope", dest="scopes", type=scopes, metavar="SCOPE[,SCOPE]", help=f"required: {SCOPE_HELP}"
    )
    listing = api_key_commands.add_parser("list", help="list the keys (never their secrets)")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    revoke = api_key_commands.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("name", metavar="NAME_OR_PREFIX", help="the key's name, or its prefix from `list`")
    add_risc_parser(commands)
    add_webhook_parser(commands)
    return parser, create
