"""`revenue-asi status` and `revenue-asi tick` (issue 5), as subprocesses of the real console script."""

from __future__ import annotations

import json

from tests import factories
from tests.cli_runner import cli, cli_env
from tests.test_orchestrators import campaign, enroll, leads, step_payload, touched_long_ago


async def test_status_json_and_text(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    campaign_id = await campaign(db, account_id)
    await enroll(db, campaign_id, lead_id)
    await factories.touch(db, account_id, lead_id, channel="sms", scheduled_in_s=-30)  # due 30 s ago
    await factories.touch(db, account_id, lead_id, channel="email", status="scheduled", scheduled_in_s=3600)
    failed = await factories.touch(db, account_id, lead_id, channel="voice", status="failed")
    await factories.event(db, lead_id, "touch_failed", direction="outbound", channel="voice",
                          payload_={"touch_run_id": str(failed), "error_code": "21211", "failure_class": "permanent"})
    env = cli_env(db_url)
    tick = await cli("tick", "touch-orchestrator", "--dry-run", env=env)
    assert tick.rc == 0, tick.err

    result = await cli("status", "--json", env=env)
    assert result.rc == 0, result.err
    status = json.loads(result.out)
    assert status["queue"]["due"] == 1 and status["queue"]["scheduled_later"] == 1
    assert status["queue"]["oldest_due_age_s"] >= 30
    assert status["queue"]["pending_reactions"] == 1
    assert status["failures_last_hour"] == {"21211": 1}
    assert status["touch_runs"]["failed"] == {"voice": 1}
    assert status["cadences"]["campaign_leads"] == {"active": 1}
    assert status["cadences"]["next_scheduled_at"] is not None
    jobs = status["jobs"]
    assert set(jobs) == {"sweep", "touch-orchestrator", "reactivation", "reconcile", "enrichment"}
    assert jobs["sweep"] is None and jobs["reactivation"] is None
    assert jobs["touch-orchestrator"]["dry_run"] is True and jobs["touch-orchestrator"]["stats"]["created"] == 1

    text = await cli("status", env=env)
    assert text.rc == 0, text.err
    out = text.out
    assert "queue due 1 · scheduled later 1 · processing 0 · oldest due" in out
    assert "failures, last hour: 21211 1" in out
    assert "cadences campaign leads: active 1" in out
    assert "jobs: last run" in out and "touch-orchestrator" in out and "never" in out
    assert "candidates 1, created 1" in out


async def test_tick_touch_orchestrator_text_and_json(db, db_url):
    account_id = await factories.account(db)
    campaign_id = await campaign(db, account_id, steps=[(0, step_payload("voice"))])
    lead_ids = await leads(db, account_id, 2)
    for lead_id in lead_ids:
        await enroll(db, campaign_id, lead_id)
    suppressed = (await leads(db, account_id, 1))[0]
    await enroll(db, campaign_id, suppressed)
    await factories.event(db, suppressed, "do_not_contact")
    env = cli_env(db_url)

    dry = await cli("tick", "touch-orchestrator", "--dry-run", env=env)
    assert dry.rc == 0, dry.err
    assert "touch-orchestrator (dry run: nothing written): 3 candidate(s) · would create 2 (queued 2, scheduled 0)" \
        " · skipped 1" in dry.out
    assert dry.out.count("would create voice") == 2
    assert f"skipped  lead {suppressed} campaign {campaign_id} step 1: suppressed:do_not_contact" in dry.out
    assert await db.fetchval("select count(*) from touch_runs") == 0

    limited = await cli("tick", "touch-orchestrator", "--limit", "1", "--json", env=env)
    assert limited.rc == 0, limited.err
    first = json.loads(limited.out)
    assert first["candidates"] == 1 and first["dry_run"] is False
    rest = json.loads((await cli("tick", "touch-orchestrator", "--json", env=env)).out)
    assert first["created"] + rest["created"] == 2
    assert await db.fetchval("select count(*) from touch_runs") == 2
    runs = await db.fetch("select dry_run, stats from job_runs where job = 'touch-orchestrator' order by started_at")
    assert [r["dry_run"] for r in runs] == [True, False, False]


async def test_tick_reactivation_and_sweep(db, db_url):
    account_id = await factories.account(db)
    lead_id = await touched_long_ago(db, account_id, channel="sms")
    env = cli_env(db_url)
    dry = await cli("tick", "reactivation", "--dry-run", "--json", env=env)
    assert dry.rc == 0, dry.err
    assert json.loads(dry.out)["created"] == 1 and await db.fetchval("select count(*) from touch_runs") == 0
    real = await cli("tick", "reactivation", env=env)
    assert real.rc == 0, real.err
    assert "reactivation: 1 candidate(s) · created 1 (queued 1, scheduled 0)" in real.out
    assert "created sms      queued    due" in real.out and str(lead_id) in real.out
    sweep = await cli("tick", "sweep", "--dry-run", "--json", env=env)
    assert sweep.rc == 0 and json.loads(sweep.out)["due_touches"] == 1
    unknown = await cli("tick", "nope", env=env)
    assert unknown.rc == 2 and "unknown job" in unknown.err
