"""fair: SPEC §16's two-account scenario. Account A commits a backlog of N touches in ONE transaction (a campaign
launch; 20,000 by default) and, while it drains, account B commits a trickle — one touch every 100 ms, one per
transaction, each to its own lead, open loop — until A's last touch is terminal.

Measured, with the daemon(s) at the shipped defaults (REVENUE_ASI_CONCURRENCY 32, claim batch 64):
* the trickle's latency, commit → its request at the fake provider (the INSERT's clock_timestamp() → the fake's
  received_at_wall, as bench/latency.py measures it: an upper bound of commit → received; 'ack' = from the commit's
  acknowledgement, a lower bound). SPEC §16: within 1 s;
* the backlog's drain, from A's commit to A's last request at the fake (``touches_per_s``; also until A's last
  touch is terminal, ``terminal_s``), with the trickle running and — the reference — the same backlog with NO
  second account in the database. SPEC §16: the drop is at most 10 % (ratio ≥ 0.90).

Each side runs ``repeat`` times (3 by default) on a fresh database with fresh daemons, interleaved ABBA (alone,
with, with, alone, …) so drift and other work on the machine hit both sides alike; the table shows medians.
With one daemon, and (full run) again with two on the same database."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from bench.drain import SHIPPED, WARMUP_PER_DAEMON, start_daemons, warm_up
from bench.env import CpuMeter, Env
from bench.latency import receipts_summary
from bench.workload import (
    STATS_FLUSH_S,
    XACTS,
    Workload,
    checkpoint_and_count,
    duplicates,
    first_receipts,
    insert_one,
    outcomes,
    summary_ms,
    wait_drained,
)
from listener.store.database import connect

TRICKLE_INTERVAL_S = 0.1
TRICKLE_WARMUP = 5
TRICKLE_CONNECTIONS = 4
SPEC_LATENCY_MS = 1000.0
SPEC_DRAIN_RATIO = 0.90

Insert = Callable[[asyncpg.Connection, uuid.UUID, uuid.UUID, uuid.UUID], Awaitable[float]]

ACCOUNT_OPEN = """
select exists (select 1 from touch_runs where account_id = $1 and status in ('queued', 'scheduled', 'processing')
               and ($2::text is null or channel = $2))
