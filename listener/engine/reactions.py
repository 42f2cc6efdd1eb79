"""What the daemon does when an event lands (SPEC §7–§9, §17): the fallback decision after every touch_sent /
touch_failed, cancellations after stop events, the cadence lifecycle — decided and acted on set-based in SQL
(sql/views/09_reactions.sql), a batch at a time. Every reaction runs in the transaction that takes its
event_reactions row (or, for the daemon's own outcomes, in the completer's transaction that writes them), so it
happens exactly once even with many daemons; replay reuses it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

import asyncpg

from listener.engine.isolate import batch_then_one_by_one
from listener.rules.sanitize import clean_answer
from listener.store.database import ROW_BUSY_ERRORS
from listener.store.queries import Q

log = logging.getLogger(__name__)

# A row that raises is retried alone; CONNECTION_ERRORS end the drain instead (nothing to isolate).
# Errors of the moment, not of the row: the reaction is retried later (REACTION_RETRY_S × attempts), and set aside
# only after MAX_REACTION_ATTEMPTS.
TRANSIENT_DB_ERRORS = (asyncpg.exceptions.LockNotAvailableError, asyncpg.exceptions.QueryCanceledError,
                       asyncpg.exceptions.TransactionRollbackError, asyncpg.exceptions.InsufficientResourcesError)
MAX_REACTION_ATTEMPTS = 5
REACTION_RETRY_S = 5.0
COOLDOWN_RETRY_S = 60.0
# A row locked by another session (SPEC §20) is no fault of the reaction: it is retried, never given up, sooner at
# first and at most every BUSY_RETRY_MAX_S while the lock lasts; the other rows of its batch commit at once.
BUSY_RETRY_MIN_S = 0.5
BUSY_RETRY_MAX_S = 10.0


def busy_retry_s(waiting_since: datetime) -> float:
    """How long to wait before trying a reaction blocked by a row lock again: a quarter of how long it has waited."""
    waited = (datetime.now(UTC) - waiting_since).total_seconds()
    return min(max(waited / 4, BUSY_RETRY_MIN_S), BUSY_RETRY_MAX_S)


@dataclass(frozen=True, slots=True)
class DecisionKey:
    lead_id: UUID
    campaign_id: UUID | None
    step: int
    latest_touch_id: UUID  # act only if this is still the newest touch of the key

    @classmethod
    def from_record(cls, row: asyncpg.Record) -> DecisionKey:
        """A row of take_due_cooldowns."""
        return cls(row["lead_id"], row["campaign_id"], row["step"], row["latest_touch_id"])


@dataclass(frozen=True, slots=True)
class ReactionEvent:
    """An event to react to: a row of take_reactions, or (replay) of core_memory_events with its payload."""

    id: UUID
    lead_id: UUID
    event_type: str
    created_at: datetime
    touch_run_id: UUID | None  # payload.touch_run_id when it is a valid uuid
    attempts: int = 0  # earlier attempts that raised (0003_poison.sql)

    @classmethod
    def from_take(cls, row: asyncpg.Record) -> ReactionEvent:
        """The take query hands touch_run_id over as text, never the payload: a payload nobody can decode never
        reaches Python."""
        return cls(row["id"], row["lead_id"], row["event_type"], row["created_at"], _uuid_or_none(row["touch_run_id"]),
                   row["attempts"])

    @classmethod
    def from_event(cls, row: asyncpg.Record) -> ReactionEvent:
        """A core_memory_events row with its decoded payload, which may be anything (an array, null)."""
        payload = row["payload"] if isinstance(row["payload"], dict) else {}
        return cls(row["id"], row["lead_id"], row["event_type"], row["created_at"],
                   _uuid_or_none(payload.get("touch_run_id")))


Row = TypeVar("Row")  # what a drain's take query gives, parsed: ReactionEvent or DecisionKey


def _uuid_or_none(raw: object) -> UUID | None:
    try:
        return UUID(str(raw)) if raw is not None else None
    except ValueError:
        return None


@dataclass
class ReactionStats:
    events: int = 0
    decisions: dict[str, int] = field(default_factory=dict)
    touches_created: int = 0
    touches_canceled: int = 0
    superseded: int = 0
    cadences_completed: int = 0
    cadences_stopped: int = 0
    steps_advanced: int = 0
    touches_deferred: int = 0  # SPEC §19: out of office
    touches_resumed: int = 0  # SPEC §19: the pause ended by a reply
    without_touch: int = 0  # touch outcome events whose payload names no touch: nothing to decide

    def add(self, other: ReactionStats) -> None:
        for counter in fields(self):
            if counter.name != "decisions":
                setattr(self, counter.name, getattr(self, counter.name) + getattr(other, counter.name))
        for decision, n in other.decisions.items():
            self.decisions[decision] = self.decisions.get(decision, 0) + n

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def add_counters(stats: ReactionStats, rows: Iterable[Mapping[str, Any]]) -> ReactionStats:
    """Counters of the SQL reaction functions (sql/views/09_reactions.sql), one jsonb per statement they ran."""
    for counters in rows:
        for name, value in counters.items():
            if name == "decisions":
                for decision, n in value.items():
                    stats.decisions[decision] = stats.decisions.get(decision, 0) + n
            else:
                setattr(stats, name, getattr(stats, name) + value)
    return stats


async def react_to_keys(conn: asyncpg.Connection, keys: Sequence[DecisionKey]) -> ReactionStats:
    """Decide each key again and act on it (ended cooldowns), set-based: react_to_due_keys. In a transaction."""
    if not keys:
        return ReactionStats()
    rows = await conn.fetch(Q.react_to_due_keys, [k.lead_id for k in keys], [k.campaign_id for k in keys],
                            [k.step for k in keys], [k.latest_touch_id for k in keys])
    return add_counters(ReactionStats(), (r["counters"] for r in rows))


async def react_to_events(conn: asyncpg.Connection, event_ids: Sequence[UUID]) -> ReactionStats:
    """React to a batch of events as if one by one in order (created_at, id), set-based: react_to_events — the
    fallback decision after touch outcomes and permanent undeliveries, cancellations and cadence stops after stop
    events, out-of-office deferrals and their end (SPEC §7–§9, §17, §19). In a transaction."""
    if not event_ids:
        return ReactionStats()
    rows = await conn.fetch(Q.react_to_events, list(event_ids))
    stats = add_counters(ReactionStats(), (r["counters"] for r in rows))
    if stats.without_touch:
        log.warning("%d touch outcome event(s) without a valid payload.touch_run_id; no decision",
                    stats.without_touch)
    return stats


async def _drain(pool: asyncpg.Pool, take_query: str, batch: int, parse: Callable[[asyncpg.Record], Row],
                 act: Callable[[asyncpg.Connection, list[Row]], Awaitable[ReactionStats]],
                 set_aside: Callable[[asyncpg.Connection, Row, BaseException], Awaitable[None]],
                 ) -> ReactionStats:
    """Take rows with `take_query` and act on them in the same transaction, batch after batch, until none are left.

    Isolation by construction, the services' one shape (listener/engine/isolate.py): the batch runs in a savepoint;
    when it raises, each row runs again alone in its own savepoint, and a row that still raises is handed to
    ``set_aside`` (which keeps it with its error), so the others commit and one bad row never stalls the rest. A row
    lock held elsewhere is waited for only briefly (ROW_LOCK_WAIT_MS), so it costs its batch a fraction of a second,
    not the session's lock_timeout. Only losing the connection ends the drain."""
    total = ReactionStats()
    while True:
        async with pool.acquire() as conn, conn.transaction():
            rows = [parse(r) for r in await conn.fetch(take_query, batch)]  # SKIP LOCKED: waits for no row
            if not rows:
                return total
            done: list[ReactionStats] = []

            async def run(items: Sequence[Row], conn: asyncpg.Connection = conn, done: list[ReactionStats] = done
                          ) -> None:
                done.append(await act(conn, list(items)))

            for row, exc in await batch_then_one_by_one(conn, rows, run, catch=(Exception,)):
                await set_aside(conn, row, exc)
            for stats in done:
                total.add(stats)


