"""`gmail-reconnect risc register | verify | status`: the stream of Google's security events to this bot."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp

from bot.config import Settings
from bot.google.risc import RISC_PATH
from bot.google.risc_stream import RiscStream, bearer_token
from bot.services import open_services

POLL_SECONDS = 0.5


def add_parser(commands: Any) -> None:
    """The `risc` subcommand and its actions."""
    risc = commands.add_parser(
        "risc", help="manage Google's security event stream (Cross-Account Protection) to this bot"
    )
    actions = risc.add_subparsers(dest="risc_command", required=True, metavar="ACTION")
    actions.add_parser(
        "register",
        help=f"have Google push security events to PUBLIC_BASE_URL{RISC_PATH} (every type handled)",
    )
    verify = actions.add_parser(
        "verify", help="ask Google to send a verification event, and wait until the receiver records it"
    )
    verify.add_argument(
        "--wait",
        type=int,
        default=60,
        metavar="SECONDS",
        help="how long to wait for the event (default 60; 0: do not wait)",
    )
    actions.add_parser(
        "status", help="print where the stream delivers, which events, and whether it is enabled"
    )


async def risc_command(settings: Settings, args: argparse.Namespace) -> int:
    """Run one `risc` action; 0 when it worked, 1 when Google refused or the event did not arrive."""
    token = bearer_token(settings.google_risc_service_account_file)  # before anything else: exit 2 if broken
    async with aiohttp.ClientSession() as session:
        stream = RiscStream(settings.google_risc_api_url, token, session)
        if args.risc_command == "register":
            receiver = settings.public_base_url + RISC_PATH
            await stream.register(receiver)
            print(f"Google now pushes security events to {receiver}.")
            if not receiver.startswith("https://"):
                print(
                    "Note: Google delivers only to https:// URLs; set PUBLIC_BASE_URL to the bot's https origin."
                )
            print("Check it with `gmail-reconnect risc verify`.")
            return 0
        if args.risc_command == "status":
            configuration = await stream.configuration()
            delivery = configuration.get("delivery") or {}
            print(f"Receiver: {delivery.get('url', '(none registered)')}")
            print(f"Status:   {await stream.status()}")
            print("Events:")
            for event in configuration.get("events_requested") or configuration.get("events_delivered") or []:
                print(f"  {event}")
            return 0
        state = f"gmail-reconnect {datetime.now(UTC).isoformat(timespec='seconds')} {secrets.token_hex(4)}"
        await stream.verify(state)
        print(f"Google was asked to send a verification event (state {state!r}).")
    if args.wait <= 0:
        return 0
    return await _wait_for_verification(settings, state, args.wait)


async def _wait_for_verification(settings: Settings, state: str, seconds: int) -> int:
    started = time.monotonic()
    async with open_services(settings) as services:
        events = services.security_events.events
        while time.monotonic() - started < seconds:
            if await events.verification_received(state):
                print(f"The receiver recorded it after {time.monotonic() - started:.1f} s: the stream works.")
                return 0
            await asyncio.sleep(POLL_SECONDS)
    print(
        f"The receiver did not record it within {seconds} s: check that PUBLIC_BASE_URL{RISC_PATH} is reachable "
        "from the internet and that `gmail-reconnect risc status` names it."
    )
    return 1
