"""The `gmail-reconnect` command line (also `python -m bot`)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import asyncpg

from bot import event_loop
from bot.cli.parser import build_parser
from bot.config import Settings
from bot.environment import load_settings
from bot.errors import ConfigError, GmailReconnectError
from bot.logs import configure_logging
from bot.services import open_services
from storage.crypto import TokenCipher
from storage.errors import StorageError

log = logging.getLogger(__name__)

CLI_ACTOR = "cli"
EXIT_OK, EXIT_ERROR, EXIT_CONFIG = 0, 1, 2


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