"""


class Trickle:
    """Open loop: touch i is inserted at start + i × ``interval_s`` whatever happened to the earlier ones, one per
    transaction, each to its own lead of ``workload``, until ``stop`` is set (or its leads run out)."""

    def __init__(self, pool: asyncpg.Pool, workload: Workload, interval_s: float, leads: int,
                 insert: Insert = insert_one) -> None:
        self.pool = pool
        self.workload = workload
        self.interval_s = interval_s
        self.leads = workload.take_leads(leads)
        self.insert = insert
        self.exhausted = False
        self.offered: list[tuple[str, float, float]] = []  # (touch id, insert clock, ack clock)

    async def _one(self, lead_id: uuid.UUID) -> None:
        assert self.workload.account_id is not None
        touch_id = uuid.uuid4()
        async with self.pool.acquire() as conn:
            at_insert = await self.insert(conn, self.workload.account_id, lead_id, touch_id)
        self.offered.append((str(touch_id), at_insert, time.time()))

    async def run(self, stop: asyncio.Event) -> list[tuple[str, float, float]]:
        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter()
        for i, lead_id in enumerate(self.leads):
            delay = start + i * self.interval_s - time.perf_counter()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                    break
                except TimeoutError:
                    pass
            elif stop.is_set():
                break
            tasks.append(asyncio.create_task(self._one(lead_id)))
        else:
            self.exhausted = True
        await asyncio.gather(*tasks)
        return self.offered


async def wait_account_terminal(url: str, account_id: uuid.UUID, timeout: float, channel: str | None = None,
                                poll_s: float = 0.02) -> float | None:
    """Wall clock when no touch of ``account_id`` (on ``channel``) is open any more; None after ``timeout``."""
    conn = await connect(url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not await conn.fetchval(ACCOUNT_OPEN, account_id, channel):
                return time.time()
            await asyncio.sleep(poll_s)
        return None
    finally:
        await conn.close()


async def one_run(env: Env, n: int, daemons: int, trickle_s: float | None) -> dict[str, Any]:
    """One backlog of ``n`` touches of account A; with ``trickle_s``, account B's trickle at that interval."""
    assert env.pg is not None
    url = await env.pg.fresh_database("fair")
    backlog = await Workload(url).setup(n + WARMUP_PER_DAEMON * daemons)
    timeout = max(120.0, n / 100)
    other: Workload | None = None
    trickle_leads = int(timeout / trickle_s) + 10 if trickle_s else 0
    if trickle_s:
        other = await Workload(url).setup(trickle_leads + TRICKLE_WARMUP)
    procs = await start_daemons(env, url, daemons, SHIPPED)
    pool: asyncpg.Pool | None = None
    try:
        await warm_up(env, backlog, WARMUP_PER_DAEMON * daemons)
        if other is not None:
            await warm_up(env, other, TRICKLE_WARMUP)
            pool = await asyncpg.create_pool(url, min_size=TRICKLE_CONNECTIONS, max_size=TRICKLE_CONNECTIONS)
        await env.sandbox.reset()
        xacts_before = await checkpoint_and_count(url)
        meter = CpuMeter(env, procs)
        meter.start()
        ids, insert_s, committed = await backlog.burst(n)
        stop = asyncio.Event()
        trickle = (Trickle(pool, other, trickle_s, trickle_leads)
                   if pool is not None and other is not None and trickle_s else None)
        trickling = asyncio.create_task(trickle.run(stop)) if trickle is not None else None
        assert backlog.account_id is not None
        terminal_at = await wait_account_terminal(url, backlog.account_id, timeout)
        cpu = meter.stop()  # the backlog's drain (with the trickle's touches so far, ~1 % more touches)
        stop.set()
        offered = await trickling if trickling is not None else []
        done = await wait_drained(url, timeout=60)
        requests = await env.sandbox.requests()
        await asyncio.sleep(STATS_FLUSH_S)
        conn = await connect(url)
        try:
            counts = await outcomes(conn)
            xacts = await conn.fetchval(XACTS) - xacts_before
        finally:
            await conn.close()
    finally:
        if pool is not None:
            await pool.close()
        await env.stop_daemons(procs)
        await env.pg.drop_database(url)
    if terminal_at is None or done["reacted_at"] is None:
        raise RuntimeError(f"fair: the backlog of {n} ({daemons} daemon(s)) did not drain: {counts}")
    receipts = first_receipts(requests)
    backlog_ids = {str(i) for i in ids}
    backlog_times = [t for touch_id, t in receipts.items() if touch_id in backlog_ids]
    last = max(backlog_times)
    drain_s = last - committed
    result: dict[str, Any] = {
        "side": "with_trickle" if trickle_s else "alone", "daemons": daemons, "touches": n,
        "insert_s": round(insert_s, 3), "drain_s": round(drain_s, 3), "touches_per_s": round(n / drain_s, 1),
        "terminal_s": round(terminal_at - committed, 3),
        "terminal_touches_per_s": round(n / (terminal_at - committed), 1),
        "backlog_received": len(backlog_times), "requests": len(requests), "sent_twice": len(duplicates(requests)),
        "outcomes": counts, "loadavg_1m": round(os.getloadavg()[0], 2),
        "transactions_per_touch": round(xacts / (n + len(offered)), 2),
        "cpu_s": cpu, "cpu_us_per_backlog_touch": {k: round(v / n * 1e6) for k, v in cpu.items()},
    }
    if trickle is not None:
        summary = receipts_summary(offered, requests)
        during = sum(1 for touch_id, _, _ in offered if receipts.get(touch_id, float("inf")) < last)
        result["trickle"] = {"interval_ms": round(trickle_s * 1000), "touches": len(offered),
                             "sent_while_backlog_open": during, "leads_ran_out": trickle.exhausted, **summary}
        result["_trickle_latencies_s"] = [receipts[t] - at for t, at, _ in offered if t in receipts]
    return result


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


