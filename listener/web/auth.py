"""REVENUE_ASI_DASHBOARD_TOKEN (SPEC §14): with it set, pages, /api/* and /metrics need `Authorization: Bearer
<token>` or the session cookie the login form sets; without either they answer 401. Provider webhooks keep their
own authentication (§12) and the probes (/healthz, /readyz) stay open. Without a token the application serves
loopback only (app.check_bind)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from listener.web.app import SETTINGS
from listener.web.render import page

COOKIE = "revenue_asi_session"
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/login"})
OPEN_PREFIXES = ("/webhooks/", "/webhooks", "/static")
SESSION_LABEL = b"revenue-asi dashboard session v1"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _token(request: web.Request) -> str | None:
    secret = request.app[SETTINGS].dashboard_token
    return None if secret is None else secret.get_secret_value()


def session_value(token: str) -> str:
    """What the cookie holds: derived from the token, never the token itself."""
    return hmac.new(token.encode(), SESSION_LABEL, hashlib.sha256).hexdigest()


def _route_path(request: web.Request) -> str:
    """The path of the route that matched (not the raw path, so no `..` spelling reaches around the check)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else request.path


def is_open(request: web.Request) -> bool:
    path = _route_path(request)
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def authorised(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return True
    cookie = request.cookies.get(COOKIE)
    return cookie is not None and hmac.compare_digest(cookie.encode(), session_value(token).encode())


def _safe_next(value: str | None) -> str:
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = _token(request)
    if token is None or is_open(request) or authorised(request, token):
        return await handler(request)
    if request.path.startswith("/api/") or request.path == "/metrics":
        return web.json_response({"error": "unauthorized: send Authorization: Bearer <REVENUE_ASI_DASHBOARD_TOKEN>"},
                                 status=401, headers={"WWW-Authenticate": 'Bearer realm="revenue-asi"'})
    return page(request, "login.html", {"next": request.path_qs, "error": None}, status=401)


async def login_form(request: web.Request) -> web.StreamResponse:
    if _token(request) is None:
        raise web.HTTPSeeOther("/")
    return page(request, "login.html", {"next": _safe_next(request.query.get("next")), "error": None})


async def login(request: web.Request) -> web.StreamResponse:
    token = _token(request)
    if token is None:
        raise web.HTTPSeeOther("/")
    form = await request.post()
    given = str(form.get("token", ""))
    target = _safe_next(str(form.get("next", "/")))
    if not hmac.compare_digest(given.encode(), token.encode()):
        return page(request, "login.html", {"next": target, "error": "wrong token"}, status=401)
    response = web.HTTPSeeOther(target)
    behind_tls = (request.app[SETTINGS].public_url or "").startswith("https://")  # a proxy terminates TLS
    response.set_cookie(COOKIE, session_value(token), httponly=True, samesite="Strict", path="/",
                        secure=request.secure or behind_tls, max_age=12 * 3600)
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


def setup(app: web.Application) -> None:
    app.middlewares.append(require_token)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
