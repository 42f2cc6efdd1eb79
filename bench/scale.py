"""scale (SPEC §17, issue 19 item 4): does the cost per claim, per decision and per dashboard page stay flat from
12 k to 10 M core_memory_events with 1 M leads?

One database is grown in steps by core_memory_events — ``SIZES`` (12 k, 1 M, 10 M; ``QUICK_SIZES`` 12 k and 100 k)
— with every lead present from the first step (``LEADS``, 1 M; ``QUICK_LEADS`` when the largest size is under 1 M)
over 100 accounts, and touch_runs ≈ events / 3: bench/scale_data.py says how, and why the history keeps a constant
rate (the last hour holds the same at every size). A constant stock of due touches over 10 accounts × 3 channels
(and touches scheduled later over 10 more) is what the claims find.

At each size, medians and p90 over repeated calls (200; --quick 50) of the daemon's own named queries
(listener/store/queries/*.sql), each rolled back when it writes, in ``ROUNDS`` rounds (other keys each round; each
measurement keeps its best round, all rounds' medians in the JSON: the machine is shared):
* ``decide``: ``decide_for_key`` for one random historical key (lead, campaign, step 1), anywhere in the history;
  ``decide_recent``: the same for keys of the first step's cadences (the last hours, the same leads at every size —
  what the daemon decides after a send);
* ``decide_keys_64``: ``decide_for_keys`` for 64 random keys, per call;
* ``react_64``: ``react_to_events`` for a batch of 64 fresh touch_sent events of historical touches (each the newest
  of its key), inserted in the same transaction — the react call itself is timed (``react_64_recent``: of the first
  step's cadences);
* ``claim_with_context_64`` / ``claim_with_context_1``: ``claim_touches_with_context`` of 64 / of 1 (the daemon's
  claim + pre-send check, fair over the senders with due touches);
* ``claim_new_connection_64``: the same claim as the first statement of a new connection (a plan made per
  connection shows here, not in the steady medians);
* ``claim_64``: the same as ``claim_with_context_64`` (``same_as``; the plain claim is gone since issue 19), kept for
  tests/test_bench_smoke.py;
* ``expire_leases_idle`` (nothing expired: the sweep's common case) and ``expire_leases_100`` (100 expired leases);
* ``dashboard_home``: ``GET /`` through the real web application (bench/dashboard.py's code), and the median of
  each query behind it (``query_ms``);
* ``probe_select_1`` and ``probe_cpu``: a round trip and a fixed piece of CPU work — the machine, not the database,
  to read the other ratios against.

Each measured statement's plan, at each size: EXPLAIN (ANALYZE, BUFFERS, FORMAT TEXT) into the JSON (``plans``), a
compact form to stderr — planning and execution time, the scans and the index each walks. A PL/pgSQL or SQL
function's own statement is explained from pg_proc (bench/scale_plans.py: auto_explain is not in the embedded
server's build); react_to_events's per-function time comes from pg_stat_xact_user_functions (track_functions).

The table on stderr: rows = measurements, columns = sizes, then "× from" the first size; a ratio above
``FLAT_RATIO`` (and more than ``NOISE_FLOOR_MS`` apart) is flagged; then the shared buffers of each plan (the cost
in pages, which other work on the machine does not move) and the claim's planning against its execution.
Everything is in the JSON.

    .venv/bin/python -m bench.scale [--sizes 12000 1000000 10000000] [--leads 1000000] [--calls 200] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench import dashboard
from bench import scale_data as data
from bench import scale_plans as plans
from bench.env import Env, PgServer
from listener.settings import load_settings
from listener.store.database import connect
from listener.store.queries import Q
from listener.web.app import start

SIZES = (12_000, 1_000_000, 10_000_000)
QUICK_SIZES = (12_000, 100_000)
# bench/cli.py's defaults, from when the sizes counted touch_runs: they mean SIZES and QUICK_SIZES
LEADS = 1_000_000
QUICK_LEADS = 20_000
LOADERS = 2  # connections loading the history at once
FLAT_RATIO = 1.5
# below this many ms of difference a ratio is not flagged: a 0.1 ms query moves by half on a busy machine (the round
# trip alone, probe_select_1, does)
NOISE_FLOOR_MS = 0.25
BUFFER_FLOOR = 10  # buffers likewise
BATCH = 64
NEW_CONNECTIONS = 10
DASHBOARD_REQUESTS = 50
ROUNDS = 3  # each size measured 3 times; each measurement keeps its best round (other work on a shared machine)
MEASURED = ("decide", "decide_recent", "decide_keys_64", "react_64", "react_64_recent", "claim_with_context_64",
            "claim_with_context_1", "claim_new_connection_64", "claim_64", "expire_leases_idle", "expire_leases_100", "dashboard_home")
# the machine, not the database: a round trip and a fixed piece of CPU work, to read the ratios against
PROBES = ("probe_select_1", "probe_cpu")
WORKER = "scale"
CLAIM_BODY = "claim_with_context_64 body"  # the plans of the claim function's own statement
LEASE_S = 120.0

KEYS = f"""
select {data.uid('lead', 'n')} as lead_id, {data.uid('campaign', data.account_no('n'))} as campaign_id,
       {data.uid('touch', 'n', '5')} as touch_id
