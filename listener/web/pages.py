"""The director dashboard's pages (SPEC §14): server-rendered from templates/, kept live by static/live.js
(the event feed over server-sent events; each page's content re-fetched as a fragment every few seconds)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from aiohttp import web

from listener.intents.lead import LeadError, inspect_lead
from listener.intents.report import STAGES, report_funnels
from listener.intents.status import (
    cadences_section,
    failures_last_hour,
    jobs_section,
    paced_senders_section,
    queue_section,
)
from listener.rules.vocabulary import (
    CAMPAIGN_LEAD_STATUSES,
    CHANNELS,
    EMAIL_BOUNCED,
    TOUCH_CANCELED,
    TOUCH_DEFERRED,
    TOUCH_DELIVERED,
    TOUCH_FAILED,
    TOUCH_READ,
    TOUCH_SENT,
    TOUCH_STATUSES,
    TOUCH_UNDELIVERED,
)
from listener.store.queries import Q
from listener.web import charts
from listener.web.api import EPOCH, BadRequest, fetch_touches, parse_uuid, touch_filters
from listener.web.app import SETTINGS
from listener.web.db import read_only
from listener.web.render import jsonable, page, scrub
from listener.web.timeseries import DEFAULT_MINUTES, timeseries

LEASE_WARN_S = 30
CAMPAIGNS_SHOWN = 200
JOBS_SHOWN = 100
FUNNEL_DAYS = 30  # the window of the funnels on /campaigns (report.funnel's default)
FUNNEL_REFRESH_S = 30.0
COMMANDS_SHOWN = 50
# delivery status from §12 events, for databases without touch_runs.delivery_status (or touches it never set)
DELIVERY_FROM_EVENT = {TOUCH_DELIVERED: "delivered", TOUCH_READ: "read", TOUCH_UNDELIVERED: "undelivered",
                       EMAIL_BOUNCED: "undelivered"}
OUTCOMES = {TOUCH_SENT: "sent", TOUCH_FAILED: "failed", TOUCH_CANCELED: "canceled"}


class FunnelCache:
    """The funnels on /campaigns, computed at most every FUNNEL_REFRESH_S by each web process: report.funnel over
    30 days reads every touch sent in them (a few hundred ms at 1 M touches, bench.dashboard), and such a window does
    not move in the 3 s between two refreshes of the page. report.funnel asked through Command OS is always fresh."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.key: tuple[uuid.UUID, ...] | None = None
        self.at = 0.0
        self.reports: dict[uuid.UUID, dict[str, Any]] = {}

    def get(self, key: tuple[uuid.UUID, ...]) -> dict[uuid.UUID, dict[str, Any]] | None:
        return self.reports if key == self.key and self.clock() - self.at < FUNNEL_REFRESH_S else None

    def put(self, key: tuple[uuid.UUID, ...], reports: dict[uuid.UUID, dict[str, Any]]) -> None:
        self.key, self.at, self.reports = key, self.clock(), reports


FUNNELS = web.AppKey("campaign_funnels", FunnelCache)


async def overview_data(app: web.Application) -> dict[str, Any]:
    """Everything the home page shows; each query walks an index over a bounded slice (see dashboard.sql)."""
    from listener.web.feed import FEED

    async with read_only(app) as conn:
        queue = await queue_section(conn)
        queue["leases_expiring"] = await conn.fetchval(Q.dash_leases_expiring, LEASE_WARN_S)
        deferred = {r["reason"]: r["n"] for r in await conn.fetch(Q.dash_deferred_by_reason)}
        by_channel = {c: {"sent": 0, "failed": 0, "canceled": 0} for c in CHANNELS}
        for row in await conn.fetch(Q.dash_channel_last_hour):
            by_channel.setdefault(row["channel"], {"sent": 0, "failed": 0, "canceled": 0})[
                OUTCOMES[row["event_type"]]] = row["n"]
        failures = await failures_last_hour(conn)
        cadences = await cadences_section(conn)
        jobs = await jobs_section(conn)
        heartbeats = [dict(r) for r in await conn.fetch(Q.dash_heartbeats)]
        paced_senders = await paced_senders_section(conn)
        last_hour = await timeseries(conn, DEFAULT_MINUTES)
    feed = app.get(FEED)
    return {"queue": queue, "deferred": deferred, "by_channel": by_channel, "failures": failures,
            "cadences": cadences, "cadence_statuses": CAMPAIGN_LEAD_STATUSES, "jobs": jobs,
            "heartbeats": heartbeats, "alive": sum(1 for h in heartbeats if h["alive"]),
            "feed_connected": bool(feed and feed.connected), "paced_senders": paced_senders,
            "timeseries": last_hour,
            "throughput_chart": charts.throughput(last_hour["series"], last_hour["channels"]),
            "latency_chart": charts.latency(last_hour["series"])}


