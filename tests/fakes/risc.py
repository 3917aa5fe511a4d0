"""A local fake of Google's Cross-Account Protection (RISC): the issuer and its stream management API.

As the issuer it serves the RISC configuration (`issuer`, `jwks_uri`) and the JWKS, and signs security event
tokens with RS256 (PyJWT), also with a key it never publishes, or with alg "none", for forgeries. As the RISC
API it keeps one stream (stream:update, stream, stream/status, stream:verify), authorizing each call with a
service account's self-signed JWT checked against the key of a service-account file it writes; stream:verify
POSTs a verification token to the registered receiver, as Google does.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

GOOGLE_ISSUER = "https://accounts.google.com/"
RISC_AUDIENCE = "https://risc.googleapis.com/google.identity.risc.v1beta.RiscManagementService"
SET_CONTENT_TYPE = "application/secevent+jwt"
RISC = "https://schemas.openid.net/secevent/risc/event-type/"
OAUTH = "https://schemas.openid.net/secevent/oauth/event-type/"


@dataclass(frozen=True)
class RsaKey:
    """An RSA key pair and its key id."""

    kid: str
    private_key: rsa.RSAPrivateKey

    @classmethod
    def generate(cls) -> RsaKey:
        return cls(secrets.token_hex(20), rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @property
    def jwk(self) -> dict[str, Any]:
        """The public key as a JWK, as Google's JWKS lists it."""
        public = jwt.algorithms.RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "alg": "RS256", "use": "sig"}

    @property
    def private_pem(self) -> str:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()


@dataclass
class Delivery:
    """One token the fake pushed to a receiver, and the answer."""

    token: str
    status: int
    body: str
    sent_at: float
    answered_at: float
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Stream:
    """The project's stream, as stream:update left it."""

    configuration: dict[str, Any] = field(default_factory=dict)
    status: str = "enabled"


