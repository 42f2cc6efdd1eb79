"""`revenue-asi run`: the always-on consumer. One LISTEN connection, a pool for the work, and small loops:
dispatch (claim → send → complete), reactions (decisions, stop events, ended cooldowns), the sweep, and the
periodic jobs. SIGTERM: stop claiming, let in-flight sends finish within the grace period, release the rest."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from listener import metrics
from listener.appointments import run_appointment_service
from listener.enrichment import run_enrichment_service
from listener.database import connect, create_pool, migrate
from listener.dispatcher import Dispatcher
from listener.notifier import Notifier
from listener.providers.base import Provider, build_providers, unconfigured_channels
from listener.queries import Q
from listener.reactions import ReactionStats, drain_due_cooldowns, drain_reactions
from listener.settings import Settings
from listener.sweeper import expire_leases

log = logging.getLogger(__name__)

# asyncpg.InternalClientError: a pooled connection cut mid-query (database restart) fails its release this way.
DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError,
             asyncio.TimeoutError, ConnectionError)
MAX_BATCHES = 8
RETRY_AFTER_DB_ERROR_S = 0.5
SWEEP_RECORD_EVERY_S = 60.0


@dataclass
class PeriodicJob:
    name: str
    interval_s: float
    run: Callable[[asyncpg.Pool], Awaitable[object]]


def make_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


async def _wait(event: asyncio.Event, timeout: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout=max(timeout, 0))
    except asyncio.TimeoutError:
        pass


def _seconds_until(moment: datetime | None, cap: float) -> float:
    if moment is None:
        return cap
    return min(cap, max(0.0, (moment - datetime.now(UTC)).total_seconds()))


class Daemon:
    def __init__(self, settings: Settings, url: str, *, providers: Mapping[str, Provider | None] | None = None,
                 worker_id: str | None = None, periodic_jobs: list[PeriodicJob] | None = None) -> None:
        self.settings = settings
        self.url = url
        self.providers = providers if providers is not None else build_providers(settings)
        self.worker_id = worker_id or settings.worker_id or make_worker_id()
        self.periodic_jobs = periodic_jobs or []
        self.stop = asyncio.Event()
        self.ready = asyncio.Event()
        self.touch_wake = asyncio.Event()
        self.event_wake = asyncio.Event()
        self.capacity_freed = asyncio.Event()
        self.inflight = 0
        self.batches: set[asyncio.Task[None]] = set()
        self.reactions = ReactionStats()
        self.pool: asyncpg.Pool | None = None
        self.dispatcher: Dispatcher | None = None
        self.notifier = Notifier(url, self._on_wake)
        # SPEC §15 services: one wake-up event per NOTIFY channel they listen to
        self.service_wakes = {"leads": asyncio.Event(), "appointments": asyncio.Event()}

    def _on_wake(self, channel: str) -> None:
        if channel in self.service_wakes:
            self.service_wakes[channel].set()
            return
        (self.touch_wake if channel == "touch_runs" else self.event_wake).set()

    def request_stop(self) -> None:
        self.stop.set()
        self.touch_wake.set()
        self.event_wake.set()
        self.capacity_freed.set()

    async def run(self) -> None:
        conn = await connect(self.url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        pool_size = MAX_BATCHES + 4 + len(self.periodic_jobs) + len(self.service_wakes) + 1
        self.pool = await create_pool(self.url, min_size=2, max_size=pool_size)
        self.dispatcher = Dispatcher(self.pool, self.settings, self.providers, self.worker_id)
        metrics.serve(self.settings.metrics_port)
        missing = unconfigured_channels(self.settings)
        if missing:
            log.warning("no provider credentials for: %s — their touches will fail as provider_not_configured",
                        ", ".join(missing))
        log.info("daemon %s starting (concurrency %d, lease %.0fs, sweep every %.1fs)", self.worker_id,
                 self.settings.concurrency, self.settings.lease_s, self.settings.sweep_interval_s)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.notifier.run(self.stop))
                group.create_task(self._dispatch_loop())
                group.create_task(self._reaction_loop())
                group.create_task(self._sweep_loop())
                group.create_task(run_enrichment_service(self.pool, self.settings, self.service_wakes["leads"],
                                                         self.stop))
                group.create_task(run_appointment_service(self.pool, self.settings,
                                                          self.service_wakes["appointments"], self.stop))
                for job in self.periodic_jobs:
                    group.create_task(self._periodic_loop(job))
                group.create_task(self._announce_ready())
        finally:
            await self._shutdown()

    async def _announce_ready(self) -> None:
        await self.notifier.connected.wait()
        self.ready.set()

    # --- dispatch -------------------------------------------------------------------------------------------
    async def _dispatch_loop(self) -> None:
        assert self.pool is not None
        while not self.stop.is_set():
            self.touch_wake.clear()
            try:
                claimed_any = await self._claim_until_empty()
                async with self.pool.acquire() as conn:
                    next_at = await conn.fetchval(Q.next_scheduled_at)
                delay = _seconds_until(next_at, self.settings.sweep_interval_s)
                if delay == 0 and not claimed_any:
                    delay = 0.05  # due rows exist but are locked by another claimer: look again shortly
            except DB_ERRORS as exc:
                log.warning("dispatch loop: database error (%s); retrying", type(exc).__name__)
                delay = RETRY_AFTER_DB_ERROR_S
            except Exception:  # a loop of an always-on daemon must outlive any one failure
                log.exception("dispatch loop: unexpected error; retrying")
                delay = RETRY_AFTER_DB_ERROR_S
            await _wait(self.touch_wake, delay)

    async def _claim_until_empty(self) -> bool:
        assert self.pool is not None and self.dispatcher is not None
        claimed_any = False
        while not self.stop.is_set():
            free = self.settings.concurrency - self.inflight
            if free <= 0 or len(self.batches) >= MAX_BATCHES:
                self.capacity_freed.clear()
                await self.capacity_freed.wait()
                continue
            async with self.pool.acquire() as conn:
                ids = await self.dispatcher.claim(conn, min(free, self.settings.claim_batch))
                if ids:  # start the batch now: the claim connection's release (a round trip) overlaps with it
                    claimed_any = True
                    self.inflight += len(ids)
                    task = asyncio.create_task(self._run_batch(ids, time.monotonic()))
                    self.batches.add(task)
            if not ids:
                return claimed_any
        return claimed_any

    async def _run_batch(self, ids: list[uuid.UUID], claimed_at: float) -> None:
        assert self.dispatcher is not None
        metrics.IN_FLIGHT.inc(len(ids))
        try:
            outcomes = await self.dispatcher.process(ids, claimed_at, self.stop.is_set)
            metrics.count_outcomes((o.status, o.event_payload.get("error_code")) for o in outcomes)
        except DB_ERRORS as exc:
            # The send transaction rolled back; its touches stay leased and the sweep fails them as
            # outcome_unknown when the lease ends (a provider may already have them: never re-send).
            log.warning("send batch of %d failed (%s); the sweep will settle it", len(ids), type(exc).__name__)
        except Exception:
            log.exception("send batch of %d failed", len(ids))
        finally:
            metrics.IN_FLIGHT.dec(len(ids))
            self.inflight -= len(ids)
            task = asyncio.current_task()
            if task is not None:
                self.batches.discard(task)  # type: ignore[arg-type]
            self.capacity_freed.set()

    # --- reactions ------------------------------------------------------------------------------------------
    async def _reaction_loop(self) -> None:
        assert self.pool is not None
        while not self.stop.is_set():
            self.event_wake.clear()
            try:
                for stats in (await drain_reactions(self.pool), await drain_due_cooldowns(self.pool)):
                    self.reactions.add(stats)
                    metrics.count_decisions(stats.decisions)
                async with self.pool.acquire() as conn:
                    next_at = await conn.fetchval(Q.next_cooldown_due)
                delay = _seconds_until(next_at, self.settings.sweep_interval_s)
            except DB_ERRORS as exc:
                log.warning("reaction loop: database error (%s); retrying", type(exc).__name__)
                delay = RETRY_AFTER_DB_ERROR_S
            except Exception:
                log.exception("reaction loop: unexpected error; retrying")
                delay = RETRY_AFTER_DB_ERROR_S
            await _wait(self.event_wake, delay)

    # --- sweep and periodic jobs ----------------------------------------------------------------------------
    async def _sweep_loop(self) -> None:
        """Every sweep_interval_s. It writes a job_runs row when it did something, and otherwise once a minute, so
        `status` shows it alive without a row every few seconds."""
        assert self.pool is not None
        last_recorded = float("-inf")
        while not self.stop.is_set():
            await _wait(self.stop, self.settings.sweep_interval_s)
            if self.stop.is_set():
                return
            try:
                started_at = datetime.now(UTC)
                expired = await expire_leases(self.pool)
                if expired:
                    log.warning("sweep: %d expired lease(s) failed as outcome_unknown", expired)
                if expired or time.monotonic() - last_recorded >= SWEEP_RECORD_EVERY_S:
                    async with self.pool.acquire() as conn:
                        await conn.execute(Q.insert_job_run, "sweep", started_at, False,
                                           {"leases_expired": expired, "worker": self.worker_id}, None)
                    last_recorded = time.monotonic()
            except DB_ERRORS as exc:
                log.warning("sweep: database error (%s)", type(exc).__name__)
            except Exception:
                log.exception("sweep: unexpected error")
            self.touch_wake.set()  # missed notifications: the loops look again
            self.event_wake.set()

    async def _periodic_loop(self, job: PeriodicJob) -> None:
        assert self.pool is not None
        while not self.stop.is_set():
            try:
                await job.run(self.pool)
            except DB_ERRORS as exc:
                log.warning("job %s: database error (%s)", job.name, type(exc).__name__)
            except Exception:
                log.exception("job %s failed", job.name)
            await _wait(self.stop, job.interval_s)

    # --- shutdown -------------------------------------------------------------------------------------------
    async def _shutdown(self) -> None:
        if self.batches:
            log.info("shutting down: waiting up to %.1fs for %d send batch(es)", self.settings.shutdown_grace_s,
                     len(self.batches))
            _, pending = await asyncio.wait(set(self.batches), timeout=self.settings.shutdown_grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self.pool is not None:
            await self.pool.close()
        for provider in {id(p): p for p in self.providers.values() if p is not None}.values():
            await provider.aclose()
        log.info("daemon %s stopped", self.worker_id)