from unnest($1::bigint[]) n
"""
FRESH_SENT = """
insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload)
select k.lead_id, 'touch_sent', 'dispatcher', 'sms', 'outbound',
       jsonb_build_object('touch_run_id', k.touch_id, 'campaign_id', k.campaign_id, 'step', 1)
from unnest($1::uuid[], $2::uuid[], $3::uuid[]) as k(lead_id, campaign_id, touch_id)
returning id
"""
FUNCTION_TIMES = """
select funcname::text as function, calls, total_time, self_time from pg_stat_xact_user_functions
order by total_time desc
"""


def _progress(message: str) -> None:
    print(f"[scale] {message}", file=sys.stderr, flush=True)


def label(events: int) -> str:
    for unit, scale in (("M", 1_000_000), ("k", 1_000)):
        if events >= scale:
            return f"{events / scale:g}{unit}"
    return str(events)


def _stats(times: list[float], per: int = 1) -> dict[str, Any]:
    ordered = sorted(times)
    return {"median_ms": round(statistics.median(ordered), 3),
            "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 3),
            "per_touch_ms": round(statistics.median(ordered) / per, 4), "n": len(ordered)}


async def _timed(calls: int, one: Callable[[int], Awaitable[object]]) -> list[float]:
    times = []
    for i in range(calls):
        started = time.perf_counter()
        await one(i)
        times.append((time.perf_counter() - started) * 1000)
    return times


async def _rolled_back(conn: asyncpg.Connection, body: Callable[[], Awaitable[Any]]) -> Any:
    tr = conn.transaction()
    await tr.start()
    try:
        return await body()
    finally:
        await tr.rollback()


class Keys:
    """Random historical keys (lead, campaign, step 1) and the newest touch of each (its 5th), distinct leads per
    batch: from the whole history, or (``recent``) from the first step's cadences — the same leads at every size,
    the last hours of the history, as the daemon's own decisions after a send are."""

    def __init__(self, conn: asyncpg.Connection, history: data.History, seed: int, recent: bool = False) -> None:
        self.conn, self.rng = conn, random.Random(seed)
        self.last = history.first_step_cadences if recent else history.cadences

    async def batch(self, n: int) -> list[asyncpg.Record]:
        return await self.conn.fetch(KEYS, self.rng.sample(range(1, self.last + 1), min(n, self.last)))


