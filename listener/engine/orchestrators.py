"""The orchestrators (SPEC §9), once crons, now jobs of the daemon and of `revenue-asi tick`.

* touch orchestrator (was touch-orchestrator-v9, every 5 min): active campaign leads of active campaigns × their
  current step → the step's first touch (reactions.sql `insert_step_touch`, idempotency key
  ``step:<campaign>:<lead>:<step>``), ``queued`` if due else ``scheduled``. Suppressed leads and unusable steps
  are skipped with an ``orchestrator_skipped`` evaluation event. It never sends.
* reactivation orchestrator (was reactivation-orchestrator-v1, every 30 min): ``lead_next_action_view_v5`` rows
  with ``recommended_action = 'reactivate'`` → one reactivation touch per lead per 45-day window, with
  ``meta.source = "brain_full_auto_reactivation"`` and a ``reactivation_created`` event.

Each run is one transaction that first takes ``pg_try_advisory_xact_lock`` on the job's name: a second run
anywhere at the same time returns ``{"skipped": "another run holds the lock"}``. A dry run is the same code in
a transaction that is rolled back, so it reports exactly what a real run would create. Each lead's touch is
written in its own savepoint with a short lock wait (listener/engine/isolate.py): a lead whose row another session
holds (its ``leads`` row, which the touch's foreign key must share, or a touch of the same key not yet committed)
is left for the next run (``set_aside`` in the result) while every other lead's touch is created (SPEC §20).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from listener.engine.isolate import is_busy, one_by_one
from listener.engine.reactions import describe_error
from listener.rules.vocabulary import CHANNELS, INBOUND_STOP_TYPES
from listener.settings import Settings
from listener.store.database import ROW_BUSY_ERRORS
from listener.store.queries import Q

TOUCH_ORCHESTRATOR = "touch-orchestrator"
REACTIVATION = "reactivation"
LOCK_HELD = {"skipped": "another run holds the lock"}
REACTIVATION_WINDOW_DAYS = 45
REACTIVATION_SOURCE = "brain_full_auto_reactivation"
REACTIVATION_STOP_EVENTS = list(INBOUND_STOP_TYPES)
REACTIVATION_EXPIRES_DAYS = 7
MAX_LISTED = 100  # items listed in a run's result (counts are always complete)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
log = logging.getLogger(__name__)


class _Rollback(Exception):
    """Raised inside a dry run's transaction to roll it back."""


def _touch_item(row: asyncpg.Record) -> dict[str, Any]:
    return {"touch_run_id": str(row["id"]), "lead_id": str(row["lead_id"]),
            "campaign_id": str(row["campaign_id"]) if row["campaign_id"] else None, "step": row["step"],
            "channel": row["channel"], "status": row["status"], "scheduled_at": row["scheduled_at"].isoformat()}


async def _in_locked_transaction(pool: asyncpg.Pool, job: str, dry_run: bool, body: Any) -> dict[str, Any]:
    """Run ``body(conn)`` in one transaction holding the job's advisory lock; roll back for a dry run."""
    result: dict[str, Any] = {}
    async with pool.acquire() as conn:
        try:
            async with conn.transaction():
                if not await conn.fetchval(Q.job_try_lock, job):
                    result = dict(LOCK_HELD)
                else:
                    result = await body(conn)
                    if dry_run:
                        raise _Rollback
        except _Rollback:
            pass
    result["dry_run"] = dry_run
    return result


# --- touch orchestrator -----------------------------------------------------------------------------------


