"""The sweep: expired leases, missed notifications, ended cooldowns (SPEC §9). Due touches are the dispatcher's;
the sweep only wakes it (in the daemon) or drives it once (`revenue-asi tick sweep`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg

from listener.queries import Q
from listener.reactions import ReactionStats, drain_due_cooldowns, drain_reactions


@dataclass
class SweepStats:
    leases_expired: int = 0
    reactions: ReactionStats = field(default_factory=ReactionStats)
    cooldowns: ReactionStats = field(default_factory=ReactionStats)

    def as_dict(self) -> dict[str, Any]:
        return {"leases_expired": self.leases_expired, "reactions": self.reactions.as_dict(),
                "cooldowns": self.cooldowns.as_dict()}


async def expire_leases(pool: asyncpg.Pool, batch: int = 500) -> int:
    total = 0
    while True:
        async with pool.acquire() as conn:
            rows = await conn.fetch(Q.expire_leases, batch)
        total += len(rows)
        if len(rows) < batch:
            return total


async def sweep_once(pool: asyncpg.Pool) -> SweepStats:
    stats = SweepStats()
    stats.leases_expired = await expire_leases(pool)
    stats.reactions = await drain_reactions(pool)
    stats.cooldowns = await drain_due_cooldowns(pool)
    return stats
