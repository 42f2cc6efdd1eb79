"""`revenue-asi replay`: walk core_memory_events in order and re-run the daemon's reactions as of now (SPEC §10).

Typical use: after downtime, after a bug fix in a decision rule, or `--dry-run` to audit. For each event the
daemon reacts to (touch_sent / touch_failed → the fallback decision; stop events → cancellations) it calls the
daemon's own code, :func:`listener.engine.reactions.react_to_events`, inside a savepoint:

* an event still waiting in the daemon's inbox (``event_reactions``) is taken and reacted to exactly as the
  daemon would have (decision event included);
* an event already reacted to is re-run, and its savepoint kept only if it changed something (a touch created
  or canceled, a cadence advanced, completed or stopped, a cooldown timer that was missing); otherwise it is
  rolled back and the event counts as unchanged — no duplicate decision events. Follow-ups carry the
  idempotency keys ``next:<touch>`` / ``step:<campaign>:<lead>:<step>``, so a second replay creates nothing.
* a stop event older than touches or enrolments that are open now is stale (the daemon never saw them) and is
  not replayed, except suppression (unsubscribe / do_not_contact ever, reply_negative within 30 days).

A dry run is the same code in one transaction that is rolled back at the end, so it reports exactly what a real
run would do (later events see what earlier ones would have created).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from listener.engine.appointments import replay_reminders
from listener.engine.reactions import ReactionEvent, ReactionStats, react_to_events
from listener.rules.decision import ATTEMPT_EVENTS, UNDELIVERY_EVENTS
from listener.settings import Settings, get_settings
from listener.store.queries import Q

PAGE = 200
BATCH = 50  # events per committed transaction (a dry run uses one transaction for everything)
MAX_LISTED = 200
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|m|min|mins|h|hr|hrs|d|day|days|w|wk|wks)\s*$", re.I)
_UNITS = {"s": 1, "sec": 1, "secs": 1, "m": 60, "min": 60, "mins": 60, "h": 3600, "hr": 3600, "hrs": 3600,
          "d": 86400, "day": 86400, "days": 86400, "w": 604800, "wk": 604800, "wks": 604800}


class TimeFormatError(ValueError):
    pass


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 timestamp (no offset = UTC), ``now``, or a duration ago: ``90s``, ``15m``, ``2h``, ``3d``,
    ``1w`` (also ``2h ago``)."""
    now = now or datetime.now(UTC)
    value = text.strip()
    if value.lower() == "now":
        return now
    relative = _RELATIVE.match(re.sub(r"\s+ago$", "", value, flags=re.I))
    if relative:
        return now - timedelta(seconds=float(relative.group(1)) * _UNITS[relative.group(2).lower()])
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise TimeFormatError(f"not a time: {text!r} (use an ISO timestamp like 2026-03-01T12:00:00Z, "
                              "or a duration ago like 30m, 2h, 3d)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass
class ReplaySummary:
    since: datetime
    until: datetime
    lead_id: UUID | None
    dry_run: bool
    events_total: int = 0
    events_read: int = 0
    by_event_type: dict[str, int] = field(default_factory=dict)
    acted: int = 0  # events whose reaction changed something
    unchanged: int = 0  # re-run, nothing was missing (or superseded by a newer touch)
    pending_taken: int = 0  # events the daemon had not reacted to yet
    stale_stop_events: int = 0
    cooldowns_scheduled: int = 0
    reactions: ReactionStats = field(default_factory=ReactionStats)
    created: list[dict[str, Any]] = field(default_factory=list)
    canceled: list[dict[str, Any]] = field(default_factory=list)
    reminders_created: list[dict[str, Any]] = field(default_factory=list)  # SPEC §15: missing appointment reminders

    def as_dict(self) -> dict[str, Any]:
        r = self.reactions
        return {
            "since": self.since.isoformat(), "until": self.until.isoformat(),
            "lead_id": str(self.lead_id) if self.lead_id else None, "dry_run": self.dry_run,
            "events_read": self.events_read, "by_event_type": dict(sorted(self.by_event_type.items())),
            "acted": self.acted, "unchanged": self.unchanged, "superseded": r.superseded,
            "pending_taken": self.pending_taken, "stale_stop_events": self.stale_stop_events,
            "touches_created": len(self.created), "touches_canceled": len(self.canceled),
            "cadences_completed": r.cadences_completed, "cadences_stopped": r.cadences_stopped,
            "steps_advanced": r.steps_advanced, "cooldowns_scheduled": self.cooldowns_scheduled,
            "decisions": dict(sorted(r.decisions.items())),
            "created": self.created[:MAX_LISTED], "canceled": self.canceled[:MAX_LISTED],
            "reminders_created": self.reminders_created[:MAX_LISTED],
        }


class _Rollback(Exception):
    pass


def _touch(row: asyncpg.Record, event: asyncpg.Record) -> dict[str, Any]:
    return {"touch_run_id": str(row["id"]), "lead_id": str(event["lead_id"]),
            "campaign_id": str(row["campaign_id"]) if row["campaign_id"] else None, "step": row["step"],
            "channel": row["channel"], "status": row["status"], "idempotency_key": row["idempotency_key"],
            "because_of": f"{event['event_type']} {event['id']}"}


def _changed(stats: ReactionStats) -> bool:
    return bool(stats.touches_created or stats.touches_canceled or stats.cadences_completed
                or stats.cadences_stopped or stats.steps_advanced or stats.touches_deferred or stats.touches_resumed)


async def replay_event(conn: asyncpg.Connection, event: asyncpg.Record, summary: ReplaySummary) -> None:
    """Re-run the daemon's reaction to one event, in the caller's transaction."""
    summary.events_read += 1
    summary.by_event_type[event["event_type"]] = summary.by_event_type.get(event["event_type"], 0) + 1
    pending = await conn.fetchval(Q.replay_take_pending, event["id"]) is not None
    summary.pending_taken += pending
    is_outcome = event["event_type"] in ATTEMPT_EVENTS or event["event_type"] in UNDELIVERY_EVENTS
    if not is_outcome and await conn.fetchval(Q.replay_stop_event_is_stale, event["lead_id"], event["created_at"],
                                              event["event_type"]):
        summary.stale_stop_events += 1
        summary.unchanged += 1
        return
    reaction = ReactionEvent.from_event(event)
    touch_id = reaction.touch_run_id if is_outcome else None
    had_cooldown = bool(touch_id and await conn.fetchval(Q.replay_has_pending_cooldown, touch_id))
    before = {r["id"]: r["status"] for r in await conn.fetch(Q.replay_lead_touches, event["lead_id"])}
    stats = ReactionStats()
    kept = False
    try:
        async with conn.transaction():  # a savepoint
            stats = await react_to_events(conn, [reaction.id])
            new_cooldown = bool(stats.decisions.get("wait_cooldown")) and not had_cooldown
            kept = pending or _changed(stats) or new_cooldown
            if not kept:
                raise _Rollback
    except _Rollback:
        pass
    summary.reactions.add(stats)
    if not kept:
        summary.unchanged += 1
        return
    new_cooldown = bool(stats.decisions.get("wait_cooldown")) and not had_cooldown
    summary.cooldowns_scheduled += new_cooldown
    after = await conn.fetch(Q.replay_lead_touches, event["lead_id"])
    created = [r for r in after if r["id"] not in before]
    canceled = [r for r in after if r["status"] == "canceled" and before.get(r["id"]) not in (None, "canceled")]
    summary.created.extend(_touch(r, event) for r in sorted(created, key=lambda r: (r["scheduled_at"], r["id"])))
    summary.canceled.extend(_touch(r, event) for r in canceled)
    if created or canceled or _changed(stats) or new_cooldown:
        summary.acted += 1
    else:
        summary.unchanged += 1


async def replay(pool: asyncpg.Pool, since: datetime, until: datetime | None = None, lead_id: UUID | None = None,
                 *, dry_run: bool = False, on_total: Callable[[int], None] | None = None,
                 on_progress: Callable[[int], None] | None = None, settings: Settings | None = None) -> ReplaySummary:
    """Replay the actionable events with since <= created_at < until (until defaults to now: events written
    while replaying are not walked)."""
    async with pool.acquire() as conn:
        now: datetime = await conn.fetchval(Q.replay_now)
        until = min(until, now) if until is not None else now
        summary = ReplaySummary(since, until, lead_id, dry_run)
        summary.events_total = await conn.fetchval(Q.replay_count, since, until, lead_id)
        if on_total:
            on_total(summary.events_total)
        cursor: tuple[datetime | None, UUID | None] = (None, None)
        if dry_run:
            try:
                async with conn.transaction():
                    await _walk(conn, summary, cursor, on_progress, commit_every=None)
                    summary.reminders_created = await replay_reminders(conn, settings or get_settings(), since,
                                                                       until, lead_id)
                    raise _Rollback
            except _Rollback:
                pass
        else:
            await _walk(conn, summary, cursor, on_progress, commit_every=BATCH)
            async with conn.transaction():
                summary.reminders_created = await replay_reminders(conn, settings or get_settings(), since, until,
                                                                   lead_id)
    return summary


async def _walk(conn: asyncpg.Connection, summary: ReplaySummary, cursor: tuple[datetime | None, UUID | None],
                on_progress: Callable[[int], None] | None, commit_every: int | None) -> None:
    while True:
        page = await conn.fetch(Q.replay_events, summary.since, summary.until, summary.lead_id, cursor[0], cursor[1],
                                PAGE)
        if not page:
            return
        chunks = [page] if commit_every is None else [page[i:i + commit_every]
                                                       for i in range(0, len(page), commit_every)]
        for chunk in chunks:
            async with conn.transaction():
                for event in chunk:
                    await replay_event(conn, event, summary)
            if on_progress:
                on_progress(len(chunk))
        cursor = (page[-1]["created_at"], page[-1]["id"])
        if len(page) < PAGE:
            return

