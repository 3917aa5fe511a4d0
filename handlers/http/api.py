"""The API for other services (the briefing's skill-email, a sender registry), authenticated by API keys.

    GET  /api/v1/accounts[?status=S]                     registry:    every account's health, no tokens
    GET  /api/v1/accounts/{slack_user_id}                registry:    one account's health, no tokens
    GET  /api/v1/accounts/{slack_user_id}/credentials    credentials: a working access token, or 409
         [?needs=read,send]                                        (for what the caller needs of the grant)
    POST /api/v1/accounts/{slack_user_id}/token-failure  report:      "this token failed": re-check, prompt

Keys go in `Authorization: Bearer gmr_…` (handlers/http/api_access.py checks them and their scopes). Answers are
JSON and never cached; every call with a valid key is audited with the key's name, never its secret.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

from aiohttp import web

from bot.appkeys import SERVICES
from bot.google.health import Cause, account_summary, effective_cause, effective_status
from bot.google.scopes import Capability, capabilities_of, missing_capabilities
from bot.google.token_service import Outcome
from bot.slack.ids import is_user_id
from handlers.http.api_access import NO_STORE, REFUSALS, RefusalLog, keyed, problem
from storage import audit
from storage.api_keys import ApiKey, Scope
from storage.causes import default_code
from storage.models import Account, Status
from storage.token_checks import claim_check

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
REASON_LIMIT = 1000
RETRY_AFTER_SECONDS = 60
# A token-failure report checks with Google at most this often per account, whichever replica it reaches.
CHECK_INTERVAL = timedelta(minutes=1)


def register(app: web.Application) -> None:
    """Add the API routes."""
    app[REFUSALS] = RefusalLog()
    accounts = f"{API_PREFIX}/accounts"
    app.router.add_get(accounts, keyed("accounts", Scope.REGISTRY, list_accounts))
    app.router.add_get(f"{accounts}/{{slack_user_id}}", keyed("account", Scope.REGISTRY, account_status))
    app.router.add_get(
        f"{accounts}/{{slack_user_id}}/credentials", keyed("credentials", Scope.CREDENTIALS, credentials)
    )
    app.router.add_post(
        f"{accounts}/{{slack_user_id}}/token-failure", keyed("token_failure", Scope.REPORT, token_failure)
    )


async def _account(request: web.Request) -> Account | web.Response:
    slack_user_id = request.match_info["slack_user_id"]
    if not is_user_id(slack_user_id):
        return problem(400, "bad_request", f"{slack_user_id!r} is not a Slack user ID (like U0123ABCD).")
    account = await request.app[SERVICES].accounts.find_by_slack_id(slack_user_id)
    if account is None:
        return problem(404, "not_found", f"No Gmail account is linked to Slack user {slack_user_id}.")
    return account


async def _audit(
    request: web.Request, key: ApiKey, action: str, account: Account | None, **details: Any
) -> None:
    await audit.append(
        request.app[SERVICES].pool,
        actor=f"api:{key.name}",
        action=action,
        account_id=account.id if account else None,
        user_id=account.user_id if account else None,
        slack_user_id=account.slack_user_id if account else None,
        details=details,
    )


async def list_accounts(request: web.Request, key: ApiKey) -> web.Response:
    """The registry: every account's health (optionally only one status), never a token."""
    wanted = request.query.get("status")
    if wanted is not None and wanted not in set(Status):
        return problem(
            400,
            "bad_request",
            f"status={wanted!r} is not a status: use one of {', '.join(map(str, Status))}.",
        )
    required = list(request.app[SERVICES].settings.required_capabilities)
    summaries = [
        account_summary(account, required) for account in await request.app[SERVICES].accounts.list()
    ]
    if wanted is not None:
        summaries = [summary for summary in summaries if summary["status"] == wanted]
    await _audit(request, key, "api.accounts_listed", None, status=wanted, count=len(summaries))
    return web.json_response({"accounts": summaries, "count": len(summaries)}, headers=NO_STORE)


async def account_status(request: web.Request, key: ApiKey) -> web.Response:
    """One account's health, as the registry lists it, never a token."""
    account = await _account(request)
    if isinstance(account, web.Response):
        return account
    summary = account_summary(account, list(request.app[SERVICES].settings.required_capabilities))
    await _audit(request, key, "api.account_read", account, status=summary["status"])
    return web.json_response(summary, headers=NO_STORE)


async def credentials(request: web.Request, key: ApiKey) -> web.Response:
    """A working access token for the user's Gmail, good for what the caller `needs` (by default everything
    the bot requires), or 409 with why only the user can fix it and which permission is missing."""
    required = request.app[SERVICES].settings.required_capabilities
    needs = _needs(request, required)
    if isinstance(needs, web.Response):
        return needs
    account = await _account(request)
    if isinstance(account, web.Response):
        return account
    status, _ = effective_status(account, required)
    # An unreadable row is read again (a local decryption, no call to Google): its key may be back. A grant
    # that lacks a permission still serves a caller that needs only what it allows.
    limited = status is Status.INSUFFICIENT_SCOPE and needs <= capabilities_of(account.scopes)
    if status is Status.DISCONNECTED or (
        status.needs_user and status is not Status.UNREADABLE and not limited
    ):
        await _audit(request, key, "api.credentials", account, outcome=str(status))
        return await _needs_user(request, account, status, needs=needs)
    access = await request.app[SERVICES].tokens.access(account)
    if all(access.allows(capability) for capability in needs):
        await _audit(request, key, "api.credentials", account, outcome=str(access.outcome))
        assert access.expiry is not None
        return web.json_response(
            {
                "access_token": access.access_token,
                "expiry": access.expiry.isoformat(),
                "email": access.account.email,
                "scopes": access.account.scopes,
                # What the bot requires that the grant lacks (the user is asked for it).
                "missing": [str(c) for c in missing_capabilities(access.account.scopes, required)],
            },
            headers=NO_STORE,
        )
    await _audit(request, key, "api.credentials", account, outcome=str(access.outcome))
    if access.outcome is Outcome.UNAVAILABLE:
        return _unavailable()
    # Google just refused the refresh, or the tokens just proved unreadable: the user learns it now, not
    # tomorrow at 9 (a row that was unreadable already was asked then, not on every call).
    now = access.account.status
    return await _needs_user(request, access.account, now, prompt=now is not status, needs=needs)