async def measure(conn: asyncpg.Connection, url: str, history: data.History, calls: int, requests: int,
                  round_no: int = 0) -> dict[str, Any]:
    """One round of every measurement (and, in the first round, every plan); each round draws other keys."""
    explain = round_no == 0
    out: dict[str, Any] = {}
    plan_out: dict[str, Any] = {}
    errors: dict[str, str] = {}
    keys = Keys(conn, history, seed=6 + 1000 * round_no)
    recent = Keys(conn, history, seed=8 + 1000 * round_no, recent=True)
    batches = max(5, calls // 10)
    now = datetime.now(UTC)

    async def probes() -> None:
        out["probe_select_1"] = _stats(await _timed(calls, lambda _: conn.fetchval("select 1")))
        out["probe_cpu"] = _stats(await _timed(20, lambda _: conn.fetchval(
            "select count(*) from generate_series(1, 300000)")))

    async def guarded(name: str, body: Callable[[], Awaitable[None]]) -> None:
        try:
            await body()
        except Exception as exc:  # one broken statement must not waste a 10 M generation: it is reported
            errors[name] = f"{type(exc).__name__}: {exc}"
            _progress(f"{name} failed: {errors[name]}")

    # decisions
    async def decide(name: str = "decide", keys: Keys = keys) -> None:
        chosen = await keys.batch(calls)
        await conn.fetch(Q.decide_for_key, chosen[0]["lead_id"], chosen[0]["campaign_id"], 1, now)  # prepare
        out[name] = _stats(await _timed(len(chosen), lambda i: conn.fetch(
            Q.decide_for_key, chosen[i]["lead_id"], chosen[i]["campaign_id"], 1, now)))
        if not explain:
            return
        k = chosen[1]
        plan_out[name] = plans.plan(await plans.explain(conn, Q.decide_for_key, k["lead_id"], k["campaign_id"],
                                                            1, now), "decide_for_key, 1 key (inlined SQL function)")

    async def decide_keys() -> None:
        groups = [await keys.batch(BATCH) for _ in range(batches)]

        def args(g: list[asyncpg.Record]) -> tuple[Any, ...]:
            return ([r["lead_id"] for r in g], [r["campaign_id"] for r in g], [1] * len(g), None)

        out["decide_keys_64"] = _stats(await _timed(batches, lambda i: conn.fetch(Q.decide_for_keys,
                                                                                  *args(groups[i]))), per=BATCH)
        if explain:
                plan_out["decide_keys_64"] = plans.plan(await plans.explain(conn, Q.decide_for_keys, *args(groups[0])),
                                                    "decide_for_keys, 64 keys")

    async def react(name: str = "react_64", keys: Keys = keys) -> None:
        times: list[float] = []
        counters: list[Any] = []

        async def fresh(g: list[asyncpg.Record]) -> list[Any]:
            rows = await conn.fetch(FRESH_SENT, [r["lead_id"] for r in g], [r["campaign_id"] for r in g],
                                    [r["touch_id"] for r in g])
            return [r["id"] for r in rows]

        for _ in range(batches):
            g = await keys.batch(BATCH)

            async def body(g: list[asyncpg.Record] = g) -> None:
                ids = await fresh(g)
                started = time.perf_counter()
                rows = await conn.fetch(Q.react_to_events, ids)
                times.append((time.perf_counter() - started) * 1000)
                counters.append([r["counters"] for r in rows])

            await _rolled_back(conn, body)
        out[name] = {**_stats(times, per=BATCH),
                     "counters_last": [json.loads(c) if isinstance(c, str) else c for c in counters[-1]]}
        if not explain or name != "react_64":
            return
        # where the time goes inside: per function (track_functions), over a few more batches
        per_function: dict[str, list[float]] = {}
        for _ in range(5):
            g = await keys.batch(BATCH)

            async def traced(g: list[asyncpg.Record] = g) -> None:
                await conn.execute("set local track_functions = 'all'")
                ids = await fresh(g)
                before = {r["function"]: r["total_time"] for r in await conn.fetch(FUNCTION_TIMES)}
                await conn.fetch(Q.react_to_events, ids)
                for r in await conn.fetch(FUNCTION_TIMES):
                    per_function.setdefault(r["function"], []).append(r["total_time"] - before.get(r["function"], 0))

            await _rolled_back(conn, traced)
        out["react_64"]["function_ms"] = {f: round(statistics.median(v), 3) for f, v in
                                          sorted(per_function.items(), key=lambda kv: -statistics.median(kv[1]))}
        # the plans: the call (a PL/pgSQL function: a ProjectSet over a Function Scan), and the statement of its
        # decisions (react_round_decisions, a SQL function) for the same 64 keys
        g = await keys.batch(BATCH)

        async def explained() -> None:
            ids = await fresh(g)
            plan_out["react_64"] = plans.plan(await plans.explain(conn, Q.react_to_events, ids),
                                              "react_to_events (PL/pgSQL: the call only)")
            body = await plans.explain_function(conn, "react_round_decisions", (
                [r["lead_id"] for r in g], [r["campaign_id"] for r in g], [1] * len(g), [r["touch_id"] for r in g],
                ids))
            plan_out["react_64 decisions"] = body["custom"]
            plan_out["react_64 decisions"]["how"] = "react_round_decisions body (SQL function), 64 keys, custom plan"

        await _rolled_back(conn, explained)

    # claims
    claim = (WORKER, LEASE_S)

    async def claims_on_new_connections() -> None:
        first, second = [], []
        for _ in range(NEW_CONNECTIONS):
            fresh = await connect(url)
            try:
                for into in (first, second):
                    started = time.perf_counter()
                    await _rolled_back(fresh, lambda c=fresh: c.fetch(Q.claim_touches_with_context, *claim, BATCH,
                                                                      None, None))
                    into.append((time.perf_counter() - started) * 1000)
            finally:
                await fresh.close()
        out["claim_new_connection_64"] = {**_stats(first, per=BATCH),
                                          "second_call_median_ms": round(statistics.median(second), 3)}

    async def plain_claims() -> None:  # the plain claim is gone (issue 19): the daemon's claim is the one claim
        out["claim_64"] = {**out["claim_with_context_64"], "same_as": "claim_with_context_64"}

    async def claims() -> None:
        got: dict[int, int] = {}
        for limit in (BATCH, 1):
            async def one(_: int, limit: int = limit) -> None:
                rows = await _rolled_back(conn, lambda: conn.fetch(Q.claim_touches_with_context, *claim, limit,
                                                                   None, None))
                got[limit] = len(rows)

            await one(0)  # prepare
            out[f"claim_with_context_{limit}"] = {**_stats(await _timed(calls, one), per=limit), "claimed": got[limit]}

    async def claim_plans() -> None:
        if not explain:
            return
        plan_out["claim_with_context_64"] = plans.plan(await plans.explain(
            conn, Q.claim_touches_with_context, *claim, BATCH, None, None), "the daemon's statement")
        if await plans.function_language(conn, "claim_touches_with_context") in ("plpgsql", "sql"):
            body = await plans.explain_function(conn, "claim_touches_with_context", (*claim, BATCH, None, None))
            for how in ("first", "cached", "custom"):
                plan_out[f"{CLAIM_BODY} ({how})"] = body[how]
            out["claim_with_context_64"]["function_settings"] = body["settings"]
        else:
            plan_out["claim_with_context_64"]["how"] = "the daemon's statement (custom plan: asyncpg's first runs)"

    async def expire() -> None:
        out["expire_leases_idle"] = _stats(await _timed(batches, lambda _: _rolled_back(
            conn, lambda: conn.fetch(Q.expire_leases, 500, None))))
        if explain:
            plan_out["expire_leases_idle"] = plans.plan(await plans.explain(conn, Q.expire_leases, 500, None),
                                                        "expire_leases, nothing expired")
        expire_times: list[float] = []

        async def expire_100(_: int) -> None:
            async def body() -> None:
                await conn.execute("update touch_runs set status = 'processing', locked_by = 'scale', "
                                   "locked_until = now() - interval '1 minute' where id in "
                                   "(select id from touch_runs where status = 'queued' limit 100)")
                started = time.perf_counter()
                await conn.fetch(Q.expire_leases, 500, None)
                expire_times.append((time.perf_counter() - started) * 1000)

            await _rolled_back(conn, body)

        await _timed(batches, expire_100)
        out["expire_leases_100"] = _stats(expire_times, per=100)

    async def home() -> None:
        runner, base = await start(load_settings(), url, "127.0.0.1", 0)
        try:
            page = await dashboard.timings(base, "", requests)
        finally:
            await runner.cleanup()
        out["dashboard_home"] = {"median_ms": page["p50_ms"], "p90_ms": page["p90_ms"], "max_ms": page["max_ms"],
                                 "per_touch_ms": page["p50_ms"], "n": requests,
                                 "query_ms": await dashboard.query_times(url, home_only=True)}
        if not explain:
            return
        for name, text in (await dashboard.explained(url, home_only=True)).items():
            plan_out[f"/ {name}"] = plans.plan(text, "as the dashboard runs it (read-only, custom plan)")

    steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("probes", probes), ("decide", decide), ("decide_recent", lambda: decide("decide_recent", recent)),
        ("decide_keys_64", decide_keys), ("react_64", react),
        ("react_64_recent", lambda: react("react_64_recent", recent)), ("claims", claims),
        ("claim_new_connection", claims_on_new_connections), ("claim_plain", plain_claims),
        ("claim_plans", claim_plans), ("expire", expire), ("dashboard_home", home)]
    for name, body in steps:
        _progress(f"  measuring {name} …")
        await guarded(name, body)
    if explain:
        out["plans"] = plan_out
    if errors:
        out["errors"] = errors
    return out


