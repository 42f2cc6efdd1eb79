"""Health (SPEC §14): /healthz (the process serves), /readyz (the database answers and every migration this
package ships is applied), /metrics (Prometheus text: the queue's numbers, the oldest due touch's age, daemon
heartbeats, the web process's own LISTEN connection, each paced sender's waiting touches and effective rate)."""

from __future__ import annotations

import asyncpg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from listener.intents.status import paced_senders_section, queue_section
from listener.store.database import DB_ERRORS, numbered_migrations
from listener.store.queries import Q
from listener.web.db import read_only

READY_TIMEOUT_MS = 2_000


class DashboardMetrics:
    """One registry per application (not the process-wide default one, which the daemon's metrics use)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.oldest_due = Gauge("revenue_asi_oldest_due_touch_age_seconds",
                                "Age of the oldest due touch (queue latency); 0 when nothing is due", registry=r)
        self.due = Gauge("revenue_asi_touches_due", "Touches queued or scheduled and due now", registry=r)
        self.scheduled = Gauge("revenue_asi_touches_scheduled_later", "Touches scheduled for later", registry=r)
        self.processing = Gauge("revenue_asi_touches_processing", "Touches claimed by a daemon", registry=r)
        self.reactions = Gauge("revenue_asi_pending_reactions", "Events waiting for the daemon's reaction", registry=r)
        self.daemons = Gauge("revenue_asi_daemons_alive", "Daemons whose heartbeat is current", registry=r)
        self.beat_age = Gauge("revenue_asi_daemon_heartbeat_age_seconds", "Seconds since each daemon's last heartbeat",
                              ["worker_id"], registry=r)
        self.listen = Gauge("revenue_asi_web_listen_connected", "The web process's LISTEN connection is up",
                            registry=r)
        self.sender_waiting = Gauge("revenue_asi_sender_waiting",
                                    "Touches waiting for their paced sender's pace (due, queued or scheduled)",
                                    ["settings_id"], registry=r)
        self.sender_rate = Gauge("revenue_asi_sender_rate",
                                 "A paced sender's effective rate now, requests/s (halved by a 429's pushback); "
                                 "absent for a sender bounded only by max_in_flight", ["settings_id"], registry=r)
        self.database_up = Gauge("revenue_asi_database_up", "The database answered this scrape", registry=r)


METRICS = web.AppKey("dashboard_metrics", DashboardMetrics)


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    shipped = [p.name for p in numbered_migrations()]
    try:
        async with read_only(request.app, READY_TIMEOUT_MS) as conn:
            await conn.fetchval(Q.dash_ping)
            applied = {row["name"] for row in await conn.fetch(Q.migrations_applied)}
    except asyncpg.UndefinedTableError:
        return web.json_response({"status": "not ready", "reason": "the database has no schema: run "
                                  "`revenue-asi migrate`"}, status=503)
    except DB_ERRORS as exc:
        return web.json_response({"status": "not ready", "reason": f"database: {type(exc).__name__}"}, status=503)
    missing = [name for name in shipped if name not in applied]
    if missing:
        return web.json_response({"status": "not ready", "reason": "schema not current: run `revenue-asi migrate`",
                                  "missing_migrations": missing}, status=503)
    return web.json_response({"status": "ready", "schema_version": shipped[-1] if shipped else "none"})


async def metrics(request: web.Request) -> web.Response:
    from listener.web.feed import FEED

    m = request.app[METRICS]
    try:
        async with read_only(request.app) as conn:
            queue = await queue_section(conn)
            beats = await conn.fetch(Q.dash_heartbeats)
            senders = await paced_senders_section(conn)
    except DB_ERRORS:
        m.database_up.set(0)
    else:
        m.database_up.set(1)
        m.oldest_due.set(queue["oldest_due_age_s"] or 0)
        m.due.set(queue["due"])
        m.scheduled.set(queue["scheduled_later"])
        m.processing.set(queue["processing"])
        m.reactions.set(queue["pending_reactions"])
        m.beat_age.clear()
        alive = [b for b in beats if b["alive"]]
        for beat in alive:
            m.beat_age.labels(beat["worker_id"]).set(beat["age_s"])
        m.daemons.set(len(alive))
        m.sender_waiting.clear()
        m.sender_rate.clear()
        for sender in senders:  # the paced senders only (SPEC §16)
            m.sender_waiting.labels(sender["settings_id"]).set(sender["waiting"])
            if sender["effective_rate"] is not None:
                m.sender_rate.labels(sender["settings_id"]).set(sender["effective_rate"])
    feed = request.app.get(FEED)
    m.listen.set(1 if feed is not None and feed.connected else 0)
    return web.Response(body=generate_latest(m.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def setup(app: web.Application) -> None:
    app[METRICS] = DashboardMetrics()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
