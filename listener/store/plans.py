"""The plan a PL/pgSQL function's query runs with. EXPLAIN of a function call shows a Function Scan only, and
auto_explain is not in the embedded server's build; so the query after the function's ``return query`` is read from
``pg_proc``, prepared with the function's own settings (its ``SET`` clauses: plan_cache_mode, enable_*) and parameter
types, and explained — the generic plan the function's session caches (sql/views/10_claim.sql)."""

from __future__ import annotations

import re
from typing import Any

import asyncpg

_RETURN_QUERY = re.compile(r"\breturn\s+query\b(?P<query>.*);\s*end\s*;?\s*$", re.IGNORECASE | re.DOTALL)
_PRAGMA = re.compile(r"^\s*#variable_conflict\s+\w+\s*$", re.MULTILINE)


async def function_query(conn: asyncpg.Connection, function: str) -> tuple[str, list[str], list[str]]:
    """The function's ``return query`` statement with its parameters as $1…$n, their types, and its settings."""
    row = await conn.fetchrow(
        """select p.prosrc, p.proargnames, p.proconfig,
                  array(select format_type(t, null) from unnest(p.proargtypes) t) as arg_types
           from pg_proc p where p.proname = $1 and p.prokind = 'f'""", function)
    if row is None:
        raise LookupError(f"no function named {function}")
    match = _RETURN_QUERY.search(_PRAGMA.sub("", row["prosrc"]))
    if match is None:
        raise ValueError(f"{function} has no single `return query` statement")
    query = match.group("query")
    arg_types = list(row["arg_types"])
    for position, name in sorted(enumerate(row["proargnames"][:len(arg_types)], 1), key=lambda p: -len(p[1])):
        query = re.sub(rf"\b{re.escape(name)}\b", f"${position}", query)
    return query, arg_types, list(row["proconfig"] or [])


async def apply_settings(conn: asyncpg.Connection, settings: list[str]) -> None:
    """A function's SET clauses (pg_proc.proconfig, 'name=value'), for the rest of the transaction."""
    for setting in settings:
        name, _, value = setting.partition("=")
        await conn.execute("select set_config($1, $2, true)", name, value)


async def literals(conn: asyncpg.Connection, args: tuple[Any, ...], arg_types: list[str]) -> list[str]:
    """EXECUTE takes no bind parameters: each argument as a literal of its type, quoted by the server."""
    return [await conn.fetchval(f"select quote_nullable($1::{arg_type})", arg)
            for arg, arg_type in zip(args, arg_types, strict=True)]


async def explain_function(conn: asyncpg.Connection, function: str, args: tuple[Any, ...], *,
                           analyze: bool = False, options: str = "") -> list[str]:
    """EXPLAIN (ANALYZE when asked) of the function's query with ``args``, as its own session plans it; in a
    transaction that is rolled back (an analyzed claim claims nothing for good)."""
    query, arg_types, settings = await function_query(conn, function)
    what = ", ".join(o for o in ("analyze" if analyze else "", options) if o) or "costs"
    transaction = conn.transaction()
    await transaction.start()
    prepared = False
    try:
        await apply_settings(conn, settings)
        await conn.execute(f"prepare explained_function ({', '.join(arg_types)}) as {query}")
        prepared = True
        values = await literals(conn, args, arg_types)
        rows = await conn.fetch(f"explain ({what}) execute explained_function ({', '.join(values)})")
        return [r[0] for r in rows]
    finally:
        await transaction.rollback()  # an analyzed claim claims nothing for good
        if prepared:  # PREPARE is not transactional
            await conn.execute("deallocate explained_function")
