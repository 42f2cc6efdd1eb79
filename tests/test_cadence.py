"""Full cadences driven by events, in seconds (issue 4): the daemon runs against the embedded PostgreSQL and the
sandbox providers; fractional cooldowns make minutes into seconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from listener.providers.sandbox import SandboxProviders
from listener.store.queries import Q
from tests import factories
from tests.harness import daemon_settings, running_daemon, wait_terminal, wait_until


async def _decisions(db, lead_id):
    rows = await db.fetch("select payload from core_memory_events where lead_id = $1 and event_type = 'fallback_decision'"
                          " order by created_at", lead_id)
    return [r["payload"] for r in rows]


async def _channels_sent(db, lead_id):
    rows = await db.fetch("select channel from touch_runs where lead_id = $1 and status in ('sent', 'failed')"
                          " order by created_at", lead_id)
    return [r["channel"] for r in rows]


async def _wait_decision(db_url, lead_id, decision, n=1, timeout=30.0):
    await wait_until(db_url, "select count(*) >= $3 from core_memory_events where lead_id = $1"
                     " and event_type = 'fallback_decision' and payload->>'decision' = $2",
                     lead_id, decision, n, timeout=timeout)


async def test_voice_whatsapp_email_with_exact_attempts(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    plan = {"order": ["voice", "whatsapp", "email"], "max_attempts": {"voice": 2, "whatsapp": 3, "email": 1},
            "cooldown_minutes": {"voice": 0, "whatsapp": 0, "email": 0}}
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake)):
        await factories.touch(db, account_id, lead_id, channel="voice", payload_=factories.payload("voice", plan=plan))
        await _wait_decision(db_url, lead_id, "stop")
        kinds = [r.kind for r in fake.requests]
    assert kinds == ["voice", "voice", "whatsapp", "whatsapp", "whatsapp", "email"]
    assert await _channels_sent(db, lead_id) == ["voice", "voice", "whatsapp", "whatsapp", "whatsapp", "email"]
    decisions = await _decisions(db, lead_id)
    assert [d["decision"] for d in decisions] == ["retry_same_channel", "switch_channel", "retry_same_channel",
                                                  "retry_same_channel", "switch_channel", "stop"]
    assert decisions[-1]["stop_reason"] == "exhausted"
    assert decisions[1]["next_channel"] == "whatsapp" and decisions[4]["next_channel"] == "email"
    # a decision replayed creates nothing: every follow-up has the deterministic key of its predecessor
    keys = await db.fetch("select idempotency_key from touch_runs where lead_id = $1 and idempotency_key is not null",
                          lead_id)
    assert len(keys) == 5 and all(k["idempotency_key"].startswith("next:") for k in keys)


async def test_retry_waits_out_its_cooldown_and_not_a_moment_less(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    plan = {"order": ["sms"], "max_attempts": {"sms": 2}, "cooldown_minutes": {"sms": 0.03}}  # 1.8 s
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake, sweep_interval_s=30)):
        await factories.touch(db, account_id, lead_id, payload_=factories.payload("sms", plan=plan))
        await _wait_decision(db_url, lead_id, "stop")
        first, second = fake.requests
    decisions = await _decisions(db, lead_id)
    assert [d["decision"] for d in decisions] == ["wait_cooldown", "retry_same_channel", "stop"]
    cooldown_until = datetime.fromisoformat(decisions[0]["cooldown_until"])
    attempt_at = await db.fetchval("select min(created_at) from core_memory_events where lead_id = $1"
                                   " and event_type = 'touch_sent'", lead_id)
    assert cooldown_until == attempt_at + timedelta(seconds=1.8)
    assert datetime.fromtimestamp(second.received_at_wall, UTC) >= cooldown_until


async def test_failing_channel_is_switched_away_from_at_once(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    plan = {"order": ["whatsapp", "sms"], "max_attempts": {"whatsapp": 3, "sms": 1},
            "cooldown_minutes": {"whatsapp": 600, "sms": 0}}
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake)):
        fake.script("error:400:21211")
        await factories.touch(db, account_id, lead_id, channel="whatsapp",
                              payload_=factories.payload("whatsapp", plan=plan))
        await _wait_decision(db_url, lead_id, "stop")
        kinds = [r.kind for r in fake.requests]
    assert kinds == ["whatsapp", "sms"]  # no second whatsapp attempt, no 10-hour cooldown
    decisions = await _decisions(db, lead_id)
    assert [d["decision"] for d in decisions] == ["switch_channel", "stop"]


async def test_unreachable_channel_is_skipped_and_named(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id, phone=None)
    plan = {"order": ["voice", "whatsapp", "email"], "max_attempts": {"voice": 1, "whatsapp": 1, "email": 1}}
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake)):
        await factories.touch(db, account_id, lead_id, channel="voice", payload_=factories.payload("voice", plan=plan))
        await _wait_decision(db_url, lead_id, "stop")
        kinds = [r.kind for r in fake.requests]
    assert kinds == ["email"]
    switch = (await _decisions(db, lead_id))[0]
    assert switch["decision"] == "switch_channel" and switch["next_channel"] == "email"
    assert switch["skipped_channels"] == ["whatsapp"]


async def test_reply_positive_cancels_a_touch_scheduled_ahead(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    campaign_id = await db.fetchval("insert into campaigns (account_id, name) values ($1, 'c') returning id", account_id)
    await db.execute("insert into campaign_leads (campaign_id, lead_id) values ($1, $2)", campaign_id, lead_id)
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake)):
        touch_id = await factories.touch(db, account_id, lead_id, campaign_id=campaign_id, status="scheduled",
                                         scheduled_in_s=10)
        await factories.event(db, lead_id, "reply_positive")
        row = await wait_terminal(db_url, touch_id)
        await wait_until(db_url, "select status = 'stopped' from campaign_leads where lead_id = $1", lead_id)
        assert fake.requests == []
    assert row["status"] == "canceled"
    reason = await db.fetchval("select payload->>'reason' from core_memory_events where event_type = 'touch_canceled'"
                               " and payload->>'touch_run_id' = $1", str(touch_id))
    assert reason == "stop_event:reply_positive"
    stopped = await db.fetchrow("select stop_reason from campaign_leads where lead_id = $1", lead_id)
    assert stopped["stop_reason"] == "reply_positive"
    assert await db.fetchval("select count(*) from core_memory_events where lead_id = $1"
                             " and event_type = 'cadence_stopped'", lead_id) == 1


async def test_an_expired_plan_stops(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    expires = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    plan = {"order": ["sms"], "max_attempts": {"sms": 3}, "cooldown_minutes": {"sms": 0.04}}  # 2.4 s
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake)):
        await factories.touch(db, account_id, lead_id, payload_=factories.payload("sms", plan=plan, expires_at=expires))
        await _wait_decision(db_url, lead_id, "stop")
        assert len(fake.requests) == 1
    decisions = await _decisions(db, lead_id)
    assert [d["decision"] for d in decisions] == ["wait_cooldown", "stop"]
    assert decisions[-1]["stop_reason"] == "expired"


async def test_two_step_campaign_runs_to_completion(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id, first_name="Marta")
    campaign_id = await db.fetchval(
        "insert into campaigns (account_id, name, message_class) values ($1, 'two steps', 'cold') returning id",
        account_id)
    step1 = factories.payload("sms", body="Paso 1 {first_name}",
                              plan={"order": ["sms", "email"], "max_attempts": {"sms": 1, "email": 1}})
    step2 = factories.payload("whatsapp", body="Paso 2 {first_name}",
                              plan={"order": ["whatsapp"], "max_attempts": {"whatsapp": 1}})
    for payload in (step1, step2):
        payload["delivery"].pop("variables")
    await db.execute("insert into campaign_steps (campaign_id, step, delay_minutes, payload) values"
                     " ($1, 1, 0, $2), ($1, 2, 0.02, $3)", campaign_id, step1, step2)
    await db.execute("insert into campaign_leads (campaign_id, lead_id) values ($1, $2)", campaign_id, lead_id)
    # the lead wrote on WhatsApp: its 24 h session window is open, so step 2 goes out free-form (SPEC §12)
    await factories.event(db, lead_id, "reply_received", channel="whatsapp", created_ago_s=3600)
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake)):
        await db.fetchval(Q.insert_step_touch, campaign_id, lead_id, 1, datetime.now(UTC))
        await wait_until(db_url, "select status = 'completed' from campaign_leads where lead_id = $1", lead_id)
        requests = list(fake.requests)
    assert [r.kind for r in requests] == ["sms", "email", "whatsapp"]
    assert requests[0].body["Body"] == "Paso 1 Marta" and requests[2].body["Body"] == "Paso 2 Marta"
    step2_touch = await db.fetchrow("select created_at, scheduled_at, step from touch_runs where lead_id = $1"
                                    " and step = 2", lead_id)
    assert step2_touch["scheduled_at"] - step2_touch["created_at"] >= timedelta(seconds=1.2) - timedelta(milliseconds=50)
    assert await db.fetchval("select count(*) from core_memory_events where lead_id = $1"
                             " and event_type = 'cadence_completed'", lead_id) == 1
    assert await db.fetchval("select current_step from campaign_leads where lead_id = $1", lead_id) == 2


async def test_a_stop_event_handled_late_spares_cadences_begun_after_it(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    before = await factories.touch(db, account_id, lead_id, step=1, status="scheduled", scheduled_in_s=3600)
    await factories.event(db, lead_id, "reply_positive")  # no daemon runs: the reaction waits in event_reactions
    after = await factories.touch(db, account_id, lead_id, step=2)  # a cadence begun after the reply
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake)):
        assert (await wait_terminal(db_url, before))["status"] == "canceled"
        assert (await wait_terminal(db_url, after))["status"] == "sent"
        assert len(fake.requests) == 1
