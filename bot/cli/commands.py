"""The `gmail-reconnect` command line (also `python -m bot`)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg

from bot import event_loop
from bot.cli.parser import parse_command_line
from bot.cli.risc import risc_command
from bot.config import Settings
from bot.database_wait import DatabaseUnavailable
from bot.environment import load_settings
from bot.errors import ConfigError, GmailReconnectError
from bot.logs import configure_logging
from bot.services import open_services
from storage.crypto import TokenCipher
from storage.errors import StorageError
from storage.models import Status
from storage.pool import describe_dsn
from storage.prompts import PromptState

log = logging.getLogger(__name__)

CLI_ACTOR = "cli"
EXIT_OK, EXIT_ERROR, EXIT_CONFIG = 0, 1, 2
EXIT_UNAVAILABLE = 75  # sysexits' EX_TEMPFAIL: the database stayed out of reach; run the command again later


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, load settings once, run the command; errors become a message and an exit code."""
    args = parse_command_line(argv)
    if args.env_file is not None and not args.env_file.is_file():
        print(f"gmail-reconnect: --env-file {args.env_file}: no such file.", file=sys.stderr)
        return EXIT_CONFIG
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
    except aiohttp.ClientError as error:  # before OSError: a connection error to Slack is one too
        print(f"gmail-reconnect: {unreachable(settings, error)}", file=sys.stderr)
        return EXIT_ERROR
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        print(f"gmail-reconnect: {database_problem(settings, error)}", file=sys.stderr)
        return EXIT_ERROR


def unreachable(settings: Settings, error: aiohttp.ClientError) -> str:
    """Which service could not be reached, named by the setting that points at it."""
    host = getattr(error, "host", None)
    where = "a web service"
    if host is not None:
        where = f"{host}:{getattr(error, 'port', '')}"
        for name, url in (
            ("SLACK_API_URL", settings.slack_api_url),
            ("GOOGLE_TOKEN_URI", settings.google_token_uri),
            ("GMAIL_API_URL", settings.gmail_api_url),
        ):
            if urlsplit(url).hostname == host:
                where = f"{'Slack' if name.startswith('SLACK') else 'Google'} at {where} ({name})"
                break
    return f"could not reach {where}: {type(error).__name__}. Check the network, and the setting if you changed it."


def database_problem(settings: Settings, error: BaseException) -> str:
    """What went wrong with the database, and where it is: DATABASE_URL's host, or the embedded cluster."""
    if settings.database_url is not None:
        where = f"{describe_dsn(settings.database_url.reveal())} (DATABASE_URL)"
        advice = "Is the server running, and is DATABASE_URL right?"
    else:
        where = f"the embedded PostgreSQL in {settings.data_dir.resolve()}"
        advice = "See its log in the postgres/ folder there."
    return f"{where} could not be used: {type(error).__name__}: {error}. {advice}"


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


