"""chat.postMessage for the delivery queue: the one Web API call a morning makes for every user, sent directly on
the Web API client's session, in the pacer's turn.

Everything else goes through slack_sdk's AsyncWebClient. This one call does not: per call that client builds
retry-handler requests and answers, joins URLs, looks up loggers and wraps the answer, about 0.1 ms of CPU, as
much as the HTTP exchange itself, and a run makes 10,000 of them. The call is the same: the client's URL, token,
headers and timeout, the blocks as JSON; Slack's refusals raise slack_sdk's SlackApiError with slack_sdk's
response, as the client's would; a 429 pauses the method for its Retry-After and the call goes again in its turn.
Unlike the client, a 5xx or a lost connection is not tried again here: the queue tries the message again later.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import orjson
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse
from slack_sdk.web.internal_utils import _get_headers

from bot.slack.pacer import POST_MESSAGE, Pacer, retry_after_seconds

log = logging.getLogger(__name__)


class Poster:
    """chat.postMessage on `client`'s session, URL, token and headers, in `pacer`'s turn."""

    def __init__(self, client: AsyncWebClient, pacer: Pacer) -> None:
        self.client = client
        self.pacer = pacer
        self.url = client.base_url.rstrip("/") + "/" + POST_MESSAGE
        # The headers slack_sdk itself sends with a JSON call (its User-Agent, the bot token, the client's own).
        self.headers = _get_headers(
            headers=client.headers,
            token=client.token,
            has_json=True,
            has_files=False,
            request_specific_headers=None,
        )
        self.timeout = aiohttp.ClientTimeout(total=client.timeout)

    async def post(
        self, *, channel: str, text: str, blocks: list[dict[str, Any]], ticket: float
    ) -> dict[str, Any]:
        """Post the message, at first in the turn already taken (`ticket`); Slack's answer when it is ok.

        SlackApiError when Slack refuses it (not for a 429, which is waited out); aiohttp.ClientError or
        TimeoutError when the way to Slack failed (Slack may have the message)."""
        body = orjson.dumps({"channel": channel, "text": text, "blocks": blocks})
        asked_at = self.pacer.clock()
        session = self.client.session
        assert session is not None, "the Web API client has no session"
        while True:
            async with session.post(
                self.url, data=body, headers=self.headers, timeout=self.timeout
            ) as response:
                status, headers, payload = response.status, response.headers, await response.read()
            if status == 429:
                retry_after = retry_after_seconds(headers.get("Retry-After"))
                log.info("Slack rate-limited %s: all wait %.2f s", POST_MESSAGE, retry_after)
                self.pacer.limited(POST_MESSAGE, retry_after, ticket)
                turn = await self.pacer.turn(POST_MESSAGE, channel)
                assert turn is not None  # chat.postMessage is always paced
                ticket = turn
                continue
            self.pacer.accepted(POST_MESSAGE, asked_at=asked_at)
            try:
                answer = orjson.loads(payload)
            except orjson.JSONDecodeError:
                answer = None
            if status == 200 and isinstance(answer, dict) and answer.get("ok"):
                return answer
            raise self._refusal(status, headers, answer if isinstance(answer, dict) else {})

    def _refusal(self, status: int, headers: Any, answer: dict[str, Any]) -> SlackApiError:
        response = AsyncSlackResponse(
            client=self.client,
            http_verb="POST",
            api_url=self.url,
            req_args={},
            data=answer,
            headers=dict(headers),
            status_code=status,
        )
        return SlackApiError(
            f"The request to the Slack API failed. (url: {self.url}, status: {status})", response
        )
