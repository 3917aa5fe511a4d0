"""Every page of the consent flow, laid out by a real browser: headless Chromium, driven over the DevTools
protocol, on a phone (390 px) and a desktop (1280 px), in Korean and English, with long addresses in it. A page
fails when anything on it reaches past the right edge of the screen (the page would scroll sideways), or when it
asks for anything its Content-Security-Policy refuses (it would be missing in every browser).

Skipped where `chromium` is not installed; `.ci/run` installs it."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.appkeys import SERVICES
from bot.i18n import LOCALES, catalogue
from handlers.http.pages import SECURITY_HEADERS, render
from storage.models import Status
from tests.fakes.google import FakeGoogle
from tests.fakes.slack import FakeSlack
from tests.helpers import Serve

START_TIMEOUT = 30.0  # seconds for Chromium to open its DevTools port
CALL_TIMEOUT = 15.0  # seconds for any one DevTools call or event
_ACTIVE_PORT = re.compile(r"(?P<port>\d+)\n(?P<path>/devtools/browser/[0-9a-f-]{36})\s*$")


@dataclass(frozen=True)
class Viewport:
    name: str
    width: int
    height: int
    mobile: bool


PHONE = Viewport("phone", 390, 844, mobile=True)
DESKTOP = Viewport("desktop", 1280, 800, mobile=False)
VIEWPORTS = (PHONE, DESKTOP)


def address(local: str, domain: str) -> str:
    """An email address of exactly 60 characters, the local part padded out."""
    padding = 60 - len(local) - len(domain) - 1
    return f"{local}{'.office' * (padding // 7)}{'x' * (padding % 7)}@{domain}"


EXPECTED = address("kim.jiwoo.finance.accounting", "example-holdings.co.kr")
GOT = address("jiwoo.kim.personal.mailbox", "gmail.com")
RETRY = "https://reconnect.example.com/oauth/google/start?t=" + "eyJ1IjoiVTAxMjM0NTY3ODkiLCJ0IjoiVDAxIn0" * 4
TEAM = "T0123456789"

# What the consent flow gives each page (bot/reconnect/flow.py), with the longest values it can carry.
PAGES: dict[str, dict[str, Any]] = {
    "connected": {"email": EXPECTED, "slack_team_id": TEAM},
    "connected_partly": {"email": EXPECTED, "missing": ["send"], "retry_url": RETRY, "slack_team_id": TEAM},
    "already_connected": {"email": EXPECTED, "slack_team_id": TEAM},
    "link_missing": {},
    "link_invalid": {},
    "link_expired": {},
    "state_missing": {},
    "state_unknown": {"retry_url": RETRY},
    "state_wrong_browser": {"retry_url": RETRY},
    "state_used": {"retry_url": RETRY},
    "state_expired": {"retry_url": RETRY},
    "denied": {"retry_url": RETRY},
    "google_refused": {"error": "access_denied_" + "x" * 50, "retry_url": RETRY},  # cut to 64 characters
    "code_missing": {"retry_url": RETRY},
    "code_rejected": {"retry_url": RETRY},
    "google_unavailable": {"retry_url": RETRY},
    "google_error": {"retry_url": RETRY},
    "missing_permissions": {"missing": ["read", "send"], "retry_url": RETRY},
    "wrong_account": {"expected": EXPECTED, "got": GOT, "switch_url": RETRY + "&switch", "retry_url": RETRY},
    "identity_unknown": {"retry_url": RETRY},
    "no_refresh_token": {"retry_url": RETRY},
    "store_conflict": {},
    "server_error": {},
    "unavailable": {"retry_url": "/oauth/google/start?t=" + "x" * 300},
    "link_used": {"slack_team_id": TEAM},
    # Slack display names go up to 80 characters.
    "identity_mismatch": {"owner": "o" * 80, "visitor": "김" * 80, "slack_team_id": TEAM},
    "sign_in_denied": {"retry_url": RETRY},
    "slack_refused": {"error": "invalid_scope_" + "x" * 50, "retry_url": RETRY},
    "sign_in_rejected": {"retry_url": RETRY},
    "sign_in_failed": {"retry_url": RETRY},
    "slack_unavailable": {"retry_url": RETRY},
}

# Content that does not fit, to show that the check sees it: a wide box, a word that cannot wrap, and a wide
# box cut off by its parent (nothing scrolls, but part of the page cannot be seen).
OVERFLOWING = {
    "wide_box": '<div style="width: 1500px">wide</div>',
    "long_word": '<p style="overflow-wrap: normal; word-break: normal">' + "unbreakable" * 40 + "</p>",
    "clipped_box": '<div style="overflow: hidden"><div style="width: 1500px">clipped</div></div>',
}

# Something the policy refuses (same origin, so nothing could leave the machine even without it).
BLOCKED = '<img src="/missing.png" alt="">'

# Run in each new document before the page's own content: keep what the Content-Security-Policy refuses.
WATCH_POLICY = """window.refused = [];
document.addEventListener("securitypolicyviolation", (e) => refused.push(`${e.effectiveDirective} ${e.blockedURI}`));"""
REFUSED = "new Promise((done) => setTimeout(() => done(window.refused), 0))"

# Run in the page: everything that reaches past the edges of the layout viewport.
FIND_OVERFLOW = """(async () => {
  await document.fonts.ready;
  const root = document.documentElement, width = root.clientWidth, found = [];
  if (root.scrollWidth > width) found.push(`the page is ${root.scrollWidth}px wide`);
  const outside = (r) => r.width > 0 && (r.right > width + 0.5 || r.left < -0.5);
  const span = (r) => `${Math.round(r.left)}..${Math.round(r.right)}px`;
  for (const element of document.body.querySelectorAll("*")) {
    const box = element.getBoundingClientRect();
    if (outside(box)) found.push(`<${element.localName} class="${element.className}"> spans ${span(box)}`);
  }
  const texts = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT), range = document.createRange();
  while (texts.nextNode()) {
    range.selectNodeContents(texts.currentNode);
    const line = [...range.getClientRects()].find(outside);
    if (line) found.push(`text "${texts.currentNode.data.trim().slice(0, 40)}" spans ${span(line)}`);
  }
  return {width, found};
})()"""


def test_every_page_of_the_catalogue_is_checked() -> None:
    for locale in LOCALES:
        titled = {
            key.split(".")[1]
            for key in catalogue(locale)
            if key.startswith("page.") and key.endswith(".title")
        }
        assert titled == set(PAGES), locale
    assert len(EXPECTED) == len(GOT) == 60


# --- Chromium over the DevTools protocol ---------------------------------------------------------------------


@dataclass
class Chromium:
    """A headless Chromium in a process group of its own, with a throwaway profile."""

    process: subprocess.Popen[bytes]
    profile: Path
    endpoint: str  # the browser's DevTools websocket

    @classmethod
    def start(cls, binary: str) -> Chromium:
        profile = Path(tempfile.mkdtemp(prefix="pages-chromium-"))
        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--no-proxy-server",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
        ]
        log = (profile / "chromium.log").open("wb")
        process = subprocess.Popen(
            [binary, *flags, "about:blank"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        browser = cls(process, profile, "")
        try:
            browser.endpoint = browser._wait_for_port()
        except BaseException:
            browser.stop()
            raise
        return browser

    def _wait_for_port(self) -> str:
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            # "PORT\n/devtools/browser/UUID"; read again until the whole of it is written.
            written = _ACTIVE_PORT.match(active.read_text()) if active.exists() else None
            if written:
                return f"ws://127.0.0.1:{written['port']}{written['path']}"
            time.sleep(0.05)
        log = (self.profile / "chromium.log").read_text(errors="replace")[-2000:]
        code = self.process.poll()
        why = f"exited with {code}" if code is not None else f"did not answer in {START_TIMEOUT:.0f} s"
        raise RuntimeError(f"Chromium {why} before opening its DevTools port:\n{log}")

    def stop(self) -> None:
        """Kill the browser and every process it started, then delete the profile."""
        try:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    continue
                if not self.live_processes():
                    break
            self.process.wait(timeout=5)
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    def live_processes(self) -> list[int]:
        """The processes still running in the browser's group (zombies do not count), where /proc tells."""
        alive = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its closing parenthesis.
                state, _, group = stat.read_text().rpartition(")")[2].split()[:3]
            except (OSError, ValueError):
                continue
            if int(group) == self.process.pid and state != "Z":
                alive.append(int(stat.parent.name))
        return alive

    @asynccontextmanager
    async def tab(self) -> AsyncIterator[Tab]:
        """A new tab, closed afterwards."""
        async with aiohttp.ClientSession() as session:
            async with asyncio.timeout(CALL_TIMEOUT):
                ws = await session.ws_connect(
                    self.endpoint, max_msg_size=0, timeout=aiohttp.ClientWSTimeout(ws_close=5)
                )
            async with ws:
                browser = Tab(ws, session_id=None)
                target = (await browser.call("Target.createTarget", url="about:blank"))["targetId"]
                try:
                    attached = await browser.call("Target.attachToTarget", targetId=target, flatten=True)
                    tab = Tab(ws, session_id=attached["sessionId"])
                    await tab.call("Page.enable")
                    await tab.call("Page.addScriptToEvaluateOnNewDocument", source=WATCH_POLICY)
                    yield tab
                finally:
                    await browser.call("Target.closeTarget", targetId=target)


