"""peer: the same drain on pgqueuer (bench/peers/pgqueuer_peer.py), on the same server in the same invocation, and
the ratio ours / pgqueuer. Ours is the 1-daemon drain at the shipped defaults; the peer is one pgqueuer worker
process. The peer's clock, like ours, runs from the commit of the one transaction that inserts the N touches and
enqueues their N jobs until every touch has its status and event (ours: and every reaction processed).

Both run with the same settings: the peer's task limit is our shipped REVENUE_ASI_CONCURRENCY (32) — and, as an extra
row (once), 64 tasks, its faster setting on this machine — with batch 16, uvloop and one aiohttp session, as ours.
Latency at 200 touches/s is measured for the peer the same way as for us (bench/latency.py: open-loop inserts, one
touch per transaction — for the peer the touch and its job — clock read just before the commit → request at the fake).

``--repeat`` (default 3; 1 with --quick): the pair runs that many times, interleaved (ours drain, peer drain, ours
latency, peer latency; each on a fresh database); the section reports each run and the medians. In the drains both
sides run under bench/counting.py: statements per drained touch (client side, asyncpg's query logger, the top five
queries by client time and by calls) and commits per drained touch (pg_stat_database, net of the bench's own), for
both sides of the same run; CPU per touch by process class (consumer, PostgreSQL, fake provider) as before.

Ours does more per touch than the peer: the pre-send checks (suppression, stop events, expiry, reachability), the
retry machinery and the fallback decision with its event; the peer only sends and records."""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from bench import drain
from bench.counting import TOP, Window
from bench.env import ACCOUNT_SID, AUTH_TOKEN, CpuMeter, Env, Process, clean_env, counted, describe
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


async def _wait_queue_empty(url: str, timeout: float) -> bool:
    conn = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await conn.fetchval(pgqueuer_peer.QUEUE_EMPTY):
                return True
            await asyncio.sleep(0.02)
        return False
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


async def _start_peer(env: Env, url: str, tasks: int, name: str, count: bool = False) -> Process:
    """The peer worker; with ``count``, under bench/counting.py's wrapper (``proc.counts``: its counts file)."""
    conn = await asyncpg.connect(url)
    try:
        await pgqueuer_peer.install(conn)
    finally:
        await conn.close()
    argv = ["-m", "bench.peers.pgqueuer_peer", "--url", url, "--base-url", env.sandbox.base_url,
            "--account-sid", ACCOUNT_SID, "--auth-token", AUTH_TOKEN, "--batch-size", str(BATCH_SIZE),
            "--max-concurrent-tasks", str(tasks)]
    counts = env.root / f"{name}.{uuid.uuid4().hex[:8]}.counts.json" if count else None
    proc = Process(name, counted(argv, counts) if counts else [sys.executable, *argv], clean_env(),
                   env.root / f"{name}.log")
    proc.counts = counts
    await proc.wait_for_log(r"peer ready", timeout=60)
    return proc


async def pgqueuer_drain(env: Env, n: int, tasks: int = SAME_AS_SHIPPED_TASKS, count: bool = False
                         ) -> dict[str, Any]:
    """``count``: the worker under bench/counting.py's wrapper, its statements and commits per drained touch over
    the drain (``counted``), measured as for ours (bench/drain.py)."""
    assert env.pg is not None
    url = await env.pg.fresh_database("peer")
    workload = await Workload(url).setup(n + WARMUP)
    proc = await _start_peer(env, url, tasks, f"pgqueuer_peer_{tasks}", count=count)
    window = Window(env.pg.url, url, [(proc, proc.counts)]) if proc.counts else None
    in_window: dict[str, Any] | None = None
    try:
        await _insert_and_enqueue(workload, WARMUP)
        if await _wait_terminal(url, 60) is None:
            raise RuntimeError(f"pgqueuer peer warm-up did not finish:\n{proc.tail()}")
        await env.sandbox.reset()
        if window is not None:
            await window.begin()
        meter = CpuMeter(env, [proc])
        meter.start()
        insert_s, committed = await _insert_and_enqueue(workload, n)
        finished = await _wait_terminal(url, max(300.0, n / 20))
        # The clock stops when every touch has its status (above); the worker then marks the last jobs done
        # (pgqueuer buffers that): CPU and statements count until its queue is empty, its work for the N touches.
        await _wait_queue_empty(url, 30.0)
        if window is not None:
            await window.end()
        cpu = meter.stop()
        requests = await env.sandbox.requests()
        conn = await connect(url)
        try:
            counts = await outcomes(conn)
        finally:
            await conn.close()
    finally:
        await proc.stop()
        try:
            if window is not None:
                in_window = await window.finish(n)
        finally:
            await env.pg.drop_database(url)
    if finished is None:
        raise RuntimeError(f"pgqueuer drain of {n} did not finish: {counts}\n{proc.tail()}")
    seconds = finished - committed
    return {"touches": n, "insert_s": round(insert_s, 3), "seconds": round(seconds, 3),
            "touches_per_s": round(n / seconds, 1), "sent": counts["by_status"].get("sent", 0) - WARMUP,
            "requests": len(requests), "sent_twice": len(duplicates(requests)),
            "cpu_s": cpu, "cpu_us_per_touch": {k: round(v / n * 1e6) for k, v in cpu.items()},
            "settings": {"batch_size": BATCH_SIZE, "max_concurrent_tasks": tasks,
                         "http": "aiohttp, one keep-alive session (128 connections)", "pgqueuer": _version()},
            **({"counted": in_window} if in_window is not None else {})}


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


