"""REVENUE_ASI_DASHBOARD_TOKEN (SPEC §14): with it set, pages, /api/* and /metrics need `Authorization: Bearer
<token>` or the session cookie the login form sets; without either they answer 401. Provider webhooks keep their
own authentication (§12), the one-click unsubscribe links /u/{token} are signed (§19), and the probes (/healthz,
/readyz) stay open. Without a token the application serves
loopback only (app.check_bind).

Sessions (issue 17): each sign-in draws a random cookie value and stores a keyed hash of it in
`dashboard_sessions` (sql/0012), so every web process sharing the database knows it; POST /logout ends it there,
after which the same cookie value is refused, as is an expired one. The hash is keyed by the dashboard token, so
changing the token ends every session opened with the old one.

Failed sign-ins are throttled per client address (:class:`LoginThrottle`)."""

from __future__ import annotations

import collections
import hashlib
import hmac
import logging
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from yarl import URL

from listener.store.queries import Q
from listener.web.api import BadRequest
from listener.web.app import SETTINGS
from listener.web.db import read_only, writable
from listener.web.render import SESSION_COOKIE, page

log = logging.getLogger(__name__)

COOKIE = SESSION_COOKIE
SESSION_S = 12 * 3600
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/login", "/logout"})
OPEN_PREFIXES = ("/webhooks/", "/webhooks", "/static", "/u/")  # /u/{token}: one-click unsubscribe (SPEC §19)
_COOKIE_VALUE = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32): anything else is no session of ours
_NEXT_CHARACTERS = re.compile(r"[\x21-\x7e]{1,2000}")  # printable ASCII, no space: what request.path_qs gives
MAX_FAILURES = 5
FAILURE_WINDOW_S = 300.0
MAX_ADDRESSES = 10_000
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class LoginThrottle:
    """At most MAX_FAILURES wrong tokens per client address in any FAILURE_WINDOW_S; beyond that every sign-in
    from that address — a right token too, or the throttle would tell a guesser when it guessed right — answers
    429 with Retry-After until the oldest of those failures leaves the window. A successful sign-in clears the
    address's count; attempts refused while throttled are not counted (the wait does not grow).

    In process, not in the database: the token is a long random secret, so the throttle only has to bound the
    guessing rate, and N web processes allow N × MAX_FAILURES per window — still nothing against such a token;
    keeping it in memory means a guesser cannot make the application write to the database at will. The address is
    the peer's (`request.remote`): behind a proxy that is the proxy's, so the throttle then counts every client
    together — signing in may wait, Bearer requests and existing sessions never do. Bounded to MAX_ADDRESSES."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.failures: dict[str, collections.deque[float]] = {}

    def retry_after(self, address: str) -> int | None:
        """Seconds until `address` may try again, or None when it may now."""
        recent = self._recent(address)
        if len(recent) < MAX_FAILURES:
            return None
        return max(1, math.ceil(recent[0] + FAILURE_WINDOW_S - self.clock()))

    def failed(self, address: str) -> None:
        recent = self._recent(address)
        recent.append(self.clock())
        self.failures[address] = recent
        if len(self.failures) > MAX_ADDRESSES:
            self._prune()

    def succeeded(self, address: str) -> None:
        self.failures.pop(address, None)

    def _recent(self, address: str) -> collections.deque[float]:
        recent = self.failures.get(address) or collections.deque(maxlen=MAX_FAILURES)
        horizon = self.clock() - FAILURE_WINDOW_S
        while recent and recent[0] <= horizon:
            recent.popleft()
        return recent

    def _prune(self) -> None:
        horizon = self.clock() - FAILURE_WINDOW_S
        for address in [a for a, times in self.failures.items() if not times or times[-1] <= horizon]:
            del self.failures[address]
        while len(self.failures) > MAX_ADDRESSES:  # still too many live ones: the oldest-seen go first
            del self.failures[next(iter(self.failures))]


THROTTLE = web.AppKey("login_throttle", LoginThrottle)


def _token(request: web.Request) -> str | None:
    secret = request.app[SETTINGS].dashboard_token
    return None if secret is None else secret.get_secret_value()


def session_id(token: str, value: str) -> str:
    """`dashboard_sessions.id` for a cookie value: HMAC-SHA256 keyed by the dashboard token, never the value."""
    return hmac.new(token.encode(), value.encode(), hashlib.sha256).hexdigest()


def _matches(given: str, token: str) -> bool:
    """Constant-time comparison of what the caller sent with the token. `surrogatepass`: aiohttp decodes raw header
    bytes that are not UTF-8 as lone surrogates, which a plain `.encode()` refuses (that was a 500)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), token.encode("utf-8", "surrogatepass"))


