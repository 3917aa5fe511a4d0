"""Sign in with Slack (OpenID Connect): which Slack user a browser belongs to, before Google's consent.

The browser is sent to SLACK_OIDC_AUTHORIZE_URL with scope `openid`, a state and a nonce; Slack sends it back
with a code, which the Web API method `openid.connect.token` exchanges for an ID token. The token is checked
with PyJWT: its RS256 signature against the keys at SLACK_OIDC_JWKS_URL, the issuer, our client id as the
audience, its lifetime, and the nonce of this sign-in. OpenID Connect Core §3.1.3.7 would let a token that
came straight from the token method go without the signature check; it is checked anyway, since the user it
names decides whose mailbox may be attached.
"""

from __future__ import annotations

import enum
import hmac
import logging
from urllib.parse import urlencode

import aiohttp
import jwt
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.errors import ConfigError, GmailReconnectError
from bot.reconnect.identity import SlackIdentity
from bot.signing_keys import KeysUnavailable, SigningKeys
from bot.slack.ids import is_user_id

log = logging.getLogger(__name__)

SLACK_ISSUER = "https://slack.com"
USER_CLAIM = "https://slack.com/user_id"
TEAM_CLAIM = "https://slack.com/team_id"
# Our clock may be a little off Slack's, and the token is checked the moment it is issued.
CLOCK_SKEW_SECONDS = 10
# Slack's answers of openid.connect.token that mean the code (not Slack) is the problem.
_CODE_ERRORS = frozenset({"invalid_code", "code_already_used", "code_expired", "invalid_grant_type"})


class SignInFailure(enum.StrEnum):
    """Why Slack's sign-in named no one: the code was refused, the token did not check out, or Slack failed."""

    REJECTED = "rejected"
    INVALID = "invalid"
    UNAVAILABLE = "unavailable"


class SignInError(GmailReconnectError):
    """Sign in with Slack did not yield a verified identity."""

    def __init__(self, failure: SignInFailure, message: str) -> None:
        super().__init__(message)
        self.failure = failure


class SlackSignIn:
    """Slack's authorize URL for a sign-in, and the verified identity its code stands for."""

    def __init__(self, settings: Settings, session: aiohttp.ClientSession) -> None:
        if settings.slack_client_id is None or settings.slack_client_secret is None:
            raise ConfigError(settings.missing_for_serve())
        self.client_id = settings.slack_client_id
        self._client_secret = settings.slack_client_secret
        self.authorize_url = settings.slack_oidc_authorize_url
        self.redirect_uri = settings.slack_redirect_uri
        # No token: openid.connect.token authenticates with the client id and secret (HTTP Basic).
        self.client = AsyncWebClient(base_url=settings.slack_api_url, session=session)
        self.keys = SigningKeys(settings.slack_oidc_jwks_url, session)

    def authorization_url(self, *, state: str, nonce: str, team_id: str | None) -> str:
        """Where to send the browser to sign in with Slack (in the link's workspace, when it names one)."""
        query = {
            "response_type": "code",
            "scope": "openid",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "state": state,
            "nonce": nonce,
            **({"team": team_id} if team_id else {}),
        }
        return f"{self.authorize_url}?{urlencode(query)}"

    async def identify(self, *, code: str, nonce: str) -> SlackIdentity:
        """The Slack user and team the code stands for, from a verified ID token; SignInError otherwise."""
        try:
            response = await self.client.openid_connect_token(
                client_id=self.client_id,
                client_secret=self._client_secret.reveal(),
                code=code,
                redirect_uri=self.redirect_uri,
            )
        except SlackApiError as error:
            code_error = str(error.response.get("error"))
            failure = SignInFailure.REJECTED if code_error in _CODE_ERRORS else SignInFailure.UNAVAILABLE
            raise SignInError(failure, f"openid.connect.token answered {code_error}") from None
        except (aiohttp.ClientError, TimeoutError) as error:
            raise SignInError(
                SignInFailure.UNAVAILABLE, f"openid.connect.token failed ({type(error).__name__})"
            ) from None
        id_token = response.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise SignInError(SignInFailure.INVALID, "openid.connect.token answered without an ID token")
        return await self._verified(id_token, nonce)

    async def _verified(self, id_token: str, nonce: str) -> SlackIdentity:
        try:
            key = await self.keys.key_for(id_token)
        except KeysUnavailable as error:
            raise SignInError(SignInFailure.UNAVAILABLE, f"Slack's signing keys: {error}") from None
        try:
            claims = jwt.decode(
                id_token,
                key=key,
                algorithms=["RS256"],
                audience=self.client_id,
                issuer=SLACK_ISSUER,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["exp", "iat", "aud", "iss", "sub"]},
            )
        except jwt.PyJWTError as error:
            # PyJWT's messages name the failed check, never the token.
            raise SignInError(SignInFailure.INVALID, f"the ID token was refused: {error}") from None
        if not hmac.compare_digest(str(claims.get("nonce", "")), nonce):
            raise SignInError(SignInFailure.INVALID, "the ID token's nonce is not this sign-in's")
        user_id = claims.get(USER_CLAIM)
        team_id = claims.get(TEAM_CLAIM)
        if not isinstance(user_id, str) or not is_user_id(user_id):
            raise SignInError(SignInFailure.INVALID, "the ID token names no Slack user")
        return SlackIdentity(user_id, team_id if isinstance(team_id, str) and team_id else None)
