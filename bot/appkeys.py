"""Typed keys for what the aiohttp application holds, once it has started."""

from __future__ import annotations

from aiohttp import web
from slack_bolt.async_app import AsyncApp

from bot.briefing.schedule import Schedule
from bot.services import Services
from bot.slack.socket_mode import SocketMode

SERVICES = web.AppKey("services", Services)
BOLT = web.AppKey("bolt", AsyncApp)
SCHEDULE = web.AppKey("schedule", Schedule)
SOCKET_MODE = web.AppKey("socket_mode", SocketMode)