def _route_path(request: web.Request) -> str:
    """The path of the route that matched (not the raw path, so no `..` spelling reaches around the check)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else request.path


def is_open(request: web.Request) -> bool:
    path = _route_path(request)
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def _session_cookie(request: web.Request) -> str | None:
    value = request.cookies.get(COOKIE)
    return value if value is not None and _COOKIE_VALUE.fullmatch(value) else None


async def authorised(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() == "bearer" and _matches(given.strip(), token):
        return True
    cookie = _session_cookie(request)
    if cookie is None:
        return False
    async with read_only(request.app) as conn:
        return bool(await conn.fetchval(Q.dash_session_valid, session_id(token, cookie)))


def _safe_next(value: str | None) -> str:
    """Where to go after signing in: a path on this site, else `/`. Judged as a browser would follow it: control
    characters and whitespace are refused outright (browsers and yarl drop tab, CR and LF, so `/\\t/evil.example`
    leaves as `//evil.example`), as is a backslash (browsers read it as `/`); what remains is parsed, must have no
    scheme and no host, and its normalised form must start with exactly one `/`."""
    if not value or not _NEXT_CHARACTERS.fullmatch(value) or "\\" in value or not value.startswith("/") \
            or value.startswith("//"):
        return "/"
    try:
        url = URL(value)
    except ValueError:
        return "/"
    if url.scheme or url.raw_authority or url.host is not None:
        return "/"
    target = str(url)  # what aiohttp's redirect puts in Location
    if not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = _token(request)
    if token is None or is_open(request) or await authorised(request, token):
        return await handler(request)
    if request.path.startswith("/api/") or request.path == "/metrics":
        return web.json_response({"error": "unauthorized: send Authorization: Bearer <REVENUE_ASI_DASHBOARD_TOKEN>"},
                                 status=401, headers={"WWW-Authenticate": 'Bearer realm="revenue-asi"'})
    return page(request, "login.html", {"next": _safe_next(request.path_qs), "error": None}, status=401)


async def login_form(request: web.Request) -> web.StreamResponse:
    if _token(request) is None:
        raise web.HTTPSeeOther("/")
    return page(request, "login.html", {"next": _safe_next(request.query.get("next")), "error": None})


def _throttled(request: web.Request, target: str, wait: int) -> web.Response:
    response = page(request, "login.html", {"next": target, "error": f"too many wrong tokens: try again in {wait} s"},
                    status=429)
    response.headers["Retry-After"] = str(wait)
    return response


async def login(request: web.Request) -> web.StreamResponse:
    token = _token(request)
    if token is None:
        raise web.HTTPSeeOther("/")
    throttle, address = request.app[THROTTLE], request.remote or "unknown"
    wait = throttle.retry_after(address)
    if wait is not None:
        return _throttled(request, "/", wait)
    try:
        form = await request.post()
    except (UnicodeDecodeError, ValueError):  # e.g. a urlencoded body that is not UTF-8
        raise BadRequest("the sign-in form is not a valid UTF-8 form") from None
    given = form.get("token", "")
    target = _safe_next(str(form.get("next", "/")))
    if not isinstance(given, str) or not _matches(given, token):
        throttle.failed(address)
        if throttle.retry_after(address) is not None:
            log.warning("dashboard sign-in: %d wrong tokens from %s in %.0f s; refusing its sign-ins for a while",
                        MAX_FAILURES, address, FAILURE_WINDOW_S)
        return page(request, "login.html", {"next": target, "error": "wrong token"}, status=401)
    throttle.succeeded(address)
    value = secrets.token_urlsafe(32)
    async with writable(request.app) as conn:
        await conn.execute(Q.dash_session_start, session_id(token, value), SESSION_S)
    response = web.HTTPSeeOther(target)
    behind_tls = (request.app[SETTINGS].public_url or "").startswith("https://")  # a proxy terminates TLS
    response.set_cookie(COOKIE, value, httponly=True, samesite="Strict", path="/",
                        secure=request.secure or behind_tls, max_age=SESSION_S)
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    """Ends the session the cookie names (for every web process) and clears the cookie. Open, so a stale cookie
    can always be cleared; ending a session takes its cookie value, which only its holder has."""
    token, cookie = _token(request), _session_cookie(request)
    if token is not None and cookie is not None:
        async with writable(request.app) as conn:
            await conn.execute(Q.dash_session_end, session_id(token, cookie))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


def setup(app: web.Application) -> None:
    app[THROTTLE] = LoginThrottle()
    app.middlewares.append(require_token)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
