"""SPEC §20 beyond the reactions (tests/test_row_locks.py): a row locked by another session delays only the work on
that row in the touch orchestrator, the sweep, the appointments and the enrichment engine too. Each test holds one
lead's row with SELECT … FOR UPDATE in an operator's open transaction, makes work due for that lead and another,
sees the other lead's work done while the lock is held, then ends the lock and sees the locked lead's work done,
once.

The daemon runs with a session lock_timeout of 60 s, so that waiting for the lock (the old behaviour) would
visibly stall the other lead: the short per-row wait (listener.store.database.ROW_LOCK_WAIT_MS, through
listener/engine/isolate.py) is what lets it through. No time is asserted; the other lead's delay is printed in the
"measured" section."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg

from listener.engine.isolate import MAX_BUSY, is_busy, one_by_one
from listener.engine.jobs import periodic_jobs
from listener.store.database import connect
from listener.store.queries import Q
from tests import factories
from tests.harness import daemon_settings, running_daemon, wait_until
from tests.test_orchestrators import campaign, enroll, step_payload

LONG_LOCK_TIMEOUT_MS = 60_000


class Operator:
    """An operator's open transaction holding rows (each lock: a SELECT … FOR UPDATE and its arguments) until
    `release` (a rollback) or the end of the block."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.transaction = conn.transaction()

    async def release(self) -> None:
        if not self.conn.is_closed() and self.conn.is_in_transaction():
            await self.transaction.rollback()


@contextlib.asynccontextmanager
async def operator_holding(db_url: str, *locks: tuple[Any, ...]) -> AsyncIterator[Operator]:
    operator = Operator(await connect(db_url))
    try:
        await operator.transaction.start()
        for query, *args in locks:
            assert await operator.conn.fetch(query, *args), f"nothing to lock: {query} {args}"
        yield operator
        await operator.release()
    finally:
        await operator.conn.close()


def settings(**overrides: Any) -> Any:
    return daemon_settings(None, lock_timeout_ms=LONG_LOCK_TIMEOUT_MS, sweep_interval_s=0.2, **overrides)


def measured(service: str, since: float) -> str:
    return f"{service}: another lead's work done {(time.monotonic() - since) * 1000:.0f} ms after it was due, " \
           "while one lead's row was locked"


# --- touch orchestrator -----------------------------------------------------------------------------------

STEP_TOUCHES = "select count(*) from touch_runs where lead_id = $1 and idempotency_key like 'step:%'"


async def test_a_locked_lead_delays_only_its_own_orchestrated_touch(db, db_url, record_property):
    account_id = await factories.account(db)
    # a later step time: the touches are created scheduled, nothing is sent meanwhile
    campaign_id = await campaign(db, account_id, status="paused", steps=[(60, step_payload("sms"))])
    locked_lead = await factories.lead(db, account_id, full_name="Locked Lead", phone="+14155550101")
    other_lead = await factories.lead(db, account_id, full_name="Other Lead", phone="+14155550102")
    for lead_id in (locked_lead, other_lead):
        await enroll(db, campaign_id, lead_id)
    cfg = settings(orchestrator_interval_s=0.2, reactivation_interval_s=3600)
    async with running_daemon(db_url, cfg, periodic_jobs=periodic_jobs(cfg)):
        await wait_until(db_url, "select count(*) = 0 from lead_enrichment_inbox")
        # the operator holds the lead (the touch's foreign key must share it) and its campaign lead
        async with operator_holding(db_url, ("select id from leads where id = $1 for update", locked_lead),
                                    ("select id from campaign_leads where lead_id = $1 for update", locked_lead)):
            await db.execute("update campaigns set status = 'active' where id = $1", campaign_id)
            due = time.monotonic()
            await wait_until(db_url, f"select ({STEP_TOUCHES}) = 1", other_lead)
            record_property("measured", measured("touch orchestrator", due))
            assert await db.fetchval(STEP_TOUCHES, locked_lead) == 0
            # set aside, not given up: later runs try it again while the lock is held
            await wait_until(db_url, "select count(*) >= 2 from job_runs where job = 'touch-orchestrator'"
                                     " and stats -> 'set_aside_leads' ? $1::text", str(locked_lead))
        await wait_until(db_url, f"select ({STEP_TOUCHES}) = 1", locked_lead)
    for lead_id in (locked_lead, other_lead):
        assert await db.fetchval(STEP_TOUCHES, lead_id) == 1
        assert await db.fetchval("select status from touch_runs where lead_id = $1", lead_id) == "scheduled"
    assert await db.fetchval("select count(*) from job_runs where job = 'touch-orchestrator' and error is not null") == 0


# --- sweep ------------------------------------------------------------------------------------------------


