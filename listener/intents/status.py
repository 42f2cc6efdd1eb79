"""The seed's `system.status` intent: what the queue and the memory engine look like right now. One implementation
for `revenue-asi status [--json]`, `GET /api/status` and Command OS; the dashboard's home page reuses its sections
(queue, failures, jobs, cadences, paced senders) beside its own."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from listener.store.database import DatabaseError
from listener.store.queries import Q


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


async def database_section(conn: asyncpg.Connection) -> dict[str, Any]:
    try:
        version = await conn.fetchrow(Q.schema_version)
    except asyncpg.UndefinedTableError:
        raise DatabaseError("the database has no schema yet: run `revenue-asi migrate`") from None
    return {"reachable": True, "server_version": conn.get_server_version().major,
            "schema_version": version["version"], "migrations": version["migrations"]}


async def queue_section(conn: asyncpg.Connection) -> dict[str, Any]:
    queue = dict(await conn.fetchrow(Q.status_queue))
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in queue.items()}


async def failures_last_hour(conn: asyncpg.Connection) -> dict[str, int]:
    return {row["error_code"]: row["n"] for row in await conn.fetch(Q.status_failures_last_hour)}


async def jobs_section(conn: asyncpg.Connection) -> dict[str, Any]:
    from listener.engine.jobs import JOBS

    jobs: dict[str, Any] = {name: None for name in JOBS}  # None: never ran
    for row in await conn.fetch(Q.status_last_job_runs):
        jobs[row["job"]] = {k: _jsonable(v) for k, v in dict(row).items() if k != "job"}
    return jobs


async def cadences_section(conn: asyncpg.Connection) -> dict[str, Any]:
    cadences = await conn.fetchrow(Q.status_cadences)
    return {"campaign_leads": cadences["campaign_leads"], "cooldown_timers": cadences["cooldown_timers"],
            "next_cooldown_at": _jsonable(cadences["next_cooldown_at"]),
            "next_scheduled_at": _jsonable(cadences["next_scheduled_at"])}


LATEST_SET_ASIDE = 5


async def reactions_set_aside_section(conn: asyncpg.Connection) -> dict[str, Any]:
    """Reactions that could not be processed and were set aside (0003_poison.sql), never retried in front of others."""
    aside = await conn.fetchrow(Q.status_reactions_set_aside, LATEST_SET_ASIDE)
    return {"count": aside["set_aside"], "retrying": aside["retrying"],
            "latest": aside["latest"] if isinstance(aside["latest"], list) else []}


async def deferred_section(conn: asyncpg.Connection) -> dict[str, Any]:
    """Touches waiting because of a sending rule (SPEC §13), by reason, with when the first and last will go."""
    return {row["reason"]: {"touches": row["touches"], "next_at": _jsonable(row["next_at"]),
                            "last_at": _jsonable(row["last_at"])}
            for row in await conn.fetch(Q.deferred_touches_by_reason)}


PACED_SENDERS_SHOWN = 500


async def paced_senders_section(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """The senders paced right now (SPEC §16: config.max_per_second or max_in_flight, or a 429's pushback), each
    with its configured and effective rate (requests/s; None: no rate bound), in-flight limit and requests, touches
    waiting for pace (due, of its account and channel), pushback and next free moment. Empty when none is paced."""
    senders = []
    for row in await conn.fetch(Q.dash_paced_senders, PACED_SENDERS_SHOWN):
        sender = {k: _jsonable(v) for k, v in dict(row).items()}
        for key in ("settings_id", "account_id"):
            sender[key] = str(row[key])
        for key in ("max_per_second", "effective_rate", "next_in_s"):
            sender[key] = None if row[key] is None else round(row[key], 3)
        senders.append(sender)
    return senders


async def system_status(conn: asyncpg.Connection) -> dict[str, Any]:
    database = await database_section(conn)
    touches: dict[str, dict[str, int]] = {}
    for row in await conn.fetch(Q.status_touch_counts):
        touches.setdefault(row["status"], {})[row["channel"]] = row["n"]
    events = {row["event_type"]: row["n"] for row in await conn.fetch(Q.status_events_last_hour)}
    return {
        "database": database,
        "touch_runs": touches,
        "touch_runs_total": sum(n for by_channel in touches.values() for n in by_channel.values()),
        "queue": await queue_section(conn),
        "events_last_hour": events,
        "events_last_hour_total": sum(events.values()),
        "failures_last_hour": await failures_last_hour(conn),
        "deferred": await deferred_section(conn),
        "jobs": await jobs_section(conn),
        "reactions_set_aside": await reactions_set_aside_section(conn),
        "cadences": await cadences_section(conn),
        "paced_senders": await paced_senders_section(conn),
        "out_of_office": await out_of_office_section(conn),
    }


async def out_of_office_section(conn: asyncpg.Connection) -> dict[str, Any]:
    """Leads paused out of office now (SPEC §19) and when the first of them resumes."""
    row = await conn.fetchrow(Q.status_out_of_office)
    return {"leads_paused": row["leads_paused"], "next_resume_at": _jsonable(row["next_resume_at"])}
