"""`revenue-asi lead inspect` and `revenue-asi lead enroll` (issue 5), as subprocesses of the real console script."""

from __future__ import annotations

import json
import uuid

from tests import factories
from tests.cli_runner import cli, cli_env
from tests.test_orchestrators import campaign, enroll, step_payload


async def _lead_with_history(db):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id, full_name="Ana Perez", phone="+14155550123",
                                   email="ana@example.com")
    campaign_id = await campaign(db, account_id, steps=[(0, step_payload("voice")), (30, step_payload("email"))],
                                 name="Spring")
    await enroll(db, campaign_id, lead_id)
    sent = await factories.touch(db, account_id, lead_id, channel="voice", campaign_id=campaign_id, status="sent",
                                 payload_=factories.payload("voice", plan=factories.FULL_PLAN))
    await factories.event(db, lead_id, "touch_sent", direction="outbound", channel="voice",
                          payload_={"touch_run_id": str(sent)})
    await db.execute("delete from event_reactions")  # no daemon here; the decision below is computed live
    return account_id, lead_id, campaign_id, sent


async def test_lead_inspect_json(db, db_url):
    account_id, lead_id, campaign_id, sent = await _lead_with_history(db)
    result = await cli("lead", "inspect", str(lead_id), "--json", env=cli_env(db_url))
    assert result.rc == 0, result.err
    report = json.loads(result.out)
    assert report["lead"]["id"] == str(lead_id) and report["lead"]["full_name"] == "Ana Perez"
    assert report["lead"]["account_name"] == "Acme Dental"
    assert report["contacts"]["phone"] == {"raw": "+14155550123", "valid": True, "normalised": "+14155550123",
                                           "problem": None}
    assert report["contacts"]["email"]["valid"] is True and report["contacts"]["first_name"] == "Ana"
    assert report["suppression"]["is_unsubscribed"] is False and report["suppression"]["reason"] is None
    assert report["next_action"]["recommended_action"] == "send"
    (cl,) = report["campaigns"]
    assert cl["campaign_id"] == str(campaign_id) and cl["status"] == "active" and cl["current_step"] == 1
    assert report["open_touches"] == []
    assert [t["id"] for t in report["recent_touches"]] == [str(sent)]
    assert {e["event_type"] for e in report["events"]} >= {"touch_sent", "touch_scheduled"}
    (decision,) = report["decisions"]
    assert decision["campaign_id"] == str(campaign_id) and decision["step"] == 1
    assert decision["decision"] == "retry_same_channel" and decision["next_channel"] == "voice"
    assert decision["latest_touch_id"] == str(sent)


async def test_lead_inspect_text(db, db_url):
    account_id, lead_id, campaign_id, sent = await _lead_with_history(db)
    bad = await factories.lead(db, account_id, full_name="No Phone", phone="12", email=None)
    result = await cli("lead", "inspect", str(lead_id), env=cli_env(db_url))
    assert result.rc == 0, result.err
    out = result.out
    assert f"lead Ana Perez · {lead_id} · account Acme Dental" in out
    assert "phone: +14155550123 → ok +14155550123" in out
    assert "suppression none" in out and "next action send" in out
    assert "campaigns" in out and "Spring" in out and "active" in out
    assert "current fallback decision per active step" in out and "retry_same_channel" in out
    assert "touch_sent" in out and str(sent)[:8] in out
    other = await cli("lead", "inspect", str(bad), env=cli_env(db_url))
    assert other.rc == 0, other.err
    assert "phone: 12 → unusable (invalid_phone)" in other.out and "email: - → unusable (no_email)" in other.out


async def test_lead_inspect_unknown_and_invalid_id(db_url):
    missing = await cli("lead", "inspect", str(uuid.uuid4()), env=cli_env(db_url))
    assert missing.rc == 1 and "no lead with id" in missing.err and missing.out == ""
    invalid = await cli("lead", "inspect", "nope", "--json", env=cli_env(db_url))
    assert invalid.rc == 2 and "must be a uuid" in invalid.err


async def test_lead_enroll_then_orchestrator_schedules(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id, full_name="Ana Perez")
    campaign_id = await campaign(db, account_id, steps=[(0, step_payload("whatsapp"))], name="Spring")
    env = cli_env(db_url)

    result = await cli("lead", "enroll", str(lead_id), str(campaign_id), "--json", env=env)

    assert result.rc == 0, result.err
    enrolled = json.loads(result.out)
    assert enrolled["lead_id"] == str(lead_id) and enrolled["campaign_id"] == str(campaign_id)
    assert enrolled["status"] == "active" and enrolled["current_step"] == 1
    assert enrolled["first_step"]["primary_channel"] == "whatsapp"
    row = await db.fetchrow("select * from campaign_leads where lead_id = $1", lead_id)
    assert str(row["id"]) == enrolled["campaign_lead_id"] and row["status"] == "active"

    tick = await cli("tick", "touch-orchestrator", "--json", env=env)
    assert tick.rc == 0, tick.err
    assert json.loads(tick.out)["created"] == 1
    assert await db.fetchval("select channel from touch_runs where lead_id = $1", lead_id) == "whatsapp"

    again = await cli("lead", "enroll", str(lead_id), str(campaign_id), env=env)
    assert again.rc == 1 and "already enrolled" in again.err and "status active" in again.err


async def test_lead_enroll_text(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id, full_name="Ana Perez")
    campaign_id = await campaign(db, account_id, steps=[(2.5, step_payload("sms"))], name="Spring")
    result = await cli("lead", "enroll", str(lead_id), str(campaign_id), env=cli_env(db_url))
    assert result.rc == 0, result.err
    assert f"enrolled lead Ana Perez ({lead_id}) in campaign 'Spring' ({campaign_id}) at step 1" in result.out
    assert "first touch on sms, due 2.5 min after enrolment" in result.out


async def test_lead_enroll_refusals(db, db_url):
    account_id = await factories.account(db)
    other_account = await factories.account(db, "Other", providers=False)
    lead_id = await factories.lead(db, account_id)
    unsubscribed = await factories.lead(db, account_id)
    await factories.event(db, unsubscribed, "unsubscribe")
    live = await campaign(db, account_id, name="Live")
    archived = await campaign(db, account_id, status="archived", name="Old")
    empty = await campaign(db, account_id, steps=[], name="Empty")
    foreign = await campaign(db, other_account, name="Foreign")
    env = cli_env(db_url)
    cases = [
        ((str(uuid.uuid4()), str(live)), "no lead with id"),
        ((str(lead_id), str(uuid.uuid4())), "no campaign with id"),
        ((str(lead_id), str(archived)), "is archived"),
        ((str(lead_id), str(empty)), "has no steps"),
        ((str(lead_id), str(foreign)), "another account"),
        ((str(unsubscribed), str(live)), "is suppressed (unsubscribe)"),
    ]
    for args, message in cases:
        result = await cli("lead", "enroll", *args, env=env)
        assert result.rc == 1, (args, result)
        assert message in result.err, (message, result.err)
        assert result.out == ""
    json_refusal = await cli("lead", "enroll", str(unsubscribed), str(live), "--json", env=env)
    assert json_refusal.rc == 1 and "suppressed" in json_refusal.err
    assert await db.fetchval("select count(*) from campaign_leads") == 0
    invalid = await cli("lead", "enroll", "x", str(live), env=env)
    assert invalid.rc == 2 and "LEAD must be a uuid" in invalid.err
