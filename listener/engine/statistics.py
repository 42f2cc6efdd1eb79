"""The statistics service (SPEC §17): keeps the planner's statistics of the hot path's tables in step with their
size, so the plans the daemon's sessions keep (the claim is planned once per connection) are made again soon after a
table outgrows what they were made for — a bulk load into a young database, an onboarding of thousands of accounts —
instead of when autovacuum gets to it. One cheap query every few seconds; an ANALYZE only when a table has doubled."""

from __future__ import annotations

import logging

import asyncpg

from listener.store.queries import Q

log = logging.getLogger(__name__)

INTERVAL_S = 1.0


async def refresh_planner_statistics(pool: asyncpg.Pool) -> list[str]:
    """Analyse the tables that have outgrown their statistics; returns their names."""
    async with pool.acquire() as conn:
        analysed = list(await conn.fetchval(Q.refresh_stale_planner_statistics))
    if analysed:
        log.info("planner statistics refreshed for %s (grown past twice their size at the last ANALYZE)",
                 ", ".join(analysed))
    return analysed


async def statistics_step(pool: asyncpg.Pool) -> float:
    await refresh_planner_statistics(pool)
    return INTERVAL_S
