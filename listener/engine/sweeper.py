"""The sweep (SPEC §9), the one implementation behind the daemon's sweep loop and `revenue-asi tick sweep`: expired
leases (failed as outcome_unknown, never re-sent), reactions and ended cooldowns a missed NOTIFY left behind, and
the campaign-lead count deltas folded (0008). Due
touches are the dispatcher's: the daemon wakes it after each sweep; `tick sweep`, with no daemon, drives it once.

A row another session holds never stalls a sweep (SPEC §20): an expired lease whose touch is locked is skipped
(SKIP LOCKED) and expired by a later sweep; a fold that meets a locked count row is left to a later sweep."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from listener.engine.reactions import ReactionStats, drain_due_cooldowns, drain_reactions
from listener.store.database import ROW_BUSY_ERRORS, wait_briefly_for_row_locks
from listener.store.queries import Q

RECORD_EVERY_S = 60.0
log = logging.getLogger(__name__)


@dataclass
class SweepStats:
    leases_expired: int = 0
    counts_folded: bool = True
    reactions: ReactionStats = field(default_factory=ReactionStats)
    cooldowns: ReactionStats = field(default_factory=ReactionStats)

    @property
    def did_work(self) -> bool:
        return bool(self.leases_expired or self.reactions.events or self.cooldowns.events)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def expire_leases(pool: asyncpg.Pool, batch: int = 500) -> int:
    total = 0
    while True:
        try:
            async with pool.acquire() as conn:
                rows = await conn.fetch(Q.expire_leases, batch, None)
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
            # one row the database refuses (e.g. a date a later constraint forbids) must not stall the others
            log.warning("sweep: a batch of expired leases was refused (%s); expiring them one by one",
                        type(exc).__name__)
            return total + await _expire_one_by_one(pool, batch)
        total += len(rows)
        if len(rows) < batch:
            return total


async def _expire_one_by_one(pool: asyncpg.Pool, batch: int) -> int:
    done = 0
    async with pool.acquire() as conn:
        ids = [r["id"] for r in await conn.fetch(Q.expired_lease_ids, batch)]
    for touch_id in ids:
        try:
            async with pool.acquire() as conn:
                done += len(await conn.fetch(Q.expire_leases, 1, [touch_id]))
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
            log.error("sweep: the expired lease of touch %s cannot be settled: %s", touch_id, exc)
    return done


async def fold_campaign_lead_counts(pool: asyncpg.Pool) -> bool:
    """Fold the campaign-lead count deltas (0008). A count row another session holds (a migration re-seeding the
    counts, an operator's open transaction) leaves the fold to the next sweep instead of stalling this one (SPEC
    §20): the deltas stay, and every read still sums them. Returns whether it folded."""
    async with pool.acquire() as conn:
        try:
            async with conn.transaction():
                await wait_briefly_for_row_locks(conn)
                await conn.execute(Q.fold_campaign_lead_counts)
        except ROW_BUSY_ERRORS:
            log.info("sweep: campaign lead counts locked by another session; folded by a later sweep")
            return False
    return True


async def sweep_once(pool: asyncpg.Pool, *, react: bool = True) -> SweepStats:
    """Expire leases, then (`react`) drain what the reactions left; the daemon passes react=False and wakes its
    reaction service instead, so the two never work the same backlog side by side."""
    stats = SweepStats()
    stats.leases_expired = await expire_leases(pool)
    stats.counts_folded = await fold_campaign_lead_counts(pool)
    if react:
        stats.reactions = await drain_reactions(pool)
        stats.cooldowns = await drain_due_cooldowns(pool)
    return stats


class SweepService:
    """The daemon's sweep: every REVENUE_ASI_SWEEP_INTERVAL_S. A job_runs row when it did something, and otherwise
    once a minute, so `status` shows it alive without a row every few seconds."""

    def __init__(self, pool: asyncpg.Pool, worker_id: str, interval_s: float) -> None:
        self.pool = pool
        self.worker_id = worker_id
        self.interval_s = interval_s
        self._last_recorded = float("-inf")
        self.last: SweepStats | None = None

    async def step(self) -> float:
        started_at = datetime.now(UTC)
        stats = await sweep_once(self.pool, react=False)
        self.last = stats
        if stats.did_work or time.monotonic() - self._last_recorded >= RECORD_EVERY_S:
            async with self.pool.acquire() as conn:
                await conn.execute(Q.insert_job_run, "sweep", started_at, False,
                                   {**stats.as_dict(), "worker": self.worker_id}, None)
            self._last_recorded = time.monotonic()
        return self.interval_s
