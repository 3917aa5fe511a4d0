"""The Slack app manifest is valid for Slack, points every surface at our one endpoint, and asks for exactly
the commands, events and scopes the code uses."""

import ast
import copy
import inspect
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient

from bot.appkeys import BOLT
from bot.reconnect.paths import SLACK_CALLBACK_PATH
from tests.helpers import Serve

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MANIFEST_PATH = PROJECT_ROOT / "manifest.yml"
# Slack's published schema (MIT licence, beside it), carried with the tests so a bare clone can run them.
SCHEMA_PATH = PROJECT_ROOT / "tests/data/slack-manifest-schema/manifest.schema.1.0.0.json"

PLACEHOLDER_HOST = "YOUR-PUBLIC-HOST.example.com"
EVENTS_PATH = "/slack/events"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    if not SCHEMA_PATH.is_file():
        pytest.fail(
            f"Slack manifest schema not found at {SCHEMA_PATH}: it is part of the repository, restore it "
            "(git checkout -- tests/data/slack-manifest-schema)."
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
    urls = list(urls_in({key: value for key, value in manifest.items() if key != "oauth_config"}))
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
    assert command["description"].strip()
    hint = command["usage_hint"]
    for subcommand in ("help", "all", "nudge"):
        assert re.search(rf"\b{subcommand}\b", hint), f"usage_hint {hint!r} does not mention {subcommand!r}"
    # `nudge @user` needs the mention escaped to <@U…|name> to learn the user's ID.
    assert command["should_escape"] is True


def test_app_home_opened_is_subscribed_and_home_tab_enabled(manifest: dict[str, Any]) -> None:
    assert "app_home_opened" in manifest["settings"]["event_subscriptions"]["bot_events"]
    app_home = manifest["features"]["app_home"]
    assert app_home["home_tab_enabled"] is True
    assert app_home["messages_tab_enabled"] is True
    assert app_home["messages_tab_read_only_enabled"] is True


def test_interactivity_is_enabled(manifest: dict[str, Any]) -> None:
    # Without it Slack never delivers the "Reconnect Gmail" button clicks the bot must ack.
    assert manifest["settings"]["interactivity"]["is_enabled"] is True


def test_socket_mode_is_off_by_default(manifest: dict[str, Any]) -> None:
    assert manifest["settings"]["socket_mode_enabled"] is False


# ---- The manifest asks for what the code uses, and nothing more ------------------------------------------------

CODE_DIRS = ("bot", "handlers")

# The bot scopes each Slack Web API method needs: "Required scopes" on its page of
# https://docs.slack.dev/reference/methods/ (chat.postMessage, users.info, …), bot token column.
USERS_INFO_EMAIL = "users_info, reading the profile email"
WEB_API_SCOPES: dict[str, frozenset[str]] = {
    # Called with the app-level token (SLACK_APP_TOKEN), whose connections:write scope is granted with the token,
    # not in the manifest's bot scopes.
    "apps_connections_open": frozenset(),
    "auth_test": frozenset(),
    # Sign in with Slack: authenticated by the app's client id and secret; the user scope openid is asked for
    # at Slack's authorize URL.
    "openid_connect_token": frozenset(),
    "chat_delete": frozenset({"chat:write"}),
    "chat_postEphemeral": frozenset({"chat:write"}),
    "chat_postMessage": frozenset({"chat:write"}),
    "chat_update": frozenset({"chat:write"}),
    # Opening a DM; channels, private channels and group DMs would need other scopes.
    "conversations_open": frozenset({"im:write"}),
    "users_info": frozenset({"users:read"}),
    "users_list": frozenset({"users:read"}),
    # users.info leaves out profile.email without users:read.email, which Slack grants only with users:read.
    USERS_INFO_EMAIL: frozenset({"users:read", "users:read.email"}),
    "users_lookupByEmail": frozenset({"users:read", "users:read.email"}),
    "views_open": frozenset(),
    "views_publish": frozenset(),
    "views_update": frozenset(),
    # Bolt's listener arguments: say() is chat.postMessage; respond() posts to the request's response_url,
    # which needs no scope.
    "say": frozenset({"chat:write"}),
    "respond": frozenset(),
}
BOLT_HELPERS = frozenset({"say", "respond"})
# Every public method of the SDK's client is a Web API method (plus api_call, which the table leaves out on
# purpose: a raw call must name its method through a typed one).
WEB_API_METHODS = frozenset(
    name for name, _ in inspect.getmembers(AsyncWebClient, inspect.isfunction) if not name.startswith("_")
)
# The bot scopes each subscribed bot event needs, from https://docs.slack.dev/reference/events/.
EVENT_SCOPES: dict[str, frozenset[str]] = {
    "app_home_opened": frozenset(),
}
# A request each kind of Bolt listener accepts, for a given command, event type or action_id.
PROBES: dict[str, Callable[[str], dict[str, Any]]] = {
    "command": lambda name: {"command": name},
    "event": lambda name: {"type": "event_callback", "event": {"type": name}},
    "action": lambda name: {"type": "block_actions", "actions": [{"action_id": name, "block_id": "b"}]},
}


def reads_key(tree: ast.AST, key: str) -> bool:
    """True if the module reads `key` from a mapping: `x[key]` or `x.get(key)`."""
    for node in ast.walk(tree):
        read: ast.expr | None
        if isinstance(node, ast.Subscript):
            read = node.slice
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            read = node.args[0] if node.args else None
        else:
            continue
        if isinstance(read, ast.Constant) and read.value == key:
            return True
    return False


def forwards_to_super(node: ast.Attribute) -> bool:
    """True for `super().api_call`: a client that overrides api_call to pace every typed call forwards them to
    the SDK's, and makes no raw call of its own."""
    base = node.value
    return (
        node.attr == "api_call"
        and isinstance(base, ast.Call)
        and isinstance(base.func, ast.Name)
        and base.func.id == "super"
    )


def api_uses_in(tree: ast.AST) -> dict[str, list[int]]:
    """The Web API methods (and Bolt helpers) one module uses, each with the lines that use it."""
    uses: dict[str, list[int]] = defaultdict(list)
    for node in ast.walk(tree):
        # Any mention counts, not only a call: `send = client.chat_postMessage` needs the scope too.
        if isinstance(node, ast.Attribute) and node.attr in WEB_API_METHODS and not forwards_to_super(node):
            uses[node.attr].append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in BOLT_HELPERS:
            uses[node.func.id].append(node.lineno)
    # The profile email is read where users.info is called; a module doing both needs users:read.email.
    if "users_info" in uses and reads_key(tree, "email"):
        uses[USERS_INFO_EMAIL] = uses["users_info"]
    return dict(uses)


def slack_api_uses() -> dict[str, list[str]]:
    """Each Web API method (and Bolt helper) the code under bot/ and handlers/ uses, with where it does."""
    uses: dict[str, list[str]] = defaultdict(list)
    for path in sorted(path for folder in CODE_DIRS for path in (PROJECT_ROOT / folder).rglob("*.py")):
        where = path.relative_to(PROJECT_ROOT)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for name, lines in api_uses_in(tree).items():
            uses[name] += [f"{where}:{line}" for line in lines]
    return dict(uses)


def closure_strings(func: object, depth: int = 3) -> set[str]:
    """The strings a Bolt matcher function closes over, through the functions it wraps."""
    if depth == 0 or not inspect.isfunction(func):
        return set()
    found: set[str] = set()
    for value in inspect.getclosurevars(func).nonlocals.values():
        if isinstance(value, str):
            found.add(value)
        elif isinstance(value, dict):
            found |= {item for item in value.values() if isinstance(item, str)}
        else:
            found |= closure_strings(value, depth - 1)
    return found


async def registered_listeners(bolt: AsyncApp) -> dict[str, set[str]]:
    """The commands, event types and action_ids the Bolt app has listeners for.

    Bolt keeps no list of names: each listener has matchers, functions closing over the name given to
    `bolt.command(...)` / `bolt.event(...)` / `bolt.action(...)`. Every string a matcher closes over is a
    candidate, and the matcher itself decides, by accepting or refusing a request built for that name.
    """
    found: dict[str, set[str]] = {kind: set() for kind in PROBES}
    # Private, but the only record of what was registered; a Bolt upgrade that changes it fails loudly below.
    for listener in bolt._async_listeners:
        # Bolt puts the matcher built from the registration first; further ones are the caller's own filters.
        matcher = listener.matchers[0]
        recognised = False
        for name in closure_strings(getattr(matcher, "func", None)):
            for kind, probe in PROBES.items():
                request = AsyncBoltRequest(body=probe(name), mode="socket_mode")
                if await matcher.async_matches(request, BoltResponse(status=200)):
                    found[kind].add(name)
                    recognised = True
        assert recognised, (
            f"cannot tell what the listener {listener.ack_function.__qualname__} listens to: registered with a "
            "regex or a constraint dict, or Bolt changed how matchers keep their name (see registered_listeners)"
        )
    return found


def differences(what: str, in_manifest: Iterable[str], in_code: Iterable[str]) -> list[str]:
    """One line per item the manifest lacks or has without the code needing it."""
    listed, needed = list(in_manifest), set(in_code)
    lines = [
        f"manifest.yml lacks the {what} {item!r}, which the code needs"
        for item in sorted(needed - set(listed))
    ]
    lines += [
        f"manifest.yml has the {what} {item!r}, which no code needs" for item in sorted(set(listed) - needed)
    ]
    lines += [
        f"manifest.yml lists the {what} {item!r} twice"
        for item in sorted(set(listed))
        if listed.count(item) > 1
    ]
    return lines


def manifest_commands(manifest: dict[str, Any]) -> list[str]:
    return [command["command"] for command in manifest["features"].get("slash_commands", [])]


def manifest_events(manifest: dict[str, Any]) -> list[str]:
    return list(manifest["settings"].get("event_subscriptions", {}).get("bot_events", []))


def manifest_bot_scopes(manifest: dict[str, Any]) -> list[str]:
    return list(manifest["oauth_config"]["scopes"].get("bot", []))


def required_scopes(listeners: dict[str, set[str]], uses: dict[str, list[str]]) -> set[str]:
    """The bot scopes the code needs; fails naming any method or event the tables do not know."""
    unknown = [
        f"{uses[method][0]} uses the Slack Web API method {method.replace('_', '.')}, which WEB_API_SCOPES in "
        "tests/test_manifest.py does not list: add it with the bot scopes under 'Required scopes' on "
        f"https://docs.slack.dev/reference/methods/{method.replace('_', '.')}, and add those scopes to manifest.yml"
        for method in sorted(set(uses) - set(WEB_API_SCOPES))
    ]
    unknown += [
        f"the bot listens to the event {event!r}, which EVENT_SCOPES in tests/test_manifest.py does not list: add "
        f"it with the scopes on https://docs.slack.dev/reference/events/{event}, and add those to manifest.yml"
        for event in sorted(listeners["event"] - set(EVENT_SCOPES))
    ]
    if unknown:
        pytest.fail("\n".join(unknown))
    scopes = {"commands"} if listeners["command"] else set()
    for method in uses:
        scopes |= WEB_API_SCOPES[method]
    for event in listeners["event"]:
        scopes |= EVENT_SCOPES[event]
    return scopes


@pytest.fixture
async def bolt(serve: Serve) -> AsyncApp:
    """The Bolt app of the real application, started, with every listener registered."""
    return (await serve())[BOLT]


async def test_slash_commands_are_the_registered_ones(bolt: AsyncApp, manifest: dict[str, Any]) -> None:
    listeners = await registered_listeners(bolt)
    problems = differences("slash command", manifest_commands(manifest), listeners["command"])
    assert not problems, "\n".join(problems)


async def test_bot_events_are_the_listened_ones(bolt: AsyncApp, manifest: dict[str, Any]) -> None:
    listeners = await registered_listeners(bolt)
    problems = differences("bot event", manifest_events(manifest), listeners["event"])
    assert not problems, "\n".join(problems)


async def test_probing_reads_back_what_was_registered() -> None:
    # Guards the probing itself on a Bolt app with one listener of each kind.
    probe = AsyncApp(client=AsyncWebClient(token="xoxb-probe"), signing_secret="probe-signing-secret")

    async def noop() -> None:
        pass

    probe.command("/probe")(noop)
    probe.event("team_join")(noop)
    probe.action("probe_button")(noop)
    assert await registered_listeners(probe) == {
        "command": {"/probe"},
        "event": {"team_join"},
        "action": {"probe_button"},
    }


def test_scan_finds_every_way_of_using_the_web_api() -> None:
    source = """
async def listener(client, say, respond, user):
    send = client.chat_postMessage
    await self.client.conversations_open(users=user)
    profile = (await client.users_info(user=user))["user"]["profile"]
    await say("hi")
    return profile.get("email")
"""
    assert set(api_uses_in(ast.parse(source))) == {
        "chat_postMessage",
        "conversations_open",
        "users_info",
        USERS_INFO_EMAIL,
        "say",
    }
    locale_only = 'locale = (await client.users_info(user=u))["user"].get("locale")'
    assert set(api_uses_in(ast.parse(locale_only))) == {"users_info"}


async def test_bot_scopes_are_exactly_the_ones_the_code_needs(
    bolt: AsyncApp, manifest: dict[str, Any]
) -> None:
    needed = required_scopes(await registered_listeners(bolt), slack_api_uses())
    problems = differences("bot scope", manifest_bot_scopes(manifest), needed)
    assert not problems, "\n".join(problems)
    # The only user scope is Sign in with Slack's openid, which gives no token for the Web API.
    assert manifest["oauth_config"]["scopes"]["user"] == ["openid"], "the bot needs no user-token scopes"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(
            lambda m: m["oauth_config"]["scopes"]["bot"].append("channels:history"),
            "has the bot scope 'channels:history'",
            id="unused-scope-added",
        ),
        pytest.param(
            lambda m: m["oauth_config"]["scopes"]["bot"].remove("chat:write"),
            "lacks the bot scope 'chat:write'",
            id="used-scope-removed",
        ),
        pytest.param(
            lambda m: m["oauth_config"]["scopes"]["bot"].remove("commands"),
            "lacks the bot scope 'commands'",
            id="commands-scope-removed",
        ),
        pytest.param(
            lambda m: m["oauth_config"]["scopes"]["bot"].append("chat:write"),
            "lists the bot scope 'chat:write' twice",
            id="scope-twice",
        ),
    ],
)
async def test_scope_check_rejects_a_wrong_manifest(
    bolt: AsyncApp, manifest: dict[str, Any], mutate: Callable[[dict[str, Any]], object], expected: str
) -> None:
    needed = required_scopes(await registered_listeners(bolt), slack_api_uses())
    broken = copy.deepcopy(manifest)
    mutate(broken)
    problems = differences("bot scope", manifest_bot_scopes(broken), needed)
    assert any(expected in line for line in problems), problems


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(
            lambda m: m["features"]["slash_commands"][0].update(command="/gmail-other"),
            "has the slash command '/gmail-other'",
            id="unregistered-command",
        ),
        pytest.param(
            lambda m: m["settings"]["event_subscriptions"]["bot_events"].append("app_mention"),
            "has the bot event 'app_mention'",
            id="unhandled-event",
        ),
        pytest.param(
            lambda m: m["settings"]["event_subscriptions"]["bot_events"].clear(),
            "lacks the bot event 'app_home_opened'",
            id="handled-event-missing",
        ),
    ],
)
async def test_listener_check_rejects_a_wrong_manifest(
    bolt: AsyncApp, manifest: dict[str, Any], mutate: Callable[[dict[str, Any]], object], expected: str
) -> None:
    listeners = await registered_listeners(bolt)
    broken = copy.deepcopy(manifest)
    mutate(broken)
    problems = differences("slash command", manifest_commands(broken), listeners["command"])
    problems += differences("bot event", manifest_events(broken), listeners["event"])
    assert any(expected in line for line in problems), problems


def test_the_sign_in_redirect_url_is_the_placeholder_slack_callback(manifest: dict[str, Any]) -> None:
    (url,) = manifest["oauth_config"]["redirect_urls"]
    assert url == f"https://{PLACEHOLDER_HOST}{SLACK_CALLBACK_PATH}"
    assert manifest["oauth_config"]["scopes"]["user"] == ["openid"]
