"""What the daemon does when an event lands (SPEC §7–§9): the fallback decision after every touch_sent /
touch_failed, cancellations after stop events, and the cadence lifecycle. Every reaction runs in the transaction
that takes its event_reactions row, so it happens exactly once even with many daemons, and replay reuses it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

import asyncpg

from listener.rules.decision import Decision
from listener.rules.payload import DEFAULT_STOP_EVENTS
from listener.rules.sanitize import clean_answer
from listener.store.database import CONNECTION_ERRORS, ROW_BUSY_ERRORS, wait_briefly_for_row_locks
from listener.store.decisions import decision_from_row
from listener.store.queries import Q

log = logging.getLogger(__name__)

TOUCH_OUTCOMES = frozenset({"touch_sent", "touch_failed"})
# Provider webhooks (SPEC §12): a permanent undelivery / bounce exhausts the channel, so the key is decided again.
UNDELIVERY_EVENTS = frozenset({"touch_undelivered", "email_bounced"})
SUPPRESSION_EVENTS = frozenset({"unsubscribe", "do_not_contact", "reply_negative"})
# SPEC §19: an out-of-office reply pauses the lead (its open touches deferred); a later non-automatic reply ends the
# pause at once (reply_received not classified out_of_office, or a positive / negative reply written directly).
OUT_OF_OFFICE_EVENT = "reply_out_of_office"
PAUSE_ENDING_EVENTS = frozenset({"reply_received", "reply_positive", "reply_negative"})
ADVANCING_STOPS = frozenset({"exhausted", "no_fallback_plan", "invalid_plan"})

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
    failure_class: str | None  # payload.failure_class when it is a string
    attempts: int = 0  # earlier attempts that raised (0003_poison.sql)
    classification: str | None = None  # payload.classification of a reply_received (SPEC §12, §19)

    @classmethod
    def from_take(cls, row: asyncpg.Record) -> ReactionEvent:
        """The take query hands touch_run_id, failure_class and classification over as text, never the payload: a
        payload nobody can decode never reaches Python."""
        return cls(row["id"], row["lead_id"], row["event_type"], row["created_at"], _uuid_or_none(row["touch_run_id"]),
                   row["failure_class"], row["attempts"], row["classification"])

    @classmethod
    def from_event(cls, row: asyncpg.Record) -> ReactionEvent:
        """A core_memory_events row with its decoded payload, which may be anything (an array, null)."""
        payload = row["payload"] if isinstance(row["payload"], dict) else {}
        failure_class = payload.get("failure_class")
        classification = payload.get("classification")
        return cls(row["id"], row["lead_id"], row["event_type"], row["created_at"],
                   _uuid_or_none(payload.get("touch_run_id")), failure_class if isinstance(failure_class, str) else None,
                   classification=classification if isinstance(classification, str) else None)

    @property
    def ends_pause(self) -> bool:
        """A non-automatic reply: it ends an out-of-office pause at once (SPEC §19)."""
        return self.event_type in PAUSE_ENDING_EVENTS and not (
            self.event_type == "reply_received" and self.classification == "out_of_office")


@dataclass(frozen=True, slots=True)
class TouchKey:
    """A row of touch_keys: the key of a touch, and whether the touch is still the newest of it, none open."""

    touch_run_id: UUID
    lead_id: UUID
    campaign_id: UUID | None
    step: int
    is_latest: bool
    has_open: bool

    @classmethod
    def from_record(cls, row: asyncpg.Record) -> TouchKey:
        return cls(row["touch_run_id"], row["lead_id"], row["campaign_id"], row["step"], row["is_latest"],
                   row["has_open"])


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

    def add(self, other: ReactionStats) -> None:
        for counter in fields(self):
            if counter.name != "decisions":
                setattr(self, counter.name, getattr(self, counter.name) + getattr(other, counter.name))
        for decision, n in other.decisions.items():
            self.decisions[decision] = self.decisions.get(decision, 0) + n

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decision_event(decision: Decision, key: DecisionKey, trigger_event_id: UUID | None) -> dict[str, Any]:
    """The fallback_decision event payload: the decision (listener.rules.decision's form) and the key it is for."""
    return {
        **decision.event_payload(),
        "lead_id": str(key.lead_id),
        "campaign_id": str(key.campaign_id) if key.campaign_id else None,
        "step": key.step,
        "trigger_event_id": str(trigger_event_id) if trigger_event_id else None,
    }


async def decide_and_act(conn: asyncpg.Connection, keys: Sequence[DecisionKey],
                         trigger_events: Sequence[UUID | None] | None = None) -> ReactionStats:
    """Run the SQL decision for each key and act on it. Must run inside a transaction."""
    stats = ReactionStats()
    if not keys:
        return stats
    triggers = list(trigger_events) if trigger_events is not None else [None] * len(keys)
    rows = await conn.fetch(Q.decide_for_keys, [k.lead_id for k in keys], [k.campaign_id for k in keys],
                            [k.step for k in keys], None)
    by_key = {(r["lead_id"], r["campaign_id"], r["step"]): decision_from_row(r) for r in rows}
    events: list[dict[str, Any]] = []
    follow_ups: list[tuple[UUID, str]] = []
    cooldowns: list[tuple[UUID, UUID | None, int, UUID, datetime]] = []
    cadence_events: list[dict[str, Any]] = []
    seen: set[UUID] = set()
    for key, trigger in zip(keys, triggers, strict=True):
        decided = by_key.get((key.lead_id, key.campaign_id, key.step))
        if decided is None or decided.latest_touch_id != key.latest_touch_id or key.latest_touch_id in seen:
            stats.superseded += 1  # a newer touch exists: its own outcome will decide
            continue
        seen.add(key.latest_touch_id)
        kind = decided.decision
        stats.decisions[kind] = stats.decisions.get(kind, 0) + 1
        events.append(decision_event(decided, key, trigger))
        if kind in ("retry_same_channel", "switch_channel") and decided.next_channel is not None:
            follow_ups.append((key.latest_touch_id, decided.next_channel))
        elif kind == "wait_cooldown" and decided.cooldown_until is not None:
            cooldowns.append((key.lead_id, key.campaign_id, key.step, key.latest_touch_id, decided.cooldown_until))
        elif kind == "stop" and key.campaign_id is not None:
            await _end_step(conn, key, decided.stop_reason or "", stats, cadence_events)
    if events:
        await conn.execute(Q.insert_decision_events, events)
    if follow_ups:
        created = await conn.fetch(Q.insert_follow_up_touches, [f[0] for f in follow_ups], [f[1] for f in follow_ups])
        stats.touches_created += len(created)
    if cooldowns:
        await conn.execute(Q.upsert_pending_cooldowns, *[list(column) for column in zip(*cooldowns, strict=True)])
    if cadence_events:
        await conn.execute(Q.insert_cadence_events, cadence_events)
    return stats


async def _end_step(conn: asyncpg.Connection, key: DecisionKey, stop_reason: str, stats: ReactionStats,
                    cadence_events: list[dict[str, Any]]) -> None:
    if stop_reason in ADVANCING_STOPS:
        advanced = await conn.fetchrow(Q.advance_campaign_lead, key.lead_id, key.campaign_id, key.step)
        if advanced is None:
            return
        if advanced["next_step"] is None:
            stats.cadences_completed += 1
            cadence_events.append({"event_type": "cadence_completed", "lead_id": str(key.lead_id),
                                   "campaign_id": str(key.campaign_id), "step": key.step,
                                   "campaign_lead_id": str(advanced["id"])})
        else:
            stats.steps_advanced += 1
            created = await conn.fetchval(Q.insert_step_touch, key.campaign_id, key.lead_id, advanced["next_step"],
                                          await conn.fetchval("select now()"))
            stats.touches_created += 1 if created else 0
        return
    reason = stop_reason or "stop"
    for stopped in await conn.fetch(Q.stop_campaign_leads, key.lead_id, [key.campaign_id], reason, None):
        stats.cadences_stopped += 1
        cadence_events.append({"event_type": "cadence_stopped", "lead_id": str(key.lead_id),
                               "campaign_id": str(stopped["campaign_id"]), "step": stopped["current_step"],
                               "campaign_lead_id": str(stopped["id"]), "reason": reason})


async def react_to_stop_event(conn: asyncpg.Connection, event_id: UUID, lead_id: UUID, event_type: str,
                              event_at: datetime) -> ReactionStats:
    """Cancel the lead's open touches this event stops and stop its campaign leads (SPEC §8). Suppression stops
    everything; another stop event only what had begun before it (it may be handled late, after downtime)."""
    stats = ReactionStats()
    suppression = event_type in SUPPRESSION_EVENTS
    reason = f"suppressed:{event_type}" if suppression else f"stop_event:{event_type}"
    canceled = await conn.fetch(Q.cancel_open_touches, lead_id, event_type, reason, suppression, event_id, event_at)
    stats.touches_canceled += len(canceled)
    if suppression or event_type in DEFAULT_STOP_EVENTS:
        campaigns: list[UUID] | None = None  # all of the lead's campaign leads
    else:
        campaigns = sorted({r["campaign_id"] for r in canceled if r["campaign_id"] is not None})
        if not campaigns:
            return stats
    cadence_events = []
    enrolled_before = None if suppression else event_at
    for stopped in await conn.fetch(Q.stop_campaign_leads, lead_id, campaigns, event_type, enrolled_before):
        stats.cadences_stopped += 1
        cadence_events.append({"event_type": "cadence_stopped", "lead_id": str(lead_id),
                               "campaign_id": str(stopped["campaign_id"]), "step": stopped["current_step"],
                               "campaign_lead_id": str(stopped["id"]), "reason": event_type,
                               "event_id": str(event_id)})
    if cadence_events:
        await conn.execute(Q.insert_cadence_events, cadence_events)
    return stats


async def react_to_events(conn: asyncpg.Connection, events: Iterable[ReactionEvent]) -> ReactionStats:
    """React to a batch of events, in order. In a transaction."""
    stats = ReactionStats()
    with_touch: list[tuple[ReactionEvent, UUID]] = []
    for event in events:
        stats.events += 1
        if event.event_type in TOUCH_OUTCOMES or event.event_type in UNDELIVERY_EVENTS:
            # a permanent undelivery exhausts the channel: decide again; a transient one changes nothing
            if event.event_type in UNDELIVERY_EVENTS and event.failure_class != "permanent":
                continue
            if event.touch_run_id is None:
                log.warning("event %s has no valid payload.touch_run_id; no decision", event.id)
            else:
                with_touch.append((event, event.touch_run_id))
        else:
            if event.event_type == OUT_OF_OFFICE_EVENT:  # SPEC §19: a pause, not a stop
                stats.touches_deferred += len(await conn.fetch(Q.defer_for_out_of_office, event.lead_id, event.id))
            elif event.ends_pause:
                stats.touches_resumed += len(await conn.fetch(Q.resume_after_reply, event.lead_id, event.id))
            stats.add(await react_to_stop_event(conn, event.id, event.lead_id, event.event_type, event.created_at))
    if with_touch:
        keys_by_touch = {key.touch_run_id: key for key in map(
            TouchKey.from_record, await conn.fetch(Q.touch_keys, [touch_id for _, touch_id in with_touch]))}
        keys, triggers = [], []
        for event, touch_id in with_touch:
            key = keys_by_touch.get(touch_id)
            if key is None or not key.is_latest or key.has_open:
                stats.superseded += 1
                continue
            keys.append(DecisionKey(key.lead_id, key.campaign_id, key.step, touch_id))
            triggers.append(event.id)
        stats.add(await decide_and_act(conn, keys, triggers))
    return stats


async def _drain(pool: asyncpg.Pool, take_query: str, batch: int, parse: Callable[[asyncpg.Record], Row],
                 act: Callable[[asyncpg.Connection, list[Row]], Awaitable[ReactionStats]],
                 set_aside: Callable[[asyncpg.Connection, Row, BaseException], Awaitable[None]],
                 ) -> ReactionStats:
    """Take rows with `take_query` and act on them in the same transaction, batch after batch, until none are left.

    Isolation by construction: the batch runs in a savepoint; when it raises, each row runs again alone in its
    own savepoint, and a row that still raises is handed to ``set_aside`` (which keeps it with its error), so the
    others commit and one bad row never stalls the rest. A row lock held elsewhere is waited for only briefly
    (ROW_LOCK_WAIT_MS), so it costs its batch a fraction of a second, not the session's lock_timeout. Only losing
    the connection ends the drain."""
    total = ReactionStats()
    while True:
        async with pool.acquire() as conn, conn.transaction():
            await wait_briefly_for_row_locks(conn)
            rows = [parse(r) for r in await conn.fetch(take_query, batch)]
            if not rows:
                return total
            try:
                async with conn.transaction():
                    total.add(await act(conn, rows))
                continue
            except CONNECTION_ERRORS:
                raise
            except Exception as exc:
                if len(rows) == 1:
                    await set_aside(conn, rows[0], exc)
                    continue
            for row in rows:
                try:
                    async with conn.transaction():
                        total.add(await act(conn, [row]))
                except CONNECTION_ERRORS:
                    raise
                except Exception as exc:
                    await set_aside(conn, row, exc)


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
        return await react_to_events(conn, sorted(events, key=lambda e: e.created_at))

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

    return await _drain(pool, Q.take_due_cooldowns, batch, DecisionKey.from_record, decide_and_act,
                        _set_aside_cooldown)
