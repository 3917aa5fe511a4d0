"""Small HTML pages for the browser side of the consent flow, in the visitor's language.

Pages never show a token, a code or a stack trace: they are built only from the catalogue and from the
few values an Answer carries (email addresses, Google's short error code, links), all HTML-escaped.
"""

from __future__ import annotations

from html import escape
from typing import Any

from aiohttp import web

from bot.i18n import text

# No page loads anything; forms and frames are refused; the callback URL (which holds the code) is never
# sent on as a Referer when the user follows a link away from it.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
}
_OK_PAGES = frozenset({"connected", "already_connected"})
# The mark before a page's title: done, something to fix, or (a cancel the user chose) just information.
_MARKS = {**dict.fromkeys(_OK_PAGES, "✅"), "connected_partly": "✅", "denied": "ℹ️", "sign_in_denied": "ℹ️"}
_PROBLEM_MARK = "⚠️"

# Korean wraps between words only (keep-all), never inside one; a string with no place to wrap (an email
# address, Google's error code) wraps anywhere rather than widening the page, and that also lets a button
# holding one shrink to the card. On a phone the card keeps a margin from the screen's edges.
_TEMPLATE = """<!doctype html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title} · {brand}</title>
<style>
html {{ -webkit-text-size-adjust: 100%; text-size-adjust: 100%; }}
body {{ font-family: -apple-system, "Apple SD Gothic Neo", "Malgun Gothic", "Segoe UI", Roboto, sans-serif;
       background: #f6f6f8; color: #1d1c1d; margin: 0; padding: 12vh 1rem 2rem;
       word-break: keep-all; overflow-wrap: anywhere; }}
main {{ max-width: 34rem; margin: 0 auto; background: #fff; border-radius: 12px; padding: 2rem 2.2rem;
       box-shadow: 0 1px 3px rgba(0,0,0,.12); }}
h1 {{ display: flex; gap: .5rem; font-size: 1.35rem; line-height: 1.4; margin: 0 0 1rem; }}
p {{ line-height: 1.6; margin: 0 0 1rem; }}
.actions {{ margin-top: 1.5rem; display: flex; flex-wrap: wrap; gap: .6rem; }}
a.button {{ display: inline-block; box-sizing: border-box; max-width: 100%; padding: .6rem 1.1rem;
           border-radius: 6px; line-height: 1.4; text-decoration: none; border: 1px solid #bbb; color: #1d1c1d; }}
a.primary {{ background: #007a5a; border-color: #007a5a; color: #fff; }}
footer {{ margin-top: 2rem; padding-top: 1rem; border-top: 1px solid #ececee; color: #616061; font-size: .85rem; }}
@media (max-width: 30rem) {{
  body {{ padding-top: 1.5rem; }}
  main {{ padding: 1.5rem 1.25rem; }}
}}
</style>
</head>
<body>
<main>
<h1><span class="mark" aria-hidden="true">{mark}</span><span>{title}</span></h1>
{paragraphs}
<div class="actions">{buttons}</div>
<footer>{brand}</footer>
</main>
</body>
</html>
"""


def render(
    page: str, locale: str, *, status: int = 200, params: dict[str, Any] | None = None
) -> web.Response:
    """The HTML response for a page of the consent flow."""
    params = params or {}
    paragraphs = [_body(page, locale, params)]
    buttons: list[tuple[str, str, bool]] = []
    retry = params.get("retry_url")
    if page == "wrong_account":
        if params.get("switch_url"):
            buttons.append(
                (params["switch_url"], text(locale, "page.wrong_account.switch", got=params["got"]), True)
            )
        if retry:
            buttons.append(
                (retry, text(locale, "page.wrong_account.retry", expected=params["expected"]), False)
            )
    elif page == "connected_partly":
        if retry:
            paragraphs.append(text(locale, "page.connected_partly.next"))
            buttons.append((retry, text(locale, "page.connected_partly.grant"), True))
    elif retry:
        buttons.append((retry, text(locale, "page.try_again"), True))
    if not buttons and page not in (*_OK_PAGES, "store_conflict", "server_error"):
        paragraphs.append(text(locale, "page.start_from_slack"))
    team = params.get("slack_team_id")
    slack_url = f"slack://open?team={team}" if team else "slack://open"
    buttons.append((slack_url, text(locale, "page.back_to_slack"), page in _OK_PAGES))
    html = _TEMPLATE.format(
        lang=locale,
        brand=escape(text(locale, "page.brand")),
        mark=_MARKS.get(page, _PROBLEM_MARK),
        title=escape(text(locale, f"page.{page}.title")),
        paragraphs="\n".join(f"<p>{escape(paragraph)}</p>" for paragraph in paragraphs),
        buttons="".join(
            f'<a class="button{" primary" if primary else ""}" href="{escape(url, quote=True)}">{escape(label)}</a>'
            for url, label, primary in buttons
        ),
    )
    return web.Response(
        text=html, status=status, content_type="text/html", charset="utf-8", headers=SECURITY_HEADERS
    )


def _body(page: str, locale: str, params: dict[str, Any]) -> str:
    if page == "connected" and not params.get("email"):
        return text(locale, "page.connected.body_no_email")
    if page in ("missing_permissions", "connected_partly"):
        joiner = text(locale, "list.and")
        missing = params.get("missing", [])
        words = {
            "permissions": joiner.join(text(locale, f"capability.{name}.permission") for name in missing),
            "purposes": joiner.join(text(locale, f"capability.{name}.purpose") for name in missing),
        }
        if page == "missing_permissions":
            return text(locale, "page.missing_permissions.body", **words)
        email = params.get("email")
        body = text(
            locale, f"page.connected_partly.{'body' if email else 'body_no_email'}", email=email, **words
        )
        briefing = text(locale, f"page.connected_partly.{'no_read' if 'read' in missing else 'reads'}")
        return f"{body} {briefing}"
    values = {key: value for key, value in params.items() if isinstance(value, str)}
    body = text(locale, f"page.{page}.body", **values)
    if page.startswith(("state_", "google_", "code_", "slack_", "sign_in_", "identity_")):
        body += " " + text(locale, "page.nothing_changed")
    return body
