"""Typed keys for what the aiohttp application holds."""

from __future__ import annotations

import asyncpg
from aiohttp import web
from slack_bolt.async_app import AsyncApp

from bot.briefing.run import Briefing
from bot.briefing.schedule import Schedule
from bot.config import Settings
from bot.google.token_service import TokenService
from bot.metrics import Metrics
from bot.reconnect.flow import ReconnectFlow
from bot.reconnect.hooks import ReconnectHooks
from bot.reconnect.links import LinkSigner
from bot.slack.client import SlackUsers
from bot.slack.prompter import Prompter
from storage.accounts import Accounts
from storage.api_keys import ApiKeys

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
ACCOUNTS = web.AppKey("accounts", Accounts)
LINKS = web.AppKey("links", LinkSigner)
HOOKS = web.AppKey("reconnect_hooks", ReconnectHooks)
RECONNECT = web.AppKey("reconnect_flow", ReconnectFlow)
TOKENS = web.AppKey("token_service", TokenService)
BOLT = web.AppKey("bolt", AsyncApp)
SLACK_USERS = web.AppKey("slack_users", SlackUsers)
PROMPTER = web.AppKey("prompter", Prompter)
BRIEFING = web.AppKey("briefing", Briefing)
SCHEDULE = web.AppKey("schedule", Schedule)
METRICS = web.AppKey("metrics", Metrics)
API_KEYS = web.AppKey("api_keys", ApiKeys)
