"""peer: the same drain on pgqueuer (bench/peers/pgqueuer_peer.py), on the same server in the same invocation, and
the ratio ours / pgqueuer. Ours is the 1-daemon drain (measured here, or taken from the throughput section of the
same run); the peer is one pgqueuer worker process. The peer's clock, like ours, runs from the commit of the one
transaction that inserts the N touches and enqueues their N jobs until every touch has its status and event.

Both run with the same settings: the peer's task limit is our shipped REVENUE_ASI_CONCURRENCY (32) — and, as an extra
row, 64 tasks, its faster setting on this machine — with batch 16, uvloop and one aiohttp session, as ours. Latency
at 200 touches/s is measured for the peer the same way as for us (bench/latency.py: open-loop inserts, one touch per
transaction — for the peer the touch and its job — clock read just before the commit → request at the fake).

Ours does more per touch than the peer: the pre-send checks (suppression, stop events, expiry, reachability), the
retry machinery and the fallback decision with its event; the peer only sends and records."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import asyncpg

from bench import drain
from bench.env import ACCOUNT_SID, AUTH_TOKEN, CpuMeter, Env, Process, clean_env
from bench.peers import pgqueuer_peer
from bench.workload import Workload, duplicates, insert_many, outcomes
from listener.store.database import connect

WARMUP = 40
BATCH_SIZE = 16
SAME_AS_SHIPPED_TASKS = 32  # our REVENUE_ASI_CONCURRENCY default
FASTER_TASKS = 64
LATENCY_RATE = 200.0


async def _wait_terminal(url: str, timeout: float) -> float | None:
    conn = await connect(url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not await conn.fetchval("select exists (select 1 from touch_runs "
                                       "where status in ('queued', 'scheduled', 'processing'))"):
                return time.time()
            await asyncio.sleep(0.02)
        return None
    finally:
        await conn.close()


async def _insert_and_enqueue(workload: Workload, n: int) -> tuple[float, float]:
    assert workload.account_id is not None
    leads = workload.take_leads(n)
    conn = await asyncpg.connect(workload.url)  # no jsonb codec: pgqueuer passes its headers as JSON text
    try:
        started = time.perf_counter()
        async with conn.transaction():
            ids = await insert_many(conn, workload.account_id, leads)
            await pgqueuer_peer.enqueue(conn, ids)
        return time.perf_counter() - started, time.time()
    finally:
        await conn.close()


async def _start_peer(env: Env, url: str, tasks: int, name: str) -> Process:
    conn = await asyncpg.connect(url)
    try:
        await pgqueuer_peer.install(conn)
    finally:
        await conn.close()
    argv = [sys.executable, "-m", "bench.peers.pgqueuer_peer", "--url", url, "--base-url", env.sandbox.base_url,
            "--account-sid", ACCOUNT_SID, "--auth-token", AUTH_TOKEN, "--batch-size", str(BATCH_SIZE),
            "--max-concurrent-tasks", str(tasks)]
    proc = Process(name, argv, clean_env(), env.root / f"{name}.log")
    await proc.wait_for_log(r"peer ready", timeout=60)
    return proc


async def pgqueuer_drain(env: Env, n: int, tasks: int = SAME_AS_SHIPPED_TASKS) -> dict[str, Any]:
    assert env.pg is not None
    url = await env.pg.fresh_database("peer")
    workload = await Workload(url).setup(n + WARMUP)
    proc = await _start_peer(env, url, tasks, f"pgqueuer_peer_{tasks}")
    try:
        await _insert_and_enqueue(workload, WARMUP)
        if await _wait_terminal(url, 60) is None:
            raise RuntimeError(f"pgqueuer peer warm-up did not finish:\n{proc.tail()}")
        await env.sandbox.reset()
        meter = CpuMeter(env, [proc])
        meter.start()
        insert_s, committed = await _insert_and_enqueue(workload, n)
        finished = await _wait_terminal(url, max(300.0, n / 20))
        cpu = meter.stop()
        requests = await env.sandbox.requests()
        conn = await connect(url)
        try:
            counts = await outcomes(conn)
        finally:
            await conn.close()
    finally:
        await proc.stop()
        await env.pg.drop_database(url)
    if finished is None:
        raise RuntimeError(f"pgqueuer drain of {n} did not finish: {counts}\n{proc.tail()}")
    seconds = finished - committed
    return {"touches": n, "insert_s": round(insert_s, 3), "seconds": round(seconds, 3),
            "touches_per_s": round(n / seconds, 1), "sent": counts["by_status"].get("sent", 0) - WARMUP,
            "requests": len(requests), "sent_twice": len(duplicates(requests)),
            "cpu_s": cpu, "cpu_us_per_touch": {k: round(v / n * 1e6) for k, v in cpu.items()},
            "settings": {"batch_size": BATCH_SIZE, "max_concurrent_tasks": tasks,
                         "http": "aiohttp, one keep-alive session (128 connections)", "pgqueuer": _version()}}


def _version() -> str:
    import pgqueuer

    return getattr(pgqueuer, "__version__", "?")


async def pgqueuer_latency(env: Env, rate: float, duration: float) -> dict[str, Any]:
    """The peer at a fixed offered rate, measured as bench/latency.py measures ours."""
    from bench.latency import GENERATOR_CONNECTIONS, offer, receipts_summary

    assert env.pg is not None
    url = await env.pg.fresh_database("peer_latency")
    workload = await Workload(url).setup(int(rate * duration) + WARMUP + 10)
    proc = await _start_peer(env, url, SAME_AS_SHIPPED_TASKS, "pgqueuer_peer_latency")
    pool = await asyncpg.create_pool(url, min_size=GENERATOR_CONNECTIONS, max_size=GENERATOR_CONNECTIONS)
    try:
        await _insert_and_enqueue(workload, WARMUP)
        if await _wait_terminal(url, 60) is None:
            raise RuntimeError(f"pgqueuer peer warm-up did not finish:\n{proc.tail()}")
        await env.sandbox.reset()
        offered = await offer(pool, workload, rate, duration, enqueue=pgqueuer_peer.enqueue)
        await _wait_terminal(url, 120)
        requests = await env.sandbox.requests()
    finally:
        await pool.close()
        await proc.stop()
        await env.pg.drop_database(url)
    return {"offered_rate": rate, "duration_s": duration, **receipts_summary(offered, requests),
            "settings": {"batch_size": BATCH_SIZE, "max_concurrent_tasks": SAME_AS_SHIPPED_TASKS}}


def _cpu_total(run: dict[str, Any]) -> float | None:
    """CPU per touch of every process of a drain (dispatcher, fake provider, PostgreSQL), in µs."""
    return float(sum(run["cpu_us_per_touch"].values())) if run.get("cpu_us_per_touch") else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


async def run(env: Env, n: int, ours: dict[str, Any] | None = None, latency: dict[str, Any] | None = None,
              latency_duration: float = 10.0) -> dict[str, Any]:
    """Ours at the shipped defaults (and tuned) against the peer with the same settings, in this one run."""

    def from_throughput(conc: int) -> dict[str, Any] | None:
        runs = (ours or {}).get("runs", [])
        return next((r for r in runs if r["daemons"] == 1 and r["touches"] == n and r.get("concurrency") == conc
                      and "REVENUE_ASI_QUIET_HOURS" not in r.get("settings", {}) and not r.get("dashboard_open")),
                    None)

    shipped = from_throughput(drain.concurrency(drain.SHIPPED)) or await drain.drain(env, n, 1, drain.SHIPPED)
    tuned = from_throughput(drain.concurrency(drain.TUNED))
    same = await pgqueuer_drain(env, n, SAME_AS_SHIPPED_TASKS)
    faster = await pgqueuer_drain(env, n, FASTER_TASKS)
    our_latency = next((r for r in (latency or {}).get("rates", []) if r["offered_rate"] == LATENCY_RATE), None)
    if our_latency is None:
        from bench.latency import run as latency_run

        our_latency = (await latency_run(env, (LATENCY_RATE,), latency_duration))["rates"][0]
    peer_latency = await pgqueuer_latency(env, LATENCY_RATE, our_latency.get("duration_s", latency_duration))
    result: dict[str, Any] = {
        "touches": n, "ours": shipped, "ours_tuned": tuned, "pgqueuer": same, "pgqueuer_64_tasks": faster,
        "ratio": _ratio(shipped["touches_per_s"], same["touches_per_s"]),
        "ratio_vs_peer_64_tasks": _ratio(shipped["touches_per_s"], faster["touches_per_s"]),
        "latency": {"rate": LATENCY_RATE, "ours": {k: our_latency.get(k) for k in ("p50_ms", "p99_ms", "received")},
                    "pgqueuer": {k: peer_latency.get(k) for k in ("p50_ms", "p99_ms", "received")},
                    "p50_ratio_peer_over_ours": _ratio(peer_latency.get("p50_ms"), our_latency.get("p50_ms")),
                    "p99_ratio_peer_over_ours": _ratio(peer_latency.get("p99_ms"), our_latency.get("p99_ms"))},
        "note": "ours = 1 daemon at the shipped defaults (REVENUE_ASI_CONCURRENCY 32), full pipeline incl. pre-send "
                "checks and the fallback decision; pgqueuer = 1 worker, batch 16, 32 tasks (same as ours) — and 64 "
                "tasks as an extra row; it only sends, writes the status and touch_sent",
    }
    peer_cpu, our_cpu = _cpu_total(same), _cpu_total(shipped)
    result["cpu_us_per_touch"] = {
        "ours": shipped.get("cpu_us_per_touch"), "pgqueuer": same.get("cpu_us_per_touch"),
        "total_ratio_peer_over_ours": _ratio(peer_cpu, our_cpu),
        # Both sides share the fake provider, whose cost per request no dispatcher can remove: on a machine whose
        # cores are all busy, the drain ratio cannot exceed (the peer's CPU per touch) / (the fake's alone).
        "ratio_ceiling_from_the_fake": _ratio(peer_cpu, (shipped.get("cpu_us_per_touch") or {}).get("sandbox")),
    }
    if tuned is not None:
        result["ratio_tuned"] = _ratio(tuned["touches_per_s"], same["touches_per_s"])
    return result
