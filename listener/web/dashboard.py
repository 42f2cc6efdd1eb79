"""Dashboard pages, JSON API, Command OS, live feed, health and auth (SPEC §14), wired into the one application."""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

import asyncpg
from aiohttp import web

from listener.store.database import CONNECTION_ERRORS, DatabaseError
from listener.web import api, auth, feed, guard, health, pages, timeseries
from listener.web.render import ENV_KEY, environment, page

log = logging.getLogger(__name__)

STATIC_DIR = Path(str(resources.files("listener.web") / "static"))
CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"

UNAVAILABLE: tuple[type[Exception], ...] = (*CONNECTION_ERRORS, DatabaseError)


def _wants_json(request: web.Request) -> bool:
    return request.path.startswith("/api/") or request.path in ("/metrics", "/healthz", "/readyz")


@web.middleware
async def errors(request: web.Request, handler: auth.Handler) -> web.StreamResponse:
    """A caller's mistake is a 400 with the reason; a slow or unreachable database a 503 — never a 500 for either."""
    try:
        response = await handler(request)
    except (api.BadRequest, guard.ControlCharacter) as exc:
        status, message = 400, str(exc)
    except asyncpg.QueryCanceledError:
        status, message = 503, "the database took too long to answer (statement_timeout); try again"
    except asyncpg.UndefinedTableError:  # e.g. dashboard_sessions before `revenue-asi migrate` ran
        status, message = 503, "the database schema is not current: run `revenue-asi migrate`"
    except UNAVAILABLE as exc:
        log.warning("%s %s: database unavailable (%s)", request.method, request.path, type(exc).__name__)
        status, message = 503, "the database is unavailable; try again"
    else:
        if response.content_type == "text/html":
            response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response
    if _wants_json(request):
        return web.json_response({"error": message}, status=status)
    return page(request, "error.html", {"status": status, "message": message}, status=status)


def setup(app: web.Application) -> None:
    """Add the dashboard, API and health routes to `app`."""
    app[ENV_KEY] = environment()
    app.middlewares.append(errors)
    app.middlewares.append(guard.refuse_control_characters)  # inside `errors` (its 400), before auth and handlers
    auth.setup(app)
    health.setup(app)
    api.setup(app)
    feed.setup(app)
    pages.setup(app)
    timeseries.setup(app)
    app.router.add_static("/static", STATIC_DIR)
