"""`revenue-asi demo` (issue 5): run the real command for a bounded time against the test database, then check
in the database that it reached sent, failed, switched-channel and stopped cadences, and that its summary says so."""

from __future__ import annotations

import json
import re
import uuid

from tests.cli_runner import cli, cli_env


async def test_demo_runs_cadences_live_and_summarises(db, db_url):
    # the default quiet hours: the demo places its leads at run time (daytime zones, one night zone)
    result = await cli("demo", "--seconds", "25", env=cli_env(db_url, REVENUE_ASI_QUIET_HOURS="21:00-08:00"),
                       timeout=90)
    assert result.rc == 0, result.err
    out = result.out
    assert "SANDBOX providers: fake Twilio + ElasticEmail on http://127.0.0.1:" in out
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/ — live while the demo runs", out)
    account_id = uuid.UUID(re.search(r"demo account: Revenue ASI demo .* \(([0-9a-f-]{36})\)", out).group(1))
    campaign_id = uuid.UUID(re.search(r"campaign ([0-9a-f-]{36}) · 8 leads", out).group(1))

    # plain output (no terminal): an event log, then the summary tables
    assert re.search(r"Ana Perez +enrolled in the campaign", out)
    assert re.search(r"Carla Gomez +voice failed: 21211 \(permanent\)", out)
    assert re.search(r"decision: switch voice → whatsapp", out)
    assert re.search(r"Bruno Diaz +cadence stopped: unsubscribe", out)
    # one-click unsubscribe (SPEC §19): the sandbox shows the e-mail's headers, the demo clicks Diego's link (POST)
    headers = re.search(r"e-mail to diego@demo\.example as the SANDBOX ElasticEmail recorded it: Content\.Headers = "
                        r"(\{.*\})", out)
    assert headers, out
    recorded = json.loads(headers.group(1))
    assert re.fullmatch(r"<http://127\.0\.0\.1:\d+/u/[A-Za-z0-9_-]{87}>", recorded["List-Unsubscribe"])
    assert recorded["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert re.search(r"Diego Ruiz +<- simulated inbound one-click unsubscribe: POST http://127\.0\.0\.1:\d+/u/\S+ "
                     r"\(List-Unsubscribe=One-Click\) -> 200", out)
    assert re.search(r"Diego Ruiz +cadence stopped: unsubscribe", out)
    one_click = await db.fetch("select e.event_source, e.payload from core_memory_events e join leads l on l.id = e.lead_id"
                               " where l.account_id = $1 and l.full_name = 'Diego Ruiz' and e.event_type = 'unsubscribe'",
                               account_id)
    assert [e["event_source"] for e in one_click] == ["one_click"] and one_click[0]["payload"]["touch_run_id"]
    # quiet hours (SPEC §13): Gabi lives where it is night now; her call waits for 08:00 her time
    assert re.search(r"Gabi Torres +voice touch deferred: quiet_hours until 08:00 lead time \(Etc/GMT", out)
    deferred = await db.fetch("select e.payload from core_memory_events e join leads l on l.id = e.lead_id"
                              " where l.account_id = $1 and e.event_type = 'touch_deferred'", account_id)
    assert [d["payload"]["reason"] for d in deferred] == ["quiet_hours"]
    assert "touches by channel" in out and "fallback decisions" in out and "cadences" in out
    summary = re.search(r"cadences completed (\d+) · stopped (\d+) · still active (\d+)", out)
    completed, stopped, active = (int(x) for x in summary.groups())
    assert completed + stopped + active == 8

    touches = {r["status"]: r["n"] for r in await db.fetch(
        "select status, count(*)::int as n from touch_runs where account_id = $1 group by 1", account_id)}
    assert touches.get("sent", 0) > 0 and touches.get("failed", 0) > 0
    total = re.search(r"│ total +│ +(\d+) │ +(\d+) │ +(\d+) │ +(\d+) │", out)
    assert (int(total.group(1)), int(total.group(2))) == (touches["sent"], touches["failed"])
    failed_codes = {r["c"] for r in await db.fetch(
        "select e.payload->>'error_code' as c from core_memory_events e join leads l on l.id = e.lead_id"
        " where l.account_id = $1 and e.event_type = 'touch_failed'", account_id)}
    assert "21211" in failed_codes
    switches = await db.fetchval(
        "select count(*) from core_memory_events e join leads l on l.id = e.lead_id where l.account_id = $1"
        " and e.event_type = 'fallback_decision' and e.payload->>'decision' = 'switch_channel'", account_id)
    assert switches > 0
    assert re.search(rf"switch_channel +│ +{switches} ", out)
    stopped_rows = {r["lead"]: r["stop_reason"] for r in await db.fetch(
        "select l.full_name as lead, cl.stop_reason from campaign_leads cl join leads l on l.id = cl.lead_id"
        " where cl.campaign_id = $1 and cl.status = 'stopped'", campaign_id)}
    assert stopped_rows.get("Bruno Diaz") == "unsubscribe" and stopped == len(stopped_rows)
    assert stopped_rows.get("Diego Ruiz") == "unsubscribe"
    assert await db.fetchval("select count(*) from core_memory_events e join leads l on l.id = e.lead_id"
                             " where l.account_id = $1 and e.event_type = 'cadence_stopped'", account_id) >= 1
    # multi-channel: the lead without a phone was switched straight to email
    diego = await db.fetch("select t.channel, t.status from touch_runs t join leads l on l.id = t.lead_id"
                           " where l.full_name = 'Diego Ruiz' and t.account_id = $1 and t.status = 'sent'", account_id)
    assert diego and {t["channel"] for t in diego} == {"email"}
    if "demo finished: every cadence ended" in out:
        assert completed >= 1 and active == 1  # Gabi's cadence waits for her morning
    else:  # time ran out first: nothing of the demo is left to be sent later
        assert await db.fetchval("select count(*) from touch_runs where account_id = $1"
                                 " and status in ('queued', 'scheduled', 'processing')", account_id) == 0

    # it runs again on the same database with a fresh account; --json prints the summary for scripts
    again = await cli("demo", "--seconds", "2", "--leads", "3", "--json", env=cli_env(db_url), timeout=60)
    assert again.rc == 0, again.err
    second = json.loads(again.out)
    assert second["account_id"] != str(account_id) and second["leads"] == 3
    assert second["dashboard_url"].startswith("http://127.0.0.1:")
    assert "SANDBOX" in again.err
    assert await db.fetchval("select count(*) from accounts where name like 'Revenue ASI demo %'") == 2


async def test_demo_refuses_a_database_with_other_accounts_work(db, db_url):
    from tests import factories

    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    await factories.touch(db, account_id, lead_id, status="scheduled", scheduled_in_s=3600)
    result = await cli("demo", "--seconds", "2", env=cli_env(db_url), timeout=60)
    assert result.rc != 0 and "non-demo accounts" in result.err
    assert await db.fetchval("select count(*) from accounts") == 1
