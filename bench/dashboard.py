"""The dashboard's cost (SPEC §14, issue 13; §18, issue 20): `/` rendered 50 times at ~12 k and ~1 M touch_runs
(p50), and the other pages — `/campaigns` with its funnels (report.funnel), `/commands`, `/api/timeseries` over an
hour and a day —, the median of each query behind them and its plan (which index each query walks), and
`dashboard_open`, a way for other benches to hold the dashboard open — the web application in this process with its
live feed connected — while they measure.

The generated touches belong to the 5 campaigns (step 1–3), spread over 30 days; sent ones were sent 0–0.96 s after
they were due (so the latency chart has numbers), two in three were delivered, and one sent touch in twenty got a
reply, a positive reply, an unsubscribe or a booking 10 minutes later (so the funnels do).

    .venv/bin/python -m bench.dashboard [--sizes 12000,1000000] [--requests 50]

Rows are generated in SQL (generate_series) with triggers off (session_replication_role = replica), then
ANALYZE; the web application is the real one (listener.web.app.start) on loopback, read with aiohttp."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.env import PgServer
from listener.intents.status import PACED_SENDERS_SHOWN
from listener.settings import load_settings
from listener.store.database import connect
from listener.store.queries import Q
from listener.web.app import start
from listener.web.timeseries import DEFAULT_MINUTES

GENERATE = """
set session_replication_role = replica;
insert into accounts (id, name) values ('00000000-0000-4000-8000-000000000001', 'Bench Dental');
insert into leads (account_id, full_name, phone, email, timezone)
select '00000000-0000-4000-8000-000000000001', 'Lead ' || g, '+1415' || lpad(g::text, 7, '0'), 'lead' || g || '@bench.example', 'UTC'
from generate_series(1, greatest($1::int / 20, 10)) g;
insert into campaigns (account_id, name, status, message_class)
select '00000000-0000-4000-8000-000000000001', 'Campaign ' || g, 'active', 'cold_outreach' from generate_series(1, 5) g;
insert into campaign_steps (campaign_id, step, delay_minutes, payload)
select c.id, s, 0, '{}'::jsonb from campaigns c cross join generate_series(1, 3) s;
insert into campaign_leads (campaign_id, lead_id, status, current_step, stop_reason)
select (select id from campaigns order by name limit 1 offset (abs(hashtext(l.id::text)) % 5)), l.id,
       (array['active','completed','completed','stopped'])[1 + abs(hashtext(l.id::text || 'x')) % 4], 1 + abs(hashtext(l.id::text)) % 3,
       case when abs(hashtext(l.id::text || 'x')) % 4 = 3 then 'reply_positive' end
from leads l;
create temporary table bench_leads as select row_number() over () as n, id from leads;
insert into touch_runs (account_id, lead_id, campaign_id, step, channel, status, scheduled_at, sent_at, created_at,
                        updated_at, payload, error, idempotency_key, delivery_status)
select '00000000-0000-4000-8000-000000000001', bl.id, cl.campaign_id, 1 + g % 3,
       (array['voice','whatsapp','sms','email'])[1 + g % 4],
       case when g <= 200 then 'queued' when g <= 700 then 'scheduled' when g <= 720 then 'sent'
            when g % 10 = 0 then 'failed' when g % 17 = 0 then 'canceled' else 'sent' end,
       case when g <= 200 then now() - make_interval(secs => g) when g <= 700 then now() + make_interval(mins => g)
            else now() - make_interval(secs => g * 2592000.0 / $1::int) end,
       case when g > 700 and g % 10 <> 0
            then now() - make_interval(secs => g * 2592000.0 / $1::int) + make_interval(secs => (g % 97) / 100.0) end,
       now() - make_interval(secs => g * 2592000.0 / $1::int), now() - make_interval(secs => g * 2592000.0 / $1::int),
       '{"routing": {"primary_channel": "sms"}}'::jsonb,
       case when g > 720 and g % 10 = 0 then (array['21211','30003','outcome_unknown'])[1 + g % 3] || ': bench' end,
       'bench:' || g,
       case when g > 700 and g % 10 <> 0 and g % 17 <> 0 and g % 3 <> 0 then 'delivered' end
from generate_series(1, $1::int) g
join bench_leads bl on bl.n = 1 + g % (select count(*) from bench_leads)
join campaign_leads cl on cl.lead_id = bl.id;
insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload, created_at)
select lead_id, case status when 'failed' then 'touch_failed' when 'canceled' then 'touch_canceled' else 'touch_sent' end,
       'bench', channel, 'outbound',
       jsonb_build_object('touch_run_id', id) || case when status = 'failed' then jsonb_build_object('error_code', split_part(error, ':', 1)) else '{}'::jsonb end,
       updated_at
