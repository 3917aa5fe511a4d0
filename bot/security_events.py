"""What the bot does about Google's security events, the moment they arrive.

Everything an event changes is written, with its audit line and its jti, in one transaction before the
receiver answers 202: a 202 means it is recorded, and a jti already recorded changes nothing. What talks to
Slack or Google afterwards (the Reconnect Gmail DM, a check with Google) runs in the background.

- tokens-revoked / token-revoked: the user removed the app's access. Status `revoked`, and the DM now.
- account-disabled: status `disabled` with Google's reason; the user is told why the briefing stops.
- account-enabled, sessions-revoked, account-credential-change-required: a check with Google (a refresh),
  which records what it finds and asks the user to reconnect if only they can fix it.
- verification, and event types this bot does not know: audited only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.google import risc
from bot.google.health import Cause
from bot.google.risc import SecurityEvent, SecurityEventToken
from bot.google.token_service import Outcome, TokenService
from bot.slack.blocks.status import disabled_reason
from bot.slack.client import SlackUsers
from bot.slack.mrkdwn import slack_text
from bot.slack.prompter import Prompter
from storage.accounts import Accounts
from storage.causes import CauseCode
from storage.errors import TokenUnreadable
from storage.models import Account, Status
from storage.outbox import Message, SlackOutbox
from storage.security_events import ACTOR, SecurityEvents

log = logging.getLogger(__name__)

REVOKED_CAUSE = "You removed this app's access in your Google Account (Google's security event {event})."
DISABLED_CAUSE = (
    "Google disabled this Google account ({reason}); the bot does not use it until Google enables it."
)
ENABLED_CAUSE = "Google enabled the account again; it is being checked with Google."
KNOWN_REASONS = {
    "hijacking": "signs of a takeover (hijacking)",
    "bulk-account": "bulk activity (bulk-account)",
}
_REVOCATIONS = (risc.TOKENS_REVOKED, risc.TOKEN_REVOKED)
_CHECKS = (risc.SESSIONS_REVOKED, risc.CREDENTIAL_CHANGE_REQUIRED, risc.ACCOUNT_ENABLED)

FollowUp = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Receipt:
    """What receiving one token came to."""

    duplicate: bool
    accounts: int = 0  # how many accounts its events named


@dataclass(frozen=True)
class OwnPrompt:
    """A Reconnect Gmail DM queued on its own, outside any run (it goes first: storage.outbox.PROMPT_PRIORITY)."""

    outbox: SlackOutbox
    account_id: int | None

    async def queue_prompt(self, message: Message, *, prompt_id: int, conn: asyncpg.Connection) -> None:
        """Queue it in the transaction that opened its prompt."""
        await self.outbox.queue_prompt(conn, prompt_id=prompt_id, message=message, account_id=self.account_id)


class SecurityEventResponder:
    """Records each event and starts what follows from it."""

    def __init__(
        self,
        *,
        events: SecurityEvents,
        accounts: Accounts,
        tokens: Callable[[], TokenService],
        prompter: Callable[[], Prompter],
        slack: Callable[[], AsyncWebClient],
        users: Callable[[], SlackUsers],
        outbox: SlackOutbox | None = None,
    ) -> None:
        self.events = events
        self.outbox = outbox  # the DMs go through the delivery queue, ahead of any digest waiting there
        self.accounts = accounts
        # Built on first use, as Services builds them: a receiver that never needs Slack does without it.
        self._tokens, self._prompter, self._slack, self._users = tokens, prompter, slack, users
        self._tasks: set[asyncio.Task[None]] = set()

    async def receive(self, token: SecurityEventToken, *, received_at: float) -> Receipt:
        """Record the token's events (once per jti) and start their follow-ups in the background."""
        follow_ups: list[FollowUp] = []
        named = 0
        async with self.events.receiving(token.jti, issued_at=token.issued_at) as conn:
            if conn is None:
                log.info("Security event %s was received before: nothing to do", token.jti)
                return Receipt(duplicate=True)
            for event in token.events:
                found, actions = await self._record(conn, event, token.jti, received_at)
                named += found
                follow_ups += actions
        log.info(
            "Security event %s (%s) recorded %.0f ms after it arrived",
            token.jti,
            ", ".join(event.name for event in token.events),
            (time.monotonic() - received_at) * 1000,
        )
        for follow_up in follow_ups:
            task = asyncio.create_task(self._run(follow_up))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return Receipt(duplicate=False, accounts=named)

    async def drain(self) -> None:
        """Wait for the follow-ups already started (at shutdown, and in tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    async def _record(
        self, conn: asyncpg.Connection, event: SecurityEvent, jti: str, received_at: float
    ) -> tuple[int, list[FollowUp]]:
        accounts = await self._named(conn, event)
        details = {
            "jti": jti,
            "event": event.uri,
            "sub": event.subject_sub,
            "matched": len(accounts),
            **({"token_identifier_alg": event.token.alg} if event.token else {}),
            **({"reason": event.reason} if event.reason else {}),
            **({"verification_state": event.state} if event.state is not None else {}),
        }
        if event.uri == risc.VERIFICATION:
            log.info("Google's verification event arrived (state %r)", event.state)
        if not accounts:
            await self.events.audit(conn, event.name, account=None, details=details)
            if event.uri != risc.VERIFICATION:
                log.info("Security event %s names no account of this bot", event.name)
            return 0, []
        follow_ups: list[FollowUp] = []
        for account in accounts:
            await self.events.audit(conn, event.name, account=account, details=details)
            follow_up = await self._act(conn, event, account, received_at)
            if follow_up is not None:
                follow_ups.append(follow_up)
        return len(accounts), follow_ups

    async def _named(self, conn: asyncpg.Connection, event: SecurityEvent) -> list[Account]:
        """The accounts an event is about: by the Google account's sub, and for token-revoked, only those whose
        refresh token it names."""
        if event.subject_sub is not None:
            candidates = await self.events.accounts_by_sub(conn, event.subject_sub)
        elif event.token is not None:
            candidates = await self.events.accounts_with_refresh_tokens(conn)
        else:
            return []
        if event.token is None:
            return candidates
        named = []
        # Tokens are stored encrypted, so a refresh token is matched by reading each; these events are rare.
        for account in candidates:
            try:
                tokens = await self.accounts.read_tokens(account.id, conn=conn)
            except TokenUnreadable:
                continue
            if tokens is not None and tokens.refresh_token and event.token.matches(tokens.refresh_token):
                named.append(account)
        return named

    async def _act(
        self, conn: asyncpg.Connection, event: SecurityEvent, account: Account, received_at: float
    ) -> FollowUp | None:
        if event.uri in _REVOCATIONS:
            if account.status is Status.DISCONNECTED:
                return None  # disconnected on purpose already: nothing to ask
            updated = await self.accounts.set_status(
                account.id,
                status=Status.REVOKED,
                cause=REVOKED_CAUSE.format(event=event.name),
                code=CauseCode.ACCESS_REMOVED,
                actor=ACTOR,
                conn=conn,
            )
            return lambda: self._ask_to_reconnect(updated, Cause.ACCESS_REMOVED, received_at)
        if event.uri == risc.ACCOUNT_DISABLED:
            reason = KNOWN_REASONS.get(event.reason or "", event.reason or "no reason given")
            await self.events.note_disabled_reason(conn, account.id, event.reason or "")
            updated = await self.accounts.set_status(
                account.id,
                status=Status.DISABLED,
                cause=DISABLED_CAUSE.format(reason=reason),
                code=CauseCode.ACCOUNT_DISABLED,
                actor=ACTOR,
                conn=conn,
            )
            return lambda: self._tell_disabled(updated, event.reason)
        if event.uri in _CHECKS:
            if event.uri == risc.ACCOUNT_ENABLED and account.status is Status.DISABLED:
                await self.events.note_disabled_reason(conn, account.id, None)
                await self.accounts.set_status(
                    account.id,
                    status=Status.UNKNOWN,
                    cause=ENABLED_CAUSE,
                    code=CauseCode.NOT_CHECKED,
                    actor=ACTOR,
                    conn=conn,
                )
            return lambda: self._check(account, event.name)
        return None

    async def _ask_to_reconnect(self, account: Account, cause: Cause, received_at: float) -> None:
        if account.slack_user_id is None:
            return
        queue = OwnPrompt(self.outbox, account.id) if self.outbox is not None else None
        result = await self._prompter().send(
            account.slack_user_id, account=account, cause=cause, actor=ACTOR, queue=queue
        )
        log.info(
            "Reconnect Gmail DM for %s after a security event: %s, %.0f ms after the event arrived",
            account.slack_user_id,
            result.delivery,
            (time.monotonic() - received_at) * 1000,
        )

    async def _tell_disabled(self, account: Account, reason: str | None) -> None:
        if account.slack_user_id is None:
            return
        locale = await self._users().locale(account.slack_user_id)
        words = disabled_reason(reason, locale)
        message = slack_text(locale, "slack.disabled.dm", email=account.email or "-", reason=words)
        try:
            await self._slack().chat_postMessage(channel=account.slack_user_id, text=message)
        except SlackApiError as error:
            log.warning(
                "Could not tell %s that Google disabled the account: Slack answered %s",
                account.slack_user_id,
                error.response.get("error"),
            )

    async def _check(self, account: Account, event: str) -> None:
        access = await self._tokens().access(account.id, force_refresh=True)
        log.info("Checked account %s with Google after %s: %s", account.id, event, access.outcome)
        status = access.account.status
        cause = Cause.of(status)
        if access.outcome in (Outcome.NEEDS_USER, Outcome.LIMITED) and cause not in (
            None,
            Cause.DISCONNECTED,
        ):
            assert cause is not None
            await self._ask_to_reconnect(access.account, cause, time.monotonic())

    @staticmethod
    async def _run(follow_up: FollowUp) -> None:
        try:
            await follow_up()
        except Exception:
            log.exception("A follow-up of a security event failed")
