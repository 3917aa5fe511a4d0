"""Google's RISC stream management API: where Google pushes security events, which ones, and a test event.

Calls are authorized the way Google's guide says: a JWT that the service account signs itself (google-auth's
self-signed JWT credentials), for the audience of the RiscManagementService, good for an hour; the service
account needs the RISC Configuration Admin role.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
from google.auth import jwt as google_jwt
from google.oauth2 import service_account

from bot.errors import ConfigError, GmailReconnectError
from bot.google.risc import EVENT_TYPES

RISC_AUDIENCE = "https://risc.googleapis.com/google.identity.risc.v1beta.RiscManagementService"
PUSH_DELIVERY = "https://schemas.openid.net/secevent/risc/delivery-method/push"
TIMEOUT = aiohttp.ClientTimeout(total=30)


class RiscApiError(GmailReconnectError):
    """Google refused a call of the RISC API, or could not be reached; the message says which and why."""


def bearer_token(path: Path | None) -> str:
    """A self-signed JWT of the service account in `path` for the RISC API; ConfigError if it cannot be had."""
    if path is None:
        raise ConfigError(
            [
                "GOOGLE_RISC_SERVICE_ACCOUNT_FILE is not set: set it to the JSON key file of a service account "
                "with the RISC Configuration Admin role (see the README, 'Google's security events')."
            ]
        )
    try:
        credentials = service_account.Credentials.from_service_account_file(str(path))
    except FileNotFoundError:
        raise ConfigError(
            [f"GOOGLE_RISC_SERVICE_ACCOUNT_FILE={str(path)!r} does not exist: set the path of the key file."]
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        detail = "not JSON" if isinstance(error, json.JSONDecodeError) else type(error).__name__
        raise ConfigError(
            [
                f"GOOGLE_RISC_SERVICE_ACCOUNT_FILE={str(path)!r} is not a service account's JSON key ({detail}): "
                "download a JSON key of the service account in the Cloud console (IAM → Service accounts → Keys)."
            ]
        ) from None
    signed = google_jwt.Credentials.from_signing_credentials(credentials, audience=RISC_AUDIENCE)
    signed.refresh(None)  # a self-signed JWT: made here, no request to Google
    return str(signed.token.decode() if isinstance(signed.token, bytes) else signed.token)


class RiscStream:
    """The project's event stream at Google (GOOGLE_RISC_API_URL), managed with a service account's token."""

    def __init__(self, api_url: str, token: str, session: aiohttp.ClientSession) -> None:
        self.api_url = api_url if api_url.endswith("/") else api_url + "/"
        self._token = token
        self.session = session

    async def register(self, receiver_url: str) -> dict[str, Any]:
        """Have Google push every event type this bot handles to `receiver_url`."""
        body = {
            "delivery": {"delivery_method": PUSH_DELIVERY, "url": receiver_url},
            "events_requested": list(EVENT_TYPES),
        }
        return await self._call("POST", "stream:update", body)

    async def verify(self, state: str) -> None:
        """Ask Google to send a verification event carrying `state` to the registered receiver."""
        await self._call("POST", "stream:verify", {"state": state})

    async def configuration(self) -> dict[str, Any]:
        """The stream's configuration: where it delivers and which events."""
        return await self._call("GET", "stream")

    async def status(self) -> str:
        """ "enabled" or "disabled"."""
        answer = await self._call("GET", "stream/status")
        return str(answer.get("status", "unknown"))

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        url = self.api_url + path
        try:
            async with self.session.request(
                method, url, json=body, headers={"Authorization": f"Bearer {self._token}"}, timeout=TIMEOUT
            ) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as error:
            raise RiscApiError(
                f"Could not reach Google's RISC API at {url} ({type(error).__name__})"
            ) from None
        try:
            answer = json.loads(text) if text.strip() else {}
        except ValueError:
            answer = None
        if status != 200:
            raise RiscApiError(f"Google refused {path} (HTTP {status}): {_message(answer, text)}")
        return answer if isinstance(answer, dict) else {}


def _message(answer: Any, text: str) -> str:
    """Google's error message (`{"error": {"message": …}}`), or the start of the body."""
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        message = answer["error"].get("message")
        if isinstance(message, str) and message:
            return message[:500]
    return text.strip()[:200] or "no message"
