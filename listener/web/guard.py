"""What every request and response of the web application passes through, whatever the route (issue 17: the web
surface probed as an attacker would).

- :func:`refuse_control_characters`: a query parameter (name or value) or a path holding a control character
  (U+0000–U+001F, tab included, and U+007F) or a lone surrogate is the caller's mistake — 400 with the reason,
  JSON for /api/* and an HTML error page for pages — before any handler, so no such text reaches a filter, a page
  or PostgreSQL (which refuses 0x00 in text: that was a 500). No dashboard filter, id or cursor legitimately holds
  one. Provider webhooks are left to their own strict parsing (SPEC §12: Twilio signs the query as sent), and
  /login to :func:`listener.web.auth._safe_next`, which turns any doubtful `next` into `/`.
- :func:`hide_server`: no answer announces `Server: Python/… aiohttp/…` (aiohttp fills the header in after the
  application's signals run, so it is replaced, not removed)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from aiohttp import web

SERVER = "revenue-asi"
# C0 controls (tab, CR, LF and NUL included), DEL, and UTF-16 surrogates (never valid alone in text).
_CONTROL = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
UNCHECKED_PREFIXES = ("/webhooks", "/static")  # the provider webhooks (§12) and aiohttp's static files
UNCHECKED_PATHS = frozenset({"/login"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ControlCharacter(ValueError):
    """A query parameter or path with a control character: 400 with this message."""


def control_character(text: str) -> str | None:
    """The first control character (or lone surrogate) in `text`, spelled as a code point, or None."""
    found = _CONTROL.search(text)
    return None if found is None else f"U+{ord(found.group()):04X}"


def check_request(request: web.Request) -> None:
    """Raises :class:`ControlCharacter` naming the first parameter (or the path) that holds one."""
    bad = control_character(request.path)  # decoded: covers every path parameter ({lead_id}, {touch_id}, …)
    if bad is not None:
        raise ControlCharacter(f"the path holds a control character ({bad})")
    for name, value in request.query.items():
        bad = control_character(name) or control_character(value)
        if bad is not None:
            # the name echoed as repr: control characters escaped; at most 40 characters of it
            raise ControlCharacter(f"query parameter {name[:40]!r} holds a control character ({bad})")


def _checked(request: web.Request) -> bool:
    resource = request.match_info.route.resource
    path = resource.canonical if resource is not None else request.path
    return path not in UNCHECKED_PATHS and not path.startswith(UNCHECKED_PREFIXES)


@web.middleware
async def refuse_control_characters(request: web.Request, handler: Handler) -> web.StreamResponse:
    if _checked(request):
        check_request(request)
    return await handler(request)


async def hide_server(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER


def setup(app: web.Application) -> None:
    """The Server header on every answer of `app` (webhooks, pages, API, probes, 404s)."""
    app.on_response_prepare.append(hide_server)
