"""Jobs that run on an interval inside the daemon and on demand with `revenue-asi tick JOB`; each run writes a
job_runs row with its counts."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from listener.engine.completer import Completer
from listener.engine.daemon import PeriodicJob
from listener.engine.dispatcher import Dispatcher
from listener.engine.enrichment import JOB as ENRICHMENT
from listener.engine.enrichment import enrichment_job
from listener.engine.orchestrators import REACTIVATION, TOUCH_ORCHESTRATOR, reactivation_job, touch_orchestrator_job
from listener.engine.reconcile import reconcile_job
from listener.engine.sweeper import sweep_once
from listener.providers.base import build_providers, close_providers
from listener.settings import Settings
from listener.store.database import create_pool
from listener.store.queries import Q

JobFn = Callable[[asyncpg.Pool, Settings, bool, int | None], Awaitable[dict[str, Any]]]


async def sweep_job(pool: asyncpg.Pool, settings: Settings, dry_run: bool, limit: int | None) -> dict[str, Any]:
    """The daemon's sweep (listener/engine/sweeper.py), then what a daemon would do next: dispatch what is due, and sweep
    once more for the reactions the sends caused."""
    if dry_run:
        async with pool.acquire() as conn:
            due = await conn.fetchval(Q.count_due_touches)
        return {"due_touches": due, "dry_run": True}
    stats = (await sweep_once(pool)).as_dict()
    providers = build_providers(settings)
    worker_id = f"tick-sweep-{int(time.time())}"
    completer = Completer(pool, worker_id)
    completer_stop = asyncio.Event()
    completer_task = asyncio.create_task(completer.run(completer_stop))
    dispatcher = Dispatcher(pool, settings, providers, worker_id, completer)
    try:
        await dispatcher.drain(limit)
    finally:
        completer_stop.set()
        await completer_task
        await close_providers(providers)
    stats["dispatched"] = {"claimed": dispatcher.stats.claimed, "sent": dispatcher.stats.sent,
                           "failed": dispatcher.stats.failed, "canceled": dispatcher.stats.canceled}
    stats["after_dispatch"] = (await sweep_once(pool)).as_dict()
    return stats


RECONCILE = "reconcile"
JOBS: dict[str, JobFn] = {"sweep": sweep_job, TOUCH_ORCHESTRATOR: touch_orchestrator_job,
                          REACTIVATION: reactivation_job, RECONCILE: reconcile_job}
JOBS[ENRICHMENT] = enrichment_job  # SPEC §15: `revenue-asi tick enrichment [--limit N]`


async def record_job_run(pool: asyncpg.Pool, job: str, started_at: datetime, dry_run: bool,
                         stats: dict[str, Any], error: str | None) -> None:
    async with pool.acquire() as conn:
        await conn.execute(Q.insert_job_run, job, started_at, dry_run, json.loads(json.dumps(stats, default=str)),
                           error)


async def run_job_on_pool(pool: asyncpg.Pool, settings: Settings, job: str, *, dry_run: bool = False,
                          limit: int | None = None, record_idle: bool = True) -> dict[str, Any]:
    """One run of `job`, recorded in job_runs (unless it reports itself idle and `record_idle` is off: the
    daemon's frequent reconcile runs leave a row only when they looked something up)."""
    started_at = datetime.now(UTC)
    try:
        stats = await JOBS[job](pool, settings, dry_run, limit)
    except Exception as exc:
        await record_job_run(pool, job, started_at, dry_run, {}, f"{type(exc).__name__}: {exc}")
        raise
    if record_idle or not stats.get("idle"):
        error = stats.get("error") if isinstance(stats.get("error"), str) else None
        await record_job_run(pool, job, started_at, dry_run, stats, error)
    return stats


async def run_job(settings: Settings, url: str, job: str, *, dry_run: bool = False,
                  limit: int | None = None) -> dict[str, Any]:
    from listener.store.database import connect, migrate

    conn = await connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    pool = await create_pool(url, min_size=1, max_size=4)
    try:
        return await run_job_on_pool(pool, settings, job, dry_run=dry_run, limit=limit)
    finally:
        await pool.close()


def periodic_jobs(settings: Settings) -> list[PeriodicJob]:
    """The orchestrators, on their intervals (the sweep has its own loop in the daemon). Each run takes the job's
    advisory lock, so with many daemons one instance runs at a time; each writes a job_runs row."""

    def runner(name: str) -> Callable[[asyncpg.Pool], Awaitable[dict[str, Any]]]:
        return lambda pool: run_job_on_pool(pool, settings, name, record_idle=name != RECONCILE)

    return [PeriodicJob(TOUCH_ORCHESTRATOR, settings.orchestrator_interval_s, runner(TOUCH_ORCHESTRATOR)),
            PeriodicJob(REACTIVATION, settings.reactivation_interval_s, runner(REACTIVATION)),
            PeriodicJob(RECONCILE, settings.reconcile_interval_s, runner(RECONCILE))]