async def test_a_locked_touch_delays_only_its_own_expired_lease_and_locked_counts_only_the_fold(
        db, db_url, record_property):
    account_id = await factories.account(db)
    locked_lead = await factories.lead(db, account_id, full_name="Locked Lead", phone="+14155550101")
    other_lead = await factories.lead(db, account_id, full_name="Other Lead", phone="+14155550102")
    touches = {}
    for lead_id in (locked_lead, other_lead):
        touches[lead_id] = await factories.touch(db, account_id, lead_id)
    # both daemons that held these touches died mid-send: their leases have run out
    await db.execute("update touch_runs set status = 'processing', locked_by = 'dead-daemon',"
                     " locked_until = now() - interval '1 second'")
    # a folded count, and one delta waiting to be folded
    campaign_id = await campaign(db, account_id)
    await enroll(db, campaign_id, locked_lead)
    await db.execute(Q.fold_campaign_lead_counts)
    await enroll(db, campaign_id, other_lead)
    assert await db.fetchval("select count(*) from campaign_lead_count_deltas") == 1
    failed = "select count(*) = 1 from touch_runs where id = $1 and status = 'failed'"
    # the operator holds one lead's touch, and (like a migration re-seeding them) the folded counts
    async with operator_holding(db_url, ("select id from touch_runs where id = $1 for update", touches[locked_lead]),
                                ("select status from campaign_lead_counts for update",)) as operator, \
            running_daemon(db_url, settings()):
        due = time.monotonic()
        await wait_until(db_url, failed, touches[other_lead])
        record_property("measured", measured("sweep", due))
        # the sweep run finished (its job_runs row) instead of waiting for the counts: the fold is left for later
        run = await wait_until(db_url, "select stats from job_runs where job = 'sweep'"
                                       " and (stats->>'leases_expired')::int = 1")
        assert run["counts_folded"] is False
        assert await db.fetchval("select status from touch_runs where id = $1", touches[locked_lead]) == "processing"
        assert await db.fetchval("select count(*) from campaign_lead_count_deltas") == 1  # not folded, still counted
        assert dict(await db.fetchval("select campaign_leads from (" + Q.status_cadences + ") s")) == {"active": 2}
        await operator.release()
        await wait_until(db_url, failed, touches[locked_lead])
        await wait_until(db_url, "select count(*) = 0 from campaign_lead_count_deltas")
    for touch_id in touches.values():
        assert await db.fetchval("select count(*) from core_memory_events where event_type = 'touch_failed'"
                                 " and payload->>'touch_run_id' = $1::uuid::text", touch_id) == 1
        assert (await db.fetchval("select error from touch_runs where id = $1", touch_id)).startswith("outcome_unknown")
    assert await db.fetchval("select n from campaign_lead_counts where status = 'active'") == 2


# --- appointments -----------------------------------------------------------------------------------------

REMINDERS = ("select * from touch_runs where payload->'meta'->>'appointment_id' = $1::uuid::text"
             " order by scheduled_at, created_at")


async def _rescheduled(db, lead_id: uuid.UUID) -> int:
    return int(await db.fetchval("select count(*) from core_memory_events where lead_id = $1"
                                 " and event_type = 'appointment_rescheduled'", lead_id))


async def test_a_locked_reminder_delays_only_its_own_appointments_reschedule(db, db_url, record_property):
    account_id = await factories.account(db)
    locked_lead = await factories.lead(db, account_id, full_name="Locked Lead", phone="+14155550101")
    other_lead = await factories.lead(db, account_id, full_name="Other Lead", phone="+14155550102")
    appointments = {}
    for lead_id in (locked_lead, other_lead):
        appointments[lead_id] = await db.fetchval(
            "insert into appointments (account_id, lead_id, starts_at, location)"
            " values ($1, $2, now() + interval '3 days', 'Clínica Centro') returning id", account_id, lead_id)
    async with running_daemon(db_url, settings()):
        await wait_until(db_url, "select count(*) = 4 from touch_runs where status = 'scheduled'"
                                 " and payload->'meta'->>'source' = 'appointment_reminder'")
        booked = {lead_id: await db.fetch(REMINDERS, appt) for lead_id, appt in appointments.items()}
        async with operator_holding(db_url, ("select id from touch_runs where id = $1 for update",
                                             booked[locked_lead][0]["id"])):
            await db.execute("update appointments set starts_at = starts_at + interval '1 day'")
            due = time.monotonic()
            await wait_until(db_url, "select count(*) = 1 from core_memory_events where lead_id = $1"
                                     " and event_type = 'appointment_rescheduled'", other_lead)
            record_property("measured", measured("appointments", due))
            assert await _rescheduled(db, locked_lead) == 0
            assert {r["status"] for r in await db.fetch(REMINDERS, appointments[locked_lead])} == {"scheduled"}
            # back in its inbox, with the state the daemon last saw (a reschedule, not a booking)
            inbox = await db.fetchrow("select * from appointment_inbox where appointment_id = $1",
                                      appointments[locked_lead])
            assert inbox is not None and inbox["is_new"] is False and inbox["prev_status"] == "booked"
        await wait_until(db_url, "select count(*) = 1 from core_memory_events where lead_id = $1"
                                 " and event_type = 'appointment_rescheduled'", locked_lead)
    for lead_id, appt in appointments.items():
        assert await _rescheduled(db, lead_id) == 1
        rows = await db.fetch(REMINDERS, appt)
        old_ids = {r["id"] for r in booked[lead_id]}
        assert [r["status"] for r in rows if r["id"] in old_ids] == ["canceled", "canceled"]
        new = [r for r in rows if r["id"] not in old_ids]
        starts_at = await db.fetchval("select starts_at from appointments where id = $1", appt)
        assert [(r["status"], r["scheduled_at"]) for r in new] == [
            ("scheduled", starts_at - timedelta(minutes=1440)), ("scheduled", starts_at - timedelta(minutes=60))]
        assert await db.fetchval("select count(*) from core_memory_events where lead_id = $1"
                                 " and event_type = 'touch_canceled'", lead_id) == 2
    assert await db.fetchval("select count(*) from appointment_inbox") == 0


