"""Jinja2 templates shipped in the package (listener/web/templates) and the filters they use; no build step."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import jinja2
from aiohttp import web

from listener.intents.lead import jsonable  # noqa: F401 (one JSON conversion for the CLI, the API and the pages)

ENV_KEY = web.AppKey("jinja_env", jinja2.Environment)
SECRET_KEY_PATTERN = re.compile(r"token|secret|password|api[_-]?key|authorization|auth_token", re.IGNORECASE)


def scrub(value: Any, secrets: list[str]) -> Any:
    """A payload fit to show: values under secret-looking keys masked, and every configured secret replaced."""
    if isinstance(value, dict):
        return {k: ("***" if SECRET_KEY_PATTERN.search(str(k)) and v not in (None, "") else scrub(v, secrets))
                for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, secrets) for v in value]
    if isinstance(value, str):
        for secret in secrets:
            if secret:
                value = value.replace(secret, "***")
    return value


def when(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        value = value.isoformat()
    return str(value).replace("T", " ")[:19]


def ago(seconds: Any) -> str:
    if seconds is None:
        return "-"
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    if s < 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def short(value: Any) -> str:
    return "-" if value is None else str(value)[:8]


def pretty(value: Any) -> str:
    return json.dumps(jsonable(value), indent=2, sort_keys=True, ensure_ascii=False, default=str)


def compact(value: Any, limit: int = 160) -> str:
    """JSON on one line, cut at `limit` characters (the full value goes in a title or a JSON block)."""
    text = json.dumps(jsonable(value), sort_keys=True, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def summary(value: Any, limit: int = 240) -> str:
    """An object in one readable line: its plain values first ("touches_canceled 1"), then its small objects
    ("status from=active to=paused") and lists by their length; anything else as compact JSON."""
    if not isinstance(value, dict):
        return compact(value, limit)
    value = jsonable(value)
    parts = [f"{k} {v}" for k, v in value.items() if _plain(v)]
    for k, v in value.items():
        if isinstance(v, dict):
            parts.append(f"{k} " + (" ".join(f"{kk}={vv}" for kk, vv in v.items()) if all(map(_plain, v.values()))
                                    else "{…}"))
        elif isinstance(v, list):
            parts.append(f"{k} [{len(v)}]")
    text = " · ".join(parts)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def percent(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1%}"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("listener.web", "templates"),
                             autoescape=jinja2.select_autoescape(["html"]),
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=when, ago=ago, short=short, pretty=pretty, compact=compact, summary=summary, percent=percent)
    return env


SESSION_COOKIE = "revenue_asi_session"  # listener/web/auth.py: a random session id, revocable


def page(request: web.Request, name: str, context: dict[str, Any], *, status: int = 200) -> web.Response:
    """The whole page, or only its `content` block when the page's live script asks (X-Fragment: 1)."""
    template = request.app[ENV_KEY].get_template(name)
    signed_in = SESSION_COOKIE in request.cookies and request.path != "/login"  # a session to end (POST /logout)
    context = {"path": request.path, "query": request.query, "signed_in": signed_in, **context}
    if request.headers.get("X-Fragment") == "1" and "content" in template.blocks:
        html = "".join(template.blocks["content"](template.new_context(context)))
    else:
        html = template.render(context)
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
