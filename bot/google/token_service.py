"""The one place that answers "give me valid credentials for this account", refreshing safely when needed.

A refresh is single-flight: concurrent callers in one process share one task per account, and processes
serialise on a transaction-scoped advisory lock, re-reading the row once they hold it, so one expiring account
costs one call to Google however many callers ask at once.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg

from bot.config import Settings
from bot.errors import ConfigError
from bot.google.client import GoogleClient
from bot.google.consent import GoogleCerts, google_subject, verify_id_token
from bot.google.errors import Failure, GoogleError
from bot.google.health import (
    TESTING_TOKEN_LIFETIME,
    access_ended_cause,
    granted_access_ended,
    lacking_cause,
    scope_code,
)
from bot.google.scopes import Capability, capabilities_of, missing_capabilities
from bot.metrics import Metrics
from storage.accounts import Accounts
from storage.causes import CauseCode, stored_code
from storage.errors import TokenUnreadable
from storage.models import Account, Status, StoredTokens, TokenGrant, TokenSet

log = logging.getLogger(__name__)

ACTOR = "token-service"
# How far past the end of time-based access an invalid_grant is still put down to it (clocks differ).
_ACCESS_END_SKEW = timedelta(minutes=5)


class Outcome(enum.StrEnum):
    """What a request for credentials came to."""

    VALID = "valid"  # the stored access token is good for a while
    REFRESHED = "refreshed"  # a new access token was fetched and stored
    NEEDS_USER = "needs_user"  # only the user, reconnecting, can fix it; the status says why
    # A working access token whose grant lacks a required permission (insufficient_scope says which): it
    # can do what was granted, e.g. read the digest, while the user is asked for the rest.
    LIMITED = "limited"
    UNAVAILABLE = "unavailable"  # Google could not be asked right now; the status is unchanged


@dataclass(frozen=True)
class Access:
    """The typed answer of `TokenService.access`."""

    outcome: Outcome
    account: Account
    access_token: str | None = field(default=None, repr=False)
    expiry: datetime | None = None
    cause: str | None = None

    @property
    def ok(self) -> bool:
        """True when `access_token` can be used now, for everything the bot needs."""
        return self.outcome in (Outcome.VALID, Outcome.REFRESHED)

    def allows(self, capability: Capability) -> bool:
        """True when `access_token` can be used now for `capability` (a limited grant may allow it)."""
        usable = self.ok or self.outcome is Outcome.LIMITED
        return usable and self.access_token is not None and capability in capabilities_of(self.account.scopes)

    @property
    def code(self) -> CauseCode | None:
        """Why only the user can fix it (NEEDS_USER), or what a limited grant lacks (LIMITED): the cause recorded
        on the account; `cause` has its words."""
        return stored_code(self.account) if self.outcome in (Outcome.NEEDS_USER, Outcome.LIMITED) else None


@dataclass(frozen=True)
class Disconnection:
    """What `disconnect` did."""

    account: Account
    revoked_at_google: bool
    had_tokens: bool
    cause: str | None = None


class TokenService:
    """Valid credentials on demand; refresh failures classified and recorded on the account."""

    def __init__(
        self,
        accounts: Accounts,
        google: GoogleClient,
        *,
        client_id: str,
        client_secret: str,
        required: frozenset[Capability],
        testing_mode: bool = False,
        refresh_margin: timedelta = timedelta(minutes=5),
        metrics: Metrics | None = None,
        certs_uri: str | None = None,
    ) -> None:
        self.certs_uri = certs_uri  # where ID tokens are verified; None: a refresh's ID token is not read
        self.certs = GoogleCerts()  # the certificates there, kept for their max-age
        self.accounts = accounts
        self.metrics = metrics or Metrics()
        self.google = google
        self.client_id = client_id
        self._client_secret = client_secret
        self.required = required
        self.testing_mode = testing_mode
        self.refresh_margin = refresh_margin
        self._in_flight: dict[int, asyncio.Task[Access]] = {}

    async def access(
        self, account: Account | int, *, force_refresh: bool = False, stored: StoredTokens | None = None
    ) -> Access:
        """An access token for the account, refreshed if it is missing or expires within the margin.

        `stored`: the account's token_data, read along with `account` (else it is read now).
        """
        current = account if isinstance(account, Account) else await self.accounts.get(account)
        if current.status is Status.DISABLED and not force_refresh:
            # Google disabled the Google account: its tokens are not used until a check finds it enabled.
            return Access(Outcome.NEEDS_USER, current, cause=current.status_cause)

        if not force_refresh:
            try:
                if stored is not None:
                    tokens = self.accounts.unpack(current, stored)
                else:
                    tokens = await self.accounts.read_tokens(current.id)
            except TokenUnreadable as error:
                return await self._unreadable(current, error)
            # A row marked unreadable that reads again (its key is back) is checked with Google, which
            # records its status anew.
            if self._fresh(tokens) and current.status is not Status.UNREADABLE:
                assert tokens is not None
                return Access(_usable(current), current, tokens.access_token, tokens.expiry)
        task = self._in_flight.get(current.id)
        if task is None:
            task = asyncio.create_task(self._refresh_once(current.id, force=force_refresh))
            self._in_flight[current.id] = task
            task.add_done_callback(lambda _: self._in_flight.pop(current.id, None))
        # Shielded: a caller that gives up must not cancel the refresh other callers are waiting on.
        return await asyncio.shield(task)

    async def disconnect(self, account_id: int, *, actor: str) -> Disconnection:
        """Revoke the account's grant at Google, wipe its tokens and mark it disconnected."""
        async with self.accounts.refresh_locked(account_id) as conn:
            revoked, cause, unreadable = False, None, False
            try:
                tokens = await self.accounts.read_tokens(account_id, conn=conn)
            except TokenUnreadable as error:
                # Tokens that cannot be read cannot be revoked either; they are wiped all the same.
                tokens, unreadable = None, True
                cause = (
                    f"The stored tokens could not be decrypted ({error.reason}), so Google was not asked to "
                    "revoke the access; remove it at myaccount.google.com/permissions."
                )
            token = (tokens.refresh_token or tokens.access_token) if tokens else None
            if token:
                try:
                    revoked = await self.google.revoke(token)
                except GoogleError as error:
                    cause = f"Google could not revoke the access ({error}); remove it at myaccount.google.com/permissions."
                    log.warning(
                        "Disconnecting account %s: revocation at Google failed: %s", account_id, error
                    )
            had_tokens = token is not None or unreadable
            account = await self.accounts.clear_tokens(
                account_id,
                status=Status.DISCONNECTED,
                cause=f"Disconnected by {actor}.",
                code=CauseCode.DISCONNECTED_BY_USER
                if actor.startswith("slack:")
                else CauseCode.DISCONNECTED_BY_ADMIN,
                actor=actor,
                details={
                    "revoked_at_google": revoked,
                    "had_tokens": had_tokens,
                    **({"unreadable": True} if unreadable else {}),
                },
                conn=conn,
            )
        return Disconnection(account, revoked, had_tokens, cause)

    async def _unreadable(
        self, account: Account, error: TokenUnreadable, *, conn: asyncpg.Connection | None = None
    ) -> Access:
        """NEEDS_USER for a row whose tokens cannot be decrypted, marked unreadable once (not on every read)."""
        cause = f"The stored tokens cannot be decrypted: {error.reason}. Reconnecting stores new ones."
        if account.status is not Status.UNREADABLE or account.status_cause != cause:
            log.warning(
                "The tokens of account %s (%s) cannot be read: %s", account.id, account.user_id, error.reason
            )
            account = await self.accounts.set_status(
                account.id,
                status=Status.UNREADABLE,
                cause=cause,
                code=CauseCode.TOKENS_UNREADABLE,
                actor=ACTOR,
                conn=conn,
            )
        return Access(Outcome.NEEDS_USER, account, cause=cause)

    async def _needs_user(
        self, account_id: int, status: Status, cause: str, code: CauseCode, *, conn: asyncpg.Connection
    ) -> Access:
        """Store why only the user can fix the account now, and say so."""
        account = await self.accounts.set_status(
            account_id, status=status, cause=cause, code=code, actor=ACTOR, conn=conn
        )
        return Access(Outcome.NEEDS_USER, account, cause=cause)

    def _fresh(self, tokens: TokenSet | None) -> bool:
        if tokens is None or not tokens.access_token or tokens.expiry is None:
            return False
        return tokens.expiry > datetime.now(UTC) + self.refresh_margin

    async def _refresh_once(self, account_id: int, *, force: bool) -> Access:
        async with self.accounts.refresh_locked(account_id) as conn:
            # Another process may have refreshed while we waited for the lock: re-read under it.
            account, stored, client = await self.accounts.for_refresh(account_id, conn=conn)
            try:
                tokens = self.accounts.unpack(account, stored)
            except TokenUnreadable as error:
                return await self._unreadable(account, error, conn=conn)
            if not force and self._fresh(tokens) and account.status is not Status.UNREADABLE:
                assert tokens is not None
                return Access(_usable(account), account, tokens.access_token, tokens.expiry)
            if tokens is None and account.status is Status.DISCONNECTED:
                # Disconnected on purpose: say so, rather than calling the tokens "missing".
                return Access(Outcome.NEEDS_USER, account, cause=account.status_cause)
            if tokens is None or not tokens.refresh_token:
                cause = "No Gmail token is stored." if tokens is None else "No refresh token is stored."
                code = CauseCode.TOKEN_MISSING if tokens is None else CauseCode.REFRESH_TOKEN_MISSING
                return await self._needs_user(account_id, Status.MISSING, cause, code, conn=conn)
            if granted_access_ended(account, datetime.now(UTC)):
                # Google ends the refresh token when the granted time runs out: no need to ask it.
                return await self._needs_user(
                    account_id,
                    Status.EXPIRED,
                    access_ended_cause(account),
                    CauseCode.ACCESS_TIME_ENDED,
                    conn=conn,
                )
            access = await self._refresh(conn, account, tokens.refresh_token, client)
        self.metrics.refreshes.labels(str(access.outcome)).inc()
        return access

    async def _refresh(
        self,
        conn: asyncpg.Connection,
        account: Account,
        refresh_token: str,
        client: tuple[str, str] | None,
    ) -> Access:
        """Refresh with the OAuth client recorded on the row (`client`), or else the bot's."""
        client_id, client_secret = client or (self.client_id, self._client_secret)
        try:
            response = await self.google.retrying(
                lambda: self.google.refresh(
                    refresh_token=refresh_token, client_id=client_id, client_secret=client_secret
                )
            )
        except GoogleError as error:
            return await self._failed(conn, account, error, legacy_client=client_id != self.client_id)
        scopes = response.scopes if response.scopes is not None else account.scopes
        lacking = missing_capabilities(scopes, self.required)
        status, cause = Status.HEALTHY, None
        if lacking:
            status, cause = Status.INSUFFICIENT_SCOPE, lacking_cause(lacking)
        stored = await self.accounts.store_tokens(
            grant=TokenGrant(
                response.access_token,
                response.refresh_token,
                response.expiry,
                response.scopes,
                refresh_token_expiry=response.refresh_token_expiry,
            ),
            actor=ACTOR,
            user_id=account.user_id,
            status=status,
            cause=cause,
            code=scope_code(lacking) if lacking else None,
            action="tokens.refreshed",
            refreshed=True,
            metadata=await self._google_sub(account, response.id_token, client_id),
            conn=conn,
        )
        log.info("Refreshed the access token of account %s (%s)", account.id, account.user_id)
        if lacking:
            return Access(Outcome.LIMITED, stored, response.access_token, response.expiry, cause=cause)
        return Access(Outcome.REFRESHED, stored, response.access_token, response.expiry)

    async def _google_sub(self, account: Account, id_token: str | None, client_id: str) -> dict[str, str]:
        """{"google_sub": …} from a refresh's verified ID token, for a row that does not know its Google account
        yet (connected before it was stored); {} otherwise. Google's security events name accounts by it."""
        if not id_token or self.certs_uri is None or account.metadata.get("google_sub"):
            return {}
        claims = await asyncio.to_thread(
            verify_id_token,
            id_token,
            client_id=client_id,
            certs_uri=self.certs_uri,
            timeout=10,
            certs=self.certs,
        )
        sub = google_subject(claims)
        return {"google_sub": sub} if sub else {}

    async def _failed(
        self, conn: asyncpg.Connection, account: Account, error: GoogleError, *, legacy_client: bool
    ) -> Access:
        if error.failure is Failure.INVALID_GRANT:
            status, code = self._invalid_grant(account, error)
        elif error.failure is Failure.REAUTH_REQUIRED:
            status, code = Status.EXPIRED, CauseCode.REAUTH_REQUIRED  # a Workspace policy: sign in again
        elif error.failure is Failure.CLIENT_REJECTED and legacy_client:
            # The token's own OAuth client is gone or refused; reconnecting issues one under the bot's client.
            status, code = Status.EXPIRED, CauseCode.CLIENT_REJECTED
        else:
            if error.failure is Failure.CLIENT_REJECTED:
                log.error(
                    "Google rejects this bot's OAuth client (%s): check GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET",
                    error.error,
                )
            else:
                log.warning("Could not refresh account %s now: %s", account.id, error)
            return Access(Outcome.UNAVAILABLE, account, cause=f"Could not check with Google now: {error}")
        # Google's own words ("invalid_grant: Token has been expired or revoked."); but Google says nothing of
        # the time the user granted running out, so that is said in the bot's words (and when).
        cause = access_ended_cause(account) if code is CauseCode.ACCESS_TIME_ENDED else str(error)
        updated = await self.accounts.set_status(
            account.id, status=status, cause=cause, code=code, actor=ACTOR, conn=conn
        )
        log.info("Account %s needs its user to reconnect: %s (%s)", account.id, code, cause)
        return Access(Outcome.NEEDS_USER, updated, cause=cause)

    def _invalid_grant(self, account: Account, error: GoogleError) -> tuple[Status, CauseCode]:
        if granted_access_ended(account, datetime.now(UTC) + _ACCESS_END_SKEW):
            return Status.EXPIRED, CauseCode.ACCESS_TIME_ENDED
        issued = account.refresh_token_issued_at
        if self.testing_mode and issued is not None and datetime.now(UTC) - issued >= TESTING_TOKEN_LIFETIME:
            # Google ends a testing-mode app's refresh tokens after 7 days.
            return Status.EXPIRED, CauseCode.TESTING_MODE_EXPIRED
        # Google's usual text, "Token has been expired or revoked.", does not say which (the password may have
        # changed, access may have been removed, or the token went unused for months); only an answer that
        # speaks of revocation alone is recorded as revoked.
        description = str(error).lower()
        status = (
            Status.REVOKED if "revoked" in description and "expired" not in description else Status.EXPIRED
        )
        return status, CauseCode.REFRESH_TOKEN_REVOKED


def _usable(account: Account) -> Outcome:
    """What a fresh stored access token is for this account: valid, or limited to what its grant allows."""
    return Outcome.LIMITED if account.status is Status.INSUFFICIENT_SCOPE else Outcome.VALID


def build_token_service(
    settings: Settings, accounts: Accounts, google: GoogleClient, *, metrics: Metrics | None = None
) -> TokenService:
    """The token service for these settings, calling Google through `google`."""
    if settings.google_client_id is None or settings.google_client_secret is None:
        raise ConfigError(settings.missing_for_serve())
    return TokenService(
        accounts,
        google,
        client_id=settings.google_client_id,
        client_secret=settings.google_client_secret.reveal(),
        required=settings.required_capabilities,
        testing_mode=settings.google_testing_mode,
        metrics=metrics,
        certs_uri=settings.google_certs_uri,
    )