class FakeRisc:
    """Google's RISC issuer and management API on 127.0.0.1."""

    def __init__(self, *, client_id: str, issuer: str = GOOGLE_ISSUER) -> None:
        self.client_id = client_id
        self.issuer = issuer
        self.key = RsaKey.generate()
        self.retired_keys: list[RsaKey] = []  # still published after a rotation, as Google does for a while
        self.unknown_key = RsaKey.generate()  # never published
        self.service_account_key = RsaKey.generate()
        self.service_account_email = "risc-admin@test-project.iam.gserviceaccount.com"
        self.stream = Stream()
        self.deliveries: list[Delivery] = []
        self.api_calls: list[tuple[str, str, int]] = []  # method, path, status
        self._refusals: list[tuple[int, str]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.jwks_fetches = 0

    # ---- addresses --------------------------------------------------------------------------------------------

    @property
    def config_uri(self) -> str:
        return self.base_url + "/.well-known/risc-configuration"

    @property
    def api_url(self) -> str:
        return self.base_url + "/v1beta/"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/.well-known/risc-configuration", self._configuration)
        app.router.add_get("/oauth2/v3/certs", self._jwks)
        app.router.add_post("/v1beta/stream:update", self._update)
        app.router.add_get("/v1beta/stream", self._get_stream)
        app.router.add_get("/v1beta/stream/status", self._get_status)
        app.router.add_post("/v1beta/stream:verify", self._verify)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks))
        if self._runner is not None:
            await self._runner.cleanup()

    # ---- the issuer --------------------------------------------------------------------------------------------

    def sign(
        self,
        events: dict[str, dict[str, Any]],
        *,
        jti: str | None = None,
        aud: str | None = None,
        iss: str | None = None,
        iat: float | None = None,
        exp: float | None = None,
        key: str = "served",
    ) -> str:
        """A security event token for `events`: signed by the published key, or `key="unknown"` (a key never
        published) or `key="none"` (alg none, no signature)."""
        claims: dict[str, Any] = {
            "iss": iss or self.issuer,
            "aud": aud or self.client_id,
            "iat": int(iat if iat is not None else time.time()),
            "jti": jti or secrets.token_hex(16),
            "events": events,
        }
        if exp is not None:
            claims["exp"] = int(exp)
        if key == "none":
            return jwt.encode(claims, None, algorithm="none", headers={"kid": self.key.kid})
        signer = self.key if key == "served" else self.unknown_key
        return jwt.encode(
            claims, signer.private_pem, algorithm="RS256", headers={"kid": signer.kid, "typ": "secevent+jwt"}
        )

    def rotate(self) -> None:
        """Sign with a new key from now on, publishing it beside the old one."""
        self.retired_keys.insert(0, self.key)
        self.key = RsaKey.generate()

    def event(self, name: str, *, sub: str | None = None, **attributes: Any) -> dict[str, dict[str, Any]]:
        """One event of type `name` (e.g. "tokens-revoked") about the Google account `sub`."""
        uri = (OAUTH if name in ("tokens-revoked", "token-revoked") else RISC) + name
        body: dict[str, Any] = dict(attributes)
        if sub is not None:
            body["subject"] = {"subject_type": "iss-sub", "iss": self.issuer, "sub": sub}
        return {uri: body}

    async def deliver(self, url: str, token: str, *, content_type: str = SET_CONTENT_TYPE) -> Delivery:
        """POST a token to a receiver as Google pushes it (RFC 8935), and record the answer."""
        sent = time.monotonic()
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                url, data=token.encode(), headers={"Content-Type": content_type, "Accept": "application/json"}
            ) as response,
        ):
            delivery = Delivery(
                token, response.status, await response.text(), sent, time.monotonic(), dict(response.headers)
            )
        self.deliveries.append(delivery)
        return delivery

    async def _configuration(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer,
                "jwks_uri": self.base_url + "/oauth2/v3/certs",
                "delivery_methods_supported": [
                    "https://schemas.openid.net/secevent/risc/delivery-method/push"
                ],
            }
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        self.jwks_fetches += 1
        return web.json_response({"keys": [key.jwk for key in (self.key, *self.retired_keys)]})

    # ---- the management API -----------------------------------------------------------------------------------

    def write_service_account_file(self, path: Path) -> Path:
        """A service account's JSON key file whose key this fake checks the RISC API's tokens against."""
        path.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "project_id": "test-project",
                    "private_key_id": self.service_account_key.kid,
                    "private_key": self.service_account_key.private_pem,
                    "client_email": self.service_account_email,
                    "client_id": "100000000000000000001",
                    "token_uri": "https://oauth2.googleapis.com/token",
                }
            )
        )
        return path

    def refuse_next(self, status: int, message: str) -> None:
        """Answer the next RISC API call with this error, as Google does (`{"error": {...}}`)."""
        self._refusals.append((status, message))

    def _authorized(self, request: web.Request) -> web.Response | None:
        """None when the call carries the service account's self-signed JWT for the RISC API, else the 401."""
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ")
        try:
            if not header.startswith("Bearer ") or jwt.get_unverified_header(token).get("kid") != (
                self.service_account_key.kid
            ):
                raise jwt.InvalidTokenError("wrong kid")
            claims = jwt.decode(
                token,
                self.service_account_key.private_key.public_key(),
                algorithms=["RS256"],
                audience=RISC_AUDIENCE,
                issuer=self.service_account_email,
                options={"require": ["iss", "sub", "aud", "iat", "exp"]},
            )
            if claims["sub"] != self.service_account_email or claims["exp"] - claims["iat"] > 3600:
                raise jwt.InvalidTokenError("wrong sub or lifetime")
        except jwt.PyJWTError:
            return _error(401, "Unauthorized.")
        return None

    def _refused(self, request: web.Request) -> web.Response | None:
        """The error answer for a call without a valid token, or one `refuse_next` asked for; else None."""
        answer = self._authorized(request)
        if answer is None and self._refusals:
            status, message = self._refusals.pop(0)
            answer = _error(status, message)
        return answer

    def _record(self, request: web.Request, answer: web.Response) -> web.Response:
        self.api_calls.append((request.method, request.path, answer.status))
        return answer

    async def _update(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return self._record(request, refused)
        body = await request.json()
        if not isinstance(body, dict) or "delivery" not in body or "events_requested" not in body:
            return self._record(request, _error(400, "Stream configuration must contain delivery field."))
        self.stream.configuration = {**body, "events_delivered": list(body["events_requested"])}
        return self._record(request, web.json_response(self.stream.configuration))

    async def _get_stream(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is None and not self.stream.configuration:
            refused = _error(404, "Project has no RISC configuration.")
        return self._record(
            request, web.json_response(self.stream.configuration) if refused is None else refused
        )

    async def _get_status(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        return self._record(
            request, web.json_response({"status": self.stream.status}) if refused is None else refused
        )

    async def _verify(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return self._record(request, refused)
        state = (await request.json()).get("state", "")
        url = self.stream.configuration.get("delivery", {}).get("url")
        if url:
            token = self.sign(self.event("verification", state=state))
            task = asyncio.create_task(self._push(url, token))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return self._record(request, web.json_response({}))

    async def _push(self, url: str, token: str) -> None:
        await asyncio.sleep(0.05)  # Google sends it after answering
        await self.deliver(url, token)


def _error(status: int, message: str) -> web.Response:
    return web.json_response(
        {"error": {"code": status, "message": message, "status": "FAILED"}}, status=status
    )


@asynccontextmanager
async def fake_risc_server(*, client_id: str) -> AsyncIterator[FakeRisc]:
    """A started FakeRisc, closed on exit."""
    fake = FakeRisc(client_id=client_id)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()
