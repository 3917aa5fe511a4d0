"""`gmail-reconnect serve` as an operator runs it: a real process, its log, and SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from bot.cli.serve import port_mismatch
from bot.config import Settings
from tests.fakes.slack import FakeSlack
from tests.helpers import BASE_ENV, free_port

WRONG_APP_TOKEN = "xapp-1-A0APP-1-a-token-slack-never-issued"


@pytest.mark.parametrize(
    ("public_base_url", "port", "warned"),
    [
        ("http://localhost:8080", "9000", True),
        ("http://127.0.0.1:8080", "9000", True),
        ("http://[::1]:8080", "9000", True),
        ("http://localhost", "8080", True),  # port 80
        ("http://localhost:9000", "9000", False),
        ("http://localhost", "80", False),
        ("https://bot.example.com", "8080", False),  # a proxy in front: its port is not ours to know
        ("https://10.0.0.5:8443", "9000", False),
    ],
)
def test_a_local_public_url_on_another_port_is_warned_of(
    make_settings: Callable[..., Settings], public_base_url: str, port: str, warned: bool
) -> None:
    warning = port_mismatch(make_settings(PUBLIC_BASE_URL=public_base_url, PORT=port))
    assert (warning is not None) == warned
    if warning is not None:
        assert warning.startswith(f"PUBLIC_BASE_URL is {public_base_url} but PORT is {port}")


def test_the_warning_says_what_to_set(make_settings: Callable[..., Settings]) -> None:
    warning = port_mismatch(make_settings(PUBLIC_BASE_URL="http://localhost:8080", PORT="9000"))
    assert warning is not None
    assert "Set PUBLIC_BASE_URL=http://localhost:9000" in warning
    assert "http://localhost:9000/oauth/google/callback" in warning


async def read_until(stream: asyncio.StreamReader, lines: list[str], text: str, seconds: float = 60) -> None:
    """Read log lines into `lines` until one contains `text`."""
    async with asyncio.timeout(seconds):
        while not any(text in line for line in lines):
            line = await stream.readline()
            if not line:
                raise AssertionError(f"serve ended before logging {text!r}:\n" + "".join(lines))
            lines.append(line.decode())


async def test_serve_listens_when_it_says_so_and_stops_cleanly_with_a_wrong_app_token(
    migrated_url: str, fake_slack: FakeSlack, tmp_path: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "GOOGLE_", "DATABASE_URL"))}
    env.update(BASE_ENV)
    env.update(
        {
            "GMAIL_RECONNECT_DATA_DIR": str(tmp_path / "data"),
            "DATABASE_URL": migrated_url,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "SLACK_API_URL": fake_slack.base_url,
            "SLACK_APP_TOKEN": WRONG_APP_TOKEN,
            # PUBLIC_BASE_URL left at its default, http://localhost:8080, as a new operator's often is.
        }
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "serve",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        await read_until(process.stdout, lines, "Listening on")
        # Said only once the port is bound: it answers at once.
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as reply,
        ):
            assert reply.status == 200
        await read_until(process.stdout, lines, "Socket Mode is not connected (attempt 2)", seconds=30)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(process.communicate(), 60)
    output = "".join(lines) + rest.decode()

    assert process.returncode == 0, output
    assert f"PUBLIC_BASE_URL is http://localhost:8080 but PORT is {port}" in output
    assert "SLACK_APP_TOKEN is not a valid app-level token (xapp-…) with connections:write" in output
    for noise in ("Traceback", "Unclosed", "asynchronous generator", "Task was destroyed", "will be unused"):
        assert noise not in output, output
    assert WRONG_APP_TOKEN not in output and BASE_ENV["SLACK_BOT_TOKEN"] not in output
    assert len(fake_slack.calls_to("apps.connections.open")) >= 2