async def index(request: web.Request) -> web.Response:
    return page(request, "index.html", await overview_data(request.app))


async def touches(request: web.Request) -> web.Response:
    filters = touch_filters(request.query)
    rows, cursor = await fetch_touches(request.app, filters)
    return page(request, "touches.html", {"touches": rows, "next": cursor, "f": filters,
                                          "statuses": TOUCH_STATUSES, "channels": CHANNELS})


def delivery_status(touch: dict[str, Any], events: list[dict[str, Any]]) -> tuple[str | None, str]:
    """(status, where it came from): touch_runs.delivery_status when the column exists and is set (§12), else the
    newest delivery event of the touch, else the touch's own outcome."""
    if touch.get("delivery_status"):
        return touch["delivery_status"], "touch_runs.delivery_status"
    for event in reversed(events):
        if event["event_type"] in DELIVERY_FROM_EVENT:
            return DELIVERY_FROM_EVENT[event["event_type"]], f"{event['event_type']} event"
    if touch.get("status") in ("sent", "failed"):
        return touch["status"], "touch status (no delivery report yet)"
    return None, "not handed to a provider"


async def touch(request: web.Request) -> web.Response:
    touch_id = parse_uuid(request.match_info["touch_id"], "touch id")
    async with read_only(request.app) as conn:
        row = await conn.fetchrow(Q.dash_touch, touch_id)
        events = [dict(r) for r in await conn.fetch(Q.dash_touch_events, str(touch_id))] if row else []
    if row is None:
        return page(request, "error.html", {"status": 404, "message": f"no touch with id {touch_id}"}, status=404)
    secrets = request.app[SETTINGS].secrets()
    data = dict(row["touch"])
    payload = scrub(data.pop("payload", {}), secrets)
    for event in events:
        event["payload"] = scrub(jsonable(event["payload"]), secrets)
    status, source = delivery_status(data, events)
    deferrals = sum(1 for e in events if e["event_type"] == TOUCH_DEFERRED)
    return page(request, "touch.html", {"t": data, "payload": payload, "events": events, "lead_name": row["lead_name"],
                                        "campaign_name": row["campaign_name"], "delivery": status,
                                        "delivery_source": source, "deferrals": deferrals})


async def lead(request: web.Request) -> web.Response:
    lead_id = parse_uuid(request.match_info["lead_id"], "lead id")
    assert lead_id is not None
    try:
        async with read_only(request.app) as conn:
            report = await inspect_lead(conn, lead_id, default_region=request.app[SETTINGS].default_region)
    except LeadError as exc:
        return page(request, "error.html", {"status": 404, "message": str(exc)}, status=404)
    secrets = request.app[SETTINGS].secrets()
    for event in report["events"]:
        event["payload"] = scrub(event["payload"], secrets)
    return page(request, "lead.html", {"r": report})