@dataclass
class Tab:
    """One DevTools session: calls answered in order, events kept until asked for."""

    ws: aiohttp.ClientWebSocketResponse
    session_id: str | None
    events: list[dict[str, Any]] = field(default_factory=list)
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        message: dict[str, Any] = {"id": next(self.ids), "method": method, "params": params}
        if self.session_id:
            message["sessionId"] = self.session_id
        async with asyncio.timeout(CALL_TIMEOUT):
            await self.ws.send_json(message)
            while True:
                reply = await self._receive()
                if reply.get("id") == message["id"] and reply.get("sessionId") == self.session_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    result: dict[str, Any] = reply["result"]
                    return result
                if "method" in reply:
                    self.events.append(reply)

    async def wait_for(self, event: str) -> dict[str, Any]:
        async with asyncio.timeout(CALL_TIMEOUT):
            while True:
                for seen in self.events:
                    if seen["method"] == event and seen.get("sessionId") == self.session_id:
                        self.events.remove(seen)
                        return seen
                reply = await self._receive()
                if "method" in reply:
                    self.events.append(reply)

    async def _receive(self) -> dict[str, Any]:
        frame = await self.ws.receive()
        if frame.type is not aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"the DevTools connection ended: {frame.type.name}")
        reply: dict[str, Any] = json.loads(frame.data)
        return reply

    async def open(self, url: str, viewport: Viewport) -> None:
        """Load `url` on a screen of `viewport`'s size."""
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            width=viewport.width,
            height=viewport.height,
            deviceScaleFactor=2 if viewport.mobile else 1,
            mobile=viewport.mobile,
        )
        self.events.clear()
        navigated = await self.call("Page.navigate", url=url)
        assert not navigated.get("errorText"), f"{url}: {navigated['errorText']}"
        await self.wait_for("Page.loadEventFired")

    async def evaluate(self, expression: str) -> Any:
        answer = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in answer:
            raise RuntimeError(f"the page's script failed: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    async def overflow(self, viewport: Viewport) -> list[str]:
        """What reaches past the screen's edges; checks first that the screen has `viewport`'s width."""
        measured = await self.evaluate(FIND_OVERFLOW)
        # The layout viewport is the screen, less a desktop scrollbar.
        assert viewport.width - 20 <= measured["width"] <= viewport.width, measured
        found: list[str] = measured["found"]
        return found


# --- Fixtures -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium_binary() -> str:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.skip(
            "chromium is not installed (apt-get install chromium): the pages are not laid out in a browser"
        )
    return binary