def describe_error(exc: BaseException) -> str:
    """A one-line reason for a row set aside (never a secret: database and Python errors name values, not
    credentials), at most 500 characters."""
    text = clean_answer(f"{type(exc).__name__}: {exc}")  # no NUL or lone surrogate: it is stored as text
    return text if len(text) <= 500 else text[:499] + "…"


async def _set_aside_reaction(conn: asyncpg.Connection, event: ReactionEvent, exc: BaseException) -> None:
    if isinstance(exc, ROW_BUSY_ERRORS):
        delay = busy_retry_s(event.created_at)
        log.info("reaction to event %s (%s) waits for a row locked by another session; retried in %.1fs",
                 event.id, event.event_type, delay)
        await conn.execute(Q.set_aside_reaction, event.id, event.lead_id, event.event_type, event.created_at,
                           event.attempts, describe_error(exc), False, delay)
        return
    attempts = event.attempts + 1
    transient = isinstance(exc, TRANSIENT_DB_ERRORS) and attempts < MAX_REACTION_ATTEMPTS
    log.warning("reaction to event %s (%s) %s: %s", event.id, event.event_type,
                f"failed (attempt {attempts}), retried later" if transient else "cannot be processed; set aside",
                describe_error(exc))
    await conn.execute(Q.set_aside_reaction, event.id, event.lead_id, event.event_type, event.created_at, attempts,
                       describe_error(exc), not transient, REACTION_RETRY_S * attempts)


async def drain_reactions(pool: asyncpg.Pool, batch: int = 200) -> ReactionStats:
    """Take and perform pending reactions until none are left."""

    async def act(conn: asyncpg.Connection, events: list[ReactionEvent]) -> ReactionStats:
        return await react_to_events(conn, [event.id for event in events])

    return await _drain(pool, Q.take_reactions, batch, ReactionEvent.from_take, act, _set_aside_reaction)


async def _set_aside_cooldown(conn: asyncpg.Connection, key: DecisionKey, exc: BaseException) -> None:
    if isinstance(exc, ROW_BUSY_ERRORS):
        log.info("re-deciding lead %s campaign %s step %s waits for a row locked by another session; retried in "
                 "%.1fs", key.lead_id, key.campaign_id, key.step, BUSY_RETRY_MIN_S * 2)
        await conn.execute(Q.postpone_cooldown, key.lead_id, key.campaign_id, key.step, key.latest_touch_id,
                           BUSY_RETRY_MIN_S * 2)
        return
    log.warning("re-deciding lead %s campaign %s step %s after its cooldown failed; retried in %.0fs: %s",
                key.lead_id, key.campaign_id, key.step, COOLDOWN_RETRY_S, describe_error(exc))
    await conn.execute(Q.postpone_cooldown, key.lead_id, key.campaign_id, key.step, key.latest_touch_id,
                       COOLDOWN_RETRY_S)


async def drain_due_cooldowns(pool: asyncpg.Pool, batch: int = 200) -> ReactionStats:
    """Re-decide keys whose cooldown has ended."""

    return await _drain(pool, Q.take_due_cooldowns, batch, DecisionKey.from_record, react_to_keys,
                        _set_aside_cooldown)
