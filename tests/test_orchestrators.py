"""The touch orchestrator and the reactivation orchestrator (SPEC §9, issue 5), against the embedded PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from listener.engine.jobs import periodic_jobs, run_job_on_pool
from listener.engine.orchestrators import REACTIVATION_SOURCE, window_start
from listener.providers.sandbox import SandboxProviders
from listener.store.database import create_pool
from tests import factories
from tests.harness import daemon_settings, running_daemon, wait_until

DAY_S = 86400.0


# --- helpers (also used by the CLI and replay tests) -------------------------------------------------------


def step_payload(channel: str = "sms", *, plan: dict[str, Any] | None = None, body: str = "Hola {first_name}",
                 **routing: Any) -> dict[str, Any]:
    data = factories.payload(channel, body=body, plan=plan if plan is not None else factories.FULL_PLAN)
    data["delivery"]["variables"] = {}
    data["routing"].update(routing)
    return data


async def campaign(conn: asyncpg.Connection, account_id: uuid.UUID, *, status: str = "active",
                   steps: list[tuple[float, dict[str, Any]]] | None = None, name: str = "Spring") -> uuid.UUID:
    campaign_id: uuid.UUID = await conn.fetchval(
        "insert into campaigns (account_id, name, status, message_class) values ($1, $2, $3, 'cold_outreach')"
        " returning id", account_id, name, status)
    for number, (delay, payload) in enumerate(steps if steps is not None else [(0, step_payload())], start=1):
        await conn.execute("insert into campaign_steps (campaign_id, step, delay_minutes, payload)"
                           " values ($1, $2, $3, $4)", campaign_id, number, delay, payload)
    return campaign_id


async def enroll(conn: asyncpg.Connection, campaign_id: uuid.UUID, lead_id: uuid.UUID, *, status: str = "active",
                 current_step: int = 1) -> uuid.UUID:
    row_id: uuid.UUID = await conn.fetchval(
        "insert into campaign_leads (campaign_id, lead_id, status, current_step) values ($1, $2, $3, $4)"
        " returning id", campaign_id, lead_id, status, current_step)
    return row_id


async def leads(conn: asyncpg.Connection, account_id: uuid.UUID, n: int) -> list[uuid.UUID]:
    return [await factories.lead(conn, account_id, full_name=f"Lead {i} Test", phone=f"+1415555{i:04d}",
                                 email=f"lead{i}@example.com") for i in range(n)]


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(db_url, min_size=1, max_size=6)
    try:
        yield p
    finally:
        await p.close()


def settings() -> Any:
    return daemon_settings(None)


async def step_touches(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch("select * from touch_runs where idempotency_key like 'step:%' order by created_at, id")


# --- touch orchestrator -----------------------------------------------------------------------------------


async def test_orchestrator_creates_first_touch_of_current_step(db, pool):
    account_id = await factories.account(db)
    campaign_id = await campaign(db, account_id, steps=[(0, step_payload("voice")), (10, step_payload("email"))])
    first, second, third = await leads(db, account_id, 3)
    await enroll(db, campaign_id, first)
    await enroll(db, campaign_id, second)
    await enroll(db, campaign_id, third, current_step=2)

    result = await run_job_on_pool(pool, settings(), "touch-orchestrator")

    assert result["created"] == 3 and result["queued"] == 2 and result["scheduled"] == 1
    assert result["created_by_channel"] == {"voice": 2, "email": 1}
    rows = {r["lead_id"]: r for r in await step_touches(db)}
    assert set(rows) == {first, second, third}
    for lead_id in (first, second):
        row = rows[lead_id]
        assert (row["channel"], row["status"], row["step"], row["campaign_id"]) == ("voice", "queued", 1, campaign_id)
        assert row["idempotency_key"] == f"step:{campaign_id}:{lead_id}:1"
        assert row["payload"]["routing"]["current_channel"] == "voice"
        assert row["payload"]["delivery"]["variables"]["first_name"] == "Lead"
        assert row["payload"]["campaign_id"] == str(campaign_id) and row["payload"]["step"] == 1
    later = rows[third]
    assert (later["channel"], later["status"], later["step"]) == ("email", "scheduled", 2)
    updated_at = await db.fetchval("select updated_at from campaign_leads where lead_id = $1", third)
    assert abs((later["scheduled_at"] - updated_at).total_seconds() - 600) < 0.001  # base: the move to step 2
    # it never sends: nothing left queued/scheduled
    assert await db.fetchval("select count(*) from touch_runs where status not in ('queued', 'scheduled')") == 0
    run = await db.fetchrow("select * from job_runs where job = 'touch-orchestrator'")
    assert run["error"] is None and run["dry_run"] is False and run["finished_at"] is not None
    assert run["stats"]["created"] == 3 and run["stats"]["candidates"] == 3


async def test_orchestrator_dedupes_repeated_runs(db, pool):
    account_id = await factories.account(db)
    campaign_id = await campaign(db, account_id)
    for lead_id in await leads(db, account_id, 4):
        await enroll(db, campaign_id, lead_id)

    first = await run_job_on_pool(pool, settings(), "touch-orchestrator")
    again = await run_job_on_pool(pool, settings(), "touch-orchestrator")

    assert first["created"] == 4
    assert again["created"] == 0 and again["candidates"] == 0
    assert len(await step_touches(db)) == 4
    counts = [r["stats"]["created"] for r in
              await db.fetch("select stats from job_runs where job = 'touch-orchestrator' order by started_at")]
    assert counts == [4, 0]


async def test_orchestrator_concurrent_runs_create_each_touch_once(db, pool):
    account_id = await factories.account(db)
    campaign_id = await campaign(db, account_id)
    for lead_id in await leads(db, account_id, 6):
        await enroll(db, campaign_id, lead_id)

    results = await asyncio.gather(*(run_job_on_pool(pool, settings(), "touch-orchestrator") for _ in range(3)))

    assert sum(r.get("created", 0) for r in results) == 6
    assert all(r.get("created") in (0, 6) or r.get("skipped") for r in results)
    touches = await step_touches(db)
    assert len(touches) == 6 and len({t["idempotency_key"] for t in touches}) == 6
    assert await db.fetchval("select count(*) from job_runs where job = 'touch-orchestrator'") == 3


async def test_orchestrator_skips_while_another_run_holds_the_lock(db, db_url, pool):
    account_id = await factories.account(db)
    campaign_id = await campaign(db, account_id)
    (lead_id,) = await leads(db, account_id, 1)
    await enroll(db, campaign_id, lead_id)
    holder = await asyncpg.connect(db_url)
    try:
        async with holder.transaction():
            assert await holder.fetchval("select pg_try_advisory_xact_lock(hashtext('revenue_asi:job:' || $1))",
                                         "touch-orchestrator")
            result = await run_job_on_pool(pool, settings(), "touch-orchestrator")
    finally:
        await holder.close()
    assert result["skipped"] == "another run holds the lock"
    assert await step_touches(db) == []
    assert (await run_job_on_pool(pool, settings(), "touch-orchestrator"))["created"] == 1


async def test_two_daemons_orchestrate_each_step_once(db, db_url):
    account_id = await factories.account(db)
    plan = {"order": ["sms"], "max_attempts": {"sms": 1}, "cooldown_minutes": {"sms": 0}}
    campaign_id = await campaign(db, account_id, steps=[(0, step_payload("sms", plan=plan))])
    lead_ids = await leads(db, account_id, 5)
    for lead_id in lead_ids:
        await enroll(db, campaign_id, lead_id)
    async with SandboxProviders() as fake:
        cfg = daemon_settings(fake, orchestrator_interval_s=0.2, reactivation_interval_s=3600)
        async with running_daemon(db_url, cfg, periodic_jobs=periodic_jobs(cfg)), \
                running_daemon(db_url, cfg, periodic_jobs=periodic_jobs(cfg)):
            await wait_until(db_url, "select count(*) = $1 from campaign_leads where status = 'completed'",
                             len(lead_ids))
            # both daemons' orchestrators ran more than once after the touches existed
            await wait_until(db_url, "select count(*) >= 6 from job_runs where job = 'touch-orchestrator'")
    touches = await step_touches(db)
    assert len(touches) == 5 and {t["lead_id"] for t in touches} == set(lead_ids)
    assert await db.fetchval("select count(*) from touch_runs") == 5  # max_attempts 1: no follow-ups
    assert len(fake.requests) == 5
    stats = await db.fetch("select stats from job_runs where job = 'touch-orchestrator' and error is null")
    assert sum(s["stats"].get("created", 0) for s in stats) == 5


async def test_orchestrator_skips_suppressed_lead_with_one_evaluation_event(db, pool):
    account_id = await factories.account(db)
    campaign_id = await campaign(db, account_id, steps=[(0, step_payload("whatsapp"))])
    suppressed, cooling, fine = await leads(db, account_id, 3)
    for lead_id in (suppressed, cooling, fine):
        await enroll(db, campaign_id, lead_id)
    # no daemon runs: the stop events are not reacted to, so the campaign leads are still active
    await factories.event(db, suppressed, "unsubscribe")
    await factories.event(db, cooling, "reply_negative")

    result = await run_job_on_pool(pool, settings(), "touch-orchestrator")
    again = await run_job_on_pool(pool, settings(), "touch-orchestrator")

    assert result["created"] == 1 and result["skipped"] == 2
    assert result["skipped_by_reason"] == {"suppressed:unsubscribe": 1, "suppressed:reply_negative": 1}
    assert [t["lead_id"] for t in await step_touches(db)] == [fine]
    assert again["created"] == 0 and again["skipped"] == 0  # reported once, not every run
    events = await db.fetch("select * from core_memory_events where event_type = 'orchestrator_skipped'"
                            " order by payload->>'reason'")
    assert [(e["lead_id"], e["payload"]["reason"]) for e in events] == [
        (cooling, "suppressed:reply_negative"), (suppressed, "suppressed:unsubscribe")]
    event = events[1]
    assert event["direction"] == "internal" and event["event_source"] == "touch_orchestrator"
    assert event["channel"] == "whatsapp"
    assert event["payload"]["campaign_id"] == str(campaign_id) and event["payload"]["step"] == 1


async def test_orchestrator_reports_step_without_primary_channel(db, pool):
    account_id = await factories.account(db)
    bad = step_payload("sms")
    del bad["routing"]["primary_channel"]
    weird = step_payload("sms")
    weird["routing"]["primary_channel"] = "fax"
    no_plan = await campaign(db, account_id, steps=[(0, bad)], name="no channel")
    fax = await campaign(db, account_id, steps=[(0, weird)], name="fax")
    empty = await campaign(db, account_id, steps=[], name="no steps")
    a, b, c = await leads(db, account_id, 3)
    await enroll(db, no_plan, a)
    await enroll(db, fax, b)
    await enroll(db, empty, c)

    result = await run_job_on_pool(pool, settings(), "touch-orchestrator")

    assert result["created"] == 0
    assert result["skipped_by_reason"] == {"missing_primary_channel": 1, "invalid_primary_channel": 1,
                                           "step_missing": 1}
    assert await db.fetchval("select count(*) from touch_runs") == 0
    reasons = {r["lead_id"]: r["reason"] for r in await db.fetch(
        "select lead_id, payload->>'reason' as reason from core_memory_events where event_type = 'orchestrator_skipped'")}
    assert reasons == {a: "missing_primary_channel", b: "invalid_primary_channel", c: "step_missing"}


async def test_orchestrator_dry_run_creates_nothing_and_reports(db, pool):
    account_id = await factories.account(db)
    campaign_id = await campaign(db, account_id, steps=[(5, step_payload("email"))])
    lead_ids = await leads(db, account_id, 3)
    for lead_id in lead_ids:
        await enroll(db, campaign_id, lead_id)
    suppressed = (await leads(db, account_id, 1))[0]
    await enroll(db, campaign_id, suppressed)
    await factories.event(db, suppressed, "do_not_contact")
    events_before = await db.fetchval("select count(*) from core_memory_events")

    result = await run_job_on_pool(pool, settings(), "touch-orchestrator", dry_run=True, limit=10)

    assert result["dry_run"] is True
    assert result["created"] == 3 and result["scheduled"] == 3 and result["skipped"] == 1
    assert {t["lead_id"] for t in result["touches"]} == {str(x) for x in lead_ids}
    assert all(t["channel"] == "email" and t["status"] == "scheduled" for t in result["touches"])
    assert await db.fetchval("select count(*) from touch_runs") == 0
    assert await db.fetchval("select count(*) from core_memory_events") == events_before
    run = await db.fetchrow("select * from job_runs where job = 'touch-orchestrator'")
    assert run["dry_run"] is True and run["stats"]["created"] == 3


async def test_orchestrator_limit(db, pool):
    account_id = await factories.account(db)
    campaign_id = await campaign(db, account_id)
    for lead_id in await leads(db, account_id, 5):
        await enroll(db, campaign_id, lead_id)
    assert (await run_job_on_pool(pool, settings(), "touch-orchestrator", limit=2))["created"] == 2
    assert (await run_job_on_pool(pool, settings(), "touch-orchestrator", limit=2))["created"] == 2
    assert (await run_job_on_pool(pool, settings(), "touch-orchestrator", limit=2))["created"] == 1
    assert len(await step_touches(db)) == 5


async def test_orchestrator_leaves_paused_and_ended_alone(db, pool):
    account_id = await factories.account(db)
    paused_campaign = await campaign(db, account_id, status="paused", name="paused")
    archived_campaign = await campaign(db, account_id, status="archived", name="archived")
    live = await campaign(db, account_id, name="live")
    a, b, c, d, e = await leads(db, account_id, 5)
    await enroll(db, paused_campaign, a)
    await enroll(db, archived_campaign, b)
    await enroll(db, live, c, status="paused")
    await enroll(db, live, d, status="completed")
    await enroll(db, live, e, status="stopped")

    result = await run_job_on_pool(pool, settings(), "touch-orchestrator")

    assert result["candidates"] == 0 and result["created"] == 0
    assert await db.fetchval("select count(*) from touch_runs") == 0
    assert await db.fetchval("select count(*) from core_memory_events where event_type = 'orchestrator_skipped'") == 0


# --- reactivation orchestrator ----------------------------------------------------------------------------


async def touched_long_ago(conn: asyncpg.Connection, account_id: uuid.UUID, *, days: float = 50,
                           channel: str = "sms", **lead_kwargs: Any) -> uuid.UUID:
    lead_id = await factories.lead(conn, account_id, **lead_kwargs)
    await factories.event(conn, lead_id, "touch_sent", direction="outbound", channel=channel,
                          payload_={"touch_run_id": str(uuid.uuid4())}, created_ago_s=days * DAY_S)
    return lead_id


async def test_reactivation_creates_one_touch_and_event(db, pool):
    account_id = await factories.account(db)
    lead_id = await touched_long_ago(db, account_id, channel="whatsapp", full_name="Ana Perez")
    assert await db.fetchval("select recommended_action from lead_next_action_view_v5 where lead_id = $1",
                             lead_id) == "reactivate"

    result = await run_job_on_pool(pool, settings(), "reactivation")

    assert result["created"] == 1 and result["queued"] == 1
    (touch,) = await db.fetch("select * from touch_runs")
    assert touch["lead_id"] == lead_id and touch["campaign_id"] is None and touch["account_id"] == account_id
    assert touch["channel"] == "whatsapp" and touch["status"] == "queued"
    window = window_start(touch["created_at"]).date().isoformat()
    assert touch["idempotency_key"] == f"reactivation:{lead_id}:{window}"
    payload = touch["payload"]
    assert payload["meta"]["source"] == REACTIVATION_SOURCE
    assert payload["routing"]["primary_channel"] == payload["routing"]["current_channel"] == "whatsapp"
    assert payload["routing"]["fallback"]["order"] == ["whatsapp", "sms", "email"]
    assert payload["delivery"]["variables"]["first_name"] == "Ana"
    assert "{first_name}" in payload["delivery"]["body"]
    (event,) = await db.fetch("select * from core_memory_events where event_type = 'reactivation_created'")
    assert event["lead_id"] == lead_id and event["channel"] == "whatsapp" and event["direction"] == "internal"
    assert event["payload"]["touch_run_id"] == str(touch["id"])
    run = await db.fetchrow("select * from job_runs where job = 'reactivation'")
    assert run["stats"]["created"] == 1 and run["error"] is None

    again = await run_job_on_pool(pool, settings(), "reactivation")
    assert again["created"] == 0
    # even once that touch is over, the window holds: one reactivation per lead per 45 days
    await db.execute("update touch_runs set status = 'canceled'")
    assert (await run_job_on_pool(pool, settings(), "reactivation"))["created"] == 0
    assert await db.fetchval("select count(*) from touch_runs") == 1
    assert await db.fetchval("select count(*) from core_memory_events where event_type = 'reactivation_created'") == 1


async def test_reactivation_skips_ineligible_and_suppressed_leads(db, pool):
    account_id = await factories.account(db)
    recent = await touched_long_ago(db, account_id, days=10)
    unsubscribed = await touched_long_ago(db, account_id)
    await factories.event(db, unsubscribed, "unsubscribe", created_ago_s=40 * DAY_S)
    negative = await touched_long_ago(db, account_id)
    await factories.event(db, negative, "reply_negative", created_ago_s=5 * DAY_S)
    positive = await touched_long_ago(db, account_id)
    await factories.event(db, positive, "reply_positive", created_ago_s=48 * DAY_S)
    in_campaign = await touched_long_ago(db, account_id)
    await enroll(db, await campaign(db, account_id), in_campaign)
    never = await factories.lead(db, account_id)
    eligible = await touched_long_ago(db, account_id, phone=None, email="only@example.com")

    result = await run_job_on_pool(pool, settings(), "reactivation")

    assert result["created"] == 1
    (touch,) = await db.fetch("select * from touch_runs")
    assert touch["lead_id"] == eligible and touch["channel"] == "email"
    assert touch["payload"]["routing"]["fallback"]["order"] == ["email"]
    created_for = {r["lead_id"] for r in await db.fetch(
        "select lead_id from core_memory_events where event_type = 'reactivation_created'")}
    assert created_for == {eligible}
    assert not created_for & {recent, unsubscribed, negative, positive, in_campaign, never}


async def test_reactivation_dry_run_and_lock(db, db_url, pool):
    account_id = await factories.account(db)
    await touched_long_ago(db, account_id)
    dry = await run_job_on_pool(pool, settings(), "reactivation", dry_run=True)
    assert dry["dry_run"] is True and dry["created"] == 1 and len(dry["touches"]) == 1
    assert await db.fetchval("select count(*) from touch_runs") == 0
    assert await db.fetchval("select count(*) from core_memory_events where event_type = 'reactivation_created'") == 0
    holder = await asyncpg.connect(db_url)
    try:
        async with holder.transaction():
            await holder.fetchval("select pg_advisory_xact_lock(hashtext('revenue_asi:job:reactivation'))")
            assert (await run_job_on_pool(pool, settings(), "reactivation"))["skipped"]
    finally:
        await holder.close()
    results = await asyncio.gather(*(run_job_on_pool(pool, settings(), "reactivation") for _ in range(3)))
    assert sum(r.get("created", 0) for r in results) == 1
    assert await db.fetchval("select count(*) from touch_runs") == 1


async def test_periodic_jobs_are_registered(db_url):
    cfg = daemon_settings(None, orchestrator_interval_s=7, reactivation_interval_s=11, reconcile_interval_s=13)
    jobs = {job.name: job.interval_s for job in periodic_jobs(cfg)}
    assert jobs == {"touch-orchestrator": 7, "reactivation": 11, "reconcile": 13}
