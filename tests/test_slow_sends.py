"""SPEC §11: a slow or hanging send delays only its own touch. Slots are counted per touch, outcomes are written as
each provider call ends, and no transaction stays open across a provider call."""

from __future__ import annotations

from listener.providers.sandbox import SandboxProviders
from tests import factories
from tests.harness import daemon_settings, running_daemon, wait_terminal, wait_until

HELD = "+14155550999"


async def test_twenty_touches_are_sent_while_one_request_is_held_with_two_slots(db, db_url):
    account_id = await factories.account(db)
    slow_lead = await factories.lead(db, account_id, phone=HELD)
    leads = [await factories.lead(db, account_id, phone=f"+1415555{1000 + i}") for i in range(20)]
    async with SandboxProviders() as fake, \
            running_daemon(db_url, daemon_settings(fake, concurrency=2, lease_s=60)) as daemon:
        fake.rule(to=HELD, mode="hold")  # the provider keeps this request until the test releases it
        slow = await factories.touch(db, account_id, slow_lead)
        await fake.wait_for_requests(1)
        others = [await factories.touch(db, account_id, lead_id) for lead_id in leads]
        await wait_until(db_url, "select count(*) = 20 from touch_runs where id = any($1) and status = 'sent'",
                         others)
        # every other touch is sent and recorded while the held one is still in flight, on one free slot
        assert await db.fetchval("select status from touch_runs where id = $1", slow) == "processing"
        assert daemon.dispatcher.in_flight == 1
        fake.release()
        assert (await wait_terminal(db_url, slow))["status"] == "sent"
    assert len(fake.requests) == 21


async def test_retries_inside_the_lease_hold_one_slot_only(db, db_url):
    account_id = await factories.account(db)
    # the 429s slow their own sender for every daemon (SPEC §16): the refused touch belongs to another account,
    # so this test sees only the slots
    refused_account = await factories.account(db, "Refused")
    slow_lead = await factories.lead(db, refused_account, phone=HELD)
    leads = [await factories.lead(db, account_id, phone=f"+1415555{2000 + i}") for i in range(10)]
    async with SandboxProviders() as fake, \
            running_daemon(db_url, daemon_settings(fake, concurrency=2, lease_s=60)):
        fake.rule(to=HELD, mode="rate_limit:2")  # refused with Retry-After: 2, again and again
        slow = await factories.touch(db, refused_account, slow_lead)
        await fake.wait_for_requests(1)
        others = [await factories.touch(db, account_id, lead_id) for lead_id in leads]
        await wait_until(db_url, "select count(*) = 10 from touch_runs where id = any($1) and status = 'sent'",
                         others)
        assert await db.fetchval("select status from touch_runs where id = $1", slow) == "processing"
        fake.rule(to=HELD, mode=None)
        assert (await wait_terminal(db_url, slow, timeout=30))["status"] == "sent"
