"""The self-service reconnection: from a Slack link to Google's consent screen, and back to stored tokens.

`start` turns a link into a fresh OAuth state and Google's URL. Unless IDENTITY_CHECK=off, it first makes the
browser prove with Sign in with Slack that it belongs to the Slack user the link names (`signed_in` finishes
that step), so a forwarded link cannot attach someone else's mailbox; a browser that proved it before carries
the identity in a cookie and goes straight to Google. `finish` checks Google's callback, exchanges the code,
checks what was granted and whose mailbox it is, stores the tokens and fires the reconnection hooks.
Each returns an `Answer` (a redirect or a page to show); nothing here knows about HTTP.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from bot.config import Settings
from bot.google.client import GoogleClient
from bot.google.consent import Consent, google_subject, verified_email
from bot.google.errors import Failure, GoogleError
from bot.google.health import lacking_cause, scope_code
from bot.google.scopes import capabilities_of, missing_capabilities, scopes_to_ask
from bot.reconnect.answer import STATE_TTL, Answer
from bot.reconnect.hooks import Reconnected, ReconnectHooks
from bot.reconnect.identity import SlackIdentity
from bot.reconnect.links import LinkClaims, LinkError, LinkSigner, Purpose
from bot.reconnect.ownership import OwnerCheck, printable
from bot.slack.ids import slack_actor
from storage.accounts import Accounts
from storage.errors import Conflict, TokenUnreadable
from storage.models import Account, Status, TokenGrant
from storage.oauth_states import OAuthState, OAuthStates, Provider, Rejection, StateRejected

log = logging.getLogger(__name__)


class ReconnectFlow:
    """The consent flow's two steps, over the stores, Google and the hooks."""

    def __init__(
        self,
        settings: Settings,
        *,
        accounts: Accounts,
        states: OAuthStates,
        links: LinkSigner,
        consent: Consent,
        google: GoogleClient,
        hooks: ReconnectHooks,
        owners: OwnerCheck | None,
    ) -> None:
        self.settings = settings
        # None with IDENTITY_CHECK=off: links then go straight to Google.
        self.owners = owners
        self.accounts = accounts
        self.states = states
        self.links = links
        self.consent = consent
        self.google = google
        self.hooks = hooks

    async def start(
        self, link_token: str | None, *, browser_binding: str, identity: SlackIdentity | None
    ) -> Answer:
        """Where a link leads this browser: Slack's sign-in when it has not proved it is the link's owner, else
        Google's consent with a fresh state; a link that already reconnected leads nowhere new."""
        if not link_token:
            return Answer("link_missing", 400)
        try:
            claims = self.links.verify(link_token)
        except LinkError as error:
            return Answer("link_expired" if error.expired else "link_invalid", 400)
        if await self.states.link_used(claims.link_id):
            return await self._used_link(claims, identity)
        if self.owners is not None and not (
            identity is not None and identity.is_owner_of(claims.slack_user_id, claims.slack_team_id)
        ):
            return await self.owners.sign_in(claims, browser_binding=browser_binding)
        return await self._to_google(claims, browser_binding)

    async def signed_in(self, query: Mapping[str, str], *, browser_binding: str | None) -> Answer:
        """Handle Slack's redirect back from its sign-in: on to Google for the link's owner, a refusal for
        anyone else; nothing is stored either way."""
        state_value = query.get("state", "")
        if not state_value:
            return Answer("state_missing", 400)
        try:
            state = await self.states.consume(
                state=state_value, browser_binding=browser_binding, provider=Provider.SLACK
            )
        except StateRejected as rejected:
            return await self._rejected(rejected)
        answer = await self._identified(state, query, browser_binding or "")
        await self.states.finish(state.id, outcome="identified" if answer.location else answer.page)
        log.info("Slack sign-in for a link of %s ended: %s", state.slack_user_id, answer.page)
        return answer

    async def _identified(self, state: OAuthState, query: Mapping[str, str], browser_binding: str) -> Answer:
        assert self.owners is not None, "a Slack state exists only when identities are checked"
        checked = await self.owners.check(state, query, retry_url=self._retry_url(state))
        if not isinstance(checked, SlackIdentity):
            return checked
        claims = claims_of(state)
        if claims is None:
            return Answer("link_expired", 400)
        if await self.states.link_used(claims.link_id):
            return replace(await self._used_link(claims, checked), identity=checked)
        return replace(await self._to_google(claims, browser_binding), identity=checked)

    async def _used_link(self, claims: LinkClaims, identity: SlackIdentity | None) -> Answer:
        # The owner's second click on a link that just worked is told so; a link never starts a second flow,
        # and only its owner learns which mailbox it connected.
        owner = self.owners is None or (
            identity is not None and identity.is_owner_of(claims.slack_user_id, claims.slack_team_id)
        )
        account = await self.accounts.find_by_slack_id(claims.slack_user_id)
        if owner and account is not None and account.status is Status.HEALTHY:
            return _already_connected(account, claims.slack_team_id)
        return Answer("link_used", 400, params={"slack_team_id": claims.slack_team_id})

    async def _to_google(self, claims: LinkClaims, browser_binding: str) -> Answer:
        account = await self.accounts.find_by_slack_id(claims.slack_user_id)
        state = secrets.token_urlsafe(32)
        code_verifier = secrets.token_urlsafe(64)
        scopes = self._scopes_for(account, claims.purpose)
        redirect_uri = self.settings.oauth_redirect_uri
        await self.states.create(
            state=state,
            browser_binding=browser_binding,
            **claims.state_fields(),
            code_verifier=code_verifier,
            redirect_uri=redirect_uri,
            scopes=scopes,
            ttl=STATE_TTL,
        )
        hint = account.email if account is not None and claims.purpose is Purpose.RECONNECT else None
        url = self.consent.authorization_url(
            state=state,
            code_verifier=code_verifier,
            scopes=scopes,
            redirect_uri=redirect_uri,
            login_hint=hint,
        )
        return Answer("redirect", 302, location=url)

    def _scopes_for(self, account: Account | None, purpose: Purpose) -> list[str]:
        """Every configured scope; but for a working grant that lacks only some permission, only the scopes
        that grant it (incremental authorization): Google keeps the earlier grant with include_granted_scopes,
        so its screen asks just for what is missing, and its token answer names the union."""
        configured = list(self.settings.google_scopes)
        if (
            account is None
            or purpose is not Purpose.RECONNECT
            or account.status is not Status.INSUFFICIENT_SCOPE
            or not account.has_refresh_token
            or not capabilities_of(account.scopes) & self.settings.required_capabilities
        ):
            return configured
        lacking = missing_capabilities(account.scopes, self.settings.required_capabilities)
        return scopes_to_ask(configured, lacking) if lacking else configured

    async def finish(self, query: Mapping[str, str], *, browser_binding: str | None) -> Answer:
        """Handle Google's redirect back: every outcome is a page; tokens are stored only for a grant of the
        right mailbox that allows something the bot needs (what it lacks is then named)."""
        state_value = query.get("state", "")
        if not state_value:
            return Answer("state_missing", 400)
        try:
            state = await self.states.consume(state=state_value, browser_binding=browser_binding)
        except StateRejected as rejected:
            return await self._rejected(rejected)
        answer, account_id = await self._complete(state, query, state_value)
        await self.states.finish(state.id, outcome=answer.page, account_id=account_id)
        log.info("Consent callback for Slack user %s ended: %s", state.slack_user_id, answer.page)
        return answer

    async def _rejected(self, rejected: StateRejected) -> Answer:
        state = rejected.state
        if rejected.reason is Rejection.USED and state is not None and state.outcome == "connected":
            account = await self.accounts.find_by_slack_id(state.slack_user_id)
            if account is not None and account.status is Status.HEALTHY:
                return _already_connected(account, state.slack_team_id)
        retry = self._retry_url(state) if state is not None else None
        status = {Rejection.UNKNOWN: 400, Rejection.WRONG_BROWSER: 403}.get(rejected.reason, 400)
        return Answer(f"state_{rejected.reason}", status, params={"retry_url": retry})

    async def _complete(
        self, state: OAuthState, query: Mapping[str, str], state_value: str
    ) -> tuple[Answer, int | None]:
        retry = self._retry_url(state)
        error = query.get("error")
        if error == "access_denied":
            return Answer("denied", params={"retry_url": retry}), None
        if error:
            return Answer("google_refused", 400, params={"error": printable(error), "retry_url": retry}), None
        code = query.get("code", "")
        if not code:
            return Answer("code_missing", 400, params={"retry_url": retry}), None
        try:
            exchange = await self.consent.exchange(
                code=code,
                state=state_value,
                code_verifier=state.code_verifier,
                scopes=state.scopes or list(self.settings.google_scopes),
                redirect_uri=state.redirect_uri or self.settings.oauth_redirect_uri,
            )
        except GoogleError as failure:
            log.warning("Code exchange for Slack user %s failed: %s", state.slack_user_id, failure)
            return _exchange_failed(failure, retry), None

        # Granular consent: a user may untick boxes. A grant that allows something the bot needs is kept (a
        # read-only grant still brings the digest) and its status names what is missing; one that allows
        # nothing the bot needs is not stored.
        required = self.settings.required_capabilities
        lacking = missing_capabilities(exchange.granted_scopes, required)
        if not capabilities_of(exchange.granted_scopes) & required:
            return Answer(
                "missing_permissions", 400, params={"missing": [str(c) for c in lacking], "retry_url": retry}
            ), None

        email = verified_email(exchange.id_claims) or await self._userinfo_email(exchange.access_token)
        account = await self.accounts.find_by_slack_id(state.slack_user_id)
        adopt_user_id = None
        if account is None and email:
            unlinked = await self.accounts.find_unlinked_by_email(email)
            if len(unlinked) == 1:
                # The user just proved they own this mailbox: take over its existing row instead of a new one.
                account, adopt_user_id = unlinked[0], unlinked[0].user_id
        known = account.email.lower() if account is not None and account.email else None
        if known and state.purpose != Purpose.SWITCH:
            if email is None:
                return Answer("identity_unknown", 502, params={"retry_url": retry}), None
            if email != known:
                return Answer(
                    "wrong_account",
                    409,
                    params={
                        "expected": known,
                        "got": email,
                        "switch_url": self._retry_url(state, purpose=Purpose.SWITCH),
                        "retry_url": retry,
                    },
                ), None
        # An unreadable row's refresh token cannot be kept: it counts as none.
        keeps = account is not None and account.has_refresh_token and account.status is not Status.UNREADABLE
        if not exchange.refresh_token and not keeps:
            return Answer("no_refresh_token", 502, params={"retry_url": retry}), None
        try:
            stored = await self.accounts.store_tokens(
                grant=TokenGrant(
                    exchange.access_token,
                    exchange.refresh_token,
                    exchange.expiry,
                    exchange.granted_scopes,
                    refresh_token_expiry=exchange.refresh_token_expiry,
                ),
                actor=slack_actor(state.slack_user_id),
                slack_user_id=state.slack_user_id,
                user_id=adopt_user_id,
                metadata={
                    "connected_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    **({"email": email} if email else {}),
                    # The Google account's id, by which Google's security events name it.
                    **({"google_sub": sub} if (sub := google_subject(exchange.id_claims)) else {}),
                },
                oauth_config=await self._oauth_config(account),
                status=Status.INSUFFICIENT_SCOPE if lacking else Status.HEALTHY,
                cause=lacking_cause(lacking) if lacking else None,
                code=scope_code(lacking) if lacking else None,
                action="tokens.reconnected",
                details={
                    "purpose": state.purpose,
                    "email": email,
                    "previous_status": str(account.status) if account is not None else None,
                    "adopted_row": adopt_user_id is not None,
                },
            )
        except Conflict as conflict:
            log.warning("Could not store tokens for Slack user %s: %s", state.slack_user_id, conflict)
            return Answer("store_conflict", 409), None
        except TokenUnreadable as unreadable:  # no new refresh token, and the stored one cannot be read
            log.warning("Kept no refresh token for Slack user %s: %s", state.slack_user_id, unreadable.reason)
            return Answer("no_refresh_token", 502, params={"retry_url": retry}), None
        self.hooks.fire(
            Reconnected(
                slack_user_id=state.slack_user_id,
                slack_team_id=state.slack_team_id,
                account=stored,
                email=email,
                previous_status=account.status if account is not None else None,
                purpose=state.purpose,
                link_id=state.link_id,
            )
        )
        if lacking:
            # The link stays usable (it did not "connect"): the page's button asks Google for the rest only.
            params = {"email": email or "", "missing": [str(c) for c in lacking], "retry_url": retry}
            return Answer(
                "connected_partly", params={**params, "slack_team_id": state.slack_team_id}
            ), stored.id
        return Answer(
            "connected", params={"email": email or "", "slack_team_id": state.slack_team_id}
        ), stored.id

    async def _userinfo_email(self, access_token: str) -> str | None:
        try:
            return verified_email(await self.google.userinfo(access_token))
        except GoogleError as error:
            log.warning("Could not read the Google account's email from userinfo: %s", error)
            return None

    async def _oauth_config(self, account: Account | None) -> dict[str, Any]:
        config: dict[str, Any] = {
            "client_id": self.settings.google_client_id,
            "auth_uri": self.settings.google_auth_uri,
            "token_uri": self.settings.google_token_uri,
        }
        # Legacy rows carry their client's secret, and services that still refresh from the row need the pair
        # to match; keep that shape for them, and leave the secret out of rows that never had one. With
        # TOKEN_ENCRYPTION_KEYS set, no service can refresh from the row itself (the refresh token is
        # encrypted), so our secret is not written there in the clear: the bot refreshes with its own settings.
        if (
            self.accounts.codec.cipher is None
            and account is not None
            and await self.accounts.oauth_client(account.id) is not None
        ):
            assert self.settings.google_client_secret is not None
            config["client_secret"] = self.settings.google_client_secret.reveal()
        return config

    def _retry_url(self, state: OAuthState, *, purpose: Purpose | None = None) -> str | None:
        """The link this flow started from (same claims, so the same link), if it is still valid."""
        claims = claims_of(state, purpose=purpose)
        return self.links.url(claims) if claims is not None else None


def claims_of(state: OAuthState, *, purpose: Purpose | None = None) -> LinkClaims | None:
    """The claims of the link a flow started from, while that link is valid."""
    if state.link_id is None or state.link_expires_at is None or state.link_expires_at <= datetime.now(UTC):
        return None
    return LinkClaims(
        slack_user_id=state.slack_user_id,
        slack_team_id=state.slack_team_id,
        purpose=purpose or Purpose(state.purpose),
        expires_at=state.link_expires_at,
        link_id=state.link_id,
    )


def new_browser_binding() -> str:
    """A random value for the browser-binding cookie."""
    return secrets.token_urlsafe(32)


def _exchange_failed(failure: GoogleError, retry: str | None) -> Answer:
    if failure.failure is Failure.INVALID_GRANT:
        return Answer("code_rejected", 400, params={"retry_url": retry})
    if failure.failure is Failure.TRANSIENT:
        return Answer("google_unavailable", 503, params={"retry_url": retry})
    return Answer("google_error", 502, params={"retry_url": retry})


def _already_connected(account: Account, slack_team_id: str | None) -> Answer:
    return Answer("already_connected", params={"email": account.email or "", "slack_team_id": slack_team_id})
