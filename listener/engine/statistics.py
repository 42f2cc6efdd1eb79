"""The statistics service (SPEC §17): the plans the daemon's sessions keep (the claim is planned once per connection)
are made again soon after a table of the claim outgrows its statistics — a bulk load into a young database, a burst
into a quiet queue, an onboarding of thousands of accounts — instead of when autovacuum gets to it
(sql/views/11_planner_statistics.sql). One cheap query a second; an ANALYZE when a table outgrew its statistics."""

from __future__ import annotations

import logging

import asyncpg

from listener.store.queries import Q

log = logging.getLogger(__name__)

INTERVAL_S = 1.0


async def refresh_planner_statistics(pool: asyncpg.Pool) -> list[str]:
    """Analyse the claim's tables that have outgrown their statistics; returns their names."""
    async with pool.acquire() as conn:
        analysed = list(await conn.fetchval(Q.refresh_stale_planner_statistics))
    if analysed:
        log.info("planner statistics refreshed for %s (they had outgrown their statistics)",
                 ", ".join(analysed))
    return analysed


async def statistics_step(pool: asyncpg.Pool) -> float:
    await refresh_planner_statistics(pool)
    return INTERVAL_S