async def orchestrate_touches(conn: asyncpg.Connection, limit: int | None) -> dict[str, Any]:
    """The touch orchestrator's work, in the caller's transaction."""
    candidates = await conn.fetch(Q.orchestrator_candidates, limit)
    created_ids: list[Any] = []
    skipped: list[dict[str, Any]] = []
    errors: list[str] = []
    failed_rows = 0
    existed = 0
    ready: list[asyncpg.Record] = []
    for c in candidates:
        if c["skip_reason"] is None:
            ready.append(c)
            continue
        skipped.append(_skip(c, c["skip_reason"]))
        if c["skip_reason"] in ROW_ERRORS:
            errors.append(_row_error(c, ROW_ERRORS[c["skip_reason"]]))

    async def create(c: asyncpg.Record) -> None:
        nonlocal existed
        touch_id = await conn.fetchval(Q.insert_step_touch, c["campaign_id"], c["lead_id"], c["step"], c["base_at"])
        if touch_id is None:
            existed += 1  # created meanwhile by the cadence (idempotency key step:<campaign>:<lead>:<step>)
        else:
            created_ids.append(touch_id)

    # Each in its own savepoint: one bad campaign step skips its campaign lead, never the run (SPEC §11), and a lead
    # whose row another session holds waits for the next run (SPEC §20). Neither writes an orchestrator_skipped
    # event: the row is tried again next run (a bad one is reported in job_runs each time).
    busy: list[asyncpg.Record] = []
    for c, exc in await one_by_one(conn, ready, create, catch=(*ROW_BUSY_ERRORS, *ROW_FAULTS)):
        if is_busy(exc):
            busy.append(c)
        else:
            errors.append(_row_error(c, describe_error(exc)))
            failed_rows += 1
    if skipped:
        await conn.execute(Q.insert_orchestrator_skipped_events, skipped)
    created = await conn.fetch(Q.orchestrator_created_touches, created_ids) if created_ids else []
    skipped_by_reason: dict[str, int] = {}
    for s in skipped:
        skipped_by_reason[s["reason"]] = skipped_by_reason.get(s["reason"], 0) + 1
    result = {
        **_created_summary(len(candidates), created, existed),
        "skipped": len(skipped) + failed_rows,
        "skipped_by_reason": skipped_by_reason,
        "touches": [_touch_item(r) for r in created[:MAX_LISTED]],
        "skips": [{k: v for k, v in s.items() if k != "channel"} for s in skipped[:MAX_LISTED]],
    }
    _report_set_aside(result, TOUCH_ORCHESTRATOR, busy)
    if errors:  # the run went on; job_runs.error names the rows it had to skip
        result["errors"] = errors[:MAX_LISTED]
        result["error"] = f"{len(errors)} row(s) skipped: " + "; ".join(errors[:5]) + ("; …" if len(errors) > 5 else "")
    return result


# skip reasons that are a fault in the data (reported in job_runs.error), not a state of the lead
ROW_ERRORS = {"invalid_delay": "delay_minutes is outside 0..525600 (SPEC §11)"}
# what the database says of a row it refuses (a fault in that row's data)
ROW_FAULTS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


def _report_set_aside(result: dict[str, Any], job: str, busy: Sequence[asyncpg.Record]) -> None:
    """Leads whose rows another session holds (SPEC §20): left for the next run, which finds them again."""
    if not busy:
        return
    result["set_aside"] = len(busy)
    result["set_aside_leads"] = [str(c["lead_id"]) for c in busy[:MAX_LISTED]]
    log.info("%s: %d lead(s) locked by another session, left for the next run", job, len(busy))


def _skip(c: asyncpg.Record, reason: str) -> dict[str, Any]:
    return {"lead_id": str(c["lead_id"]), "channel": c["primary_channel"]
            if c["primary_channel"] in CHANNELS else None,
            "campaign_id": str(c["campaign_id"]), "step": c["step"],
            "campaign_lead_id": str(c["campaign_lead_id"]), "reason": reason,
            "suppression_reason": c["suppression_reason"]}


def _row_error(c: asyncpg.Record, why: str) -> str:
    delay = c["delay_minutes"]
    shown = delay if delay is None or len(delay) <= 24 else delay[:12] + "…" + f"({len(delay)} digits)"
    return (f"campaign_steps {c['campaign_step_id']} (campaign {c['campaign_id']} step {c['step']}, "
            f"delay_minutes {shown}): {why}; campaign lead {c['campaign_lead_id']} skipped")


async def touch_orchestrator_job(pool: asyncpg.Pool, settings: Settings, dry_run: bool,
                                 limit: int | None) -> dict[str, Any]:
    return await _in_locked_transaction(pool, TOUCH_ORCHESTRATOR, dry_run,
                                        lambda conn: orchestrate_touches(conn, limit))


# --- reactivation orchestrator ----------------------------------------------------------------------------


def window_start(now: datetime, days: int = REACTIVATION_WINDOW_DAYS) -> datetime:
    """The start of the fixed ``days``-long window (counted from 1970-01-01 UTC) that ``now`` falls in."""
    elapsed = (now.astimezone(UTC) - _EPOCH).days
    return _EPOCH + timedelta(days=elapsed - elapsed % days)


def reachable_channels(has_phone: bool, has_email: bool) -> list[str]:
    return [c for c in CHANNELS if (has_email if c == "email" else has_phone)]


