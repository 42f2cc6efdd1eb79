"""`reactions.retry` (SPEC §18): as `revenue-asi reactions retry` — reactions set aside after they raised (0003)
are queued again, all of them or those of the given events, and the daemons are woken (the same query,
reactions.sql `requeue_set_aside_reactions`)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from listener.store.queries import Q

LISTED = 20


def _given(event_ids: list[UUID] | None) -> list[UUID] | None:
    return None if event_ids is None else list(dict.fromkeys(event_ids))


async def preview_retry(conn: asyncpg.Connection, event_ids: list[UUID] | None) -> dict[str, Any]:
    ids = _given(event_ids)
    row = await conn.fetchrow(Q.intent_set_aside_reactions, ids, LISTED)
    found = {str(e) for e in row["event_ids"] or []}
    return {"scope": "all" if ids is None else "events", "reactions_to_requeue": row["n"],
            "reactions": row["latest"],
            "not_set_aside": [] if ids is None else [str(e) for e in ids if str(e) not in found]}


async def retry_reactions(conn: asyncpg.Connection, event_ids: list[UUID] | None) -> dict[str, Any]:
    ids = _given(event_ids)
    row = await conn.fetchrow(Q.requeue_set_aside_reactions, ids)
    requeued = [str(e) for e in row["event_ids"] or []]
    done = set(requeued)
    return {"scope": "all" if ids is None else "events", "requeued": len(requeued), "event_ids": requeued,
            "not_set_aside": [] if ids is None else [str(e) for e in ids if str(e) not in done]}
