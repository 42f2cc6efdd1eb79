"""The JSON API and Command OS (SPEC §14). Each intent is the one implementation the CLI uses too
(listener/intents); reads run in a read-only, time-limited transaction, lead.enroll in a time-limited one."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from listener.intents.command_os import EXAMPLES, INTENTS, KNOWN_INTENTS, CommandError, check_args, resolve
from listener.intents.lead import LeadError, LeadNotFound, jsonable
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


def unknown_command(message: str) -> web.Response:
    return error(422, message, known_intents=list(KNOWN_INTENTS), examples={k: list(v) for k, v in EXAMPLES.items()})


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
    intent = INTENTS[name]
    region = request.app[SETTINGS].default_region
    connection = writable(request.app) if intent.writes else read_only(request.app)
    async with connection as conn:
        return await intent.run(conn, args, region)


def intent_error(exc: LeadError) -> web.Response:
    return error(404 if isinstance(exc, LeadNotFound) else 409, str(exc))


async def api_status(request: web.Request) -> web.Response:
    return web.json_response(await run_intent(request, "system.status", {}), dumps=_dumps)


async def api_lead(request: web.Request) -> web.Response:
    lead_id = parse_uuid(request.match_info["lead_id"], "lead id")
    assert lead_id is not None
    try:
        return web.json_response(await run_intent(request, "lead.inspect", {"lead_id": lead_id}), dumps=_dumps)
    except LeadError as exc:
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
    except LeadError as exc:
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


async def command_os(request: web.Request) -> web.Response:
    body = await json_body(request)
    if not isinstance(body, dict):
        return unknown_command('send {"intent": "...", "args": {...}} or {"text": "..."}')
    try:
        if "intent" in body:
            name = body["intent"]
            if not isinstance(name, str):
                return unknown_command(f"intent must be a string, got {_json_type(name)}")
            if name not in INTENTS:
                return unknown_command(f"unknown intent {str(name)[:60]!r}")
            raw_args = body.get("args")  # absent or null: no arguments; any other non-object is refused
        elif "text" in body:
            resolved = resolve(body["text"])
            name, raw_args = resolved.intent, resolved.args
        else:
            return unknown_command('send {"intent": "...", "args": {...}} or {"text": "..."}')
        args = check_args(name, raw_args)
    except CommandError as exc:
        return unknown_command(str(exc))
    try:
        result = await run_intent(request, name, args)
    except LeadError as exc:
        return intent_error(exc)
    return web.json_response({"intent": name, "args": {k: str(v) for k, v in args.items()}, "result": result},
                             dumps=_dumps)


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