def _ratio(value: float | None, base: float | None) -> float | None:
    return round(value / base, 2) if value is not None and base else None


def _not_flat(value: float | None, base: float | None, floor: float = NOISE_FLOOR_MS) -> bool:
    ratio = _ratio(value, base)
    return ratio is not None and ratio > FLAT_RATIO and value is not None and base is not None and value - base > floor


def best_of(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each measurement from the round where its median was lowest (all rounds' medians kept), the query times
    behind the home page likewise one by one; plans from the first round; every round's errors."""
    out: dict[str, Any] = {}
    for name in (*MEASURED, *PROBES):
        got = [r[name] for r in rounds if name in r]
        if got:  # what only the first round records (function times, counters) stays
            out[name] = {**got[0], **min(got, key=lambda m: m["median_ms"]),
                         "round_medians_ms": [m["median_ms"] for m in got]}
    home = [r["dashboard_home"]["query_ms"] for r in rounds if "dashboard_home" in r]
    if home:
        out["dashboard_home"]["query_ms"] = {q: min(h[q] for h in home if q in h) for q in home[0]}
    out["plans"] = rounds[0].get("plans", {})
    errors = {f"round {i + 1}: {k}": v for i, r in enumerate(rounds) for k, v in r.get("errors", {}).items()}
    if errors:
        out["errors"] = errors
    return out


def rows_of(sizes: list[dict[str, Any]], names: tuple[str, ...] = MEASURED) -> list[tuple[str, list[float | None]]]:
    """(measurement, median ms at each size): the measured statements, then each query behind the home page."""
    rows = [(name, [s.get(name, {}).get("median_ms") for s in sizes]) for name in names]
    if names is MEASURED:
        queries = sizes[0].get("dashboard_home", {}).get("query_ms", {})
        rows += [(f"  / {q}", [s.get("dashboard_home", {}).get("query_ms", {}).get(q) for s in sizes])
                 for q in queries]
    return rows


def buffer_rows(sizes: list[dict[str, Any]]) -> list[tuple[str, list[float | None]]]:
    """(plan, shared buffers of its EXPLAIN ANALYZE at each size): the cost in pages, which other work on the machine
    does not move."""
    names = list(sizes[0].get("plans", {}))
    return [(name, [s.get("plans", {}).get(name, {}).get("summary", {}).get("buffers", {}).get("total")
                    for s in sizes]) for name in names]


def claim_plan_rows(sizes: list[dict[str, Any]]) -> list[tuple[str, list[float | None]]]:
    """The claim's planning against its execution (SPEC §17: the plan does not cost more than the execution), from
    EXPLAIN ANALYZE of its statement as its session runs it."""
    def got(how: str, key: str) -> list[float | None]:
        return [s.get("plans", {}).get(f"{CLAIM_BODY} ({how})", {}).get("summary", {}).get(key) for s in sizes]

    return [("planning, first call of a connection", got("first", "planning_ms")),
            ("planning, later calls (cached plan)", got("cached", "planning_ms")),
            ("planning, if planned at every call", got("custom", "planning_ms")),
            ("execution", got("cached", "execution_ms"))]


def table(result: dict[str, Any]) -> str:
    sizes = result["sizes"]
    names = [s["size"] for s in sizes]
    header = ["median ms", *names, *(f"× {n}/{names[0]}" for n in names[1:])]
    cells = [header]
    blank = [""] * (len(names) - 1)

    def add(rows: list[tuple[str, list[float | None]]], flag: bool = True, floor: float = NOISE_FLOOR_MS) -> None:
        for name, values in rows:
            cells.append([name, *("-" if v is None else f"{v:g}" for v in values),
                          *("-" if _ratio(v, values[0]) is None
                            else f"×{_ratio(v, values[0]):g}{' !' if flag and _not_flat(v, values[0], floor) else ''}"
                            for v in values[1:])])

    add(rows_of(sizes))
    add([(f"({name}: the machine)", values) for name, values in rows_of(sizes, PROBES)], flag=False)
    cells.append(["core_memory_events", *(f"{s['events']:,}" for s in sizes), *blank])
    cells.append(["touch_runs", *(f"{s['touch_runs']:,}" for s in sizes), *blank])
    cells.append(["leads", *(f"{s['leads']:,}" for s in sizes), *blank])
    cells.append(["database GiB", *(f"{s['database_bytes'] / 2**30:.1f}" for s in sizes), *blank])
    cells.append(["generation s", *(f"{s['generate_s']:g}" for s in sizes), *blank])
    cells.append(["shared buffers per call", *[""] * (len(header) - 1)])
    add([(f"  {name}", values) for name, values in buffer_rows(sizes)], floor=BUFFER_FLOOR)
    if any(v is not None for _, values in claim_plan_rows(sizes) for v in values):
        cells.append(["claim_with_context_64, EXPLAIN ANALYZE ms", *[""] * (len(header) - 1)])
        add([(f"  {name}", values) for name, values in claim_plan_rows(sizes)], flag=False)
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    flagged = result["growth"]["not_flat"]
    title = (f"scale (SPEC §17): median ms per call (best of {ROUNDS} rounds); {result['leads']:,} leads over "
             f"{data.ACCOUNTS} accounts; '!' = more than ×{FLAT_RATIO} the {names[0]} figure "
             f"(and {NOISE_FLOOR_MS} ms more)"
             + (f" — not flat: {', '.join(flagged)}" if flagged else " — flat")
             + (f"; buffers not flat: {', '.join(result['growth']['buffers_not_flat'])}"
                if result["growth"]["buffers_not_flat"] else ""))
    return "\n".join([f"\n{title}", *lines])


def compact_plans(size: dict[str, Any]) -> str:
    lines = [f"[scale] plans at {size['size']} events (EXPLAIN ANALYZE, BUFFERS; the text in the JSON):"]
    lines += [plans.compact(name, p) for name, p in size.get("plans", {}).items()]
    return "\n".join(lines)


def resolve_sizes(sizes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted(sizes))


async def run_on(pg: PgServer, sizes: tuple[int, ...], calls: int, leads: int | None = None,
                 requests: int = DASHBOARD_REQUESTS) -> dict[str, Any]:
    sizes = resolve_sizes(sizes)
    most = math.ceil(max(sizes) / data.EVENTS_PER_CADENCE)
    leads = leads or (LEADS if max(sizes) >= 1_000_000 else QUICK_LEADS)
    reserved = most + 1  # leads from here on never get history (the due stock's "no history" half)
    if leads < most + 10_000:
        raise ValueError(f"{max(sizes):,} events need more than {most + 10_000:,} leads (--leads)")
    url = await pg.fresh_database("scale")
    conns = [await connect(url) for _ in range(LOADERS)]
    conn = conns[0]
    history = data.History(leads)
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        _progress(f"sizes {', '.join(label(s) for s in sizes)} core_memory_events, {leads:,} leads")
        setup = await data.setup(conn, leads)
        stock: dict[str, int] = {}
        for size in sizes:
            t = time.perf_counter()
            grown = await data.grow(conns, history, size)
            if not stock:
                stock = await data.stock(conn, history, reserved)
                grown["stock"] = stock
            gen_s = time.perf_counter() - t + (setup["leads_s"] if not results else 0)
            counts = await conn.fetchrow("select (select count(*) from touch_runs) as touches, "
                                         "(select count(*) from core_memory_events) as events, "
                                         "(select count(*) from leads) as leads, "
                                         "pg_database_size(current_database()) as bytes")
            _progress(f"{label(size)}: {counts['events']:,} events, {counts['touches']:,} touch_runs, "
                      f"{counts['leads']:,} leads, {counts['bytes'] / 2**30:.1f} GiB, generated in {gen_s:.0f} s")
            rounds = []
            for r in range(ROUNDS):
                _progress(f"{label(size)}: round {r + 1} of {ROUNDS}")
                rounds.append(await measure(conn, url, history, calls, requests, r))
            measured = best_of(rounds)
            for name, p in measured["plans"].items():
                p["changed_from_first"] = plans.changes(p, results[0]["plans"].get(name) if results else None)
            results.append({"size": label(size), "touch_runs": counts["touches"], "events": counts["events"],
                            "leads": counts["leads"], "database_bytes": counts["bytes"], "generate_s": round(gen_s, 1),
                            "generation": grown, **measured})
            print(compact_plans(results[-1]), file=sys.stderr, flush=True)
    finally:
        for c in conns:
            await c.close()
        await pg.drop_database(url)
    first = results[0]
    ratios = {name.strip(): [_ratio(v, values[0]) for v in values[1:]]
              for name, values in (*rows_of(results), *rows_of(results, PROBES))}
    buffer_ratios = {name: [_ratio(v, values[0]) for v in values[1:]] for name, values in buffer_rows(results)}
    not_flat = [name.strip() for name, values in rows_of(results) if any(_not_flat(v, values[0]) for v in values[1:])]
    result = {"calls": calls, "rounds": ROUNDS, "leads": leads, "accounts": data.ACCOUNTS,
              "events_per_hour": data.EVENTS_PER_HOUR, "flat_ratio": FLAT_RATIO, "setup": setup,
              "wall_s": round(time.perf_counter() - started, 1), "sizes": results,
              "growth": {"from": first["touch_runs"], "to": results[-1]["touch_runs"],
                         "from_events": first["events"], "to_events": results[-1]["events"],
                         "median_ratio": {name: r[-1] for name, r in ratios.items() if r and r[-1] is not None},
                         "ratios": ratios, "not_flat": not_flat, "buffer_ratios": buffer_ratios,
                         "claim_planning_vs_execution": {name: values for name, values in claim_plan_rows(results)},
                         "buffers_not_flat": [name for name, values in buffer_rows(results)
                                              if any(_not_flat(v, values[0], BUFFER_FLOOR) for v in values[1:])]}}
    print(table(result), file=sys.stderr, flush=True)
    return result


async def run(env: Env, sizes: tuple[int, ...], calls: int, leads: int | None = None) -> dict[str, Any]:
    assert env.pg is not None
    return await run_on(env.pg, sizes, calls, leads)


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="revenue-asi-bench-scale-"))
    server = await asyncio.to_thread(PgServer, root)
    try:
        await server.prepare_template()
        return await run_on(server, tuple(args.sizes), args.calls, args.leads, args.requests)
    finally:
        await asyncio.to_thread(server.close)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="core_memory_events at each step")
    parser.add_argument("--leads", type=int, help=f"leads (default {LEADS:,}; {QUICK_LEADS:,} under 1 M events)")
    parser.add_argument("--calls", type=int, default=200, help="calls per measurement")
    parser.add_argument("--requests", type=int, default=DASHBOARD_REQUESTS, help="GET / per size")
    parser.add_argument("--json", type=Path, help="write the JSON result here too")
    args = parser.parse_args()
    text = json.dumps(asyncio.run(_main(args)), indent=2, default=str)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
