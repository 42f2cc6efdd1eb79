"""`revenue-asi run`: the composition root of the always-on consumer. One LISTEN connection, a pool for the work,
and the services: dispatch (claim → send → completer), reactions (decisions, stop events, ended cooldowns), the
sweep, and the periodic jobs. SIGTERM: stop claiming, let in-flight sends finish within the grace period, write
their outcomes; a send still in flight after the grace period is left to its lease (outcome_unknown, never re-sent)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import asyncpg

from listener.engine import metrics
from listener.engine.appointments import run_appointment_service
from listener.engine.completer import Completer, Outcome
from listener.engine.dispatcher import Dispatcher
from listener.engine.enrichment import run_enrichment_service
from listener.engine.heartbeat import run_heartbeat
from listener.engine.notifier import Notifier
from listener.engine.reactions import ReactionStats, drain_due_cooldowns, drain_reactions
from listener.engine.service import DB_ERRORS, run_service, wait_any
from listener.engine.statistics import INTERVAL_S as STATISTICS_INTERVAL_S
from listener.engine.statistics import statistics_step
from listener.engine.sweeper import SweepService
from listener.providers.base import Provider, build_providers, close_providers, unconfigured_channels
from listener.rules.moments import seconds_until
from listener.settings import Settings
from listener.store.database import connect, create_pool, light_reset, migrate
from listener.store.queries import Q

log = logging.getLogger(__name__)

SET_ASIDE_RETRY_S = 5.0  # a periodic job that left rows locked by another session runs again this soon
RETRY_SOON_S = 0.05  # due rows exist but another daemon holds them: look again shortly
CLAIM_COOLDOWN_S = 0.005  # under load, how long a claim may wait for more slots to free up
POOL_SPARE = 6


@dataclass
class PeriodicJob:
    name: str
    interval_s: float
    run: Callable[[asyncpg.Pool], Awaitable[object]]


def make_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


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
        self.completer_stop = asyncio.Event()
        self.reactions = ReactionStats()
        self.pool: asyncpg.Pool | None = None
        self.dispatcher: Dispatcher | None = None
        self.completer: Completer | None = None
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
        if self.dispatcher is not None:
            self.dispatcher.slot_freed.set()

    async def run(self) -> None:
        self.settings.check_unsubscribe_secret()  # SPEC §19: a public URL needs REVENUE_ASI_UNSUBSCRIBE_SECRET
        conn = await connect(self.url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        # The pool serves claims, completions, reactions and jobs — never a connection per send.
        pool_size = (POOL_SPARE + len(self.periodic_jobs) + len(self.service_wakes) + 1
                     + min(8, max(2, self.settings.concurrency // 16)))
        self.pool = await create_pool(self.url, min_size=2, max_size=pool_size,
                                      server_settings=session_limits(self.settings), reset=light_reset)
        self.completer = Completer(self.pool, self.worker_id, on_written=_count_written, on_reacted=self._count_reacted)
        self.dispatcher = Dispatcher(self.pool, self.settings, self.providers, self.worker_id, self.completer)
        sweep = SweepService(self.pool, self.worker_id, self.settings.sweep_interval_s)
        metrics.serve(self.settings.metrics_port)
        missing = unconfigured_channels(self.settings)
        if missing:
            log.warning("no provider credentials for: %s — their touches will fail as provider_not_configured",
                        ", ".join(missing))
        if not self.settings.one_click_unsubscribe and self.settings.elasticemail_configured:
            log.warning("REVENUE_ASI_PUBLIC_URL is not set: e-mails go out without one-click unsubscribe "
                        "(List-Unsubscribe, RFC 8058), which Gmail and Yahoo require of bulk senders")
        log.info("daemon %s starting (concurrency %d, lease %.0fs, sweep every %.1fs)", self.worker_id,
                 self.settings.concurrency, self.settings.lease_s, self.settings.sweep_interval_s)
        completer_task = asyncio.create_task(self.completer.run(self.completer_stop))
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.notifier.run(self.stop))
                group.create_task(self._dispatch_loop())
                group.create_task(run_service("reactions", self._react, stop=self.stop, wake=self.event_wake,
                                              idle_s=self.settings.sweep_interval_s))
                group.create_task(run_service("sweep", self._sweep(sweep), stop=self.stop,
                                              idle_s=self.settings.sweep_interval_s, run_first=False))
                group.create_task(run_enrichment_service(self.pool, self.settings, self.service_wakes["leads"],
                                                         self.stop))
                group.create_task(run_appointment_service(self.pool, self.settings,
                                                          self.service_wakes["appointments"], self.stop))
                for job in self.periodic_jobs:
                    group.create_task(run_service(job.name, _periodic(job, self.pool), stop=self.stop,
                                                  idle_s=job.interval_s))
                group.create_task(run_service("statistics", partial(statistics_step, self.pool), stop=self.stop,
                                              idle_s=STATISTICS_INTERVAL_S))
                group.create_task(self._announce_ready())
                group.create_task(run_heartbeat(self.pool, self.worker_id, self.stop, listening=self.notifier.connected.is_set))
        finally:
            await self._shutdown(completer_task)

    async def _announce_ready(self) -> None:
        await self.notifier.connected.wait()
        self.ready.set()

    # --- dispatch -------------------------------------------------------------------------------------------
    async def _dispatch_loop(self) -> None:
        """Claim while slots are free; then sleep until a NOTIFY, a freed slot or the next scheduled touch."""
        assert self.pool is not None and self.dispatcher is not None
        dispatcher, pool = self.dispatcher, self.pool

        # Under load a claim waits (at most CLAIM_COOLDOWN_S) until a quarter of the slots are free, so one
        # statement serves several touches instead of one per freed slot (River's fetch cooldown). An idle daemon
        # has all its slots free and claims at once: no latency is added at low load.
        claim_floor = max(1, min(self.settings.claim_batch, self.settings.concurrency // 4))

        async def step() -> float | None:
            claimed_any = False
            while not self.stop.is_set():
                free = dispatcher.free_slots
                if free <= 0:
                    dispatcher.slot_freed.clear()
                    await wait_any((dispatcher.slot_freed, self.stop), 3600)
                    continue
                if free < claim_floor and claimed_any:
                    await self._await_free_slots(claim_floor)
                    free = dispatcher.free_slots
                claimed = await dispatcher.claim_and_start(min(free, self.settings.claim_batch))
                claimed_any = claimed_any or claimed > 0
                if claimed < min(free, self.settings.claim_batch) and not dispatcher.more_due:
                    break
            async with pool.acquire() as conn:
                next_at = await conn.fetchval(Q.next_dispatch_at)
            delay = seconds_until(next_at, self.settings.sweep_interval_s)
            return RETRY_SOON_S if delay == 0 and not claimed_any else delay

        await run_service("dispatch", step, stop=self.stop, wake=self.touch_wake,
                          idle_s=self.settings.sweep_interval_s)

    async def _await_free_slots(self, wanted: int) -> None:
        """Until `wanted` slots are free, the stop, or CLAIM_COOLDOWN_S."""
        assert self.dispatcher is not None
        deadline = asyncio.get_running_loop().time() + CLAIM_COOLDOWN_S
        while self.dispatcher.free_slots < wanted and not self.stop.is_set():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            self.dispatcher.slot_freed.clear()
            await wait_any((self.dispatcher.slot_freed, self.stop), remaining)

    # --- reactions, sweep, jobs -----------------------------------------------------------------------------
    def _count_reacted(self, stats: ReactionStats) -> None:
        self.reactions.add(stats)
        metrics.count_decisions(stats.decisions)
        if stats.decisions.get("wait_cooldown"):  # made by the completer: the reaction service keeps the timers
            self.event_wake.set()

    async def _react(self) -> float:
        assert self.pool is not None
        for stats in (await drain_reactions(self.pool), await drain_due_cooldowns(self.pool)):
            self._count_reacted(stats)
        async with self.pool.acquire() as conn:
            next_at = await conn.fetchval(Q.next_reaction_due)
        return seconds_until(next_at, self.settings.sweep_interval_s)

    def _sweep(self, sweep: SweepService) -> Callable[[], Awaitable[float | None]]:
        async def step() -> float:
            delay = await sweep.step()
            if sweep.last is not None and sweep.last.leases_expired:
                log.warning("sweep: %d expired lease(s) failed as outcome_unknown", sweep.last.leases_expired)
            self.touch_wake.set()  # missed notifications: the loops look again
            self.event_wake.set()
            return delay

        return step

    # --- shutdown -------------------------------------------------------------------------------------------
    async def _shutdown(self, completer_task: asyncio.Task[None]) -> None:
        sends = set(self.dispatcher.sends) if self.dispatcher is not None else set()
        if sends:
            log.info("shutting down: waiting up to %.1fs for %d send(s)", self.settings.shutdown_grace_s, len(sends))
            _, pending = await asyncio.wait(sends, timeout=self.settings.shutdown_grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
                log.warning("%d send(s) still in flight after the grace period; the sweep settles them",
                            len(pending))
        self.completer_stop.set()
        try:
            await asyncio.wait_for(completer_task, timeout=max(self.settings.shutdown_grace_s, 1.0))
        except DB_ERRORS:
            log.warning("outcomes not written before exit; the sweep settles their touches")
        if self.pool is not None:
            await self.pool.close()
        await close_providers(dict(self.providers))
        log.info("daemon %s stopped", self.worker_id)


def _periodic(job: PeriodicJob, pool: asyncpg.Pool) -> Callable[[], Awaitable[float]]:
    async def step() -> float:
        result = await job.run(pool)
        if isinstance(result, dict) and result.get("set_aside"):  # rows locked elsewhere (SPEC §20): soon again
            return min(job.interval_s, SET_ASIDE_RETRY_S)
        return job.interval_s

    return step


def _count_written(outcomes: Sequence[Outcome]) -> None:
    metrics.count_outcomes((o.status, o.event_payload.get("error_code")) for o in outcomes)


def session_limits(settings: Settings) -> dict[str, str]:
    """Time limits on every session the daemon opens (SPEC §11): a stuck query or a row locked elsewhere delays one
    item, never a loop."""
    return {"statement_timeout": str(settings.statement_timeout_ms),
            "lock_timeout": str(settings.lock_timeout_ms),
            "idle_in_transaction_session_timeout": str(settings.idle_in_transaction_timeout_ms)}
