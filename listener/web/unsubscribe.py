"""One-click unsubscribe (SPEC §19, RFC 8058): the link every e-mail carries in ``List-Unsubscribe`` when
REVENUE_ASI_PUBLIC_URL is set.

- ``POST /u/{token}`` with the form body ``List-Unsubscribe=One-Click`` (what Gmail, Yahoo and Apple Mail send, as
  application/x-www-form-urlencoded or multipart/form-data): ``200`` and one ``unsubscribe`` event (event_source
  ``one_click``, payload ``touch_run_id``); the daemon's reaction to that event cancels the lead's open touches at
  once. Posting again answers ``200`` and writes nothing (the lead is already unsubscribed).
- ``GET /u/{token}``: a small page whose button posts the same form. A GET never unsubscribes: mail scanners and
  link previews fetch every URL of a message.
- A token that is forged, truncated, re-encoded, signed with another secret, or that names a lead, account or touch
  that do not exist or do not belong together: ``404``, nothing written. A well-formed token with another body:
  ``400``, nothing written.

Public routes: no dashboard token (listener/web/auth.py OPEN_PREFIXES), and the request guard
(listener/web/guard.py) applies as to every page. Nothing here logs the token or the secret."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from aiohttp import web

from listener.rules.unsubscribe import ONE_CLICK_FIELD, ONE_CLICK_VALUE, PATH_PREFIX, UnsubscribeToken, verify
from listener.store.database import CONNECTION_ERRORS, DatabaseError
from listener.store.queries import Q
from listener.web.app import SETTINGS
from listener.web.db import read_only, writable
from listener.web.render import page

log = logging.getLogger(__name__)

ROUTE = PATH_PREFIX + "{token}"
TEMPLATE = "unsubscribe.html"
UNAVAILABLE: tuple[type[Exception], ...] = (*CONNECTION_ERRORS, DatabaseError, asyncpg.QueryCanceledError)


def setup(app: web.Application) -> None:
    app.router.add_get(ROUTE, show)
    app.router.add_post(ROUTE, one_click)


def _token(request: web.Request) -> UnsubscribeToken | None:
    secret = request.app[SETTINGS].unsubscribe_secret
    if secret is None:
        return None
    return verify(secret.get_secret_value(), request.match_info["token"])


def _answer(request: web.Request, state: str, status: int = 200, **extra: Any) -> web.Response:
    response = page(request, TEMPLATE, {"state": state, "action": request.path, "field": ONE_CLICK_FIELD,
                                        "value": ONE_CLICK_VALUE, **extra}, status=status)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"  # the token is in the URL
    response.headers["X-Robots-Tag"] = "noindex"
    return response


def _not_found(request: web.Request) -> web.Response:
    return _answer(request, "not_found", 404)


def _unavailable(request: web.Request, exc: BaseException) -> web.Response:
    log.warning("one-click unsubscribe: database unavailable (%s)", type(exc).__name__)
    response = _answer(request, "unavailable", 503)
    response.headers["Retry-After"] = "30"
    return response


async def _target(request: web.Request, token: UnsubscribeToken) -> asyncpg.Record | None:
    async with read_only(request.app) as conn:
        return await conn.fetchrow(Q.unsubscribe_target, token.lead_id, token.account_id, token.touch_run_id)


async def show(request: web.Request) -> web.Response:
    """The confirmation page: a button that posts ``List-Unsubscribe=One-Click``; nothing is written."""
    token = _token(request)
    if token is None:
        return _not_found(request)
    try:
        target = await _target(request, token)
    except UNAVAILABLE as exc:
        return _unavailable(request, exc)
    if target is None:
        return _not_found(request)
    return _answer(request, "done" if target["is_unsubscribed"] else "confirm", account=target["account_name"])


async def _one_click_form(request: web.Request) -> bool:
    """The body is the RFC 8058 form (urlencoded or multipart) with List-Unsubscribe=One-Click."""
    if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return False
    try:
        form = await request.post()
    except (ValueError, UnicodeDecodeError, AssertionError):
        return False
    values = form.getall(ONE_CLICK_FIELD, [])
    return len(values) == 1 and values[0] == ONE_CLICK_VALUE


async def one_click(request: web.Request) -> web.Response:
    token = _token(request)
    if token is None:
        return _not_found(request)
    if not await _one_click_form(request):
        return _answer(request, "bad_request", 400)
    try:
        target = await _target(request, token)
        if target is None:
            return _not_found(request)
        async with writable(request.app) as conn:
            await conn.fetchval(Q.lead_lock, token.lead_id)  # the lock stop events take: two clicks, one event
            written = await conn.fetchval(Q.record_one_click_unsubscribe, token.lead_id, token.account_id,
                                          token.touch_run_id)
    except UNAVAILABLE as exc:
        return _unavailable(request, exc)
    if written is not None:
        log.info("one-click unsubscribe: lead %s (touch %s)", token.lead_id, token.touch_run_id)
    return _answer(request, "done", account=target["account_name"], already=written is None)
