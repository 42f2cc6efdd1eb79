"""The JSON API and Command OS (SPEC §14, §18). Each intent is the one implementation the CLI uses too
(listener/intents); reads and previews run in a read-only, time-limited transaction, writes in a time-limited one."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp import web

from listener.intents.command_os import (
    EXAMPLES,
    INTENTS,
    KNOWN_INTENTS,
    CommandError,
    Context,
    check_args,
    resolve_text,
    run_command,
)
from listener.intents.errors import IntentError, ModelUnavailable
from listener.intents.lead import jsonable
from listener.rules import safejson
from listener.rules.vocabulary import CHANNELS, TOUCH_STATUSES
from listener.store.queries import Q
from listener.web.app import SETTINGS
from listener.web.db import read_only, writable

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # page cursors: microseconds since, then the id


class BadRequest(ValueError):
    """A caller's mistake in a query string or body: 400 with this message."""


def error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def unknown_command(message: str, status: int = 422) -> web.Response:
    return error(status, message, known_intents=list(KNOWN_INTENTS),
                 examples={k: list(v) for k, v in EXAMPLES.items()})


def parse_uuid(value: str | None, what: str) -> uuid.UUID | None:
    if value is None or value == "":
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise BadRequest(f"{what} must be a uuid, got {value[:60]!r}") from None


async def json_body(request: web.Request) -> Any:
    """The one way a route reads a JSON body: Content-Type application/json (a cross-site form cannot send one
    without CORS), UTF-8, decoded by listener.rules.safejson within its bounds (size, nesting depth, number length)
    — so hostile JSON (nested 10,000 deep, a 5,000-digit number) is a 400 with the reason, never a RecursionError
    or ValueError escaping as a 500. Bodies beyond the application's client_max_size are aiohttp's 413."""
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text=json.dumps({"error": "send Content-Type: application/json"}),
                                           content_type="application/json")
    try:
        return safejson.loads(await request.read())
    except safejson.UnsafeJson as exc:
        raise BadRequest(f"the body is not valid JSON: {exc.reason}") from None


async def run_intent(request: web.Request, name: str, args: dict[str, uuid.UUID]) -> dict[str, Any]:
    """An intent run directly by its own route (GET /api/status, /api/leads/{id}, POST …/enroll), as in v1: no
    preview, no command_runs row. Command OS goes through run_command."""
    intent = INTENTS[name]
    ctx = Context(region=request.app[SETTINGS].default_region, actor=DASHBOARD)
    connection = writable(request.app) if intent.writes else read_only(request.app)
    async with connection as conn:
        return await intent.run(conn, args, ctx)


def intent_error(exc: IntentError) -> web.Response:
    """404 (unknown campaign, lead, touch), 409 (an ambiguous name with `candidates`, a touch no longer cancelable
    with its `status`, a lead already enrolled, an archived campaign)."""
    return web.json_response({"error": str(exc), **exc.details}, status=exc.status, dumps=_dumps)


async def api_status(request: web.Request) -> web.Response:
    return web.json_response(await run_intent(request, "system.status", {}), dumps=_dumps)


async def api_lead(request: web.Request) -> web.Response:
    lead_id = parse_uuid(request.match_info["lead_id"], "lead id")
    assert lead_id is not None
    try:
        return web.json_response(await run_intent(request, "lead.inspect", {"lead_id": lead_id}), dumps=_dumps)
    except IntentError as exc:
        return intent_error(exc)


async def api_enroll(request: web.Request) -> web.Response:
    lead_id = parse_uuid(request.match_info["lead_id"], "lead id")
    body = await json_body(request)
    if not isinstance(body, dict) or "campaign_id" not in body:
        raise BadRequest('send {"campaign_id": "<uuid>"}')
    campaign_id = parse_uuid(str(body["campaign_id"]), "campaign_id")
    assert lead_id is not None and campaign_id is not None
    try:
        result = await run_intent(request, "lead.enroll", {"lead_id": lead_id, "campaign_id": campaign_id})
    except IntentError as exc:
        return intent_error(exc)
    return web.json_response(result, status=201, dumps=_dumps)


def touch_filters(query: Any) -> dict[str, Any]:
    """/touches and /api/touches filters, checked (a bad value is a 400, never a 500)."""
    status = query.get("status") or None
    if status is not None and status not in TOUCH_STATUSES:
        raise BadRequest(f"status must be one of {', '.join(TOUCH_STATUSES)}")
    channel = query.get("channel") or None
    if channel is not None and channel not in CHANNELS:
        raise BadRequest(f"channel must be one of {', '.join(CHANNELS)}")
    error_code = (query.get("error_code") or "").strip() or None
    if error_code is not None and len(error_code) > 100:
        raise BadRequest("error_code is too long")
    try:
        limit = int(query.get("limit") or DEFAULT_LIMIT)
    except ValueError:
        raise BadRequest("limit must be an integer") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
    before_at, before_id = None, None
    before = query.get("before") or None
    if before is not None:
        at, _, raw_id = before.partition("_")
        try:
            before_at, before_id = EPOCH + timedelta(microseconds=int(at)), uuid.UUID(raw_id)
        except (ValueError, OverflowError):
            raise BadRequest("before must be the `next` cursor of a previous page") from None
    return {"status": status, "channel": channel,
            "campaign": parse_uuid(query.get("campaign") or query.get("campaign_id"), "campaign"),
            "error_code": error_code, "lead": parse_uuid(query.get("lead") or query.get("lead_id"), "lead"),
            "before_at": before_at, "before_id": before_id, "limit": limit}