from touch_runs where status in ('sent', 'failed', 'canceled');
insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload, created_at)
select lead_id, (array['reply_received','reply_positive','unsubscribe','appointment_booked'])[1 + abs(hashtext(id::text)) % 4],
       'bench', channel, 'inbound', '{"classification": "neutral"}'::jsonb, sent_at + interval '10 minutes'
from touch_runs where status = 'sent' and abs(hashtext(id::text || 'r')) % 20 = 0 and sent_at < now() - interval '10 minutes';
insert into job_runs (job, started_at, finished_at, stats)
select (array['sweep','touch-orchestrator','reactivation'])[1 + g % 3], now() - make_interval(mins => g),
       now() - make_interval(mins => g) + interval '20 ms', '{"due_touches": 0}'::jsonb
from generate_series(1, 2000) g;
set session_replication_role = origin;
"""
# What `/` reads (listener/web/pages.py overview_data; its charts: dash_timeseries over DEFAULT_MINUTES, below), and
# what its live feed and the touches list read when they open.
HOME_QUERIES = ("status_queue", "dash_leases_expiring", "dash_deferred_by_reason", "dash_channel_last_hour",
                "status_failures_last_hour", "status_cadences", "status_last_job_runs", "dash_heartbeats",
                "dash_paced_senders", "dash_recent_events", "dash_touches")


async def has_command_runs(url: str) -> bool:
    conn = await connect(url)
    try:
        return bool(await conn.fetchval("select to_regclass('command_runs') is not null"))
    finally:
        await conn.close()


async def generate(url: str, rows: int) -> None:
    conn = await connect(url)
    try:
        for statement in (s.strip() for s in GENERATE.split(";\n")):
            if statement:
                await conn.execute(statement, rows) if "$1" in statement else await conn.execute(statement)
        await conn.execute("vacuum analyze")  # as autovacuum would have by then: index-only scans stay index-only
    finally:
        await conn.close()


HOME_ARGS: dict[str, tuple[Any, ...]] = {"dash_leases_expiring": (30,), "dash_recent_events": (None, 25),
                                         "dash_touches": (None, None, None, None, None, None, None, 50),
                                         "dash_paced_senders": (PACED_SENDERS_SHOWN,)}


async def measured_queries(conn: Any, home_only: bool = False) -> list[tuple[str, str, tuple[Any, ...]]]:
    """(label, query name, arguments) of every query timed: the home page's, then the pictures' (§18) — the
    timeseries over an hour (the home page's charts) and a day, report.funnel for one campaign and for the five
    (/campaigns) over 30 days — and /commands' when command_runs exists. ``home_only``: the home page's and its
    charts' only (bench/scale.py)."""
    out = [(name, name, HOME_ARGS.get(name, ())) for name in HOME_QUERIES]
    if home_only:
        return [*out, (f"dash_timeseries ({DEFAULT_MINUTES} min)", "dash_timeseries", (DEFAULT_MINUTES,))]
    campaigns = [r["id"] for r in await conn.fetch("select id from campaigns order by name")]
    out += [("dash_timeseries (60 min)", "dash_timeseries", (60,)),
            ("dash_timeseries (1440 min)", "dash_timeseries", (1440,)),
            *[(f"{name} ({what})", name, args)
              for what, args in (("1 campaign, 30 d", (campaigns[:1], 30)), ("5 campaigns, 30 d", (campaigns, 30)),
                                 ("5 campaigns, 1 d", (campaigns, 1)))
              for name in ("report_funnel_sent", "report_funnel_reactions")]]
    if await conn.fetchval("select to_regclass('command_runs') is not null"):
        out.append(("dash_command_runs", "dash_command_runs", (None, None, 50)))
    return out


async def query_times(url: str, n: int = 20, home_only: bool = False) -> dict[str, float]:
    """Median milliseconds of each query, run as the pages run it (read-only, custom plans), so the slowest one is
    named."""
    out: dict[str, float] = {}
    conn = await connect(url)
    try:
        async with conn.transaction(readonly=True):
            await conn.execute("set local plan_cache_mode = force_custom_plan")
            for label, name, args in await measured_queries(conn, home_only):
                took = []
                for _ in range(n):
                    started = time.perf_counter()
                    await conn.fetch(getattr(Q, name), *args)
                    took.append((time.perf_counter() - started) * 1000)
                out[label] = round(statistics.median(took), 2)
    finally:
        await conn.close()
    return out


async def plans(url: str, home_only: bool = False) -> dict[str, list[str]]:
    """Which indexes each measured query walks (EXPLAIN, no ANALYZE)."""
    out: dict[str, list[str]] = {}
    conn = await connect(url)
    try:
        async with conn.transaction():
            await conn.execute("set local plan_cache_mode = force_custom_plan")
            for label, name, args in await measured_queries(conn, home_only):
                plan = await conn.fetchval("explain (format json) " + getattr(Q, name), *args)
                out[label] = sorted(_nodes(json.loads(plan) if isinstance(plan, str) else plan))
    finally:
        await conn.close()
    return out


async def explained(url: str, home_only: bool = False) -> dict[str, str]:
    """EXPLAIN (ANALYZE, BUFFERS) of each measured query, as the pages run it (read-only, custom plans)."""
    out: dict[str, str] = {}
    conn = await connect(url)
    try:
        async with conn.transaction(readonly=True):
            await conn.execute("set local plan_cache_mode = force_custom_plan")
            for label, name, args in await measured_queries(conn, home_only):
                rows = await conn.fetch("explain (analyze, buffers, format text) " + getattr(Q, name), *args)
                out[label] = "\n".join(r[0] for r in rows)
    finally:
        await conn.close()
    return out


def _nodes(plan: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(plan, list):
        for item in plan:
            found |= _nodes(item)
    elif isinstance(plan, dict):
        node = plan.get("Node Type", "")
        if "Index Name" in plan:
            found.add(f"{node}: {plan['Index Name']}")
        elif node == "Seq Scan":
            found.add(f"Seq Scan: {plan.get('Relation Name')}")
        for value in plan.values():
            if isinstance(value, (list, dict)):
                found |= _nodes(value)
    return found


async def timings(base: str, path: str, n: int) -> dict[str, float]:
    async with aiohttp.ClientSession() as http:
        for _ in range(5):  # warm: pool connections, prepared statements, template cache
            async with http.get(base + path) as response:
                assert response.status == 200, await response.text()
                await response.read()
        took = []
        for _ in range(n):
            started = time.perf_counter()
            async with http.get(base + path) as response:
                await response.read()
            took.append((time.perf_counter() - started) * 1000)
    took.sort()
    return {"p50_ms": round(statistics.median(took), 2), "p90_ms": round(took[int(0.9 * (n - 1))], 2),
            "max_ms": round(took[-1], 2)}


@dataclass
class OpenDashboard:
    url: str
    events: int = 0
    touch_events: dict[str, int] = field(default_factory=dict)
    delivered: asyncio.Event = field(default_factory=asyncio.Event)  # set by the first event the feed delivers


@contextlib.asynccontextmanager
async def dashboard_open(database_url: str, **settings: Any) -> AsyncIterator[OpenDashboard]:
    """The dashboard open during a measurement: the web application served from this process, with its live
    feed (GET /api/feed, server-sent events) connected and read; `events` counts what it delivered."""
    runner, base = await start(load_settings(**settings), database_url, "127.0.0.1", 0)
    state = OpenDashboard(base)
    ready = asyncio.Event()

    async def read() -> None:
        async with aiohttp.ClientSession() as http, http.get(base + "api/feed",
                                                             timeout=aiohttp.ClientTimeout(total=None)) as response:
            kind = ""
            async for raw in response.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                    if kind == "ready":
                        ready.set()
                elif line.startswith("data: ") and kind == "event":
                    state.events += 1
                    state.delivered.set()
                    event_type = json.loads(line[6:])["event_type"]
                    state.touch_events[event_type] = state.touch_events.get(event_type, 0) + 1

    reader = asyncio.create_task(read())
    try:
        await asyncio.wait_for(ready.wait(), 30)
        yield state
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
        await runner.cleanup()


async def run(sizes: list[int], requests: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="revenue-asi-bench-dashboard-"))
    server = PgServer(root)
    results: dict[str, Any] = {}
    try:
        await server.prepare_template()
        for rows in sizes:
            url = await server.fresh_database()
            started = time.perf_counter()
            await generate(url, rows)
            generated_s = time.perf_counter() - started
            runner, base = await start(load_settings(), url, "127.0.0.1", 0)
            try:
                results[str(rows)] = {
                    "generated_s": round(generated_s, 1),
                    "/": await timings(base, "", requests),
                    "/touches": await timings(base, "touches", requests),
                    "/metrics": await timings(base, "metrics", requests),
                    "/campaigns": await timings(base, "campaigns", requests),
                    "/api/timeseries?minutes=60": await timings(base, "api/timeseries?minutes=60", requests),
                    "/api/timeseries?minutes=1440": await timings(base, "api/timeseries?minutes=1440", requests),
                    **({"/commands": await timings(base, "commands", requests)} if await has_command_runs(url)
                       else {}),
                    "/api/status": await timings(base, "api/status", max(5, requests // 5)),
                    "query_ms": await query_times(url),
                    "plans": await plans(url),
                }
            finally:
                await runner.cleanup()
            await server.drop_database(url)
    finally:
        server.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="12000,1000000", help="touch_runs counts, comma-separated")
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(json.dumps(asyncio.run(run(sizes, args.requests)), indent=2))


if __name__ == "__main__":
    main()
