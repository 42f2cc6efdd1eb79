"""latency: commit of a due touch → the request arriving at the fake provider, at fixed offered rates.

The load generator offers touches open-loop (touch i is due to be inserted at t0 + i/rate, whatever happened to
earlier ones), one touch per transaction, over a small pool of connections. Two clocks per touch, both the machine's
wall clock (the fake runs on the same machine and records ``received_at_wall``):

* ``insert``: ``clock_timestamp()`` read by the INSERT itself, just before its commit — latency from it is an upper
  bound of commit → received (it includes the commit's WAL flush). This is the headline number.
* ``ack``: the bench's clock right after the commit returned — a lower bound (the daemon may hear the NOTIFY before
  the client sees its commit acknowledged).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from bench.drain import SHIPPED, maybe_dashboard, start_daemons, warm_up
from bench.env import CpuMeter, DaemonProcess, Env
from bench.workload import Workload, duplicates, first_receipts, insert_one, summary_ms, wait_drained

GENERATOR_CONNECTIONS = 8
DASHBOARD_RATE = 200.0


async def offer(pool: asyncpg.Pool, workload: Workload, rate: float, duration: float,
                enqueue: Callable[[asyncpg.Connection, list[uuid.UUID]], Awaitable[None]] | None = None,
                ) -> list[tuple[str, float, float]]:
    """Insert ``rate * duration`` touches at ``rate`` per second. Returns (touch id, insert clock, ack clock).
    With ``enqueue`` (the peer), each touch and its job commit together; the clock is read after both."""
    n = max(1, int(rate * duration))
    assert workload.account_id is not None
    account_id = workload.account_id
    leads = workload.take_leads(n)
    out: list[tuple[str, float, float]] = []

    async def one(lead_id: uuid.UUID) -> None:
        touch_id = uuid.uuid4()
        async with pool.acquire() as conn:
            if enqueue is None:
                at_insert = await insert_one(conn, account_id, lead_id, touch_id)
            else:
                async with conn.transaction():
                    await insert_one(conn, account_id, lead_id, touch_id)
                    await enqueue(conn, [touch_id])
                    at_insert = float(await conn.fetchval("select extract(epoch from clock_timestamp())::float8"))
        out.append((str(touch_id), at_insert, time.time()))

    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter()
    for i, lead_id in enumerate(leads):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(lead_id)))
    await asyncio.gather(*tasks)
    return out


async def measure_rate(env: Env, workload: Workload, pool: asyncpg.Pool, rate: float, duration: float,
                       daemons: list[DaemonProcess]) -> dict[str, Any]:
    await env.sandbox.reset()
    meter = CpuMeter(env, daemons)
    meter.start()
    offered = await offer(pool, workload, rate, duration)
    done = await wait_drained(workload.url, timeout=120)
    cpu = meter.stop()
    requests = await env.sandbox.requests()
    return {
        "offered_rate": rate, "duration_s": duration, **receipts_summary(offered, requests),
        "drained": done["reacted_at"] is not None,
        "cpu_us_per_touch": {k: round(v / max(1, len(offered)) * 1e6) for k, v in cpu.items()},
    }


def receipts_summary(offered: list[tuple[str, float, float]], requests: list[Any]) -> dict[str, Any]:
    receipts = first_receipts(requests)
    from_insert, from_ack = [], []
    missing = 0
    for touch_id, at_insert, at_ack in offered:
        received = receipts.get(touch_id)
        if received is None:
            missing += 1
            continue
        from_insert.append(received - at_insert)
        from_ack.append(received - at_ack)
    inserts = sorted(o[1] for o in offered)
    span = inserts[-1] - inserts[0] if len(inserts) > 1 else 0.0
    return {"touches": len(offered), "achieved_rate": round((len(inserts) - 1) / span, 1) if span > 0 else None,
            "received": len(from_insert), "missing": missing, "sent_twice": len(duplicates(requests)),
            **summary_ms(from_insert), "ack": summary_ms(from_ack)}


async def run(env: Env, rates: tuple[float, ...], duration: float, settings: dict[str, Any] | None = None
              ) -> dict[str, Any]:
    assert env.pg is not None
    url = await env.pg.fresh_database("latency")
    dashboard_rate = DASHBOARD_RATE if DASHBOARD_RATE in rates else None
    total = sum(int(r * duration) + 1 for r in rates) + (int(DASHBOARD_RATE * duration) + 1 if dashboard_rate else 0)
    workload = await Workload(url).setup(total + 100)
    daemons = await start_daemons(env, url, 1, SHIPPED if settings is None else settings)
    pool = await asyncpg.create_pool(url, min_size=GENERATOR_CONNECTIONS, max_size=GENERATOR_CONNECTIONS)
    try:
        await warm_up(env, workload, 100)
        results = [await measure_rate(env, workload, pool, rate, duration, daemons) for rate in rates]
        if dashboard_rate:  # the same rate again with the director dashboard open (issue 13: it must cost nothing)
            async with maybe_dashboard(url, True):
                open_run = await measure_rate(env, workload, pool, dashboard_rate, duration, daemons)
            closed = next(r for r in results if r["offered_rate"] == dashboard_rate)
            dashboard = {"rate": dashboard_rate, "open": open_run,
                         "p50_ratio_closed_over_open": _ratio(closed.get("p50_ms"), open_run.get("p50_ms")),
                         "p99_ratio_closed_over_open": _ratio(closed.get("p99_ms"), open_run.get("p99_ms"))}
    finally:
        await pool.close()
        await env.stop_daemons(daemons)
        await env.pg.drop_database(url)
    return {"clock": "insert (clock_timestamp() in the INSERT, before its commit) → fake received_at_wall; "
                     "'ack' = from the commit acknowledgement instead", "daemons": 1,
            "settings": SHIPPED if settings is None else settings, "rates": results,
            "dashboard": dashboard if dashboard_rate else None}


async def at_rate(env: Env, rate: float, duration: float, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """One offered rate on a fresh database, 1 daemon, measured as ``run`` measures each rate (no dashboard
    variant): what bench/peer.py compares with the peer, once per repetition."""
    assert env.pg is not None
    url = await env.pg.fresh_database("latency")
    workload = await Workload(url).setup(int(rate * duration) + 1 + 100)
    daemons = await start_daemons(env, url, 1, SHIPPED if settings is None else settings)
    pool = await asyncpg.create_pool(url, min_size=GENERATOR_CONNECTIONS, max_size=GENERATOR_CONNECTIONS)
    try:
        await warm_up(env, workload, 100)
        return await measure_rate(env, workload, pool, rate, duration, daemons)
    finally:
        await pool.close()
        await env.stop_daemons(daemons)
        await env.pg.drop_database(url)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None
