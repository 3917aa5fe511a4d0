"""`gmail-reconnect webhook add | list | remove`: the webhooks that tell other services of broken, restored and
disconnected connections."""

from __future__ import annotations

import argparse
import sys
from urllib.parse import urlsplit

from bot.config import Settings
from bot.environment import is_loopback
from bot.services import open_services
from storage.webhooks import EVENTS, Event, Webhook

VALID_EVENTS = ", ".join(map(str, EVENTS))


def webhook_url(value: str) -> str:
    """An argument that must be an https URL (http only for a loopback host), as the URL settings are."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an http(s) URL: give one like https://svc.example.com/hooks"
        )
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise argparse.ArgumentTypeError(
            f"{value!r} uses plain http:// for {parts.hostname!r}: use https:// "
            "(http:// is accepted only for localhost / 127.0.0.1 / ::1)"
        )
    if parts.username or parts.password:
        raise argparse.ArgumentTypeError("the URL must not carry a user name or password")
    return value.strip()


def webhook_events(value: str) -> frozenset[Event]:
    """An argument naming one or more events, comma-separated (argparse's `type`)."""
    names = [name.strip().lower() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in set(EVENTS)]
    if unknown or not names:
        what = f"unknown event {', '.join(map(repr, unknown))}" if unknown else "no event given"
        raise argparse.ArgumentTypeError(f"{what}: use one or more of {VALID_EVENTS}, comma-separated")
    return frozenset(Event(name) for name in names)


def add_webhook_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `webhook` subcommand and its actions."""
    webhook = commands.add_parser(
        "webhook", help="add, list or remove webhooks that tell other services when a connection changes"
    )
    actions = webhook.add_subparsers(dest="webhook_command", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="add a webhook and print its signing secret (once)")
    add.add_argument("url", metavar="URL", type=webhook_url, help="where to POST the events (https://)")
    add.add_argument(
        "--events",
        type=webhook_events,
        default=frozenset(EVENTS),
        metavar="EVENT[,EVENT]",
        help=f"what to send, comma-separated (default: all): {VALID_EVENTS}",
    )
    actions.add_parser("list", help="list the webhooks and how their deliveries stand (never their secrets)")
    remove = actions.add_parser("remove", help="remove a webhook and drop what is still queued for it")
    remove.add_argument("id", metavar="ID", type=int, help="the webhook's id, as `list` shows it")


async def run_webhook_command(settings: Settings, args: argparse.Namespace, *, actor: str) -> int:
    """Add, list or remove; the exit code."""
    async with open_services(settings) as services:
        webhooks = services.webhooks
        if args.webhook_command == "add":
            webhook, secret = await webhooks.add(args.url, events=args.events, actor=actor)
            print(secret)
            print(
                f"Webhook {webhook.id} added: {', '.join(webhook.events)} → {webhook.url}.\n"
                "That is its signing secret, shown only now: give it to the receiver, which checks "
                "X-Gmail-Reconnect-Signature with it (see the README).",
                file=sys.stderr,
            )
        elif args.webhook_command == "remove":
            webhook = await webhooks.remove(args.id, actor=actor)
            dropped = f"; {webhook.pending} pending deliveries dropped" if webhook.pending else ""
            print(f"Webhook {webhook.id} ({webhook.url}) removed{dropped}.")
        else:
            found = await webhooks.list()
            if not found:
                print("No webhooks. Add one with: gmail-reconnect webhook add https://… [--events …]")
            for webhook in found:
                print(describe(webhook))
    return 0


def describe(webhook: Webhook) -> str:
    """One line of `webhook list`."""
    last = (
        f"last {webhook.last_result} at {webhook.last_attempt_at:%Y-%m-%d %H:%M}"
        if webhook.last_attempt_at
        else "nothing sent yet"
    )
    state = (
        f"  DISABLED {webhook.disabled_at:%Y-%m-%d %H:%M}: {webhook.disabled_reason}"
        if webhook.disabled_at
        else ""
    )
    return (
        f"{webhook.id:<4} {webhook.url}  events {','.join(webhook.events)}  "
        f"created {webhook.created_at:%Y-%m-%d %H:%M} by {webhook.created_by}  {last}  "
        f"pending {webhook.pending}  failed {webhook.failed}{state}"
    )