SIDES = ("ours", "pgqueuer")


def _cpu_total(run: Mapping[str, Any]) -> float | None:
    """CPU per touch of every process of a drain (dispatcher, fake provider, PostgreSQL), in µs."""
    return float(sum(run["cpu_us_per_touch"].values())) if run.get("cpu_us_per_touch") else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def _median(values: Iterable[float | None], digits: int = 3) -> float | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    middle = statistics.median(present)
    return round(middle) if digits == 0 else round(middle, digits)


def _top_of_medians(drains: Sequence[Mapping[str, Any]], n: int) -> dict[str, list[dict[str, Any]]]:
    """The top queries of a side by the median over runs of each query's client µs per touch and calls per touch
    (a query absent from a run counts 0 there)."""
    runs = [d.get("counted", {}).get("raw", {}).get("by_query", {}) for d in drains]
    labels = {label for by_query in runs for label in by_query}
    rows = []
    for label in labels:
        per_run = [by_query.get(label, {"calls": 0, "seconds": 0.0}) for by_query in runs]
        rows.append({"query": label,
                     "us_per_touch": round(statistics.median(q["seconds"] / n * 1e6 for q in per_run), 1),
                     "calls_per_touch": round(statistics.median(q["calls"] / n for q in per_run), 3)})
    return {"by_time": sorted(rows, key=lambda r: -r["us_per_touch"])[:TOP],
            "by_calls": sorted(rows, key=lambda r: -r["calls_per_touch"])[:TOP]}