@pytest.fixture(scope="module")
def chromium(chromium_binary: str) -> Iterator[Chromium]:
    browser = Chromium.start(chromium_binary)
    try:
        yield browser
    finally:
        browser.stop()


async def _page(request: web.Request) -> web.Response:
    name = request.match_info["page"]
    return render(name, request.match_info["locale"], params=PAGES[name])


async def _altered(request: web.Request) -> web.Response:
    """The `connected` page with something added to its card."""
    page = render("connected", "en", params=PAGES["connected"])
    assert page.text is not None
    added = {**OVERFLOWING, "blocked": BLOCKED}[request.match_info["kind"]]
    return web.Response(
        text=page.text.replace("</main>", added + "</main>"),
        content_type="text/html",
        headers=SECURITY_HEADERS,
    )


@pytest.fixture
async def pages() -> AsyncIterator[str]:
    """A tiny server of the pages, as render() makes them (with their security headers)."""
    app = web.Application()
    app.router.add_get("/pages/{page}/{locale}", _page)
    app.router.add_get("/altered/{kind}", _altered)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url(""))
    finally:
        await server.close()


# --- Tests ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("page", PAGES)
async def test_the_page_fits_a_phone_and_a_desktop_screen(
    chromium: Chromium, pages: str, page: str, locale: str
) -> None:
    async with chromium.tab() as tab:
        for viewport in VIEWPORTS:
            await tab.open(f"{pages}/pages/{page}/{locale}", viewport)
            assert await tab.overflow(viewport) == [], viewport.name
            assert await tab.evaluate(REFUSED) == [], viewport.name


