"""The Slack app manifest is valid for Slack and points every surface at our one endpoint."""

import copy
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MANIFEST_PATH = PROJECT_ROOT / "manifest.yml"
# CI clones the project with `shared/` beside it, so the schema lives one level above the project root.
SCHEMA_PATH = PROJECT_ROOT.parent / "shared/reference/slack-manifest-schema/manifest.schema.1.0.0.json"

PLACEHOLDER_HOST = "YOUR-PUBLIC-HOST.example.com"
EVENTS_PATH = "/slack/events"
BOT_SCOPES = {"chat:write", "commands", "im:write", "users:read", "users:read.email"}


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    if not SCHEMA_PATH.is_file():
        pytest.fail(
            f"Slack manifest schema not found at {SCHEMA_PATH}; "
            "clone the project with the shared/ directory beside it."
        )
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.fixture
def manifest() -> dict[str, Any]:
    loaded = yaml.safe_load(MANIFEST_PATH.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), "manifest.yml must be a YAML mapping"
    return loaded


def schema_errors(validator: jsonschema.Draft7Validator, document: object) -> list[str]:
    """Return readable schema violations, one per line, ordered by location."""
    errors = sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


def urls_in(node: object) -> Iterator[str]:
    """Yield every http(s) URL found anywhere in a loaded YAML document."""
    if isinstance(node, dict):
        for value in node.values():
            yield from urls_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from urls_in(item)
    elif isinstance(node, str) and re.match(r"https?://", node):
        yield node


def test_manifest_matches_slack_schema(
    validator: jsonschema.Draft7Validator, manifest: dict[str, Any]
) -> None:
    errors = schema_errors(validator, manifest)
    assert not errors, "manifest.yml violates Slack's schema:\n" + "\n".join(errors)


def test_background_color_is_a_hex_colour(manifest: dict[str, Any]) -> None:
    # The schema spells this rule "regex" instead of "pattern", so jsonschema does not enforce it.
    colour = manifest["display_information"]["background_color"]
    assert re.fullmatch(r"#[0-9a-fA-F]{3}([0-9a-fA-F]{3})?", colour), colour


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda m: m.pop("display_information"), id="display_information-removed"),
        pytest.param(
            lambda m: m["oauth_config"]["scopes"].update(bot="chat:write"), id="bot-scopes-not-a-list"
        ),
        pytest.param(
            lambda m: m["display_information"].update(long_description="short"),
            id="long_description-too-short",
        ),
        pytest.param(lambda m: m["settings"].update(socket_mode=True), id="unknown-settings-key"),
        pytest.param(
            lambda m: m["features"]["slash_commands"][0].update(command="x"), id="slash-command-without-slash"
        ),
    ],
)
def test_schema_rejects_broken_manifest(
    validator: jsonschema.Draft7Validator,
    manifest: dict[str, Any],
    mutate: Callable[[dict[str, Any]], object],
) -> None:
    # Starts from the real manifest, so the one mutation is what the schema must object to.
    broken = copy.deepcopy(manifest)
    mutate(broken)
    assert schema_errors(validator, broken), "schema accepted a broken manifest"


def test_every_request_url_is_the_placeholder_events_endpoint(manifest: dict[str, Any]) -> None:
    urls = list(urls_in(manifest))
    # Slash command, event subscriptions and interactivity each need one.
    assert len(urls) == 3, urls
    for url in urls:
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc, parts.path, parts.query) == (
            "https",
            PLACEHOLDER_HOST,
            EVENTS_PATH,
            "",
        ), url
    settings = manifest["settings"]
    assert settings["event_subscriptions"]["request_url"] in urls
    assert settings["interactivity"]["request_url"] in urls


def test_header_comment_names_the_placeholder_to_replace() -> None:
    header = []
    for line in MANIFEST_PATH.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    text = "\n".join(header)
    assert PLACEHOLDER_HOST in text
    assert "PUBLIC_BASE_URL" in text
    assert "socket_mode_enabled" in text


def test_gmail_status_command_has_usage_hint(manifest: dict[str, Any]) -> None:
    commands = {c["command"]: c for c in manifest["features"]["slash_commands"]}
    assert "/gmail-status" in commands, sorted(commands)
    command = commands["/gmail-status"]
    assert command["usage_hint"].strip()
    assert command["description"].strip()
    assert command["should_escape"] is False


def test_app_home_opened_is_subscribed_and_home_tab_enabled(manifest: dict[str, Any]) -> None:
    assert "app_home_opened" in manifest["settings"]["event_subscriptions"]["bot_events"]
    app_home = manifest["features"]["app_home"]
    assert app_home["home_tab_enabled"] is True
    assert app_home["messages_tab_enabled"] is True
    assert app_home["messages_tab_read_only_enabled"] is True


def test_interactivity_is_enabled(manifest: dict[str, Any]) -> None:
    # Without it Slack never delivers the "Reconnect Gmail" button clicks the bot must ack.
    assert manifest["settings"]["interactivity"]["is_enabled"] is True


def test_bot_scopes_are_exactly_the_needed_ones(manifest: dict[str, Any]) -> None:
    scopes = manifest["oauth_config"]["scopes"]
    assert set(scopes["bot"]) == BOT_SCOPES
    assert len(scopes["bot"]) == len(BOT_SCOPES), "duplicate bot scope"
    assert "user" not in scopes, "the bot needs no user-token scopes"


def test_socket_mode_is_off_by_default(manifest: dict[str, Any]) -> None:
    assert manifest["settings"]["socket_mode_enabled"] is False
