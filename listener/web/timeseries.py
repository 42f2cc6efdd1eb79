"""`GET /api/timeseries?minutes=60` (SPEC §18): per minute over the last `minutes` minutes (1–1440, this minute
included), touches `sent` and `failed` by channel and the due-to-provider latency `latency_p50_ms` /
`latency_p99_ms`. The same numbers draw the charts on `/` (listener/web/charts.py).

Latency is `sent_at - greatest(scheduled_at, created_at)` of the touches sent in the minute: from the moment the
touch was due (its schedule, or its creation when it was created already due) to the moment its send was recorded —
the completer writes `sent_at` with the `touch_sent` event once the provider has answered, so it includes the
provider's request. Failed touches have no `sent_at` and are left out of the latency. Sent counts come from
`touch_runs.sent_at`, failed counts from the `touch_failed` events (the moment each failed); both through the
partial indexes of migration 0015 (dashboard.sql, `dash_timeseries`)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg
from aiohttp import web

from listener.rules.vocabulary import CHANNELS
from listener.store.queries import Q
from listener.web.api import BadRequest
from listener.web.db import read_only

MIN_MINUTES, MAX_MINUTES, DEFAULT_MINUTES = 1, 1440, 60
LATENCY = "sent_at - greatest(scheduled_at, created_at) of the touches sent in the minute (due → provider answered)"


def parse_minutes(value: str | None) -> int:
    if value is None or value == "":
        return DEFAULT_MINUTES
    try:
        minutes = int(value)
    except ValueError:
        raise BadRequest(f"minutes must be an integer from {MIN_MINUTES} to {MAX_MINUTES}") from None
    if not MIN_MINUTES <= minutes <= MAX_MINUTES:
        raise BadRequest(f"minutes must be an integer from {MIN_MINUTES} to {MAX_MINUTES}")
    return minutes


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


async def timeseries(conn: asyncpg.Connection, minutes: int = DEFAULT_MINUTES) -> dict[str, Any]:
    """The document of GET /api/timeseries: `series`, one entry per minute, oldest first."""
    rows = await conn.fetch(Q.dash_timeseries, minutes)
    since: datetime = next(r["minute"] for r in rows if r["kind"] == "window")
    series: list[dict[str, Any]] = []
    index: dict[datetime, dict[str, Any]] = {}
    for i in range(minutes):
        minute = since + timedelta(minutes=i)
        zeros: dict[str, int] = dict.fromkeys(CHANNELS, 0)
        entry: dict[str, Any] = {"minute": minute.isoformat(), "sent": zeros, "failed": dict(zeros),
                                 "latency_p50_ms": None, "latency_p99_ms": None}
        series.append(entry)
        index[minute] = entry
    for row in rows:
        found = index.get(row["minute"]) if row["kind"] != "window" else None
        if found is None:
            continue
        entry = found
        if row["kind"] == "failed":
            entry["failed"][row["channel"]] = entry["failed"].get(row["channel"], 0) + row["n"]
        elif row["channel"] is not None:
            entry["sent"][row["channel"]] = row["n"]
        else:
            entry["latency_p50_ms"], entry["latency_p99_ms"] = _ms(row["p50_ms"]), _ms(row["p99_ms"])
    return {"minutes": minutes, "from": since.isoformat(),
            "until": (since + timedelta(minutes=minutes)).isoformat(),
            "channels": list(CHANNELS), "latency": LATENCY, "series": series}


async def api_timeseries(request: web.Request) -> web.Response:
    minutes = parse_minutes(request.query.get("minutes"))
    async with read_only(request.app) as conn:
        return web.json_response(await timeseries(conn, minutes))


def setup(app: web.Application) -> None:
    app.router.add_get("/api/timeseries", api_timeseries)
