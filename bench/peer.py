"""peer: the same drain on pgqueuer (bench/peers/pgqueuer_peer.py), on the same server in the same invocation, and
the ratio ours / pgqueuer. Ours is the 1-daemon drain (measured here, or taken from the throughput section of the
same run); the peer is one pgqueuer worker process. The peer's clock, like ours, runs from the commit of the one
transaction that inserts the N touches and enqueues their N jobs until every touch has its status and event.

Ours does more per touch than the peer: the pre-send re-checks (suppression, stop events, expiry, lead lock) and the
fallback decision with its event; the peer only sends and records."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import asyncpg

from bench import drain
from bench.env import ACCOUNT_SID, AUTH_TOKEN, Env, Process, clean_env
from bench.peers import pgqueuer_peer
from bench.workload import Workload, duplicates, insert_many, outcomes
from listener.database import connect

WARMUP = 40
BATCH_SIZE = 16
MAX_CONCURRENT_TASKS = 64


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


async def pgqueuer_drain(env: Env, n: int) -> dict[str, Any]:
    assert env.pg is not None
    url = await env.pg.fresh_database("peer")
    workload = await Workload(url).setup(n + WARMUP)
    conn = await asyncpg.connect(url)
    try:
        await pgqueuer_peer.install(conn)
    finally:
        await conn.close()
    argv = [sys.executable, "-m", "bench.peers.pgqueuer_peer", "--url", url, "--base-url", env.sandbox.base_url,
            "--account-sid", ACCOUNT_SID, "--auth-token", AUTH_TOKEN, "--batch-size", str(BATCH_SIZE),
            "--max-concurrent-tasks", str(MAX_CONCURRENT_TASKS)]
    proc = Process("pgqueuer_peer", argv, clean_env(), env.root / "pgqueuer_peer.log")
    try:
        await proc.wait_for_log(r"peer ready", timeout=60)
        await _insert_and_enqueue(workload, WARMUP)
        if await _wait_terminal(url, 60) is None:
            raise RuntimeError(f"pgqueuer peer warm-up did not finish:\n{proc.tail()}")
        await env.sandbox.reset()
        insert_s, committed = await _insert_and_enqueue(workload, n)
        finished = await _wait_terminal(url, max(300.0, n / 20))
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
            "settings": {"batch_size": BATCH_SIZE, "max_concurrent_tasks": MAX_CONCURRENT_TASKS,
                         "http": "aiohttp, one keep-alive session (128 connections)", "pgqueuer": _version()}}


def _version() -> str:
    import pgqueuer

    return getattr(pgqueuer, "__version__", "?")


async def run(env: Env, n: int, ours: dict[str, Any] | None = None) -> dict[str, Any]:
    def from_throughput(conc: int) -> dict[str, Any] | None:
        runs = (ours or {}).get("runs", [])
        return next((r for r in runs if r["daemons"] == 1 and r["touches"] == n and r.get("concurrency") == conc),
                    None)

    mine = from_throughput(drain.concurrency(drain.TUNED))
    source = "throughput section"
    if mine is None:
        mine = await drain.drain(env, n, 1, drain.TUNED)
        source = "measured here"
    shipped = from_throughput(drain.concurrency(drain.SHIPPED))
    theirs = await pgqueuer_drain(env, n)
    result = {"touches": n, "ours": {**mine, "source": source}, "pgqueuer": theirs,
              "ratio": round(mine["touches_per_s"] / theirs["touches_per_s"], 2),
              "note": f"ours = 1 daemon (REVENUE_ASI_CONCURRENCY={drain.concurrency(drain.TUNED)}), full pipeline incl. "
                      "pre-send checks and fallback decision; pgqueuer = 1 worker, send + status + touch_sent event"}
    if shipped is not None:
        result["ratio_shipped_concurrency"] = round(shipped["touches_per_s"] / theirs["touches_per_s"], 2)
    return result