@pytest.mark.parametrize("kind", OVERFLOWING)
async def test_the_check_sees_content_past_the_screen_edge(chromium: Chromium, pages: str, kind: str) -> None:
    async with chromium.tab() as tab:
        for viewport in VIEWPORTS:
            await tab.open(f"{pages}/altered/{kind}", viewport)
            assert await tab.overflow(viewport) != [], viewport.name


async def test_the_check_sees_what_the_policy_refuses(chromium: Chromium, pages: str) -> None:
    async with chromium.tab() as tab:
        await tab.open(f"{pages}/altered/blocked", DESKTOP)
        assert await tab.evaluate(REFUSED) == [f"img-src {pages}/missing.png"]


def test_stopping_the_browser_ends_its_processes_and_deletes_its_profile(chromium_binary: str) -> None:
    browser = Chromium.start(chromium_binary)
    assert browser.live_processes() and (browser.profile / "DevToolsActivePort").exists()

    browser.stop()

    assert browser.process.poll() is not None
    assert browser.live_processes() == []
    assert not browser.profile.exists()


# --- The whole consent flow in the browser ------------------------------------------------------------------


async def test_the_owner_reconnects_in_a_real_browser_and_a_colleague_is_stopped(
    chromium: Chromium, serve: Serve, fake_slack: FakeSlack, fake_google: FakeGoogle
) -> None:
    """Chromium follows the redirects (link → Slack's sign-in → Google → back) with its own cookie rules:
    SameSite=Lax cookies on the path /oauth/ must come along on each redirect back, on a phone too."""
    app = await serve()
    fake_slack.sign_in("U0OWNER")
    fake_google.consent.email = "owner@gmail.com"
    async with chromium.tab() as tab:
        await tab.call("Network.enable")
        await tab.call("Network.clearBrowserCookies")
        await tab.open(app[SERVICES].links.new_url("U0OWNER"), PHONE)
        assert "owner@gmail.com" in await tab.evaluate("document.body.innerText")
        assert (fake_slack.oidc_token_exchanges, len(fake_google.calls_to("/o/oauth2/auth"))) == (1, 1)
        cookies = {c["name"]: c for c in (await tab.call("Network.getCookies"))["cookies"]}
        assert cookies["gmail_reconnect_identity"]["httpOnly"]
        assert cookies["gmail_reconnect_identity"]["path"] == "/oauth/"
        assert cookies["gmail_reconnect_identity"]["sameSite"] == "Lax"

        # A later reconnection from the same browser skips Slack: one click.
        account = await app[SERVICES].accounts.find_by_slack_id("U0OWNER")
        assert account is not None
        await app[SERVICES].accounts.set_status(account.id, status=Status.REVOKED, cause="test", actor="test")
        fake_google.consent.email = "owner@gmail.com"
        await tab.open(app[SERVICES].links.new_url("U0OWNER"), DESKTOP)
        assert "owner@gmail.com" in await tab.evaluate("document.body.innerText")
        assert (fake_slack.oidc_token_exchanges, len(fake_google.calls_to("/o/oauth2/auth"))) == (1, 2)

        # Another browser, signed in to Slack as a colleague, opens the owner's forwarded link.
        await tab.call("Network.clearBrowserCookies")
        fake_slack.sign_in("U0COLLEAGUE")
        await tab.open(app[SERVICES].links.new_url("U0OWNER"), PHONE)
        assert await tab.evaluate("location.pathname") == "/oauth/slack/callback"
        assert "/gmail-status" in await tab.evaluate("document.body.innerText")
        assert await tab.overflow(PHONE) == []
        assert len(fake_google.calls_to("/o/oauth2/auth")) == 2
