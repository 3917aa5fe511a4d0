"""A local fake of Slack's Web API served over real HTTP, and builders of the signed requests Slack sends to an app.

Methods answer as Slack does: HTTP 200 with `{"ok": true, ...}` or `{"ok": false, "error": ...}`, HTTP 429 with
`Retry-After` when rate limited, so slack_sdk's clients and retry handlers can be tested against the real protocol.
Sign in with Slack (OpenID Connect) is in tests/fakes/slack_oidc.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import WSMsgType, web

from tests.fakes.slack_limits import SlackLimits
from tests.fakes.slack_oidc import (
    DEFAULT_OIDC_CLIENT_ID,
    DEFAULT_OIDC_CLIENT_SECRET,
    OIDC_METHODS,
    SignInWithSlack,
)

DEFAULT_BOT_TOKEN = "xoxb-test-bot-token"
TEAM_ID = "T0TEAM"
BOT_USER_ID = "U0BOT"
BOT_ID = "B0BOT"
APP_ID = "A0APP"
TRIGGER_ID = "1337.42.abcd"
VERIFICATION_TOKEN = "fake-verification-token"
TEAM_DOMAIN = "fake"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
JSON_CONTENT_TYPE = "application/json"
MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_TEXT_LENGTH = 40_000
# Block Kit's limits on the texts in blocks: a section's text, each of its (at most 10) fields, a context
# element (at most 10), a header, a button's label.
MAX_SECTION_TEXT = 3_000
MAX_FIELD_TEXT = 2_000
MAX_FIELDS = 10
MAX_CONTEXT_ELEMENTS = 10
MAX_HEADER_TEXT = 150
MAX_BUTTON_TEXT = 75
# chat.postMessage refuses blocks whose texts add up to more than about this many characters, with
# msg_blocks_too_long; Slack does not document it, and it was seen on chat.postMessage only (reported in
# slackapi/bolt-js#2509 and #2867).
MAX_BLOCKS_TEXT = 12_000
MAX_USERS_PAGE = 1_000  # users.list answers at most this many members, whatever the limit
# Arguments that clients send JSON-encoded inside form bodies.
_JSON_ARGS = frozenset({"blocks", "attachments", "view", "metadata"})
# Methods that take the app-level token (xapp-…) rather than the bot token; the other kind is not_allowed_token_type.
_APP_TOKEN_METHODS = frozenset({"apps.connections.open"})
_TRUE = frozenset({"true", "1"})
_FIRST_TS = 1_700_000_000_000_000  # microseconds; ts values grow by 100 from here
# The methods whose texts Slack shows people, and so parses for control sequences.
_SHOWING_METHODS = frozenset(
    {"chat.postMessage", "chat.update", "chat.postEphemeral", "views.publish", "views.open", "views.update"}
)
# A control sequence as Slack reads it in mrkdwn: <!channel>, <@U123>, <https://x|label>; escaped text has none.
_CONTROL = re.compile(r"<([^<>]*)>")
_BROADCASTS = ("!channel", "!here", "!everyone", "!subteam^")


def dm_channel_id(user_id: str) -> str:
    """The id of the bot's direct-message channel with a user ("U123" -> "D123")."""
    return "D" + user_id[1:]


def _is_true(value: Any) -> bool:
    return value is True or str(value).lower() in _TRUE


def _is_false(value: Any) -> bool:
    return value is False or str(value).lower() in {"false", "0"}


