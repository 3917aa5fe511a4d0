"""The owner check before Google's consent: Sign in with Slack proves that the browser belongs to the Slack
user (and workspace) a link was made for, so a forwarded link cannot attach someone else's mailbox.

`sign_in` starts Slack's sign-in for a link (a state of its own, with a nonce); `check` turns Slack's answer
into the verified identity of the link's owner, or the page that refuses anyone else.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping

import asyncpg

from bot.reconnect.answer import STATE_TTL, Answer
from bot.reconnect.identity import SlackIdentity
from bot.reconnect.links import LinkClaims
from bot.slack.ids import slack_actor
from bot.slack.sign_in import SignInError, SignInFailure, SlackSignIn
from storage import audit
from storage.oauth_states import OAuthState, OAuthStates, Provider

log = logging.getLogger(__name__)

# The name a page shows for a Slack user (their display name), or None when Slack cannot tell.
NameOf = Callable[[str], Awaitable[str | None]]

_SIGN_IN_FAILURES = {
    SignInFailure.REJECTED: ("sign_in_rejected", 400),
    SignInFailure.INVALID: ("sign_in_failed", 502),
    SignInFailure.UNAVAILABLE: ("slack_unavailable", 503),
}


class OwnerCheck:
    """Sends a browser to Slack's sign-in for a link, and judges who came back."""

    def __init__(
        self, *, slack: SlackSignIn, states: OAuthStates, pool: asyncpg.Pool, name_of: NameOf
    ) -> None:
        self.slack = slack
        self.states = states
        self.pool = pool
        self.name_of = name_of

    async def sign_in(self, claims: LinkClaims, *, browser_binding: str) -> Answer:
        """A fresh sign-in state for this link and browser, and the redirect to Slack."""
        state = secrets.token_urlsafe(32)
        nonce = secrets.token_urlsafe(32)
        await self.states.create(
            state=state,
            browser_binding=browser_binding,
            **claims.state_fields(),
            code_verifier=nonce,
            redirect_uri=self.slack.redirect_uri,
            scopes=["openid"],
            ttl=STATE_TTL,
            provider=Provider.SLACK,
        )
        url = self.slack.authorization_url(state=state, nonce=nonce, team_id=claims.slack_team_id)
        return Answer("redirect", 302, location=url)

    async def check(
        self, state: OAuthState, query: Mapping[str, str], *, retry_url: str | None
    ) -> SlackIdentity | Answer:
        """The owner's verified identity from Slack's redirect back, or the page to show instead."""
        error = query.get("error")
        if error == "access_denied":
            return Answer("sign_in_denied", params={"retry_url": retry_url})
        if error:
            return Answer("slack_refused", 400, params={"error": printable(error), "retry_url": retry_url})
        code = query.get("code", "")
        if not code:
            return Answer("code_missing", 400, params={"retry_url": retry_url})
        try:
            identity = await self.slack.identify(code=code, nonce=state.code_verifier)
        except SignInError as failed:
            log.warning("Slack sign-in for a link of %s failed: %s", state.slack_user_id, failed)
            page, status = _SIGN_IN_FAILURES[failed.failure]
            return Answer(page, status, params={"retry_url": retry_url})
        if not identity.is_owner_of(state.slack_user_id, state.slack_team_id):
            return await self._mismatch(state, identity)
        return identity

    async def _mismatch(self, state: OAuthState, identity: SlackIdentity) -> Answer:
        log.warning(
            "A link made for %s was opened by %s, signed in to Slack: refused before Google",
            state.slack_user_id,
            identity.slack_user_id,
        )
        await audit.append(
            self.pool,
            actor=slack_actor(identity.slack_user_id),
            action="identity.mismatch",
            slack_user_id=state.slack_user_id,
            details={
                "signed_in_as": identity.slack_user_id,
                "signed_in_team": identity.slack_team_id,
                "link_team": state.slack_team_id,
                "purpose": state.purpose,
            },
        )
        owner = await self.name_of(state.slack_user_id) or state.slack_user_id
        visitor = await self.name_of(identity.slack_user_id) or identity.slack_user_id
        return Answer(
            "identity_mismatch",
            403,
            params={"owner": owner, "visitor": visitor, "slack_team_id": state.slack_team_id},
        )


def printable(error: str) -> str:
    """An error code from a redirect, cut down to a short ASCII word before it reaches a page."""
    return "".join(ch for ch in error[:64] if ch.isalnum() or ch in "_-.")
