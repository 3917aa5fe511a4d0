"""The API for other services (the briefing's skill-email, a sender registry), authenticated by API keys.

    GET  /api/v1/accounts[?status=S]                     the registry: every account's health, no tokens
    GET  /api/v1/accounts/{slack_user_id}/credentials    a working access token (refreshed if needed), or 409
    POST /api/v1/accounts/{slack_user_id}/token-failure  "this token failed": re-check, and prompt the user

Keys go in `Authorization: Bearer gmr_…`. Answers are JSON and never cached; every call is audited with the
key's name, never its secret.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bot.appkeys import SERVICES
from bot.google.health import Cause, account_summary, effective_status
from bot.google.token_service import Outcome
from bot.i18n import text
from bot.slack.ids import is_user_id
from storage import audit
from storage.api_keys import KEY_PREFIX, SHOWN_PREFIX_LENGTH, ApiKey
from storage.models import Account, Status

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
REASON_LIMIT = 1000
RETRY_AFTER_SECONDS = 60
NO_STORE = {"Cache-Control": "no-store"}

Endpoint = Callable[[web.Request, ApiKey], Awaitable[web.Response]]


def register(app: web.Application) -> None:
    """Add the API routes."""
    app.router.add_get(f"{API_PREFIX}/accounts", _keyed("accounts", list_accounts))
    app.router.add_get(
        f"{API_PREFIX}/accounts/{{slack_user_id}}/credentials", _keyed("credentials", credentials)
    )
    app.router.add_post(
        f"{API_PREFIX}/accounts/{{slack_user_id}}/token-failure", _keyed("token_failure", token_failure)
    )


def _problem(status: int, error: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": error, "message": message, **extra}, status=status, headers=NO_STORE)


def _keyed(name: str, endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The endpoint behind the API-key check, counted in the metrics by endpoint and status."""

    async def handler(request: web.Request) -> web.Response:
        key = await _authenticate(request)
        response = await endpoint(request, key) if isinstance(key, ApiKey) else key
        request.app[SERVICES].metrics.api_requests.labels(name, str(response.status)).inc()
        return response

    return handler


async def _authenticate(request: web.Request) -> ApiKey | web.Response:
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    presented = presented.strip()
    key = (
        await request.app[SERVICES].api_keys.verify(presented)
        if scheme.lower() == "bearer" and presented
        else None
    )
    if key is not None:
        return key
    # The shown prefix of a well-formed key is not secret (api-key list prints it); the rest never leaves.
    shown = presented[:SHOWN_PREFIX_LENGTH] if presented.startswith(KEY_PREFIX) else None
    await audit.append(
        request.app[SERVICES].pool,
        actor="api:unknown",
        action="api.refused",
        details={"path": request.path, "prefix": shown, "key_presented": bool(presented)},
    )
    message = (
        "This API key is not valid, or it was revoked."
        if presented
        else "Send an API key as `Authorization: Bearer gmr_…` (create one with `gmail-reconnect api-key create NAME`)."
    )
    response = _problem(401, "unauthorized", message)
    response.headers["WWW-Authenticate"] = 'Bearer realm="gmail-reconnect"'
    return response


async def _account(request: web.Request) -> Account | web.Response:
    slack_user_id = request.match_info["slack_user_id"]
    if not is_user_id(slack_user_id):
        return _problem(400, "bad_request", f"{slack_user_id!r} is not a Slack user ID (like U0123ABCD).")
    account = await request.app[SERVICES].accounts.find_by_slack_id(slack_user_id)
    if account is None:
        return _problem(404, "not_found", f"No Gmail account is linked to Slack user {slack_user_id}.")
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
        return _problem(
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


async def credentials(request: web.Request, key: ApiKey) -> web.Response:
    """A working access token for the user's Gmail, or 409 with why only the user can fix it."""
    account = await _account(request)
    if isinstance(account, web.Response):
        return account
    status, _ = effective_status(account, request.app[SERVICES].settings.required_capabilities)
    if status is Status.DISCONNECTED or status.needs_user:
        await _audit(request, key, "api.credentials", account, outcome=str(status))
        return await _needs_user(request, account, status)
    access = await request.app[SERVICES].tokens.access(account)
    if access.ok:
        await _audit(request, key, "api.credentials", account, outcome=str(access.outcome))
        assert access.expiry is not None
        return web.json_response(
            {
                "access_token": access.access_token,
                "expiry": access.expiry.isoformat(),
                "email": access.account.email,
                "scopes": access.account.scopes,
            },
            headers=NO_STORE,
        )
    await _audit(request, key, "api.credentials", account, outcome=str(access.outcome))
    if access.outcome is Outcome.UNAVAILABLE:
        return _unavailable()
    # Google just refused the refresh: the user learns it now, not tomorrow at 9.
    return await _needs_user(request, access.account, access.account.status, prompt=True)


async def token_failure(request: web.Request, key: ApiKey) -> web.Response:
    """A service says the user's token failed: check with Google, and if it is so, ask the user to reconnect."""
    reason = await _reason(request)
    if isinstance(reason, web.Response):
        return reason
    account = await _account(request)
    if isinstance(account, web.Response):
        return account
    status, _ = effective_status(account, request.app[SERVICES].settings.required_capabilities)
    if not (status is Status.DISCONNECTED or status.needs_user):
        # The stored token may look fine to us and still be refused: ask Google with a refresh.
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
        return _problem(400, "bad_request", usage)
    reason = body.get("reason") if isinstance(body, dict) else None
    if not isinstance(reason, str) or not reason.strip():
        return _problem(400, "bad_request", usage)
    if len(reason) > REASON_LIMIT:
        return _problem(400, "bad_request", f"reason is longer than {REASON_LIMIT} characters.")
    return reason.strip()


async def _needs_user(
    request: web.Request,
    account: Account,
    status: Status,
    *,
    prompt: bool = False,
    confirmed: bool | None = None,
) -> web.Response:
    """409: only the user can fix it; with `prompt`, they are asked (unless snoozed or disconnected)."""
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
    body: dict[str, Any] = {
        "error": "reconnect_required",
        "status": str(status),
        "cause": effective_status(account, request.app[SERVICES].settings.required_capabilities)[1]
        or text("en", f"slack.cause.{status}"),
        "reconnect_prompted": prompted,
    }
    if confirmed is not None:
        body["confirmed"] = confirmed
    return web.json_response(body, status=409, headers=NO_STORE)


def _unavailable() -> web.Response:
    response = _problem(
        503, "unavailable", "Google could not be asked just now; nothing was changed. Try again in a minute."
    )
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response
