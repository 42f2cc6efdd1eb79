"""Real-time dispatch against the embedded PostgreSQL and the sandbox providers (issue 3)."""

from __future__ import annotations

from datetime import UTC, datetime

from listener.providers.sandbox import SandboxProviders
from tests import factories
from tests.harness import daemon_settings, events_of, running_daemon, wait_terminal


async def test_due_touch_is_sent_on_insert(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake)):
        touch_id = await factories.touch(db, account_id, lead_id, channel="sms")
        requests = await fake.wait_for_requests(1)
        row = await wait_terminal(db_url, touch_id)
    assert row["status"] == "sent"
    assert row["provider_message_id"].startswith("SM")
    assert row["sent_at"] is not None and row["locked_by"] is None
    assert requests[0].to == "+14155550123"
    assert requests[0].body["Body"] == "Hola John"
    (event,) = await events_of(db, touch_id, "touch_sent")
    assert event["payload"]["provider_message_id"] == row["provider_message_id"]
    assert event["direction"] == "outbound" and event["channel"] == "sms"


async def test_scheduled_touch_waits_for_its_time(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake, sweep_interval_s=30)):
        touch_id = await factories.touch(db, account_id, lead_id, status="scheduled", scheduled_in_s=1.0)
        scheduled_at = await db.fetchval("select scheduled_at from touch_runs where id = $1", touch_id)
        (request,) = await fake.wait_for_requests(1)
        row = await wait_terminal(db_url, touch_id)
    assert row["status"] == "sent"
    # causal, not a timing threshold: the provider never saw it before it was due
    assert datetime.fromtimestamp(request.received_at_wall, UTC) >= scheduled_at
