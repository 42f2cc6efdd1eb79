"""The completer (River's internal/jobcompleter): every touch's outcome is handed here the moment its own provider
call ends, and written — status, event and the fallback decision after it in one statement, so in one transaction
(SPEC §17) — together with whatever else has finished meanwhile. While a write is in flight the next outcomes gather, so under load writes grow into
batches by themselves and at low load each outcome is written at once (no timer adds latency).

A touch row locked by another session (SPEC §20) is skipped by the write, not waited for: its outcome is handed in
again BUSY_RETRY_S later while the rest of the batch commits at once.

One bad outcome never costs its neighbours theirs: when a batch statement fails on its data, the batch is written
again one outcome at a time, and an outcome that still fails alone is written once more stripped to its status and
the database's reason. A database that cannot be reached keeps the outcomes queued and retried; if the daemon dies
meanwhile, the lease rules of §6 settle them (outcome_unknown — the provider may have them, never a second send)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from listener.engine.reactions import ReactionStats, add_counters
from listener.rules.text import clean_text
from listener.store.database import CONNECTION_ERRORS, ROW_LOCK_WAIT_MS
from listener.store.queries import Q

log = logging.getLogger(__name__)

MAX_BATCH = 512
RETRY_AFTER_DB_ERROR_S = 0.5
BUSY_RETRY_S = 0.5
# Errors of the connection, not of the data: keep the outcomes and try again.
RETRYABLE_ERRORS = (*CONNECTION_ERRORS, asyncpg.exceptions.QueryCanceledError,
                    asyncpg.exceptions.LockNotAvailableError)


@dataclass
class Outcome:
    """What happened to one touch; becomes one touch_runs update and one event."""

    id: UUID
    status: str  # sent | failed | canceled
    event_type: str
    event_payload: dict[str, Any]
    error: str | None = None
    provider_message_id: str | None = None
    payload_patch: dict[str, Any] | None = None

    def as_row(self) -> dict[str, Any]:
        return {"id": str(self.id), "status": self.status, "error": self.error,
                "provider_message_id": self.provider_message_id, "payload_patch": self.payload_patch,
                "event_type": self.event_type, "event_payload": self.event_payload}

    def stripped(self, reason: str) -> Outcome:
        """The same status with nothing but the database's reason: for an outcome whose own data was refused."""
        payload: dict[str, Any] = {"completion_error": clean_text(reason)[:300]}
        if self.event_type == "touch_failed":
            payload.update(error_code=self.event_payload.get("error_code", "completion_error"),
                           failure_class=self.event_payload.get("failure_class", "transient"))
        return Outcome(self.id, self.status, self.event_type, payload,
                       error=f"completion_error: {payload['completion_error']}" if self.status != "sent" else None)


@dataclass
class CompleterStats:
    written: int = 0
    batches: int = 0
    split_batches: int = 0
    stripped: int = 0
    busy: int = 0  # outcomes whose touch row another session held: written again later
    reactions_deferred: int = 0  # outcome events whose decision the reaction service makes instead
    by_status: dict[str, int] = field(default_factory=dict)


