"""throughput: drain N due touches end to end (claim, provider call, status + event, fallback decision) with 1 and
with 2 daemons. The daemons are started and warmed up first; then N touches are inserted in one transaction and the
clock runs from that commit until every touch is terminal AND every reaction has been processed (event_reactions
is empty)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from bench.counting import Window
from bench.env import CpuMeter, DaemonProcess, Env
from bench.workload import STATS_FLUSH_S, XACTS, Workload, checkpoint_and_count, duplicates, outcomes, wait_drained
from listener.store.database import connect
from listener.store.queries import Q

WARMUP_PER_DAEMON = 40


async def start_daemons(env: Env, url: str, n: int, settings: Mapping[str, Any] | None = None,
                        names: list[str] | None = None, checkout: Path | None = None,
                        count: bool = False) -> list[DaemonProcess]:
    daemons = [env.start_daemon(url, settings, name=(names[i] if names else None), checkout=checkout, count=count)
               for i in range(n)]
    await asyncio.gather(*(d.wait_started() for d in daemons))
    return daemons


async def warm_up(env: Env, workload: Workload, n: int, timeout: float = 60.0) -> None:
    """Send ``n`` touches through the daemons (connections opened, statements prepared, HTTP pools filled), and
    wait until the daemons have enriched the workload's new leads (SPEC §15: a daemon enriches every lead inserted
    while it runs; the drain must not measure that work)."""
    await workload.burst(n)
    done = await wait_drained(workload.url, timeout=timeout)
    if done["reacted_at"] is None:
        logs = "\n".join(f"--- {d.name}\n{d.tail()}" for d in env.daemons)
        raise RuntimeError(f"warm-up did not drain within {timeout}s\n{logs}")
    conn = await connect(workload.url)
    try:
        deadline = time.monotonic() + timeout
        while await conn.fetchval(Q.enrichment_inbox_count):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the daemons did not enrich the workload's leads within {timeout}s")
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def maybe_dashboard(url: str, open_it: bool) -> AsyncIterator[Any]:
    """The director dashboard open during a measurement (issue 13: it must not cost dispatch): the web application
    with its live feed connected and read, and `/` fetched every 3 s as the open page does."""
    if not open_it:
        yield None
        return
    from bench.dashboard import dashboard_open

    async with dashboard_open(url) as dashboard:
        async def poll() -> None:
            async with aiohttp.ClientSession() as http:
                while True:
                    async with http.get(dashboard.url) as response:
                        await response.read()
                    await asyncio.sleep(3)

        poller = asyncio.create_task(poll())
        try:
            yield dashboard
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await poller


async def drain(env: Env, n: int, daemons: int, settings: Mapping[str, Any] | None = None,
                dashboard: bool = False, template: str | None = None, checkout: Path | None = None,
                checkpoint: bool = False, count: bool = False) -> dict[str, Any]:
    """``template``/``checkout``: the database cloned from that template and the daemons run from that checkout
    (another working tree, e.g. the commit before a change: bench/overhead.py); by default this checkout's.
    ``checkpoint``: a CHECKPOINT just before the clock starts, and the transactions per touch counted.
    ``count``: the daemons run under bench/counting.py's wrapper; their statements and commits per drained touch
    over the drain (``counted``: see counting.Window; the window's start waits for the warm-up's statistics)."""
    assert env.pg is not None
    url = await (env.pg.database_from(template, "drain") if template else env.pg.fresh_database("drain"))
    workload = await Workload(url).setup(n + WARMUP_PER_DAEMON * daemons)
    procs = await start_daemons(env, url, daemons, settings, checkout=checkout, count=count)
    window = Window(env.pg.url, url, [(d, d.counts) for d in procs if d.counts]) if count else None
    in_window: dict[str, Any] | None = None
    try:
        await warm_up(env, workload, WARMUP_PER_DAEMON * daemons)
        await env.sandbox.reset()
        xacts_before = await checkpoint_and_count(url) if checkpoint else None
        if window is not None:
            await window.begin()
        meter = CpuMeter(env, procs)
        meter.start()
        async with maybe_dashboard(url, dashboard) as open_dashboard:
            _, insert_s, committed = await workload.burst(n)
            done = await wait_drained(url, timeout=max(120.0, n / 100))
            if window is not None:
                await window.end()
            if open_dashboard is not None:  # after the clock stopped: a short drain can end before the feed's push
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(open_dashboard.delivered.wait(), 10)
            feed_events = open_dashboard.events if open_dashboard is not None else None
        cpu = meter.stop()
        requests = await env.sandbox.requests()
        if xacts_before is not None:
            await asyncio.sleep(STATS_FLUSH_S)
        conn = await connect(url)
        try:
            counts = await outcomes(conn)
            xacts = await conn.fetchval(XACTS) - xacts_before if xacts_before is not None else None
        finally:
            await conn.close()
    finally:
        await env.stop_daemons(procs)
        try:
            if window is not None:
                in_window = await window.finish(n)
        finally:
            await env.pg.drop_database(url)
    if done["reacted_at"] is None:
        raise RuntimeError(f"drain of {n} with {daemons} daemon(s) did not finish: {counts}")
    seconds = done["reacted_at"] - committed
    send_seconds = (done["terminal_at"] or done["reacted_at"]) - committed
    dups = duplicates(requests)
    return {
        "daemons": daemons, "touches": n, "insert_s": round(insert_s, 3), "seconds": round(seconds, 3),
        "touches_per_s": round(n / seconds, 1), "send_phase_s": round(send_seconds, 3),
        "sent": counts["by_status"].get("sent", 0) - WARMUP_PER_DAEMON * daemons, "requests": len(requests), "sent_twice": len(dups),
        "outcomes": counts,
        "cpu_s": cpu, "cpu_us_per_touch": {k: round(v / n * 1e6) for k, v in cpu.items()},
        "settings": dict(settings or {}), "dashboard_open": dashboard, "dashboard_feed_events": feed_events,
        **({"transactions_per_touch": round(xacts / n, 2)} if xacts is not None else {}),
        **({"counted": in_window} if in_window is not None else {}),
    }


SHIPPED: dict[str, Any] = {}  # REVENUE_ASI_CONCURRENCY 32, claim batch 64
TUNED: dict[str, Any] = {"REVENUE_ASI_CONCURRENCY": 128}  # the bench's setting (docs/performance.md)
RULES_OFF: dict[str, Any] = {"REVENUE_ASI_QUIET_HOURS": "off"}  # the sending rules' cost: shipped vs rules off
CONFIGS: tuple[tuple[int, dict[str, Any]], ...] = ((1, SHIPPED), (1, RULES_OFF), (1, TUNED), (2, TUNED))


def concurrency(settings: Mapping[str, Any]) -> int:
    return int(settings.get("REVENUE_ASI_CONCURRENCY", 32))


async def run(env: Env, n: int, configs: tuple[tuple[int, dict[str, Any]], ...] = CONFIGS) -> dict[str, Any]:
    runs = []
    for count, settings in configs:
        started = time.perf_counter()
        result = await drain(env, n, count, settings)
        result["concurrency"] = concurrency(settings)
        result["wall_s"] = round(time.perf_counter() - started, 1)
        runs.append(result)
    started = time.perf_counter()
    with_dashboard = await drain(env, n, 1, SHIPPED, dashboard=True)
    with_dashboard["concurrency"] = concurrency(SHIPPED)
    with_dashboard["wall_s"] = round(time.perf_counter() - started, 1)
    runs.append(with_dashboard)
    shipped = next((r for r in runs if r["daemons"] == 1 and r["settings"] == SHIPPED and not r["dashboard_open"]),
                   None)
    off = next((r for r in runs if r["daemons"] == 1 and r["settings"] == RULES_OFF), None)
    rules_ratio = round(shipped["touches_per_s"] / off["touches_per_s"], 2) if shipped and off else None
    dashboard_ratio = round(with_dashboard["touches_per_s"] / shipped["touches_per_s"], 2) if shipped else None
    return {"touches": n, "sending_rules_ratio": rules_ratio, "dashboard_open_ratio": dashboard_ratio, "payload": "v2 sms touch without routing.fallback: each decision is a cheap stop "
                                     "(no_fallback_plan) with its fallback_decision event", "runs": runs}