class _SlackError(Exception):
    """Ends a method with HTTP 200 and `{"ok": false, "error": error}`."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


@dataclass
class SlackCall:
    """One Web API call the fake received; status is 0 until it is answered."""

    method: str
    args: dict[str, Any]
    token: str | None
    status: int = 0
    at: float = 0.0


@dataclass(frozen=True)
class ControlSequence:
    """One <…> in a text that Slack parses as mrkdwn (a message's text, mrkdwn text objects): what it would do."""

    method: str  # the Web API method, or "response_url"
    body: str  # what stands between < and >

    @property
    def kind(self) -> str:
        """ "broadcast" (notifies a channel or group), "mention" (a user or channel), "command" or "link"."""
        if self.body.startswith(_BROADCASTS):
            return "broadcast"
        if self.body.startswith(("@", "#")):
            return "mention"
        return "command" if self.body.startswith("!") else "link"


def control_sequences(method: str, payload: Any, *, mrkdwn: bool = True) -> list[ControlSequence]:
    """The control sequences Slack would act on in a message or view payload: in its top-level `text` (mrkdwn
    unless `mrkdwn` is false) and in every text object of type mrkdwn. plain_text is never parsed."""
    texts: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn" and isinstance(node.get("text"), str):
                texts.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    if isinstance(payload, dict):
        if mrkdwn and isinstance(payload.get("text"), str):
            texts.append(payload["text"])
        walk({key: value for key, value in payload.items() if key != "text"})
    return [ControlSequence(method, body) for text in texts for body in _CONTROL.findall(text)]


@dataclass
class SlackUser:
    """A member of the fake workspace."""

    id: str
    name: str = ""
    real_name: str = ""
    email: str | None = None
    locale: str = "ko-KR"
    tz: str = "Asia/Seoul"
    is_bot: bool = False
    deleted: bool = False


class FakeSlack(SignInWithSlack):
    """Slack's auth, conversations, chat, views and users methods on 127.0.0.1, and Socket Mode: with
    `app_token`, apps.connections.open gives a one-use WebSocket URL that says hello and carries envelopes.
    Sign in with Slack too (see SignInWithSlack): the oidc_* arguments are the app's credentials and redirect
    URLs (None: any)."""

    def __init__(
        self,
        bot_token: str = DEFAULT_BOT_TOKEN,
        *,
        app_token: str | None = None,
        team_id: str = TEAM_ID,
        bot_user_id: str = BOT_USER_ID,
        app_id: str = APP_ID,
        oidc_client_id: str = DEFAULT_OIDC_CLIENT_ID,
        oidc_client_secret: str = DEFAULT_OIDC_CLIENT_SECRET,
        oidc_redirect_uris: list[str] | None = None,
        limits: SlackLimits | bool = False,
    ) -> None:
        self.bot_token = bot_token
        # Slack's rate limits, enforced only when asked (limits=True: the documented ones; see enforce_limits).
        self.limits: SlackLimits | None = SlackLimits() if limits is True else (limits or None)
        self.app_token = app_token
        self.team_id = team_id
        self.team_name = "Fake"
        self.team_domain = TEAM_DOMAIN
        self.bot_user_id = bot_user_id
        self.app_id = app_id
        self.bot_id = BOT_ID
        self.base_url = ""
        self.root_url = ""
        self.responses: list[dict[str, Any]] = []  # what the app posted to response URLs, oldest first
        self.delay = 0.0
        self.users: dict[str, SlackUser] = {}
        # users.list pages by position; the ids in the order add_user first added them, and each one's position.
        self._user_ids: list[str] = []
        self._user_positions: dict[str, int] = {}
        self._dm_channels: set[str] = set()  # the DM channel id of each user
        self.channels: set[str] = {"C0GENERAL"}  # channels besides DMs that the bot is a member of
        self.calls: list[SlackCall] = []
        # Every control sequence in what the app showed (messages, views, response URL posts), oldest first.
        self.control: list[ControlSequence] = []
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.ephemerals: list[dict[str, Any]] = []
        self.views: dict[str, dict[str, Any]] = {}
        self.opened_views: list[dict[str, Any]] = []
        self._views_by_id: dict[str, dict[str, Any]] = {}
        self._failures: dict[str, list[tuple[int, str | None, int]]] = {}
        self._holds: dict[str, tuple[int, asyncio.Event]] = {}  # method: (calls let through, the gate)
        self._ts = _FIRST_TS
        self.socket_connections = 0  # WebSockets opened over Socket Mode, ever
        self.socket_replies: list[dict[str, Any]] = []  # what the app sent over them (acks), oldest first
        self._sockets: set[web.WebSocketResponse] = set()  # the open ones
        self._tickets: set[str] = set()  # issued by apps.connections.open, not yet used
        self._runner: web.AppRunner | None = None
        self._methods: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "auth.test": self._auth_test,
            "apps.connections.open": self._apps_connections_open,
            "conversations.open": self._conversations_open,
            "chat.postMessage": self._post_message,
            "chat.update": self._update_message,
            "chat.postEphemeral": self._post_ephemeral,
            "chat.delete": self._delete_message,
            "views.publish": self._views_publish,
            "views.open": self._views_open,
            "views.update": self._views_update,
            "users.info": self._users_info,
            "users.list": self._users_list,
            "users.lookupByEmail": self._users_lookup_by_email,
        }
        self._init_sign_in(oidc_client_id, oidc_client_secret, oidc_redirect_uris)

    async def start(self) -> None:
        """Serve on an unused port of 127.0.0.1 and set base_url."""
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._dispatch)
        app.router.add_post("/response/{name}", self._response_url)
        app.router.add_get("/link/", self._socket)
        self._add_sign_in_routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}/api/"
        self.root_url = f"http://{host}:{port}"

    async def close(self) -> None:
        """Stop serving (closing the open WebSockets first, as Slack does when it goes away)."""
        for socket in list(self._sockets):
            await socket.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # Test controls.

    def add_user(self, user_id: str, **kwargs: Any) -> SlackUser:
        """Add (or replace) a workspace member; keywords are SlackUser fields."""
        kwargs.setdefault("name", user_id.lower())
        kwargs.setdefault("real_name", kwargs["name"])
        user = SlackUser(user_id, **kwargs)
        self.users[user_id] = user
        if user_id not in self._user_positions:
            self._user_positions[user_id] = len(self._user_ids)
            self._user_ids.append(user_id)
        self._dm_channels.add(dm_channel_id(user_id))
        return user

    def remove_users(self) -> None:
        """Forget every workspace member (their messages stay), as if the workspace were new."""
        self.users.clear()
        self._user_ids.clear()
        self._user_positions.clear()
        self._dm_channels.clear()

    def rate_limit(self, method: str, *, times: int = 1, retry_after: int = 1) -> None:
        """Answer the next `times` calls to `method` with HTTP 429, `Retry-After` and error "ratelimited"."""
        self._failures.setdefault(method, []).extend([(429, "ratelimited", retry_after)] * times)

    def hold(self, method: str, *, after: int = 0) -> asyncio.Event:
        """Leave the calls to `method` past the first `after` unanswered (a slow Slack) until the returned event
        is set; then they are answered as usual."""
        gate = asyncio.Event()
        self._holds[method] = (after, gate)
        return gate

    def enforce_limits(self, **kwargs: Any) -> SlackLimits:
        """From now on, answer HTTP 429 past Slack's documented rate limits; keywords are SlackLimits fields
        (posts_per_minute=600, burst=20, per_channel_per_second=1, tiers={method: (per_minute, burst)}, speed)."""
        self.limits = SlackLimits(**kwargs)
        return self.limits

    def fail(self, method: str, *, status: int = 500, times: int = 1, error: str | None = None) -> None:
        """Answer the next `times` calls to `method` with `status` and no body, or HTTP 200 with `error`.

        `method` may also be KEYS_FAILURE: the Sign in with Slack keys endpoint then answers `status`."""
        failure = (200, error, 0) if error is not None else (status, None, 0)
        self._failures.setdefault(method, []).extend([failure] * times)

    def heal(self, method: str) -> None:
        """Forget the failures still planned for `method` (see fail): it answers normally again."""
        self._failures.pop(method, None)

    def response_url(self, name: str = "abc") -> str:
        """A response URL served by this fake (commands and interactions carry one); posts land in `responses`."""
        return f"{self.root_url}/response/{name}"

    def calls_to(self, method: str) -> list[SlackCall]:
        """The recorded calls to one method, oldest first."""
        return [call for call in self.calls if call.method == method]

    def control_of(self, kind: str) -> list[str]:
        """The bodies of the control sequences of one kind ("broadcast", "mention", "command", "link") that the
        app showed, oldest first: e.g. control_of("broadcast") is every @channel/@here it would have sent."""
        return [sequence.body for sequence in self.control if sequence.kind == kind]

    @property
    def open_sockets(self) -> int:
        """How many Socket Mode WebSockets are open now."""
        return len(self._sockets)

    async def send_envelope(
        self,
        payload: dict[str, Any],
        *,
        kind: str = "events_api",
        retry_attempt: int = 0,
        retry_reason: str = "",
    ) -> str:
        """Send a Socket Mode envelope (e.g. an event_callback body) over every open WebSocket; its envelope_id.
        A redelivery is the same payload in a new envelope, with retry_attempt 1, 2, …"""
        envelope_id = secrets.token_hex(8)
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": kind != "events_api",
            "retry_attempt": retry_attempt,
            "retry_reason": retry_reason,
        }
        for socket in list(self._sockets):
            await socket.send_json(envelope)
        return envelope_id

    # Plumbing.

    async def _response_url(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.responses.append({"name": request.match_info["name"], **body})
        self.control += control_sequences("response_url", body, mrkdwn=body.get("mrkdwn") is not False)
        return web.Response(text="ok")

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        """A Socket Mode connection: a ticket from apps.connections.open opens one WebSocket, once."""
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            return web.Response(status=401, text="invalid ticket")
        self._tickets.discard(ticket)
        socket = web.WebSocketResponse()  # answers pings with pongs, as Slack's does
        await socket.prepare(request)
        self.socket_connections += 1
        self._sockets.add(socket)
        try:
            await socket.send_json(
                {
                    "type": "hello",
                    "num_connections": len(self._sockets),
                    "debug_info": {"host": "fake-slack", "approximate_connection_time": 3600},
                    "connection_info": {"app_id": self.app_id},
                }
            )
            async for message in socket:
                if message.type == WSMsgType.TEXT:
                    self.socket_replies.append(json.loads(message.data))
        finally:
            self._sockets.discard(socket)
        return socket

    async def _dispatch(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await _request_args(request)
        scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
        token = bearer.strip() if scheme.lower() == "bearer" and bearer.strip() else args.pop("token", None)
        call = SlackCall(method, args, token, at=time.monotonic())
        self.calls.append(call)
        if method in _SHOWING_METHODS:
            shown = args.get("view") if method.startswith("views.") else args
            self.control += control_sequences(method, shown, mrkdwn=not _is_false(args.get("mrkdwn")))
        held = self._holds.get(method)
        if held is not None and len(self.calls_to(method)) > held[0]:
            await held[1].wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        response = self._answer(method, args, token, request.headers.get("Authorization", ""))
        call.status = response.status
        return response

    def _answer(
        self, method: str, args: dict[str, Any], token: str | None, authorization: str
    ) -> web.Response:
        failures = self._failures.get(method)
        if failures:
            status, error, retry_after = failures.pop(0)
            if status == 429:
                return _json({"ok": False, "error": error}, 429, {"Retry-After": str(retry_after)})
            if error is None:
                return web.Response(status=status, body=b"", content_type=JSON_CONTENT_TYPE, charset="utf-8")
            return _json({"ok": False, "error": error})
        if self.limits is not None:
            channel = str(args.get("channel") or "")
            wait = self.limits.check(method, dm_channel_id(channel) if channel in self.users else channel)
            if wait is not None:
                retry_after = self.limits.retry_after(wait)
                return _json({"ok": False, "error": "ratelimited"}, 429, {"Retry-After": retry_after})
        if method in OIDC_METHODS:  # authorized by the app's client credentials or a Sign in with Slack token
            return _json(self._oidc_answer(method, args, token, authorization))
        handler = self._methods.get(method)
        if handler is None:
            return _json({"ok": False, "error": "unknown_method", "req_method": method})
        if not token:
            return _json({"ok": False, "error": "not_authed"})
        expected, other = (
            (self.app_token, self.bot_token)
            if method in _APP_TOKEN_METHODS
            else (self.bot_token, self.app_token)
        )
        if token != expected:
            # Slack knows a valid token of the wrong kind (a bot token for apps.connections.open) from a bad one.
            return _json(
                {"ok": False, "error": "not_allowed_token_type" if token == other else "invalid_auth"}
            )
        try:
            return _json({"ok": True, **handler(args)})
        except _SlackError as exc:
            return _json({"ok": False, "error": exc.error})

    def _next_ts(self) -> str:
        self._ts += 100
        return f"{self._ts // 1_000_000}.{self._ts % 1_000_000:06d}"

    def _user(self, user_id: Any) -> SlackUser:
        user = self.users.get(str(user_id or ""))
        if user is None:
            raise _SlackError("user_not_found")
        return user

    def _user_position(self, cursor: Any) -> int:
        """Where a users.list cursor points in the order of users; no cursor means the start."""
        if not cursor:
            return 0
        try:
            decoded = base64.b64decode(str(cursor), validate=True).decode()
        except ValueError:  # not base64, or not UTF-8 inside
            raise _SlackError("invalid_cursor") from None
        kind, _, user_id = decoded.partition(":")
        position = self._user_positions.get(user_id)
        if kind != "user" or position is None:
            raise _SlackError("invalid_cursor")
        return position

    def _channel(self, channel: Any) -> str:
        """A channel argument as a channel id: a user id means the DM with that user."""
        channel = str(channel or "")
        if channel in self.channels:
            return channel
        if channel in self.users:
            return dm_channel_id(channel)
        if channel in self._dm_channels:
            return channel
        raise _SlackError("channel_not_found")

    def _message(self, args: dict[str, Any]) -> tuple[str, str]:
        key = (self._channel(args.get("channel")), str(args.get("ts", "")))
        if key not in self.messages:
            raise _SlackError("message_not_found")
        return key

    def _view(self, view: Any, *, types: tuple[str, ...], view_id: str | None = None) -> dict[str, Any]:
        """The stored form of a view argument, as Slack echoes it back."""
        if not isinstance(view, dict) or view.get("type") not in types:
            raise _SlackError("invalid_arguments")
        _check_blocks(view.get("blocks", []), MAX_VIEW_BLOCKS)
        return _view_object(
            view, team_id=self.team_id, view_id=view_id, app_id=self.app_id, bot_id=self.bot_id
        )

    def _store_view(self, view: dict[str, Any]) -> dict[str, Any]:
        """Keep one dict per view id, so users' home views and opened views see later updates."""
        stored = self._views_by_id.setdefault(view["id"], view)
        if stored is not view:
            stored.clear()
            stored.update(view)
        return stored

    # Methods.

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://fake.slack.com/",
            "team": self.team_name,
            "user": "gmail-reconnect",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        ticket = secrets.token_hex(8)
        self._tickets.add(ticket)
        host = self.root_url.removeprefix("http://")
        return {"url": f"ws://{host}/link/?ticket={ticket}&app_id={self.app_id}"}

    def _conversations_open(self, args: dict[str, Any]) -> dict[str, Any]:
        users = [user for user in str(args.get("users", "")).split(",") if user]
        if not users:
            raise _SlackError("users_list_not_supplied")
        if len(users) > 1:
            raise _SlackError("invalid_arguments")  # group DMs are not faked
        self._user(users[0])
        return {"no_op": True, "already_open": True, "channel": {"id": dm_channel_id(users[0])}}

    def _post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args.get("channel"))
        text, blocks = _content(args)
        if _text_length(blocks) > MAX_BLOCKS_TEXT:
            raise _SlackError("msg_blocks_too_long")
        message: dict[str, Any] = {
            "type": "message",
            "channel": channel,
            "ts": self._next_ts(),
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "team": self.team_id,
            "text": text,
            "blocks": blocks,
        }
        if args.get("thread_ts"):
            message["thread_ts"] = str(args["thread_ts"])
        self.messages[channel, message["ts"]] = message
        return {"channel": channel, "ts": message["ts"], "message": _without_channel(message)}

    def _update_message(self, args: dict[str, Any]) -> dict[str, Any]:
        key = self._message(args)
        text, blocks = _content(args)
        message = self.messages[key]
        # Slack keeps the text or blocks that an update leaves out.
        if "text" in args:
            message["text"] = text
        if "blocks" in args:
            message["blocks"] = blocks
        message["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
        channel, ts = key
        return {"channel": channel, "ts": ts, "text": message["text"], "message": _without_channel(message)}

    def _post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args.get("channel"))
        user = self._user(args.get("user"))
        text, blocks = _content(args)
        message_ts = self._next_ts()
        self.ephemerals.append(
            {"channel": channel, "user": user.id, "ts": message_ts, "text": text, "blocks": blocks}
        )
        return {"message_ts": message_ts}

    def _delete_message(self, args: dict[str, Any]) -> dict[str, Any]:
        key = self._message(args)
        del self.messages[key]
        return {"channel": key[0], "ts": key[1]}

    def _views_publish(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self._user(args.get("user_id"))
        current = self.views.get(user.id)
        if current is not None and args.get("hash") and args["hash"] != current["hash"]:
            raise _SlackError("hash_conflict")
        view = self._view(args.get("view"), types=("home",), view_id=current["id"] if current else None)
        self.views[user.id] = self._store_view(view)
        return {"view": view}

    def _views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("trigger_id"):
            raise _SlackError("invalid_arguments")
        view = self._store_view(self._view(args.get("view"), types=("modal",)))
        self.opened_views.append(view)
        return {"view": view}

    def _views_update(self, args: dict[str, Any]) -> dict[str, Any]:
        view_id, external_id = args.get("view_id"), args.get("external_id")
        found = [
            view
            for view in self._views_by_id.values()
            if (view_id and view["id"] == view_id) or (external_id and view["external_id"] == external_id)
        ]
        if not found:
            raise _SlackError("not_found")
        current = found[0]
        if args.get("hash") and args["hash"] != current["hash"]:
            raise _SlackError("hash_conflict")
        view = self._view(args.get("view"), types=(current["type"],), view_id=current["id"])
        view["root_view_id"] = current["root_view_id"]
        view["external_id"] = view["external_id"] or current["external_id"]
        return {"view": self._store_view(view)}

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self._user(args.get("user"))
        return {"user": self._user_object(user, with_locale=_is_true(args.get("include_locale")))}

    def _users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        """Members in the order they were added, deleted ones included, each as users.info shows it.

        `limit` absent or 0 answers every remaining member, else at most `limit` (capped at MAX_USERS_PAGE); a
        negative or non-integer limit is invalid_arguments. Cursors are opaque like Slack's: base64 of
        "user:<id of the next member>", so a page costs its own size only; any other cursor is invalid_cursor.
        """
        start = self._user_position(args.get("cursor"))
        limit = _page_limit(args.get("limit"))
        end = min(start + limit, len(self._user_ids)) if limit else len(self._user_ids)
        with_locale = _is_true(args.get("include_locale"))
        members = [
            self._user_object(self.users[user_id], with_locale=with_locale)
            for user_id in self._user_ids[start:end]
        ]
        next_cursor = _user_cursor(self._user_ids[end]) if end < len(self._user_ids) else ""
        return {
            "members": members,
            "cache_ts": int(time.time()),
            "response_metadata": {"next_cursor": next_cursor},
        }

    def _users_lookup_by_email(self, args: dict[str, Any]) -> dict[str, Any]:
        email = str(args.get("email", "")).lower()
        for user in self.users.values():
            if user.email and user.email.lower() == email and not user.deleted:
                return {"user": self._user_object(user, with_locale=False)}
        raise _SlackError("users_not_found")

    def _user_object(self, user: SlackUser, *, with_locale: bool) -> dict[str, Any]:
        profile: dict[str, Any] = {"real_name": user.real_name, "display_name": user.name}
        if user.email is not None:
            profile["email"] = user.email
        body: dict[str, Any] = {
            "id": user.id,
            "team_id": self.team_id,
            "name": user.name,
            "real_name": user.real_name,
            "deleted": user.deleted,
            "is_bot": user.is_bot,
            "tz": user.tz,
            "profile": profile,
        }
        if with_locale:
            body["locale"] = user.locale
        return body


async def _request_args(request: web.Request) -> dict[str, Any]:
    """Query string and body arguments merged, with JSON-encoded form fields decoded."""
    args: dict[str, Any] = dict(request.query)
    if request.content_type == JSON_CONTENT_TYPE and request.can_read_body:
        body = await request.json()
        if isinstance(body, dict):
            args.update(body)
    elif request.content_type == FORM_CONTENT_TYPE:
        args.update({key: value for key, value in (await request.post()).items() if isinstance(value, str)})
    for name in _JSON_ARGS & args.keys():
        if isinstance(args[name], str) and args[name].strip():
            with suppress(json.JSONDecodeError):  # left as text, which the method rejects
                args[name] = json.loads(args[name])
    return args


def _json(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type=JSON_CONTENT_TYPE,
        charset="utf-8",
        headers=headers,
    )


def _page_limit(limit: Any) -> int:
    """A `limit` argument as a page size: 0 for no limit, else at most MAX_USERS_PAGE."""
    if limit is None or limit == "":
        return 0
    try:
        size = int(str(limit))
    except ValueError:
        raise _SlackError("invalid_arguments") from None
    if size < 0:
        raise _SlackError("invalid_arguments")
    return min(size, MAX_USERS_PAGE)


def _user_cursor(user_id: str) -> str:
    """The cursor of a users.list page that starts at `user_id`, shaped like Slack's ("dXNlcjpVMDYxTkZUVDI=")."""
    return base64.b64encode(f"user:{user_id}".encode()).decode()


def _check_blocks(blocks: Any, limit: int) -> None:
    """Slack's limits on blocks: their number, and the texts in them (Block Kit's reference)."""
    if not isinstance(blocks, list) or len(blocks) > limit or not all(map(_block_fits, blocks)):
        raise _SlackError("invalid_blocks")


def _block_fits(block: Any) -> bool:
    """Whether each text object of a block is within what Slack takes there, and its lists within theirs."""
    if not isinstance(block, dict):
        return False
    kind = block.get("type")
    elements = block.get("elements") if isinstance(block.get("elements"), list) else []
    buttons = [e.get("text") for e in elements if isinstance(e, dict) and e.get("type") == "button"]
    if kind == "section":
        fields = block.get("fields") if isinstance(block.get("fields"), list) else []
        accessory = block.get("accessory")
        if isinstance(accessory, dict) and accessory.get("type") == "button":
            buttons.append(accessory.get("text"))
        text_fits = "text" not in block or _fits(block["text"], MAX_SECTION_TEXT)
        return (
            text_fits
            and len(fields) <= MAX_FIELDS
            and all(_fits(field, MAX_FIELD_TEXT) for field in fields)
            and all(_fits(label, MAX_BUTTON_TEXT) for label in buttons)
        )
    if kind == "context":
        texts = [e for e in elements if not (isinstance(e, dict) and e.get("type") == "image")]
        return len(elements) <= MAX_CONTEXT_ELEMENTS and all(_fits(e, MAX_SECTION_TEXT) for e in texts)
    if kind == "header":
        return _fits(block.get("text"), MAX_HEADER_TEXT)
    return all(_fits(label, MAX_BUTTON_TEXT) for label in buttons)


def _fits(text: Any, most: int) -> bool:
    return isinstance(text, dict) and isinstance(text.get("text"), str) and 0 < len(text["text"]) <= most


def _content(args: dict[str, Any]) -> tuple[str, list[Any]]:
    """A message's text and blocks; Slack wants at least one of them (or attachments)."""
    text, blocks = str(args.get("text") or ""), args.get("blocks") or []
    if not text and not blocks and not args.get("attachments"):
        raise _SlackError("no_text")
    if len(text) > MAX_TEXT_LENGTH:
        raise _SlackError("msg_too_long")
    _check_blocks(blocks, MAX_MESSAGE_BLOCKS)
    return text, blocks


def _text_length(node: Any) -> int:
    """The characters of every text in a list of blocks."""
    if isinstance(node, list):
        return sum(map(_text_length, node))
    if isinstance(node, dict):
        own = len(node["text"]) if isinstance(node.get("text"), str) else 0
        return own + sum(_text_length(value) for key, value in node.items() if key != "text" or own == 0)
    return 0


def _without_channel(message: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in message.items() if key != "channel"}


def _view_object(
    view: dict[str, Any],
    *,
    team_id: str,
    view_id: str | None = None,
    app_id: str = APP_ID,
    bot_id: str = BOT_ID,
) -> dict[str, Any]:
    """A view as Slack shows it to apps: the given fields plus Slack's own."""
    view_id = view_id or "V" + secrets.token_hex(5).upper()
    return {
        "id": view_id,
        "team_id": team_id,
        "type": view["type"],
        "blocks": view.get("blocks", []),
        "private_metadata": view.get("private_metadata", ""),
        "callback_id": view.get("callback_id", ""),
        "state": view.get("state", {"values": {}}),
        "hash": secrets.token_hex(8),
        "title": view.get("title"),
        "close": view.get("close"),
        "submit": view.get("submit"),
        "clear_on_close": bool(view.get("clear_on_close", False)),
        "notify_on_close": bool(view.get("notify_on_close", False)),
        "root_view_id": view_id,
        "previous_view_id": None,
        "app_id": app_id,
        "external_id": view.get("external_id", ""),
        "app_installed_team_id": team_id,
        "bot_id": bot_id,
    }


@asynccontextmanager
async def fake_slack_server(**kwargs: Any) -> AsyncIterator[FakeSlack]:
    """A started FakeSlack (constructor arguments as keywords), closed on exit."""
    fake = FakeSlack(**kwargs)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()


# Requests as Slack sends them to an app.


def sign(
    body: bytes, signing_secret: str, timestamp: int | None = None, *, content_type: str | None = None
) -> dict[str, str]:
    """Slack's signature headers for `body` (timestamp defaults to now), plus Content-Type if given."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    base = b"v0:" + str(timestamp).encode() + b":" + body
    digest = hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    headers = {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": "v0=" + digest}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return headers


def _channel_name(channel_id: str) -> str:
    return "directmessage" if channel_id.startswith("D") else "general"


def _event_ts() -> str:
    return f"{time.time():.6f}"


def _interaction(kind: str, user_id: str, team_id: str, trigger_id: str) -> dict[str, Any]:
    """The fields every interactive payload starts with."""
    user = {"id": user_id, "username": user_id.lower(), "name": user_id.lower(), "team_id": team_id}
    return {
        "type": kind,
        "user": user,
        "api_app_id": APP_ID,
        "token": VERIFICATION_TOKEN,
        "trigger_id": trigger_id,
        "team": {"id": team_id, "domain": TEAM_DOMAIN},
        "enterprise": None,
        "is_enterprise_install": False,
    }


def new_trigger_id() -> str:
    """A trigger_id of Slack's form (e.g. 398738663015.47445629121.803a0bc8…), new each time."""
    return f"{secrets.randbelow(10**12)}.{secrets.randbelow(10**11)}.{secrets.token_hex(16)}"


def _payload_body(payload: dict[str, Any]) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


def slash_command_body(
    command: str = "/gmail-status",
    text: str = "",
    *,
    user_id: str,
    team_id: str = TEAM_ID,
    channel_id: str = "C0GENERAL",
    trigger_id: str | None = None,
    response_url: str = "https://hooks.slack.com/commands/T0TEAM/1/abc",
) -> bytes:
    """A slash command's form body, fields in Slack's order; a new trigger_id each time, as Slack gives one per
    invocation (two commands typed alike are two requests, not a replay)."""
    fields = {
        "token": VERIFICATION_TOKEN,
        "team_id": team_id,
        "team_domain": TEAM_DOMAIN,
        "channel_id": channel_id,
        "channel_name": _channel_name(channel_id),
        "user_id": user_id,
        "user_name": user_id.lower(),
        "command": command,
        "text": text,
        "api_app_id": APP_ID,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id or new_trigger_id(),
    }
    return urlencode(fields).encode()


def block_actions_body(
    action_id: str,
    *,
    user_id: str,
    value: str | None = None,
    team_id: str = TEAM_ID,
    container: dict[str, Any] | None = None,
    channel_id: str | None = None,
    message_ts: str | None = None,
    message: dict[str, Any] | None = None,
    view: dict[str, Any] | None = None,
    action_type: str = "button",
    url: str | None = None,
    block_id: str = "actions",
    trigger_id: str = TRIGGER_ID,
    response_url: str | None = None,
) -> bytes:
    """A block_actions form body: a click in a message when message_ts is given, else in a view."""
    text = {"type": "plain_text", "text": action_id, "emoji": True}
    action: dict[str, Any] = {"action_id": action_id, "block_id": block_id, "text": text, "value": value}
    action = {key: item for key, item in action.items() if item is not None}
    action |= {"type": action_type, "action_ts": _event_ts()}
    if url is not None:
        action["url"] = url
    if container is None and message_ts is not None:
        container = {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": False,
        }
    payload = _interaction("block_actions", user_id, team_id, trigger_id)
    payload["container"] = container or {"type": "view", "view_id": (view or {}).get("id", "")}
    if channel_id is not None:
        payload["channel"] = {"id": channel_id, "name": _channel_name(channel_id)}
    if message_ts is not None:
        bot = {"user": BOT_USER_ID, "bot_id": BOT_ID, "app_id": APP_ID, "team": team_id}
        payload["message"] = message or {"type": "message", "ts": message_ts, "text": "", "blocks": [], **bot}
        payload["state"] = {"values": {}}
        payload["response_url"] = response_url or f"https://hooks.slack.com/actions/{team_id}/1/abc"
    if view is not None:
        payload["view"] = view
    return _payload_body({**payload, "actions": [action]})


def ephemeral_actions_body(
    action_id: str,
    *,
    user_id: str,
    value: str,
    response_url: str,
    message_ts: str = "1700000000.000100",
    channel_id: str = "C0GENERAL",
    block_id: str = "actions",
) -> bytes:
    """A click in an ephemeral message (a /gmail-status card): Slack sends the message's response_url with it."""
    container = {"type": "message", "message_ts": message_ts, "channel_id": channel_id, "is_ephemeral": True}
    return block_actions_body(
        action_id,
        user_id=user_id,
        value=value,
        container=container,
        channel_id=channel_id,
        message_ts=message_ts,
        block_id=block_id,
        response_url=response_url,
    )


def view_submission_body(
    callback_id: str,
    *,
    user_id: str,
    private_metadata: str = "",
    values: dict[str, Any] | None = None,
    team_id: str = TEAM_ID,
) -> bytes:
    """A modal's view_submission form body; values as in view.state.values."""
    modal = {
        "type": "modal",
        "callback_id": callback_id,
        "private_metadata": private_metadata,
        "state": {"values": values or {}},
        "title": {"type": "plain_text", "text": "Fake", "emoji": True},
        "submit": {"type": "plain_text", "text": "Submit", "emoji": True},
    }
    payload = _interaction("view_submission", user_id, team_id, TRIGGER_ID)
    payload["view"] = _view_object(modal, team_id=team_id)
    return _payload_body({**payload, "response_urls": []})


def event_body(event: dict[str, Any], *, team_id: str = TEAM_ID, api_app_id: str = APP_ID) -> bytes:
    """An Events API event_callback envelope around `event`, as JSON."""
    authorization = {"enterprise_id": None, "team_id": team_id, "user_id": BOT_USER_ID, "is_bot": True}
    envelope = {
        "token": VERIFICATION_TOKEN,
        "team_id": team_id,
        "context_team_id": team_id,
        "api_app_id": api_app_id,
        "event": event,
        "type": "event_callback",
        "event_id": "Ev" + secrets.token_hex(5).upper(),
        "event_time": int(time.time()),
        "authorizations": [{**authorization, "is_enterprise_install": False}],
        "is_ext_shared_channel": False,
    }
    return json.dumps(envelope).encode()


def app_home_opened(user_id: str, *, tab: str = "home") -> dict[str, Any]:
    """An app_home_opened event for `user_id`, to wrap with event_body."""
    channel = dm_channel_id(user_id)
    return {
        "type": "app_home_opened",
        "user": user_id,
        "channel": channel,
        "tab": tab,
        "event_ts": _event_ts(),
    }