class Completer:
    def __init__(self, pool: asyncpg.Pool, worker_id: str,
                 on_written: Callable[[Sequence[Outcome]], None] | None = None,
                 on_reacted: Callable[[ReactionStats], None] | None = None) -> None:
        self.pool = pool
        self.worker_id = worker_id
        self.on_written = on_written
        self.on_reacted = on_reacted
        self.stats = CompleterStats()
        self._pending: list[Outcome] = []
        self._arrived = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._writing = 0
        self._held: dict[UUID, asyncio.TimerHandle] = {}  # outcomes of busy rows, each handed in again later

    def put(self, outcome: Outcome) -> None:
        self._held.pop(outcome.id, None)
        self._pending.append(outcome)
        self._idle.clear()
        self._arrived.set()

    @property
    def backlog(self) -> int:
        return len(self._pending) + self._writing + len(self._held)

    def _hold(self, outcome: Outcome) -> None:
        self.stats.busy += 1
        self._held[outcome.id] = asyncio.get_running_loop().call_later(BUSY_RETRY_S, self.put, outcome)

    async def wait_idle(self) -> None:
        """Until everything handed in so far is written (or given up by `run` ending)."""
        await self._idle.wait()

    async def run(self, stop: asyncio.Event) -> None:
        """Write outcomes until `stop` is set and nothing is left (the daemon sets `stop` after its sends end, and
        gives up waiting after its grace period: outcomes of rows still locked elsewhere are then left to the
        leases)."""
        try:
            await self._run(stop)
        finally:
            self._drop_held()
            self._idle.set()

    async def _run(self, stop: asyncio.Event) -> None:
        while True:
            if not self._pending:
                if not self._held:
                    self._idle.set()
                    if stop.is_set():
                        return
                self._arrived.clear()
                waiters = [asyncio.ensure_future(self._arrived.wait())]
                if not stop.is_set():
                    waiters.append(asyncio.ensure_future(stop.wait()))
                _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                for waiter in pending:
                    waiter.cancel()
                continue
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            self._writing = len(batch)
            try:
                await self.write(batch)
            except Exception as exc:  # the completer outlives anything; the leases settle the worst case
                log.warning("completer: could not write %d outcome(s) (%s); kept for the next try", len(batch),
                            type(exc).__name__, exc_info=not isinstance(exc, RETRYABLE_ERRORS))
                self._pending[:0] = batch
                if stop.is_set():  # stopping: the leases settle what is left (outcome_unknown, never a re-send)
                    log.warning("completer: stopping with %d outcome(s) unwritten", len(self._pending))
                    self._pending.clear()
                    return
                await asyncio.sleep(RETRY_AFTER_DB_ERROR_S)
            finally:
                self._writing = 0

    def _drop_held(self) -> None:
        if self._held:
            log.warning("completer: stopping while %d touch row(s) are still locked by another session; their "
                        "leases settle them (outcome_unknown, never a re-send)", len(self._held))
        for handle in self._held.values():
            handle.cancel()
        self._held.clear()

    async def write(self, batch: Sequence[Outcome]) -> None:
        try:
            await self._write(batch)
        except RETRYABLE_ERRORS:
            raise
        except (asyncpg.PostgresError, TypeError, ValueError) as exc:  # the data was refused (orjson or the database)
            if len(batch) == 1:
                await self._write_stripped(batch[0], exc)
                return
            self.stats.split_batches += 1
            log.warning("completer: a batch of %d was refused (%s); writing its outcomes one by one",
                        len(batch), type(exc).__name__)
            for outcome in batch:
                await self.write([outcome])

    async def _write(self, batch: Sequence[Outcome]) -> None:
        rows = orjson.dumps([o.as_row() for o in batch], option=orjson.OPT_NON_STR_KEYS).decode()
        async with self.pool.acquire() as conn:
            result = await conn.fetch(Q.complete_touches, rows, self.worker_id, ROW_LOCK_WAIT_MS)
        busy = {r["busy_touch_id"] for r in result if r["busy_touch_id"] is not None}
        counters = [r["counters"] for r in result if r["counters"] is not None]
        deferred = sum(c.get("deferred", 0) for c in counters)
        if deferred:
            self.stats.reactions_deferred += deferred
            log.info("completer: the decisions after %d outcome(s) are left to the reaction service (a row locked "
                     "elsewhere or refused by the database)", deferred)
        elif counters and self.on_reacted is not None:
            self.on_reacted(add_counters(ReactionStats(), counters))
        written = [o for o in batch if o.id not in busy]
        for outcome in batch:
            if outcome.id in busy:
                self._hold(outcome)
        self.stats.written += len(written)
        self.stats.batches += 1
        for outcome in written:
            self.stats.by_status[outcome.status] = self.stats.by_status.get(outcome.status, 0) + 1
        if self.on_written is not None and written:
            self.on_written(written)

    async def _write_stripped(self, outcome: Outcome, exc: Exception) -> None:
        log.warning("completer: the outcome of touch %s was refused (%s); writing it without its details",
                    outcome.id, type(exc).__name__)
        self.stats.stripped += 1
        try:
            await self._write([outcome.stripped(f"{type(exc).__name__}: {exc}")])
        except RETRYABLE_ERRORS:
            raise
        except (asyncpg.PostgresError, TypeError, ValueError):  # nothing of ours is left: the lease settles it
            log.exception("completer: touch %s could not be completed; the sweep will settle it", outcome.id)