async def campaigns(request: web.Request) -> web.Response:
    async with read_only(request.app) as conn:
        rows = [dict(r) for r in await conn.fetch(Q.dash_campaigns, CAMPAIGNS_SHOWN)]
        funnel = await conn.fetch(Q.dash_campaign_funnel, [r["id"] for r in rows])
        key = tuple(r["id"] for r in rows)
        reports = request.app[FUNNELS].get(key)
        if reports is None:
            reports = await report_funnels(conn, key, FUNNEL_DAYS)
            request.app[FUNNELS].put(key, reports)
    by_campaign: dict[uuid.UUID, dict[int, dict[str, Any]]] = {}
    for f in funnel:
        step = by_campaign.setdefault(f["campaign_id"], {}).setdefault(
            f["step"], {"counts": {s: 0 for s in CAMPAIGN_LEAD_STATUSES}, "stop_reasons": {}})
        step["counts"][f["status"]] += f["n"]
        if f["status"] == "stopped":
            reason = f["stop_reason"] or "unknown"
            step["stop_reasons"][reason] = step["stop_reasons"].get(reason, 0) + f["n"]
    for row in rows:  # every step, also those nobody is on now; "reached": leads at this step or a later one
        steps = by_campaign.get(row["id"], {})
        last = max([row["steps"], *steps])
        funnel = [(n, steps.get(n, {"counts": {s: 0 for s in CAMPAIGN_LEAD_STATUSES}, "stop_reasons": {}}))
                  for n in range(1, last + 1)]
        for i, (_, step) in enumerate(funnel):
            step["reached"] = sum(sum(later["counts"].values()) for _, later in funnel[i:])
        row["funnel"] = funnel
        row["report"] = reports.get(row["id"])
        row["funnel_charts"] = [(s, charts.funnel(s)) for s in row["report"]["steps"]] if row["report"] else []
    return page(request, "campaigns.html", {"campaigns": rows, "statuses": CAMPAIGN_LEAD_STATUSES,
                                            "stages": STAGES, "funnel_days": FUNNEL_DAYS,
                                            "funnel_refresh_s": FUNNEL_REFRESH_S})


async def jobs(request: web.Request) -> web.Response:
    job = request.query.get("job") or None
    if job is not None and len(job) > 100:
        raise BadRequest("job is too long")
    async with read_only(request.app) as conn:
        runs = [dict(r) for r in await conn.fetch(Q.dash_jobs, job, JOBS_SHOWN)]
        last = await jobs_section(conn)
    return page(request, "jobs.html", {"runs": runs, "last": last, "job": job})


def command_cursor(value: str | None) -> tuple[Any, uuid.UUID | None]:
    """/commands?before=<the `next` of the previous page>: microseconds since the epoch, then the id."""
    if not value:
        return None, None
    at, _, raw_id = value.partition("_")
    try:
        return EPOCH + timedelta(microseconds=int(at)), uuid.UUID(raw_id)
    except (ValueError, OverflowError):
        raise BadRequest("before must be the `next` cursor of a previous page") from None


async def commands(request: web.Request) -> web.Response:
    """command_runs (SPEC §18), newest first, paged by cursor like /touches."""
    before_at, before_id = command_cursor(request.query.get("before"))
    async with read_only(request.app) as conn:
        runs = [dict(r) for r in await conn.fetch(Q.dash_command_runs, before_at, before_id, COMMANDS_SHOWN)]
    secrets = request.app[SETTINGS].secrets()
    for run in runs:
        for key in ("args", "preview", "result"):
            run[key] = scrub(jsonable(run[key]), secrets)
    cursor = None
    if len(runs) == COMMANDS_SHOWN:
        last = runs[-1]
        cursor = f"{(last['created_at'] - EPOCH) // timedelta(microseconds=1)}_{last['id']}"
    return page(request, "commands.html", {"runs": runs, "next": cursor})


def setup(app: web.Application) -> None:
    app[FUNNELS] = FunnelCache()
    app.router.add_get("/", index)
    app.router.add_get("/touches", touches)
    app.router.add_get("/touches/{touch_id}", touch)
    app.router.add_get("/leads/{lead_id}", lead)
    app.router.add_get("/campaigns", campaigns)
    app.router.add_get("/jobs", jobs)
    app.router.add_get("/commands", commands)
