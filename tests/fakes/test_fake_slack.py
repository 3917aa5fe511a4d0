"""The fake Slack over real HTTP, driven by slack_sdk's AsyncWebClient and by a slack_bolt AsyncApp."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack import (
    DEFAULT_BOT_TOKEN,
    FORM_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    MAX_USERS_PAGE,
    FakeSlack,
    app_home_opened,
    block_actions_body,
    event_body,
    fake_slack_server,
    sign,
    slash_command_body,
    view_submission_body,
)
from tests.helpers import eventually

ADA = "U0ADA"
SIGNING_SECRET = "test-signing-secret-0123456789"
APP_TOKEN = "xapp-1-A0APP-1-test-app-token"
HOME = {"type": "home", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]}
MODAL = {"type": "modal", "title": {"type": "plain_text", "text": "Reconnect"}, "blocks": []}


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with fake_slack_server() as fake:
        fake.add_user(ADA, name="ada", real_name="Ada Lovelace", email="ada@example.com")
        yield fake


@pytest.fixture
async def client(slack: FakeSlack) -> AsyncIterator[AsyncWebClient]:
    async with aiohttp.ClientSession() as session:
        yield AsyncWebClient(token=DEFAULT_BOT_TOKEN, base_url=slack.base_url, session=session)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def slack_error(call: Any) -> str:
    """The error code of a call that slack_sdk raises SlackApiError for."""
    with pytest.raises(SlackApiError) as raised:
        await call
    return raised.value.response["error"]


async def test_auth_test_answers_as_the_bot(slack: FakeSlack, client: AsyncWebClient) -> None:
    response = await client.auth_test()

    assert response.data == {
        "ok": True,
        "url": "https://fake.slack.com/",
        "team": "Fake",
        "user": "gmail-reconnect",
        "team_id": "T0TEAM",
        "user_id": "U0BOT",
        "bot_id": "B0BOT",
        "is_enterprise_install": False,
    }
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    [call] = slack.calls_to("auth.test")
    assert (call.token, call.status) == (DEFAULT_BOT_TOKEN, 200)
    assert slack.base_url.endswith("/api/")


async def test_missing_and_wrong_tokens(slack: FakeSlack, http: aiohttp.ClientSession) -> None:
    async with http.post(slack.base_url + "auth.test") as response:
        assert (response.status, await response.json()) == (200, {"ok": False, "error": "not_authed"})
    wrong = AsyncWebClient(token="xoxb-wrong", base_url=slack.base_url, session=http)
    assert await slack_error(wrong.auth_test()) == "invalid_auth"
    async with http.post(slack.base_url + "auth.test", data={"token": DEFAULT_BOT_TOKEN}) as response:
        assert (await response.json())["ok"] is True
    assert [call.token for call in slack.calls] == [None, "xoxb-wrong", DEFAULT_BOT_TOKEN]
    assert "token" not in slack.calls[-1].args


async def test_apps_connections_open_takes_the_app_token_only(http: aiohttp.ClientSession) -> None:
    async with fake_slack_server(app_token=APP_TOKEN) as slack:
        client = AsyncWebClient(base_url=slack.base_url, session=http)
        assert await slack_error(client.apps_connections_open(app_token="xapp-wrong")) == "invalid_auth"
        assert await slack_error(client.apps_connections_open(app_token=DEFAULT_BOT_TOKEN)) == (
            "not_allowed_token_type"
        )
        bot_with_app_token = AsyncWebClient(token=APP_TOKEN, base_url=slack.base_url, session=http)
        assert await slack_error(bot_with_app_token.auth_test()) == "not_allowed_token_type"
        url = (await client.apps_connections_open(app_token=APP_TOKEN))["url"]
        assert url.startswith("ws://127.0.0.1:") and "/link/?ticket=" in url


async def test_a_socket_mode_url_opens_one_websocket_that_says_hello(http: aiohttp.ClientSession) -> None:
    async with fake_slack_server(app_token=APP_TOKEN) as slack:
        client = AsyncWebClient(base_url=slack.base_url, session=http)
        url = (await client.apps_connections_open(app_token=APP_TOKEN))["url"]
        async with http.ws_connect(url) as socket:
            assert (await socket.receive_json())["type"] == "hello"
            assert slack.open_sockets == 1
            envelope_id = await slack.send_envelope(json.loads(event_body(app_home_opened(ADA))))
            envelope = await socket.receive_json()
            assert envelope["envelope_id"] == envelope_id and envelope["type"] == "events_api"
            await socket.send_json({"envelope_id": envelope_id})
            await eventually(lambda: slack.socket_replies == [{"envelope_id": envelope_id}])
        with pytest.raises(aiohttp.WSServerHandshakeError):  # a URL is good for one connection
            await http.ws_connect(url)
        await eventually(lambda: slack.open_sockets == 0)
        assert slack.socket_connections == 1


async def test_open_post_update_round_trip(slack: FakeSlack, client: AsyncWebClient) -> None:
    opened = await client.conversations_open(users=ADA)
    channel = opened["channel"]["id"]
    assert channel == "D0ADA" and (await client.conversations_open(users=ADA))["channel"]["id"] == channel

    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Reconnect* Gmail"}}]
    posted = await client.chat_postMessage(channel=channel, text="Reconnect Gmail", blocks=blocks)
    assert posted["channel"] == channel and posted["message"]["blocks"] == blocks
    by_user = await client.chat_postMessage(channel=ADA, text="second")
    assert by_user["channel"] == channel and float(by_user["ts"]) > float(posted["ts"])
    assert posted["ts"] == "1700000000.000100"

    updated = await client.chat_update(channel=channel, ts=posted["ts"], text="Connected")
    assert (updated["channel"], updated["ts"], updated["text"]) == (channel, posted["ts"], "Connected")
    message = slack.messages[channel, posted["ts"]]
    assert (message["text"], message["blocks"], message["user"]) == ("Connected", blocks, "U0BOT")
    await client.chat_update(channel=channel, ts=posted["ts"], text="Connected", blocks=[])
    assert slack.messages[channel, posted["ts"]]["blocks"] == []

    await client.chat_delete(channel=channel, ts=by_user["ts"])
    assert list(slack.messages) == [(channel, posted["ts"])]
    assert await slack_error(client.chat_delete(channel=channel, ts=by_user["ts"])) == "message_not_found"


async def test_form_bodies_decode_json_fields(slack: FakeSlack, http: aiohttp.ClientSession) -> None:
    blocks = [{"type": "divider"}]
    form = {"channel": ADA, "blocks": json.dumps(blocks)}
    headers = {"Authorization": f"Bearer {DEFAULT_BOT_TOKEN}"}
    async with http.post(slack.base_url + "chat.postMessage", data=form, headers=headers) as response:
        body = await response.json()
    assert body["ok"] is True and slack.messages["D0ADA", body["ts"]]["blocks"] == blocks
    assert slack.calls[-1].args == {"channel": ADA, "blocks": blocks}

    form = {"user_id": ADA, "view": json.dumps(HOME)}
    async with http.post(slack.base_url + "views.publish", data=form, headers=headers) as response:
        assert (await response.json())["view"]["blocks"] == HOME["blocks"]
    assert slack.views[ADA]["type"] == "home"

    params = {"user": ADA, "include_locale": "true", "token": DEFAULT_BOT_TOKEN}
    async with http.get(slack.base_url + "users.info", params=params) as response:
        assert (await response.json())["user"]["locale"] == "ko-KR"


async def test_post_ephemeral(slack: FakeSlack, client: AsyncWebClient) -> None:
    response = await client.chat_postEphemeral(channel="C0GENERAL", user=ADA, text="Only you")

    assert slack.ephemerals == [
        {"channel": "C0GENERAL", "user": ADA, "ts": response["message_ts"], "text": "Only you", "blocks": []}
    ]
    assert slack.messages == {}
    error = await slack_error(client.chat_postEphemeral(channel="C0GENERAL", user="U0NOBODY", text="x"))
    assert error == "user_not_found"


async def test_views_publish_open_and_update(slack: FakeSlack, client: AsyncWebClient) -> None:
    published = await client.views_publish(user_id=ADA, view=HOME)
    view = published["view"]
    assert view["id"].startswith("V") and view["type"] == "home" and view["blocks"] == HOME["blocks"]
    assert slack.views[ADA] == view
    again = await client.views_publish(user_id=ADA, view={**HOME, "blocks": []}, hash=view["hash"])
    assert again["view"]["id"] == view["id"] and slack.views[ADA]["blocks"] == []
    assert await slack_error(client.views_publish(user_id=ADA, view=HOME, hash="stale")) == "hash_conflict"
    assert await slack_error(client.views_publish(user_id=ADA, view=MODAL)) == "invalid_arguments"
    too_many = {"type": "home", "blocks": [{"type": "divider"}] * 101}
    assert await slack_error(client.views_publish(user_id=ADA, view=too_many)) == "invalid_blocks"

    opened = await client.views_open(trigger_id="1337.42.abcd", view={**MODAL, "external_id": "ext-1"})
    assert slack.opened_views == [opened["view"]]
    await client.views_update(view_id=opened["view"]["id"], view={**MODAL, "blocks": [{"type": "divider"}]})
    assert slack.opened_views[0]["blocks"] == [{"type": "divider"}]
    await client.views_update(external_id="ext-1", view=MODAL)
    assert slack.opened_views[0]["blocks"] == []
    assert await slack_error(client.views_update(view_id="V0NONE", view=MODAL)) == "not_found"


async def test_what_slack_would_ping_mention_or_link_is_recorded(
    slack: FakeSlack, client: AsyncWebClient, http: aiohttp.ClientSession
) -> None:
    parsed = {"type": "mrkdwn", "text": "<!here> <@U0ADA> <https://x.example|x>"}
    section = {"type": "section", "text": parsed}
    header = {"type": "header", "text": {"type": "plain_text", "text": "<!channel>"}}  # never parsed

    await client.chat_postMessage(channel=ADA, text="<!channel> &lt;!everyone&gt;", blocks=[header, section])
    await client.chat_postMessage(channel=ADA, text="<!subteam^S1> <#C0GENERAL>", mrkdwn=False)
    await client.views_publish(user_id=ADA, view={"type": "home", "blocks": [section]})
    async with http.post(slack.response_url(), json={"text": "<!date^0^{date}|then>"}) as response:
        assert response.status == 200

    assert slack.control_of("broadcast") == ["!channel", "!here", "!here"]
    assert slack.control_of("mention") == ["@U0ADA", "@U0ADA"]
    assert slack.control_of("link") == ["https://x.example|x", "https://x.example|x"]
    assert slack.control_of("command") == ["!date^0^{date}|then"]
    assert [sequence.method for sequence in slack.control][-2:] == ["views.publish", "response_url"]


async def test_users_info_and_lookup(slack: FakeSlack, client: AsyncWebClient) -> None:
    plain = (await client.users_info(user=ADA))["user"]
    assert plain == {
        "id": ADA,
        "team_id": "T0TEAM",
        "name": "ada",
        "real_name": "Ada Lovelace",
        "deleted": False,
        "is_bot": False,
        "tz": "Asia/Seoul",
        "profile": {"email": "ada@example.com", "real_name": "Ada Lovelace", "display_name": "ada"},
    }
    localized = (await client.users_info(user=ADA, include_locale=True))["user"]
    assert localized == {**plain, "locale": "ko-KR"}
    slack.add_user("U0EN", locale="en-US", tz="America/New_York")
    assert (await client.users_info(user="U0EN", include_locale=True))["user"]["locale"] == "en-US"
    assert await slack_error(client.users_info(user="U0NOBODY")) == "user_not_found"

    assert (await client.users_lookupByEmail(email="ADA@example.com"))["user"]["id"] == ADA
    assert await slack_error(client.users_lookupByEmail(email="no@example.com")) == "users_not_found"


async def test_users_list_pages_through_users_in_the_order_they_were_added(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    slack.add_user("U0BAB", locale="en-US")
    slack.add_user("U0CAT", deleted=True)
    slack.add_user("U0DOT", is_bot=True)
    slack.add_user("U0EVE")
    added = [ADA, "U0BAB", "U0CAT", "U0DOT", "U0EVE"]

    pages, cursor = [], ""
    while True:
        page = await client.users_list(limit=2, cursor=cursor)
        pages.append(page["members"])
        assert isinstance(page["cache_ts"], int)
        cursor = page["response_metadata"]["next_cursor"]
        if not cursor:
            break
    assert [[member["id"] for member in members] for members in pages] == [added[:2], added[2:4], added[4:]]
    members = [member for page_members in pages for member in page_members]
    assert members == [(await client.users_info(user=user_id))["user"] for user_id in added]
    assert members[2]["deleted"] is True and all("locale" not in member for member in members)

    localized = (await client.users_list(include_locale=True))["members"]
    assert localized == [
        (await client.users_info(user=user_id, include_locale=True))["user"] for user_id in added
    ]
    assert [member["locale"] for member in localized[:2]] == ["ko-KR", "en-US"]
    slack.add_user("U0BAB", name="bab")  # replacing a user keeps their place
    assert [member["id"] for member in (await client.users_list())["members"]] == added


async def test_users_list_without_a_limit_answers_everyone(slack: FakeSlack, client: AsyncWebClient) -> None:
    for number in range(1_000):
        slack.add_user(f"U{number:05d}")

    everyone = await client.users_list()
    assert len(everyone["members"]) == 1_001 and everyone["response_metadata"]["next_cursor"] == ""
    assert (await client.users_list(limit=0))["members"] == everyone["members"]

    capped = await client.users_list(limit=5_000)
    assert len(capped["members"]) == MAX_USERS_PAGE == 1_000
    rest = await client.users_list(limit=5_000, cursor=capped["response_metadata"]["next_cursor"])
    assert [member["id"] for member in rest["members"]] == ["U00999"]
    assert rest["response_metadata"]["next_cursor"] == ""


async def test_users_list_rejects_bad_cursors_and_limits(slack: FakeSlack, client: AsyncWebClient) -> None:
    unknown_user = base64.b64encode(b"user:U0NOBODY").decode()
    not_a_user = base64.b64encode(f"channel:{ADA}".encode()).decode()
    for cursor in ["garbage", "dXNlcjpVMDYxTkZUVDI=", unknown_user, not_a_user, "/w==", "ünïcode"]:
        assert await slack_error(client.users_list(cursor=cursor)) == "invalid_cursor", cursor
    assert await slack_error(client.api_call("users.list", params={"limit": "ten"})) == "invalid_arguments"
    assert await slack_error(client.api_call("users.list", json={"limit": -1})) == "invalid_arguments"

    first = base64.b64encode(f"user:{ADA}".encode()).decode()
    answered = await client.api_call("users.list", json={"cursor": first, "limit": 1, "include_locale": True})
    assert answered["members"][0]["locale"] == "ko-KR"


async def test_users_list_can_be_rate_limited_and_failed(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.rate_limit("users.list", retry_after=7)
    with pytest.raises(SlackApiError) as raised:
        await client.users_list(limit=200)
    assert raised.value.response.status_code == 429
    assert raised.value.response.headers["Retry-After"] == "7"
    assert raised.value.response["error"] == "ratelimited"

    slack.fail("users.list", error="internal_error")
    assert await slack_error(client.users_list()) == "internal_error"
    assert [member["id"] for member in (await client.users_list())["members"]] == [ADA]
    assert [call.status for call in slack.calls_to("users.list")] == [429, 200, 200]
    assert slack.calls_to("users.list")[0].args == {"limit": "200"}


async def test_held_calls_are_answered_once_let_go(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.add_user("U0BAB")
    gate = slack.hold("users.list", after=1)

    first = await client.users_list(limit=1)
    second = asyncio.create_task(client.users_list(limit=1, cursor=first["response_metadata"]["next_cursor"]))
    await eventually(lambda: len(slack.calls_to("users.list")) == 2)
    await client.users_info(user=ADA)  # other methods are answered meanwhile

    assert not second.done() and slack.calls_to("users.list")[1].status == 0
    gate.set()
    assert [member["id"] for member in (await second)["members"]] == ["U0BAB"]
    assert [call.status for call in slack.calls_to("users.list")] == [200, 200]


async def test_method_errors(slack: FakeSlack, client: AsyncWebClient) -> None:
    assert await slack_error(client.chat_postMessage(channel="C0NOWHERE", text="x")) == "channel_not_found"
    # api_call skips slack_sdk's own checks of the arguments.
    assert await slack_error(client.api_call("chat.postMessage", json={"channel": ADA})) == "no_text"
    assert await slack_error(client.chat_postMessage(channel=ADA, text="x" * 40_001)) == "msg_too_long"
    blocks = [{"type": "divider"}] * 51
    assert (
        await slack_error(client.chat_postMessage(channel=ADA, text="x", blocks=blocks)) == "invalid_blocks"
    )
    assert await slack_error(client.chat_update(channel=ADA, ts="1.000001", text="x")) == "message_not_found"
    assert await slack_error(client.conversations_open(users="U0NOBODY")) == "user_not_found"
    assert await slack_error(client.api_call("chat.scheduleMessage")) == "unknown_method"
    assert slack.messages == {} and {call.status for call in slack.calls} == {200}


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


async def test_blocks_are_held_to_slacks_limits_on_their_texts(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    async def post(*blocks: dict[str, Any]) -> str | None:
        # api_call skips slack_sdk's own checks, so that the fake's are what answers.
        try:
            await client.api_call(
                "chat.postMessage", json={"channel": ADA, "text": "x", "blocks": list(blocks)}
            )
        except SlackApiError as error:
            return str(error.response["error"])
        return None

    button = {"type": "button", "action_id": "a", "text": {"type": "plain_text", "text": "b" * 75}}
    assert await post(*[section("s" * 240)] * 50) is None  # 50 blocks, 12,000 characters: the most
    assert await post(section("s" * 3000), {"type": "actions", "elements": [button]}) is None
    assert await post(section("s" * 3001)) == "invalid_blocks"
    assert await post(section("")) == "invalid_blocks"
    assert await post(
        {**section("s"), "accessory": {**button, "text": {"type": "plain_text", "text": "b" * 76}}}
    ) == ("invalid_blocks")
    context = {"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11}
    assert await post(context) == "invalid_blocks"
    assert (
        await post({"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}) == "invalid_blocks"
    )
    assert await post(*[section("s" * 2500)] * 5) == "msg_blocks_too_long"  # 12,500 in all
    assert len(slack.messages) == 2


async def test_rate_limit_is_retried_after_retry_after(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.rate_limit("chat.postMessage", retry_after=0)
    with pytest.raises(SlackApiError) as raised:
        await client.chat_postMessage(channel=ADA, text="x")
    assert raised.value.response.status_code == 429
    assert raised.value.response.headers["Retry-After"] == "0"
    assert raised.value.response["error"] == "ratelimited"

    client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=1))
    slack.rate_limit("chat.postMessage", retry_after=0)
    await client.chat_postMessage(channel=ADA, text="after a wait")
    assert [call.status for call in slack.calls_to("chat.postMessage")] == [429, 429, 200]
    assert [message["text"] for message in slack.messages.values()] == ["after a wait"]


async def test_server_errors_and_injected_errors(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.fail("chat.postMessage", status=503)
    with pytest.raises(SlackApiError) as raised:
        await client.chat_postMessage(channel=ADA, text="x")
    assert raised.value.response.status_code == 503
    assert raised.value.response.headers["Content-Type"] == "application/json; charset=utf-8"

    fast = FixedValueRetryIntervalCalculator(0.01)
    client.retry_handlers.append(AsyncServerErrorRetryHandler(max_retry_count=2, interval_calculator=fast))
    slack.fail("chat.postMessage", times=2)
    await client.chat_postMessage(channel=ADA, text="third time")
    assert [call.status for call in slack.calls_to("chat.postMessage")] == [503, 500, 500, 200]

    slack.fail("views.publish", error="internal_error")
    assert await slack_error(client.views_publish(user_id=ADA, view=HOME)) == "internal_error"
    await client.views_publish(user_id=ADA, view=HOME)


async def test_delay_is_added_to_each_call(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.delay = 0.05
    started = time.monotonic()
    await client.auth_test()
    assert time.monotonic() - started >= 0.05
    assert slack.calls[0].at >= started


def test_sign_matches_slacks_documented_example() -> None:
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
        b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
        b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
        b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    headers = sign(body, "8f742231b10e8888abcd99yyyzzz85a5", 1531420618)

    assert headers == {
        "X-Slack-Request-Timestamp": "1531420618",
        "X-Slack-Signature": "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
    }

    class Then(Clock):
        def now(self) -> float:
            return 1531420618.0

    assert SignatureVerifier("8f742231b10e8888abcd99yyyzzz85a5", Then()).is_valid_request(body, headers)


def test_sign_is_accepted_by_slack_sdk_now() -> None:
    body = slash_command_body(user_id=ADA)
    headers = sign(body, SIGNING_SECRET, content_type=FORM_CONTENT_TYPE)

    assert headers["Content-Type"] == FORM_CONTENT_TYPE
    assert SignatureVerifier(SIGNING_SECRET).is_valid_request(body, headers)
    assert not SignatureVerifier("another-secret").is_valid_request(body, headers)
    fields = {key: values[0] for key, values in parse_qs(body.decode(), keep_blank_values=True).items()}
    assert list(fields)[:3] == ["token", "team_id", "team_domain"]
    assert (fields["command"], fields["user_id"], fields["channel_id"]) == ("/gmail-status", ADA, "C0GENERAL")


async def test_requests_as_slack_sends_them_reach_a_bolt_app(
    slack: FakeSlack, http: aiohttp.ClientSession
) -> None:
    app = AsyncApp(
        client=AsyncWebClient(token=DEFAULT_BOT_TOKEN, base_url=slack.base_url),
        signing_secret=SIGNING_SECRET,
        process_before_response=True,
    )
    seen: list[tuple[str, Any]] = []

    @app.command("/gmail-status")
    async def status(ack: AsyncAck, command: dict[str, Any]) -> None:
        seen.append(("command", command["text"]))
        await ack("checking")

    @app.action("reconnect")
    async def reconnect(ack: AsyncAck, body: dict[str, Any]) -> None:
        seen.append(("action", (body["actions"][0]["value"], body["container"]["type"])))
        await ack()

    @app.view("reconnect-modal")
    async def submitted(ack: AsyncAck, view: dict[str, Any]) -> None:
        seen.append(("view", view["private_metadata"]))
        await ack()

    @app.event("app_home_opened")
    async def home(event: dict[str, Any], client: AsyncWebClient) -> None:
        await client.views_publish(user_id=event["user"], view=HOME)

    posted = await AsyncWebClient(token=DEFAULT_BOT_TOKEN, base_url=slack.base_url).chat_postMessage(
        channel=ADA, text="Reconnect?"
    )
    bodies = [
        (slash_command_body(text="now", user_id=ADA), FORM_CONTENT_TYPE),
        (
            block_actions_body(
                "reconnect", user_id=ADA, value="42", channel_id="D0ADA", message_ts=posted["ts"]
            ),
            FORM_CONTENT_TYPE,
        ),
        (
            block_actions_body("reconnect", user_id=ADA, value="home", view=slack.views.get(ADA)),
            FORM_CONTENT_TYPE,
        ),
        (view_submission_body("reconnect-modal", user_id=ADA, private_metadata="m-1"), FORM_CONTENT_TYPE),
        (event_body(app_home_opened(ADA)), JSON_CONTENT_TYPE),
    ]
    async with TestServer(app.web_app()) as server:
        for body, content_type in bodies:
            headers = sign(body, SIGNING_SECRET, content_type=content_type)
            async with http.post(server.make_url("/slack/events"), data=body, headers=headers) as response:
                assert response.status == 200, await response.text()
        forged = sign(bodies[0][0], "another-secret", content_type=FORM_CONTENT_TYPE)
        async with http.post(server.make_url("/slack/events"), data=bodies[0][0], headers=forged) as response:
            assert response.status == 401

    assert seen == [
        ("command", "now"),
        ("action", ("42", "message")),
        ("action", ("home", "view")),
        ("view", "m-1"),
    ]
    assert slack.views[ADA]["blocks"] == HOME["blocks"]
    assert slack.calls_to("auth.test"), "bolt verifies its token against the fake"