async def fetch_touches(app: web.Application, f: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    async with read_only(app) as conn:
        rows = await conn.fetch(Q.dash_touches, f["status"], f["channel"], f["campaign"], f["error_code"], f["lead"],
                                f["before_at"], f["before_id"], f["limit"])
    touches = [dict(r) for r in rows]
    cursor = None
    if len(touches) == f["limit"]:
        last = touches[-1]
        cursor = f"{(last['created_at'] - EPOCH) // timedelta(microseconds=1)}_{last['id']}"
    return touches, cursor


async def api_touches(request: web.Request) -> web.Response:
    filters = touch_filters(request.query)
    touches, cursor = await fetch_touches(request.app, filters)
    return web.json_response({"touches": jsonable(touches), "next": cursor}, dumps=_dumps)


async def api_events(request: web.Request) -> web.Response:
    """GET /api/events?limit=N: the latest events, safe fields only (what the live feed sends), for polling."""
    try:
        limit = int(request.query.get("limit") or DEFAULT_LIMIT)
    except ValueError:
        raise BadRequest("limit must be an integer") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
    async with read_only(request.app) as conn:
        rows = await conn.fetch(Q.dash_recent_events, None, limit)
    return web.json_response({"events": jsonable([dict(r) for r in rows])}, dumps=_dumps)


DASHBOARD = "dashboard"  # command_runs.actor for the dashboard and the API: signed in by token, no user names
COMMAND_SHAPE = 'send {"intent": "...", "args": {...}} or {"text": "..."}, with "confirm": true to run a write'


async def command_os(request: web.Request) -> web.Response:
    """POST /api/command-os (SPEC §14, §18): `{"intent", "args"}` or `{"text"}` (the rules, then the optional model),
    with `"confirm": true` to run a write. A read answers {intent, args, result}; a write without confirmation
    {intent, args, preview, confirm_required: true} and changes nothing; a confirmed write {intent, args, result,
    command_run_id}. `text` beside `intent` is what was typed (recorded in command_runs, not resolved again). A write
    the model chose is always answered with its preview (`resolved_by: "model"`): confirm it with its intent and
    args. 422: not understood (with the known intents and examples); 404 / 409: see intent_error; 503: the model
    did not answer in time, or the database did not."""
    body = await json_body(request)
    if not isinstance(body, dict):
        return unknown_command(COMMAND_SHAPE)
    settings = request.app[SETTINGS]
    confirm = body.get("confirm", False)
    if not isinstance(confirm, bool):
        return unknown_command(f"confirm must be true or false, got {_json_type(confirm)}")
    text = body.get("text") if isinstance(body.get("text"), str) else None
    resolved_by = None
    try:
        if "intent" in body:
            name = body["intent"]
            if not isinstance(name, str):
                return unknown_command(f"intent must be a string, got {_json_type(name)}")
            if name not in INTENTS:
                return unknown_command(f"unknown intent {str(name)[:60]!r}")
            raw_args = body.get("args")  # absent or null: no arguments; any other non-object is refused
        elif "text" in body:
            resolved = await resolve_text(body["text"], settings)
            name, raw_args, resolved_by = resolved.intent, resolved.args, resolved.by
            if resolved.by == "model":
                confirm = False  # a model's choice is never run unseen: it comes back as a preview
        else:
            return unknown_command(COMMAND_SHAPE)
        args = check_args(name, raw_args)
    except CommandError as exc:
        return unknown_command(str(exc))
    except ModelUnavailable as exc:
        return unknown_command(f"{exc}: write the command as one of the examples", status=503)
    try:
        answer = await run_command(lambda readonly: read_only(request.app) if readonly else writable(request.app),
                                   name, args, confirm=confirm, actor=DASHBOARD, text=text,
                                   region=settings.default_region)
    except IntentError as exc:
        return intent_error(exc)
    except (asyncpg.QueryCanceledError, asyncpg.LockNotAvailableError):
        return error(503, "the database did not answer in time: nothing was changed; try again")
    if resolved_by is not None:
        answer["resolved_by"] = resolved_by
    return web.json_response(answer, dumps=_dumps)


def _json_type(value: Any) -> str:
    """How a decoded JSON value is called in JSON's own words (for messages that must not echo the value)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/status", api_status)
    app.router.add_get("/api/leads/{lead_id}", api_lead)
    app.router.add_post("/api/leads/{lead_id}/enroll", api_enroll)
    app.router.add_get("/api/touches", api_touches)
    app.router.add_get("/api/events", api_events)
    app.router.add_post("/api/command-os", command_os)
