"""The seed's `system.status` intent: what the queue and the memory engine look like right now."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from listener.database import DatabaseError
from listener.queries import Q


LATEST_SET_ASIDE = 5


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


async def system_status(conn: asyncpg.Connection) -> dict[str, Any]:
    try:
        version = await conn.fetchrow(Q.schema_version)
    except asyncpg.UndefinedTableError:
        raise DatabaseError("the database has no schema yet: run `revenue-asi migrate`") from None
    touches: dict[str, dict[str, int]] = {}
    for row in await conn.fetch(Q.status_touch_counts):
        touches.setdefault(row["status"], {})[row["channel"]] = row["n"]
    events = {row["event_type"]: row["n"] for row in await conn.fetch(Q.status_events_last_hour)}
    queue = dict(await conn.fetchrow(Q.status_queue))
    failures = {row["error_code"]: row["n"] for row in await conn.fetch(Q.status_failures_last_hour)}
    from listener.jobs import JOBS

    jobs: dict[str, Any] = {name: None for name in JOBS}  # None: never ran
    for row in await conn.fetch(Q.status_last_job_runs):
        jobs[row["job"]] = {k: _jsonable(v) for k, v in dict(row).items() if k != "job"}
    cadences = await conn.fetchrow(Q.status_cadences)
    aside = await conn.fetchrow(Q.status_reactions_set_aside, LATEST_SET_ASIDE)
    return {
        "database": {"reachable": True, "server_version": conn.get_server_version().major,
                     "schema_version": version["version"], "migrations": version["migrations"]},
        "touch_runs": touches,
        "touch_runs_total": sum(n for by_channel in touches.values() for n in by_channel.values()),
        "queue": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in queue.items()},
        "events_last_hour": events,
        "events_last_hour_total": sum(events.values()),
        "failures_last_hour": failures,
        "jobs": jobs,
        "reactions_set_aside": {"count": aside["set_aside"], "retrying": aside["retrying"],
                                "latest": aside["latest"] if isinstance(aside["latest"], list) else []},
        "cadences": {"campaign_leads": cadences["campaign_leads"], "cooldown_timers": cadences["cooldown_timers"],
                     "next_cooldown_at": _jsonable(cadences["next_cooldown_at"]),
                     "next_scheduled_at": _jsonable(cadences["next_scheduled_at"])},
    }