async def compare(env: Env, n: int, daemons: int, repeat: int, trickle_s: float) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    for rep in range(repeat):
        order = (None, trickle_s) if rep % 2 == 0 else (trickle_s, None)  # ABBA: drift hits both sides alike
        for side in order:
            run = await one_run(env, n, daemons, side)
            run["rep"] = rep
            runs.append(run)
    alone = [r for r in runs if r["side"] == "alone"]
    with_ = [r for r in runs if r["side"] == "with_trickle"]
    pooled = [s for r in with_ for s in r.pop("_trickle_latencies_s")]
    alone_rate = _median([r["touches_per_s"] for r in alone])
    with_rate = _median([r["touches_per_s"] for r in with_])
    pairs = [w["touches_per_s"] / a["touches_per_s"] for a, w in zip(alone, with_, strict=True)]
    trickles = [r["trickle"] for r in with_]
    latency = {
        "p50_ms": _median([t["p50_ms"] for t in trickles if t["p50_ms"] is not None]),
        "p99_ms": _median([t["p99_ms"] for t in trickles if t["p99_ms"] is not None]),
        "max_ms": _median([t["max_ms"] for t in trickles if t["max_ms"] is not None]),
        "worst_max_ms": max((t["max_ms"] for t in trickles if t["max_ms"] is not None), default=None),
        "pooled": {"touches": len(pooled), **summary_ms(pooled)},
        "ack_p99_ms": _median([t["ack"]["p99_ms"] for t in trickles if t["ack"]["p99_ms"] is not None]),
    }
    ratio = _ratio(with_rate, alone_rate)
    cpu = {side: {k: _median([r["cpu_us_per_backlog_touch"][k] for r in rs])
                  for k in ("daemons", "postgres", "sandbox")} for side, rs in (("alone", alone), ("with_trickle", with_))}
    return {
        "daemons": daemons, "touches": n, "repeat": repeat,
        "alone_touches_per_s": alone_rate, "with_trickle_touches_per_s": with_rate, "drain_ratio": ratio,
        "drain_ratio_pairs": [round(p, 3) for p in pairs],
        "terminal_ratio": _ratio(_median([r["terminal_touches_per_s"] for r in with_]),
                                 _median([r["terminal_touches_per_s"] for r in alone])),
        "alone_drain_s": _median([r["drain_s"] for r in alone]),
        "with_trickle_drain_s": _median([r["drain_s"] for r in with_]),
        "trickle_latency": latency,
        "cpu_us_per_backlog_touch": cpu,
        "cpu_ratio_daemons": _ratio(cpu["with_trickle"]["daemons"], cpu["alone"]["daemons"]),
        "cpu_ratio_postgres": _ratio(cpu["with_trickle"]["postgres"], cpu["alone"]["postgres"]),
        "transactions_per_touch": {"alone": _median([r["transactions_per_touch"] for r in alone]),
                                   "with_trickle": _median([r["transactions_per_touch"] for r in with_])},
        "within_spec": {"trickle_max_under_1s": latency["worst_max_ms"] is not None
                        and latency["worst_max_ms"] <= SPEC_LATENCY_MS,
                        "drain_ratio_at_least_0.90": ratio is not None and ratio >= SPEC_DRAIN_RATIO},
        "runs": runs,
    }


async def run(env: Env, n: int, daemons: tuple[int, ...], repeat: int,
              trickle_s: float = TRICKLE_INTERVAL_S) -> dict[str, Any]:
    configs = [await compare(env, n, d, repeat, trickle_s) for d in daemons]
    return {"touches": n, "repeat": repeat, "trickle_interval_ms": round(trickle_s * 1000),
            "settings": SHIPPED, "order": "ABBA per repetition (alone, with, with, alone, …), fresh database and "
                                          "daemons for every run",
            "clock": "trickle: INSERT clock_timestamp() → fake received_at_wall (upper bound; 'ack' lower bound); "
                     "drain: backlog commit acknowledged → its last request at the fake",
            "configs": configs}