async def _unlink(settings: Settings, args: argparse.Namespace) -> int:
    async with open_services(settings) as services:
        account = await services.accounts.unlink_slack_user(slack_user_id=args.slack_user_id, actor=CLI_ACTOR)
        # A Reconnect Gmail DM still open for that user speaks of a row that is no longer theirs.
        await services.prompts.close(args.slack_user_id, state=PromptState.DISMISSED, actor=CLI_ACTOR)
    print(
        f"unlinked Slack user {args.slack_user_id} from user_id {account.user_id} "
        f"({account.email or 'no email'}); the row and its tokens stay"
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
            state = "not checked with Google yet" if account.status is Status.UNKNOWN else account.status
            print(f"imported {token_file.path} as user_id {account.user_id}: {state}")
            if account.status.needs_user and account.status_cause:
                print(f"  {account.status_cause}")
    return EXIT_OK


async def _rotate_keys(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.token_encryption_keys:
        raise ConfigError(["TOKEN_ENCRYPTION_KEYS is not set: set it (new key first) before rotate-keys."])
    async with open_services(settings) as services:
        count = await services.accounts.reencrypt_all(actor=CLI_ACTOR)
        secrets = await services.webhooks.reencrypt_all(actor=CLI_ACTOR)
    print(
        f"re-encrypted {count} account(s) under key {TokenCipher(settings.token_encryption_keys).current_key_id}"
    )
    if secrets:
        print(f"re-encrypted {secrets} webhook signing secret(s)")
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
    name = args.name.strip() if args.api_key_command == "create" else ""
    if args.api_key_command == "create" and (not name or len(name) > 100):  # said before the database starts
        raise ConfigError(["NAME must be 1 to 100 characters, e.g. skill-email."])
    async with open_services(settings) as services:
        keys = services.api_keys
        if args.api_key_command == "create":
            key, secret = await keys.create(name, scopes=args.scopes, actor=CLI_ACTOR)
            print(secret)
            print(
                f"API key {key.name!r} ({key.key_prefix}…) created with scopes {', '.join(key.scope_names)}. "
                "Store it now: it is not shown again.\n"
                f"Use it as: Authorization: Bearer {key.key_prefix}…",
                file=sys.stderr,
            )
        elif args.api_key_command == "revoke":
            key = await keys.revoke(args.name, actor=CLI_ACTOR)
            print(f"API key {key.name!r} ({key.key_prefix}…) revoked; calls with it now get 401.")
        else:
            found = await keys.list(include_revoked=args.all)
            if not found:
                print("No API keys. Create one with: gmail-reconnect api-key create NAME --scope SCOPE")
            for key in found:
                used = f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never used"
                state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
                print(
                    f"{key.name:<24} {key.key_prefix}…  scopes {','.join(key.scope_names):<24} "
                    f"created {key.created_at:%Y-%m-%d %H:%M} by {key.created_by}  last used {used}  {state}"
                )
    return EXIT_OK


async def _run_briefing(settings: Settings, args: argparse.Namespace) -> int:
    from bot.briefing.run import Kind
    from bot.slack.delivery import SlackRefusedToken

    # Checked before the database starts: the run needs Slack, Google, and SECRET_KEY for its links.
    problems = settings.missing_for_serve()
    if settings.secret_key is None:
        problems.append("SECRET_KEY is not set: it signs the Reconnect Gmail links in the DMs.")
    if problems:
        raise ConfigError(problems)
    kind = Kind.PREFLIGHT if args.preflight else Kind.BRIEFING
    try:
        await _database_reachable(settings, f"starting the {kind} run")
        async with open_services(settings) as services:
            report = await services.briefing.run(
                kind,
                dry_run=args.dry_run,
                only=args.users,
                patience=settings.database_wait,
            )
    except DatabaseUnavailable as error:
        print(f"gmail-reconnect: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except SlackRefusedToken as error:
        print(f"gmail-reconnect: {error}", file=sys.stderr)
        return EXIT_CONFIG
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
    total = len(report.accounts)
    print(
        f"{'dry run: ' if report.dry_run else ''}{total} account{'' if total == 1 else 's'} ({counts or 'none'})"
    )
    return EXIT_OK


async def _database_reachable(settings: Settings, what: str) -> None:
    """Wait (for at most DATABASE_WAIT) until DATABASE_URL's server accepts a connection."""
    if settings.database_url is None:
        return  # the embedded cluster is started by this process
    from bot.database_wait import DatabaseWait
    from storage.pool import connect

    dsn = settings.database_url.reveal()

    async def connected() -> None:
        conn = await connect(dsn, timeout=10)
        await conn.close()

    where = f"{describe_dsn(dsn)} (DATABASE_URL)"
    wait = DatabaseWait(connected, where=where, patience=settings.database_wait)
    await wait.call(what, connected)


async def _webhook(settings: Settings, args: argparse.Namespace) -> int:
    from bot.cli.webhooks import run_webhook_command

    return await run_webhook_command(settings, args, actor=CLI_ACTOR)


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "migrate": _migrate,
    "accounts": _accounts,
    "link": _link,
    "unlink": _unlink,
    "import": _import,
    "rotate-keys": _rotate_keys,
    "doctor": _doctor,
    "reconnect-link": _reconnect_link,
    "disconnect": _disconnect,
    "run-briefing": _run_briefing,
    "api-key": _api_key,
    "risc": risc_command,
    "webhook": _webhook,
}
