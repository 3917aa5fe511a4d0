"""Google's consent screen: the authorization URL, and the code exchange with google-auth-oauthlib's Flow.

Flow is synchronous (requests), so the exchange runs in a worker thread with a timeout. The callback is served
by aiohttp, never by oauthlib, so the state is checked by our own store and the code is passed as `code=`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests
from google_auth_oauthlib.flow import Flow
from oauthlib.oauth2.rfc6749.errors import OAuth2Error

from bot.config import Settings
from bot.google.errors import Failure, GoogleError, token_error

log = logging.getLogger(__name__)

EXCHANGE_TIMEOUT_SECONDS = 15
_GOOGLE_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})


@dataclass(frozen=True)
class Exchange:
    """What the token endpoint gave for an authorization code."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expiry: datetime | None
    granted_scopes: list[str]
    id_claims: dict[str, Any] = field(repr=False)


class Consent:
    """Builds consent URLs and exchanges codes for one OAuth client."""

    def __init__(self, settings: Settings, *, timeout: float = EXCHANGE_TIMEOUT_SECONDS) -> None:
        if settings.google_client_id is None or settings.google_client_secret is None:
            raise ValueError("Consent needs GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET")
        self.client_id = settings.google_client_id
        self.timeout = timeout
        self._client_config = {
            "web": {
                "client_id": settings.google_client_id,
                "client_secret": settings.google_client_secret.reveal(),
                "auth_uri": settings.google_auth_uri,
                "token_uri": settings.google_token_uri,
            }
        }
        # oauthlib reads both at call time. We check granted scopes ourselves, by capability, so a grant that
        # differs from the request must not be an exception; and the settings allow http:// only for loopback
        # addresses (local test servers), which oauthlib otherwise refuses.
        os.environ["OAUTHLIB_RELAX_TOKEN_SCOPE"] = "1"
        if settings.google_token_uri.startswith("http://") or settings.google_auth_uri.startswith("http://"):
            os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"

    def authorization_url(
        self, *, state: str, code_verifier: str, scopes: list[str], redirect_uri: str, login_hint: str | None
    ) -> str:
        """The URL of Google's consent screen, asking for a refresh token every time (prompt=consent)."""
        flow = self._flow(scopes=scopes, redirect_uri=redirect_uri, state=state, code_verifier=code_verifier)
        extra = {"login_hint": login_hint} if login_hint else {}
        url, _ = flow.authorization_url(
            access_type="offline", prompt="consent", include_granted_scopes="true", state=state, **extra
        )
        return str(url)

    async def exchange(
        self, *, code: str, state: str, code_verifier: str, scopes: list[str], redirect_uri: str
    ) -> Exchange:
        """Exchange an authorization code (off the event loop); GoogleError classifies a failure."""
        flow = self._flow(scopes=scopes, redirect_uri=redirect_uri, state=state, code_verifier=code_verifier)
        answer: dict[str, int] = {}

        def remember_status(response: requests.Response) -> requests.Response:
            answer["status"] = response.status_code
            return response

        flow.oauth2session.register_compliance_hook("access_token_response", remember_status)
        try:
            token = await asyncio.to_thread(flow.fetch_token, code=code, timeout=self.timeout)
        except OAuth2Error as error:
            status = answer.get("status") or error.status_code
            raise token_error(
                status, {"error": error.error, "error_description": error.description}
            ) from None
        except requests.Timeout:
            raise GoogleError(Failure.TRANSIENT, "Google did not answer the code exchange in time") from None
        except requests.RequestException as error:
            raise GoogleError(
                Failure.TRANSIENT, f"Could not reach Google for the code exchange: {type(error).__name__}"
            ) from None
        except ValueError:
            # oauthlib could not parse the body: typically an HTML error page from a proxy or an outage.
            status = answer.get("status", 0)
            failure = Failure.TRANSIENT if status >= 500 or status in (408, 429) else Failure.UNEXPECTED
            raise GoogleError(
                failure, f"Google's answer to the code exchange was not JSON (HTTP {status})"
            ) from None
        credentials = flow.credentials
        granted = credentials.granted_scopes or token.get("scope") or scopes
        expiry = credentials.expiry.replace(tzinfo=UTC) if credentials.expiry else None
        return Exchange(
            access_token=str(token["access_token"]),
            refresh_token=str(token["refresh_token"]) if token.get("refresh_token") else None,
            expiry=expiry,
            granted_scopes=list(granted.split() if isinstance(granted, str) else granted),
            id_claims=id_token_claims(token.get("id_token"), client_id=self.client_id),
        )

    def _flow(self, *, scopes: list[str], redirect_uri: str, state: str, code_verifier: str) -> Flow:
        return Flow.from_client_config(
            self._client_config,
            scopes=scopes,
            redirect_uri=redirect_uri,
            state=state,
            code_verifier=code_verifier,
            autogenerate_code_verifier=False,
        )


def id_token_claims(id_token: object, *, client_id: str) -> dict[str, Any]:
    """The claims of an ID token received straight from the token endpoint, or {} if it is not for us.

    OpenID Connect Core §3.1.3.7 lets a client that got the ID token directly from the token endpoint over
    TLS rely on that channel instead of the signature; the issuer and audience are still checked.
    """
    if not isinstance(id_token, str) or id_token.count(".") != 2:
        return {}
    payload = id_token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return {}
    if not isinstance(claims, dict) or claims.get("iss") not in _GOOGLE_ISSUERS:
        return {}
    audience = claims.get("aud")
    if audience != client_id and not (isinstance(audience, list) and client_id in audience):
        return {}
    return claims


def verified_email(claims: dict[str, Any]) -> str | None:
    """The email address in OpenID claims, if Google says it is verified."""
    email = claims.get("email")
    verified = claims.get("email_verified")
    if isinstance(email, str) and email and verified in (True, "true"):
        return email.lower()
    return None