def reactivation_payload(row: asyncpg.Record | dict[str, Any], now: datetime, window: datetime) -> dict[str, Any]:
    """Payload v2 of a reactivation touch: the recommended channel first, then the other reachable message
    channels (voice only when the brain recommends it), one attempt each."""
    channel = row["recommended_channel"]
    reachable = reachable_channels(row["has_phone"], row["has_email"])
    order = [channel] + [c for c in ("whatsapp", "sms", "email") if c in reachable and c != channel]
    first_name = row["first_name"]
    greeting = "Hola {first_name}" if first_name else "Hola"
    variables: dict[str, Any] = {}
    if first_name:
        variables["first_name"] = first_name
    if row["company_name"]:
        variables["company_name"] = row["company_name"]
    return {
        "message_class": "reactivation",
        "campaign_id": None,
        "step": row["next_step"],
        "routing": {
            "primary_channel": channel,
            "current_channel": channel,
            "fallback": {"order": order, "max_attempts": {c: 1 for c in order},
                         "cooldown_minutes": {c: 0 for c in order}},
            "stop_on_events": REACTIVATION_STOP_EVENTS,
            "expires_at": (now + timedelta(days=REACTIVATION_EXPIRES_DAYS)).astimezone(UTC)
                          .strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "delivery": {
            "template_key": "reactivation_v1",
            "language": "es",
            "body": f"{greeting}, hace tiempo que no hablamos. ¿Te viene bien retomar la conversación esta semana?",
            "variables": variables,
            "channel_overrides": {"email": {"subject": "¿Retomamos la conversación?"}},
        },
        "provider": {"forced_provider": None, "forced_sender_id": None},
        "meta": {"dry_run": False, "source": REACTIVATION_SOURCE, "created_by": "reactivation_orchestrator",
                 "window_start": window.date().isoformat(), "priority_score": row["priority_score"]},
    }


async def orchestrate_reactivations(conn: asyncpg.Connection, limit: int | None) -> dict[str, Any]:
    """The reactivation orchestrator's work, in the caller's transaction."""
    now: datetime = await conn.fetchval("select now()")
    window = window_start(now)
    candidates = await conn.fetch(Q.reactivation_candidates, limit, REACTIVATION_WINDOW_DAYS)
    created: list[asyncpg.Record] = []
    existed = 0

    async def create(c: asyncpg.Record) -> None:
        nonlocal existed
        payload = reactivation_payload(c, now, window)
        key = f"reactivation:{c['lead_id']}:{window.date().isoformat()}"
        extra = {"window_start": window.date().isoformat(), "priority_score": c["priority_score"],
                 "recommended_delay_minutes": c["recommended_delay_minutes"],
                 "fallback_order": payload["routing"]["fallback"]["order"]}
        row = await conn.fetchrow(Q.insert_reactivation_touch, c["account_id"], c["lead_id"], c["next_step"],
                                  c["recommended_channel"], float(c["recommended_delay_minutes"] or 0),
                                  payload, key, extra)
        if row is None:
            existed += 1
        else:
            created.append(row)

    # a lead whose row another session holds waits for the next run (SPEC §20); the others are created now
    busy = [c for c, _ in await one_by_one(conn, candidates, create)]
    result = {
        **_created_summary(len(candidates), created, existed),
        "window_start": window.date().isoformat(),
        "touches": [_touch_item({**dict(r), "campaign_id": None}) for r in created[:MAX_LISTED]],
    }
    _report_set_aside(result, REACTIVATION, busy)
    return result


async def reactivation_job(pool: asyncpg.Pool, settings: Settings, dry_run: bool,
                           limit: int | None) -> dict[str, Any]:
    return await _in_locked_transaction(pool, REACTIVATION, dry_run,
                                        lambda conn: orchestrate_reactivations(conn, limit))


def _created_summary(candidates: int, created: Sequence[Any], existed: int) -> dict[str, Any]:
    """The counts both orchestrators report: candidates, touches created (queued / scheduled, by channel)."""
    by_channel: dict[str, int] = {}
    for row in created:
        by_channel[row["channel"]] = by_channel.get(row["channel"], 0) + 1
    return {
        "candidates": candidates,
        "created": len(created),
        "queued": sum(1 for r in created if r["status"] == "queued"),
        "scheduled": sum(1 for r in created if r["status"] == "scheduled"),
        "created_by_channel": by_channel,
        "already_existed": existed,
    }