def _needs(request: web.Request, required: frozenset[Capability]) -> frozenset[Capability] | web.Response:
    """The capabilities `?needs=read,send` names (by default, all the bot requires); 400 for another word."""
    value = request.query.get("needs")
    if value is None:
        return required
    words = {word.strip() for word in value.split(",") if word.strip()}
    known = {str(capability) for capability in Capability}
    if not words or not words <= known:
        return problem(
            400,
            "bad_request",
            f"needs={value!r} is not a list of capabilities: use {', '.join(sorted(known))}.",
        )
    return frozenset(Capability(word) for word in words)


async def token_failure(request: web.Request, key: ApiKey) -> web.Response:
    """A service says the user's token failed: check with Google (at most once a minute per account), and if it
    is so, ask the user to reconnect."""
    reason = await _reason(request)
    if isinstance(reason, web.Response):
        return reason
    account = await _account(request)
    if isinstance(account, web.Response):
        return account
    status, _ = effective_status(account, request.app[SERVICES].settings.required_capabilities)
    if not (status is Status.DISCONNECTED or status.needs_user):
        # The stored token may look fine to us and still be refused: ask Google with a refresh, unless a
        # report already had it asked within the minute (a caller retrying in a loop must not hammer Google).
        claim = await claim_check(request.app[SERVICES].pool, account.id, every=CHECK_INTERVAL)
        if not claim.claimed:
            await _audit(request, key, "api.token_failure", account, reason=reason, throttled=True)
            return web.json_response(
                {
                    "accepted": True,
                    "status": str(status),
                    "checked_at": claim.checked_at.isoformat(),
                    "next_check_after": claim.next_check_after.isoformat(),
                    "message": "Google was asked about this account at checked_at; reports before "
                    "next_check_after do not ask again. Get the credentials again and retry.",
                },
                status=202,
                headers=NO_STORE,
            )
        access = await request.app[SERVICES].tokens.access(account, force_refresh=True)
        if access.ok:
            await _audit(request, key, "api.token_failure", account, reason=reason, confirmed=False)
            return web.json_response(
                {
                    "confirmed": False,
                    "status": str(Status.HEALTHY),
                    "message": "Google issued a new access token: get the credentials again and retry.",
                },
                headers=NO_STORE,
            )
        if access.outcome is Outcome.UNAVAILABLE:
            await _audit(request, key, "api.token_failure", account, reason=reason, confirmed=None)
            return _unavailable()
        account, status = access.account, access.account.status
    await _audit(
        request, key, "api.token_failure", account, reason=reason, confirmed=True, status=str(status)
    )
    return await _needs_user(request, account, status, prompt=True, confirmed=True)


async def _reason(request: web.Request) -> str | web.Response:
    usage = 'The body must be JSON like {"reason": "Gmail answered 401 to users.messages.list"}.'
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return problem(400, "bad_request", usage)
    reason = body.get("reason") if isinstance(body, dict) else None
    if not isinstance(reason, str) or not reason.strip():
        return problem(400, "bad_request", usage)
    if len(reason) > REASON_LIMIT:
        return problem(400, "bad_request", f"reason is longer than {REASON_LIMIT} characters.")
    return reason.strip()


async def _needs_user(
    request: web.Request,
    account: Account,
    status: Status,
    *,
    prompt: bool = False,
    confirmed: bool | None = None,
    needs: frozenset[Capability] | None = None,
) -> web.Response:
    """409: only the user can fix it; with `prompt`, they are asked (unless snoozed or disconnected). A grant
    that lacks a permission names it (of those the caller `needs`, by default all the bot requires)."""
    cause = Cause.of(status)
    prompted = False
    if prompt and cause is not None and cause is not Cause.DISCONNECTED and account.slack_user_id:
        sent = await request.app[SERVICES].prompter.send(
            account.slack_user_id, account=account, cause=cause, actor="api"
        )
        prompted = sent.prompt is not None and sent.prompt.has_message
    elif account.slack_user_id:
        current = await request.app[SERVICES].prompts.open_for(account.slack_user_id)
        prompted = current is not None and current.has_message
    code, detail = effective_cause(account, request.app[SERVICES].settings.required_capabilities)
    body: dict[str, Any] = {
        "error": "reconnect_required",
        "status": str(status),
        "cause": str(code or default_code(status)),  # a stable code (README: "Causes")
        "cause_detail": detail,  # the words that came with it, in English (Google's answer, say)
        "reconnect_prompted": prompted,
    }
    if status is Status.INSUFFICIENT_SCOPE and account.has_refresh_token:
        wanted = needs if needs is not None else request.app[SERVICES].settings.required_capabilities
        body["missing"] = [str(c) for c in missing_capabilities(account.scopes, wanted)]
    if confirmed is not None:
        body["confirmed"] = confirmed
    return web.json_response(body, status=409, headers=NO_STORE)


def _unavailable() -> web.Response:
    response = problem(
        503, "unavailable", "Google could not be asked just now; nothing was changed. Try again in a minute."
    )
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response