def _side(drains: list[dict[str, Any]], latencies: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """One side's medians over the repetitions (each run is in ``runs``)."""

    def med(get: Callable[[dict[str, Any]], float | None], digits: int = 3) -> float | None:
        return _median((get(d) for d in drains), digits)

    classes = sorted({k for d in drains for k in d.get("cpu_us_per_touch", {})})
    counted_keys = ("statements_per_touch", "commits_per_touch", "rollbacks_per_touch", "client_commits_per_touch")
    return {
        "touches": n, "runs_touches_per_s": [d["touches_per_s"] for d in drains],
        "touches_per_s": med(lambda d: d["touches_per_s"], 1), "seconds": med(lambda d: d["seconds"]),
        "sent": min(d["sent"] for d in drains), "sent_twice": sum(d["sent_twice"] for d in drains),
        "requests": min(d["requests"] for d in drains),
        "cpu_us_per_touch": {k: _median((d["cpu_us_per_touch"].get(k) for d in drains), 0) for k in classes},
        "cpu_us_per_touch_total": med(_cpu_total, 0),
        **{k: _median((d.get("counted", {}).get(k) for d in drains), 4) for k in counted_keys},
        "top": _top_of_medians(drains, n),
        "latency": {"p50_ms": _median((r.get("p50_ms") for r in latencies), 2),
                    "p99_ms": _median((r.get("p99_ms") for r in latencies), 2),
                    "received": min((r.get("received", 0) for r in latencies), default=0),
                    "touches": min((r.get("touches", 0) for r in latencies), default=0),
                    "missing": sum(r.get("missing", 0) for r in latencies),
                    "sent_twice": sum(r.get("sent_twice", 0) for r in latencies)},
        **({"concurrency": drains[0]["concurrency"]} if "concurrency" in drains[0] else {}),
        "settings": drains[0].get("settings"),
    }


async def run(env: Env, n: int, repeat: int = 1, ours: dict[str, Any] | None = None,
              latency_duration: float = 10.0, before: Path | None = None) -> dict[str, Any]:
    """Ours at the shipped defaults against the peer with the same settings, ``repeat`` times interleaved (ours,
    peer, ours, peer, … each on a fresh database): the drain (statements and commits counted for both), then the
    latency at 200/s of each; then the peer at 64 tasks once. Medians over the repetitions. ``ours``: the
    throughput section of the same invocation, for the ratio of ours tuned (concurrency 128), if it ran.
    ``before``: a checkout of an earlier commit; each repetition also drains it (its own template and daemon, counted
    the same way), so its CPU, statements and commits per touch and its top statements sit beside ours and the
    peer's in the same run."""
    from bench.latency import at_rate

    before_template = await env.pg.checkout_template(before, env.root) if before is not None and env.pg else None
    runs: list[dict[str, Any]] = []
    for rep in range(repeat):
        started = time.perf_counter()
        earlier = None
        if before is not None:
            earlier = await drain.drain(env, n, 1, drain.SHIPPED, template=before_template, checkout=before,
                                        count=True)
            earlier["concurrency"] = drain.concurrency(drain.SHIPPED)
        shipped = await drain.drain(env, n, 1, drain.SHIPPED, count=True)
        shipped["concurrency"] = drain.concurrency(drain.SHIPPED)
        same = await pgqueuer_drain(env, n, SAME_AS_SHIPPED_TASKS, count=True)
        our_latency = await at_rate(env, LATENCY_RATE, latency_duration)
        peer_latency = await pgqueuer_latency(env, LATENCY_RATE, latency_duration)
        runs.append({"rep": rep, "ours": shipped, "pgqueuer": same,
                     "ratio": _ratio(shipped["touches_per_s"], same["touches_per_s"]),
                     "latency": {"ours": our_latency, "pgqueuer": peer_latency,
                                 "p50_ratio_peer_over_ours": _ratio(peer_latency.get("p50_ms"),
                                                                    our_latency.get("p50_ms")),
                                 "p99_ratio_peer_over_ours": _ratio(peer_latency.get("p99_ms"),
                                                                    our_latency.get("p99_ms"))},
                     **({"ours_before": earlier,
                         "ratio_before": _ratio(earlier["touches_per_s"], same["touches_per_s"])} if earlier else {}),
                     "wall_s": round(time.perf_counter() - started, 1)})
    faster = await pgqueuer_drain(env, n, FASTER_TASKS)
    sides = {side: _side([r[side] for r in runs], [r["latency"][side] for r in runs], n) for side in SIDES}
    mine, peer = sides["ours"], sides["pgqueuer"]
    tuned = next((r for r in (ours or {}).get("runs", []) if r["daemons"] == 1 and r["touches"] == n
                  and r.get("concurrency") == drain.concurrency(drain.TUNED)
                  and "REVENUE_ASI_QUIET_HOURS" not in r.get("settings", {}) and not r.get("dashboard_open")), None)
    result: dict[str, Any] = {
        "touches": n, "repeat": repeat, "order": "per repetition: ours drain, peer drain, ours latency, peer latency",
        "runs": runs, "ours": mine, "pgqueuer": peer, "pgqueuer_64_tasks": faster, "ours_tuned": tuned,
        "ratio": _median((r["ratio"] for r in runs), 2), "ratio_runs": [r["ratio"] for r in runs],
        "ratio_vs_peer_64_tasks": _ratio(mine["touches_per_s"], faster["touches_per_s"]),
        "latency": {"rate": LATENCY_RATE, "duration_s": latency_duration,
                    "ours": mine["latency"], "pgqueuer": peer["latency"],
                    "p50_ratio_peer_over_ours": _median((r["latency"]["p50_ratio_peer_over_ours"] for r in runs), 2),
                    "p99_ratio_peer_over_ours": _median((r["latency"]["p99_ratio_peer_over_ours"] for r in runs), 2)},
        "note": "ours = 1 daemon at the shipped defaults (REVENUE_ASI_CONCURRENCY 32), full pipeline incl. pre-send "
                "checks and the fallback decision; pgqueuer = 1 worker, batch 16, 32 tasks (same as ours) — and 64 "
                "tasks as an extra row (once); it only sends, writes the status and touch_sent. Both drains run "
                "under bench/counting.py (client-side statement counts; commits from pg_stat_database)",
    }
    result["cpu_us_per_touch"] = {
        "ours": mine["cpu_us_per_touch"], "pgqueuer": peer["cpu_us_per_touch"],
        "total": {"ours": mine["cpu_us_per_touch_total"], "pgqueuer": peer["cpu_us_per_touch_total"]},
        "total_ratio_peer_over_ours": _ratio(peer["cpu_us_per_touch_total"], mine["cpu_us_per_touch_total"]),
        # Both sides share the fake provider, whose cost per request no dispatcher can remove: on a machine whose
        # cores are all busy, the drain ratio cannot exceed (the peer's CPU per touch) / (the fake's alone).
        "ratio_ceiling_from_the_fake": _ratio(peer["cpu_us_per_touch_total"], mine["cpu_us_per_touch"].get("sandbox")),
    }
    result["statements"] = {side: {k: sides[side][k] for k in ("statements_per_touch", "commits_per_touch",
                                                              "rollbacks_per_touch", "client_commits_per_touch",
                                                              "top")} for side in SIDES}
    if tuned is not None:
        result["ratio_tuned"] = _ratio(tuned["touches_per_s"], peer["touches_per_s"])
    if before is not None:
        earlier_side = _side([r["ours_before"] for r in runs], [], n)
        del earlier_side["latency"]
        result["ours_before"] = {"checkout": str(before), "commit": describe(before), **earlier_side}
        result["ratio_before"] = _median((r["ratio_before"] for r in runs), 2)
        result["statements"]["ours_before"] = {k: earlier_side[k] for k in (
            "statements_per_touch", "commits_per_touch", "rollbacks_per_touch", "client_commits_per_touch", "top")}
        result["cpu_us_per_touch"]["ours_before"] = earlier_side["cpu_us_per_touch"]
        result["cpu_us_per_touch"]["total"]["ours_before"] = earlier_side["cpu_us_per_touch_total"]
    return result