# --- enrichment -------------------------------------------------------------------------------------------

ENRICHED_EVENTS = "select count(*) from core_memory_events where lead_id = $1 and event_type = 'lead_enriched'"


async def test_a_locked_enriched_row_delays_only_its_own_leads_enrichment(db, db_url, record_property):
    account_id = await factories.account(db)
    async with running_daemon(db_url, settings()):
        locked_lead = await factories.lead(db, account_id, full_name="Locked Lead", phone="+14155550101")
        other_lead = await factories.lead(db, account_id, full_name="Other Lead", phone="+14155550102")
        await wait_until(db_url, "select count(*) = 2 from lead_enriched where phone is not null")
        async with operator_holding(db_url, ("select lead_id from lead_enriched where lead_id = $1 for update",
                                             locked_lead)):
            await db.execute("update leads set phone = '+1 212 555 01' || right(phone, 2)"
                             " where id = any($1::uuid[])", [locked_lead, other_lead])
            due = time.monotonic()
            await wait_until(db_url, "select phone = '+12125550102' from lead_enriched where lead_id = $1", other_lead)
            record_property("measured", measured("enrichment", due))
            assert await db.fetchval("select phone from lead_enriched where lead_id = $1", locked_lead) == \
                "+14155550101"
            assert await db.fetchval("select count(*) from lead_enrichment_inbox where lead_id = $1", locked_lead) == 1
        await wait_until(db_url, "select phone = '+12125550101' from lead_enriched where lead_id = $1", locked_lead)
    for lead_id in (locked_lead, other_lead):
        assert await db.fetchval(ENRICHED_EVENTS, lead_id) == 2  # the first enrichment, and the new phone once
        (changed,) = [r["payload"]["changed"] for r in await db.fetch(
            "select payload from core_memory_events where lead_id = $1 and event_type = 'lead_enriched'"
            " order by created_at offset 1", lead_id)]
        assert list(changed) == ["phone"]
    assert await db.fetchval("select count(*) from lead_enrichment_inbox") == 0


# --- the shared helper ------------------------------------------------------------------------------------


async def test_a_lock_on_a_whole_table_hands_the_rest_back_untried(db, db_url):
    """A long migration locking a whole table: every item would wait ROW_LOCK_WAIT_MS in turn; after MAX_BUSY the
    rest are handed back untried (for the next run) instead of each waiting."""
    account_id = await factories.account(db)
    lead_ids = [await factories.lead(db, account_id, full_name=f"Lead {i}") for i in range(MAX_BUSY + 5)]
    tried: list[uuid.UUID] = []

    async def act(lead_id: uuid.UUID) -> None:
        tried.append(lead_id)
        await db.execute("update lead_enriched set enriched_at = now() where lead_id = $1", lead_id)

    migration = await connect(db_url)
    try:
        async with migration.transaction():
            await migration.execute("lock table lead_enriched in access exclusive mode")
            async with db.transaction():
                failed = await one_by_one(db, lead_ids, act)
    finally:
        await migration.close()
    assert tried == lead_ids[:MAX_BUSY]
    assert [lead_id for lead_id, _ in failed] == lead_ids and all(is_busy(exc) for _, exc in failed)
    # with the lock gone, the next run does them all
    async with db.transaction():
        assert await one_by_one(db, lead_ids, act) == []


async def test_a_periodic_job_that_set_rows_aside_runs_again_soon_not_at_its_interval():
    """The daemon's loop for a periodic job (the orchestrators): a run that left leads locked by another session
    asks for the next run after SET_ASIDE_RETRY_S, not after its interval (300 s / 1800 s)."""
    from listener.engine.daemon import SET_ASIDE_RETRY_S, PeriodicJob, _periodic

    async def run_with(result: dict[str, Any]) -> float:
        async def job_run(_pool: Any) -> dict[str, Any]:
            return result

        return await _periodic(PeriodicJob("touch-orchestrator", 300.0, job_run), None)()  # type: ignore[arg-type]

    assert await run_with({"set_aside": 2, "created": 5}) == SET_ASIDE_RETRY_S
    assert await run_with({"set_aside": 0, "created": 5}) == 300.0
    assert await run_with({"created": 5}) == 300.0
