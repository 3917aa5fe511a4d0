"""`gmail-reconnect webhook add | list | remove` as an admin runs it, and `disconnect` in another process telling
the served application's sender at once."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.appkeys import SERVICES
from storage import audit
from tests.fakes.google import FakeGoogle
from tests.fakes.webhooks import FakeReceiver, fake_receiver
from tests.helpers import BASE_ENV, Serve, eventually, google_env, healthy, run_async

SECRET = re.compile(r"whsec_[A-Za-z0-9_-]{40,}")


@pytest.fixture
def cli_env(migrated_url: str, tmp_path: Path) -> dict[str, str]:
    """The CLI's environment: the test's database, and nothing of the developer's Slack or Google settings."""
    inherited = {
        k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "GOOGLE_", "DATABASE_URL"))
    }
    return {
        **inherited,
        **BASE_ENV,
        "DATABASE_URL": migrated_url,
        "GMAIL_RECONNECT_DATA_DIR": str(tmp_path / "data"),
    }


@pytest.fixture
async def receiver() -> AsyncIterator[FakeReceiver]:
    async with fake_receiver() as fake:
        yield fake


async def webhook(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    return await run_async("webhook", *args, env=env, cwd=cwd)


async def test_add_prints_the_secret_once_list_never_shows_it_and_remove_is_audited(
    serve: Serve, cli_env: dict[str, str], tmp_path: Path, receiver: FakeReceiver
) -> None:
    app = await serve()

    code, stdout, stderr = await webhook(
        "add", receiver.url, "--events", "connection.broken,connection.restored", env=cli_env, cwd=tmp_path
    )

    assert code == 0, stderr
    (secret,) = stdout.split()
    assert SECRET.fullmatch(secret) and stdout == secret + "\n"
    assert "shown only now" in stderr and secret not in stderr
    code, listing, stderr = await webhook("list", env=cli_env, cwd=tmp_path)
    assert code == 0, stderr
    assert receiver.url in listing and "connection.broken,connection.restored" in listing
    assert "nothing sent yet" in listing and "pending 0  failed 0" in listing
    assert secret not in listing and secret not in stderr
    webhook_id = listing.split()[0]

    code, stdout, stderr = await webhook("remove", webhook_id, env=cli_env, cwd=tmp_path)

    assert code == 0, stderr
    assert f"Webhook {webhook_id} ({receiver.url}) removed" in stdout
    actions = [e.action for e in await audit.recent(app[SERVICES].pool)]
    assert actions[:2] == ["webhook.removed", "webhook.added"]
    code, listing, _ = await webhook("list", env=cli_env, cwd=tmp_path)
    assert "No webhooks" in listing
    code, _, stderr = await webhook("remove", webhook_id, env=cli_env, cwd=tmp_path)
    assert code == 1 and f"no webhook has id {webhook_id}" in stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["add", "https://svc.example/hooks", "--events", "connection.broken,account.deleted"],
            "'account.deleted'",
        ),
        (["add", "http://svc.example/hooks"], "use https://"),
        (["add", "ftp://svc.example/hooks"], "is not an http(s) URL"),
        (["add", "https://user:pw@svc.example/hooks"], "user name or password"),
        (["remove", "first"], "invalid int value"),
    ],
)
async def test_bad_arguments_are_refused_with_exit_2(
    cli_env: dict[str, str], tmp_path: Path, args: list[str], message: str
) -> None:
    code, stdout, stderr = await webhook(*args, env=cli_env, cwd=tmp_path)

    assert code == 2 and message in stderr and stdout == ""
    if "account.deleted" in message:
        assert "connection.broken, connection.restored, connection.disconnected" in stderr


async def test_disconnect_in_another_process_is_delivered_by_the_served_sender(
    serve: Serve, cli_env: dict[str, str], tmp_path: Path, receiver: FakeReceiver, fake_google: FakeGoogle
) -> None:
    app = await serve()
    code, stdout, stderr = await webhook(
        "add", receiver.url, "--events", "connection.disconnected", env=cli_env, cwd=tmp_path
    )
    assert code == 0, stderr
    receiver.secret = stdout.strip()
    await healthy(app, fake_google, "U0CLIBYE")

    code, _, stderr = await run_async(
        "disconnect", "U0CLIBYE", env={**cli_env, **google_env(fake_google)}, cwd=tmp_path
    )

    assert code == 0, stderr
    await eventually(lambda: len(receiver.accepted) == 1, seconds=10)
    (delivery,) = receiver.accepted
    assert delivery.payload["type"] == "connection.disconnected"
    assert delivery.payload["slack_user_id"] == "U0CLIBYE"
