"""The `gmail-reconnect` command line (also `python -m bot`)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from bot import __version__, event_loop
from bot.config import Settings, load_settings
from bot.errors import ConfigError, GmailReconnectError
from bot.logs import configure_logging
from bot.services import open_services
from storage.crypto import TokenCipher
from storage.errors import StorageError
from storage.models import Status

log = logging.getLogger(__name__)

CLI_ACTOR = "cli"
EXIT_OK, EXIT_ERROR, EXIT_CONFIG = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand with its own --help."""
    parser = argparse.ArgumentParser(
        prog="gmail-reconnect",
        description="Keeps every Slack user's Gmail connection alive, with a one-click reconnect in Slack.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--env-file",
        type=Path,
        default=Path(".env"),
        help="settings file read under the environment (default: .env)",
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
    link.add_argument("slack_user_id", metavar="SLACK_USER_ID")
    link.add_argument("user_id", metavar="USER_ID")

    importer = commands.add_parser("import", help="import Google authorized-user token JSON files")
    importer.add_argument("files", nargs="+", type=Path, metavar="FILE")
    importer.add_argument(
        "--user-id", help="gmail_tokens.user_id (default: from the file name, heejae_gmail.json → heejae)"
    )
    importer.add_argument("--slack-user-id", help="the Slack user to link the account to")

    commands.add_parser(
        "rotate-keys", help="re-encrypt every stored token under the first TOKEN_ENCRYPTION_KEYS key"
    )
    commands.add_parser("doctor", help="check the configuration and the database, and say what is wrong")

    reconnect_link = commands.add_parser(
        "reconnect-link", help="print a Reconnect Gmail link for a Slack user (to send it by hand)"
    )
    reconnect_link.add_argument("slack_user_id", metavar="SLACK_USER_ID")
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
    disconnect.add_argument("slack_user_id", metavar="SLACK_USER_ID")

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
        help="only this Slack user (repeatable); outside today's run record, so it runs even if that is done",
    )

    api_key = commands.add_parser("api-key", help="create, list or revoke API keys for other services")
    api_key_commands = api_key.add_subparsers(dest="api_key_command", required=True, metavar="ACTION")
    create = api_key_commands.add_parser(
        "create", help="create a key and print it (once: only a hash is kept)"
    )
    create.add_argument("name", metavar="NAME", help="who uses it, e.g. skill-email")
    listing = api_key_commands.add_parser("list", help="list the keys (never their secrets)")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    revoke = api_key_commands.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("name", metavar="NAME_OR_PREFIX", help="the key's name, or its prefix from `list`")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, load settings once, run the command; errors become a message and an exit code."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(env_file=args.env_file)
    except ConfigError as error:
        print(f"gmail-reconnect: {error}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_level if args.command == "serve" else "WARNING", settings.secret_values())
    try:
        if args.command == "serve":
            from bot.cli.serve import serve

            serve(settings)
            return EXIT_OK
        return event_loop.run(COMMANDS[args.command](settings, args))
    except ConfigError as error:
        print(f"gmail-reconnect: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except (GmailReconnectError, StorageError) as error:
        print(f"gmail-reconnect: {error}", file=sys.stderr)
        return EXIT_ERROR
    except (OSError, asyncpg.PostgresError) as error:
        print(
            f"gmail-reconnect: the database could not be used: {type(error).__name__}: {error}",
            file=sys.stderr,
        )
        return EXIT_ERROR


async def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from bot.database import apply_migrations, resolve_database_url

    applied = await apply_migrations(settings, await resolve_database_url(settings), init=args.init)
    for migration in applied:
        print(f"applied {migration}")
    print(f"{len(applied)} migration(s) applied; the schema is up to date.")
    return EXIT_OK


async def _accounts(settings: Settings, args: argparse.Namespace) -> int:
    from bot.cli.registry import render_json, render_table
    from bot.google.health import effective_status

    async with open_services(settings) as services:
        found = await services.accounts.list()
    required = list(settings.required_capabilities)
    if args.status:  # by the status shown, which for never-checked accounts comes from the stored data
        found = [a for a in found if str(effective_status(a, required)[0]) in args.status]
    print(render_json(found, required) if args.json else render_table(found, required))
    return EXIT_OK


async def _link(settings: Settings, args: argparse.Namespace) -> int:
    async with open_services(settings) as services:
        account = await services.accounts.link_slack_user(
            slack_user_id=args.slack_user_id, user_id=args.user_id, actor=CLI_ACTOR
        )
    print(
        f"linked Slack user {account.slack_user_id} to user_id {account.user_id} ({account.email or 'no email'})"
    )
    return EXIT_OK


async def _import(settings: Settings, args: argparse.Namespace) -> int:
    from bot.cli.importer import default_user_id, import_token_file, read_token_file

    if len(args.files) > 1 and (args.user_id or args.slack_user_id):
        raise ConfigError(
            ["--user-id and --slack-user-id name one account: import one FILE at a time with them."]
        )
    token_files = [read_token_file(path) for path in args.files]  # check every file before storing any
    async with open_services(settings) as services:
        for token_file in token_files:
            account = await import_token_file(
                services.accounts,
                token_file,
                user_id=args.user_id or default_user_id(token_file.path),
                slack_user_id=args.slack_user_id,
                required=list(settings.required_capabilities),
                actor=CLI_ACTOR,
            )
            print(f"imported {token_file.path} as user_id {account.user_id}: {account.status}")
    return EXIT_OK


async def _rotate_keys(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.token_encryption_keys:
        raise ConfigError(["TOKEN_ENCRYPTION_KEYS is not set: set it (new key first) before rotate-keys."])
    async with open_services(settings) as services:
        count = await services.accounts.reencrypt_all(actor=CLI_ACTOR)
    print(
        f"re-encrypted {count} account(s) under key {TokenCipher(settings.token_encryption_keys).current_key_id}"
    )
    return EXIT_OK


async def _doctor(settings: Settings, args: argparse.Namespace) -> int:
    from bot.cli.doctor import run_doctor

    report = await run_doctor(settings)
    print(report.render())
    return EXIT_ERROR if report.failed else EXIT_OK


async def _reconnect_link(settings: Settings, args: argparse.Namespace) -> int:
    from bot.config import ensure_secret_key
    from bot.reconnect.links import Purpose, link_signer

    signer = link_signer(ensure_secret_key(settings))
    claims = signer.new_claims(
        args.slack_user_id,
        slack_team_id=args.team,
        purpose=Purpose.SWITCH if args.switch else Purpose.RECONNECT,
    )
    print(signer.url(claims))
    print(
        f"valid until {claims.expires_at:%Y-%m-%d %H:%M} UTC; it works while SECRET_KEY stays the same.",
        file=sys.stderr,
    )
    return EXIT_OK


async def _disconnect(settings: Settings, args: argparse.Namespace) -> int:
    async with open_services(settings) as services:
        account = await services.accounts.find_by_slack_id(args.slack_user_id)
        if account is None:
            raise GmailReconnectError(f"no account is linked to Slack user {args.slack_user_id}")
        result = await services.tokens.disconnect(account.id, actor=CLI_ACTOR)
    if not result.had_tokens:
        done = "no tokens were stored"
    elif result.revoked_at_google:
        done = "access revoked at Google, tokens wiped"
    else:
        done = "tokens wiped, but Google could not revoke the access"
    print(f"{account.user_id} ({account.email or 'no email'}): {done}; status disconnected")
    if result.cause:
        print(result.cause)
    return EXIT_OK


async def _api_key(settings: Settings, args: argparse.Namespace) -> int:
    async with open_services(settings) as services:
        keys = services.api_keys
        if args.api_key_command == "create":
            name = args.name.strip()
            if not name or len(name) > 100:
                raise ConfigError(["NAME must be 1 to 100 characters, e.g. skill-email."])
            key, secret = await keys.create(name, actor=CLI_ACTOR)
            print(secret)
            print(
                f"API key {key.name!r} ({key.key_prefix}…) created. Store it now: it is not shown again.\n"
                f"Use it as: Authorization: Bearer {key.key_prefix}…",
                file=sys.stderr,
            )
        elif args.api_key_command == "revoke":
            key = await keys.revoke(args.name, actor=CLI_ACTOR)
            print(f"API key {key.name!r} ({key.key_prefix}…) revoked; calls with it now get 401.")
        else:
            found = await keys.list(include_revoked=args.all)
            if not found:
                print("No API keys. Create one with: gmail-reconnect api-key create NAME")
            for key in found:
                used = f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never used"
                state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
                print(
                    f"{key.name:<24} {key.key_prefix}…  created {key.created_at:%Y-%m-%d %H:%M} "
                    f"by {key.created_by}  last used {used}  {state}"
                )
    return EXIT_OK


async def _run_briefing(settings: Settings, args: argparse.Namespace) -> int:
    from bot.briefing.run import Kind

    # Checked before the database starts: the run needs Slack, Google, and SECRET_KEY for its links.
    problems = settings.missing_for_serve()
    if settings.secret_key is None:
        problems.append("SECRET_KEY is not set: it signs the Reconnect Gmail links in the DMs.")
    if problems:
        raise ConfigError(problems)
    kind = Kind.PREFLIGHT if args.preflight else Kind.BRIEFING
    async with open_services(settings) as services:
        report = await services.briefing.run(kind, dry_run=args.dry_run, only=args.users)
    if report.already_finished:
        print(f"Today's {kind} run has already finished; use --user SLACK_ID to run it again for someone.")
        return EXIT_OK
    for line in sorted(report.accounts, key=lambda line: line.account.user_id):
        account = line.account
        messages = "" if line.messages is None else f", {line.messages} unread"
        print(
            f"{account.slack_user_id:<12} {account.email or '-':<30} {line.status:<18} "
            f"{line.result}{messages}{': ' + line.detail if line.detail else ''}"
        )
    counts = ", ".join(f"{result} {n}" for result, n in sorted(report.counts.items()))
    print(f"{'dry run: ' if report.dry_run else ''}{len(report.accounts)} accounts ({counts or 'none'})")
    return EXIT_OK


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "migrate": _migrate,
    "accounts": _accounts,
    "link": _link,
    "import": _import,
    "rotate-keys": _rotate_keys,
    "doctor": _doctor,
    "reconnect-link": _reconnect_link,
    "disconnect": _disconnect,
    "run-briefing": _run_briefing,
    "api-key": _api_key,
}
