"""At most once, ever: many daemons, crashes mid-send, database restarts, catch-up after downtime (issue 3)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from listener.providers.sandbox import SandboxProviders
from listener.store.database import connect
from tests import factories
from tests.harness import daemon_settings, events_of, running_daemon, wait_terminal, wait_until
from tests.pg import restart_server


async def _many_touches(db, account_id, n):
    leads = [await factories.lead(db, account_id, full_name=f"Lead {i}", phone=f"+1415555{i:04d}")
             for i in range(n)]
    await db.executemany(
        "insert into touch_runs (account_id, lead_id, channel, payload) values ($1, $2, 'sms', $3)",
        [(account_id, lead_id, {"message": f"touch for {lead_id}"}) for lead_id in leads])
    return leads


async def test_touches_inserted_while_down_are_caught_up(db, db_url):
    account_id = await factories.account(db)
    await _many_touches(db, account_id, 20)
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake)):
        await fake.wait_for_requests(20)
        await wait_until(db_url, "select count(*) = 20 from touch_runs where status = 'sent'")
    assert len({r.body["Body"] for r in fake.requests}) == 20


async def test_two_daemons_deliver_each_touch_exactly_once(db, db_url):
    account_id = await factories.account(db)
    async with SandboxProviders() as fake:
        settings = daemon_settings(fake, claim_batch=16, concurrency=32)
        async with running_daemon(db_url, settings, worker_id="a") as a, \
                running_daemon(db_url, settings, worker_id="b") as b:
            await _many_touches(db, account_id, 500)
            await wait_until(db_url, "select count(*) = 500 from touch_runs where status = 'sent'", timeout=120)
        bodies = [r.body["Body"] for r in fake.requests]
    assert len(bodies) == 500 and len(set(bodies)) == 500
    assert a.dispatcher.stats.sent + b.dispatcher.stats.sent == 500
    assert await db.fetchval("select count(*) from core_memory_events where event_type = 'touch_sent'") == 500


async def test_sigkill_mid_send_never_sends_twice(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    async with SandboxProviders() as fake:
        fake.set_mode("hang")
        env = {**os.environ, "DATABASE_URL": db_url, "REVENUE_ASI_LEASE_S": "2", "REVENUE_ASI_SWEEP_INTERVAL_S": "0.5",
               "REVENUE_ASI_PROVIDER_TIMEOUT_S": "60", "REVENUE_ASI_QUIET_HOURS": "off",
               **{k: str(v) for k, v in {"TWILIO_ACCOUNT_SID": fake.account_sid,
                                         "TWILIO_AUTH_TOKEN": fake.settings_overrides()["twilio_auth_token"],
                                         "TWILIO_BASE_URL": fake.base_url}.items()}}
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "revenue-asi"), "run", env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        try:
            touch_id = await factories.touch(db, account_id, lead_id)
            await fake.wait_for_requests(1, timeout=30)  # the send is in flight, the provider holds it
        finally:
            process.send_signal(signal.SIGKILL)
            await process.wait()
        assert await db.fetchval("select status from touch_runs where id = $1", touch_id) == "processing"
        fake.set_mode("ok")
        async with running_daemon(db_url, daemon_settings(fake, lease_s=2)):
            row = await wait_terminal(db_url, touch_id)
        assert len(fake.requests) == 1  # never re-sent
    assert row["status"] == "failed" and row["error"].startswith("outcome_unknown")
    (failure,) = await events_of(db, touch_id, "touch_failed")
    assert failure["payload"]["error_code"] == "outcome_unknown"
    assert await db.fetchval("select count(*) from touch_runs where status = 'processing'") == 0


async def test_database_restart_is_survived_without_restarting_the_daemon(db, db_url, migrated_template):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake)) as daemon:
        first = await factories.touch(db, account_id, lead_id)
        assert (await wait_terminal(db_url, first))["status"] == "sent"
        await asyncio.to_thread(restart_server, migrated_template)
        conn = await connect(db_url)
        try:
            second = await factories.touch(conn, account_id, lead_id)
        finally:
            await conn.close()
        assert (await wait_terminal(db_url, second))["status"] == "sent"
        # the send may come from the sweep before the LISTEN connection is back: await that too
        await asyncio.wait_for(_listening_again(daemon.notifier), timeout=30)
    assert len(fake.requests) == 2


async def _listening_again(notifier) -> None:
    while notifier.reconnects < 1:
        await notifier.connected.wait()
        if notifier.reconnects < 1:  # still the old connection's flag: its loss is being handled
            await asyncio.sleep(0.05)


async def test_suppressed_stopped_and_expired_touches_are_canceled_without_a_send(db, db_url):
    account_id = await factories.account(db)
    unsubscribed = await factories.lead(db, account_id, phone="+14155550101")
    replied = await factories.lead(db, account_id, phone="+14155550102")
    expired = await factories.lead(db, account_id, phone="+14155550103")
    await factories.event(db, unsubscribed, "unsubscribe")
    t_unsub = await factories.touch(db, account_id, unsubscribed, status="scheduled", scheduled_in_s=3600)
    t_replied = await factories.touch(db, account_id, replied, status="scheduled", scheduled_in_s=3600)
    await factories.event(db, replied, "reply_positive")
    t_expired = await factories.touch(db, account_id, expired, status="scheduled", scheduled_in_s=3600,
                                      payload_=factories.payload("sms", expires_at="2020-01-01T00:00:00Z"))
    await db.execute("update touch_runs set scheduled_at = now() where id = any($1)", [t_unsub, t_replied, t_expired])
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake)):
        rows = [await wait_terminal(db_url, t) for t in (t_unsub, t_replied, t_expired)]
        assert fake.requests == []
    reasons = []
    for row in rows:
        assert row["status"] == "canceled"
        (event,) = await events_of(db, row["id"], "touch_canceled")
        reasons.append(event["payload"]["reason"])
    assert reasons == ["suppressed:unsubscribe", "stop_event:reply_positive", "expired"]


async def test_dry_run_and_qa_sink(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    async with SandboxProviders() as fake:
        settings = daemon_settings(fake, qa_sink_phone="+14155550000")
        async with running_daemon(db_url, settings):
            dry = await factories.touch(db, account_id, lead_id, channel="whatsapp",
                                        payload_=factories.payload("whatsapp", meta={"dry_run": True}))
            real = await factories.touch(db, account_id, lead_id, channel="whatsapp")
            dry_row, real_row = await wait_terminal(db_url, dry), await wait_terminal(db_url, real)
        (request,) = fake.requests
    assert dry_row["status"] == "sent" and dry_row["payload"]["dryRun"] is True
    assert dry_row["payload"]["provider"] == "twilio"
    assert dry_row["payload"]["to"] == "whatsapp:+14155550000"
    assert dry_row["payload"]["provider_config"] == {"from": "whatsapp:+14155238886"}
    assert real_row["status"] == "sent"
    assert request.body["To"] == "whatsapp:+14155550000"  # QA sink, the real recipient stays in the payload
    (event,) = await events_of(db, real, "touch_sent")
    assert event["payload"]["real_recipient"] == "+14155550123"
