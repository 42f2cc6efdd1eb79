"""SPEC §16 end to end: real daemons (two where it matters), the embedded PostgreSQL and the sandbox providers.
No time is asserted except lower bounds (a pace can only make things slower); the latencies are printed in the
"measured" section."""

from __future__ import annotations

import asyncio
import contextlib
import time

from listener.providers.sandbox import SandboxProviders
from tests import factories
from tests.harness import daemon_settings, running_daemon, wait_until

BACKLOG = 4_000


async def _backlog(db, account_id, n, channel="sms"):
    lead_id = await factories.lead(db, account_id, phone="+14155550199", email="many@example.com")
    await db.execute(
        """insert into touch_runs (account_id, lead_id, channel, status, payload)
           select $1, $2, $3, 'queued', $4 from generate_series(1, $5)""",
        account_id, lead_id, channel, factories.payload(channel), n)  # one transaction, as a campaign launch


async def _pace(db, account_id, channel, **config):
    return await db.fetchval("update account_provider_settings set config = config || $3::jsonb"
                             " where account_id = $1 and channel = $2 and is_default returning id",
                             account_id, channel, config)


async def test_another_accounts_touch_goes_out_while_a_backlog_drains_on_two_daemons(db, db_url, record_property):
    launch = await factories.account(db, "Launch")
    clinic = await factories.account(db, "Clinic")
    clinic_leads = [await factories.lead(db, clinic, phone=f"+1415555{i:04d}") for i in range(5)]
    await _backlog(db, launch, BACKLOG)
    async with SandboxProviders() as fake, contextlib.AsyncExitStack() as stack:
        fake.set_mode(delay_ms=2)
        for i in range(2):
            await stack.enter_async_context(running_daemon(db_url, daemon_settings(fake, concurrency=16,
                                                                                   worker_id=f"fair-{i}")))
        await wait_until(db_url, "select count(*) >= 200 from touch_runs where status = 'sent'")  # under way
        committed = time.monotonic()
        trickle = [await factories.touch(db, clinic, lead_id) for lead_id in clinic_leads]
        await wait_until(db_url, "select bool_and(status = 'sent') from touch_runs where id = any($1::uuid[])",
                         trickle)
        latency_ms = (time.monotonic() - committed) * 1000
        left = await db.fetchval("select count(*) from touch_runs where account_id = $1 and status = 'queued'",
                                 launch)
        # the clinic did not wait for the launch: most of the backlog was still queued when its touches were sent
        assert left >= BACKLOG // 2, left
    record_property("measured", f"fair claim, 2 daemons × concurrency 16: another account's 5 touches sent "
                                f"{latency_ms:.0f} ms after commit, {left} of the {BACKLOG:,}-touch backlog still "
                                f"queued")


async def test_a_stop_event_cancels_a_touch_waiting_for_pace_with_no_request(db, db_url):
    account_id = await factories.account(db)
    await _pace(db, account_id, "sms", max_per_second=0.2)  # one request per 5 s
    first_lead = await factories.lead(db, account_id, phone="+14155550111")
    waiting_lead = await factories.lead(db, account_id, phone="+14155550112")
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake)):
        first = await factories.touch(db, account_id, first_lead)
        await wait_until(db_url, "select status = 'sent' from touch_runs where id = $1", first)
        waiting = await factories.touch(db, account_id, waiting_lead)
        # it waits for the sender's pace in the database: queued, no lease, no event beyond its scheduling
        assert await db.fetchval("select status from touch_runs where id = $1", waiting) == "queued"
        await factories.event(db, waiting_lead, "unsubscribe")
        await wait_until(db_url, "select status = 'canceled' from touch_runs where id = $1", waiting)
        assert [r.to for r in fake.requests] == ["+14155550111"]
    events = [r["event_type"] for r in await db.fetch(
        "select event_type from core_memory_events where payload->>'touch_run_id' = $1 order by created_at",
        str(waiting))]
    assert events == ["touch_scheduled", "touch_canceled"]


async def test_a_paced_sender_does_not_delay_email_of_the_same_account(db, db_url, record_property):
    account_id = await factories.account(db)
    await _pace(db, account_id, "sms", max_per_second=1)
    await _backlog(db, account_id, 500)
    lead_id = await factories.lead(db, account_id, phone="+14155550113", email="ana@example.com")
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake)):
        await wait_until(db_url, "select count(*) >= 1 from touch_runs where status = 'sent'")
        committed = time.monotonic()
        emails = [await factories.touch(db, account_id, lead_id, channel="email") for _ in range(3)]
        await wait_until(db_url, "select bool_and(status = 'sent') from touch_runs where id = any($1::uuid[])",
                         emails)
        latency_ms = (time.monotonic() - committed) * 1000
        sms_sent = await db.fetchval("select count(*) from touch_runs where channel = 'sms' and status = 'sent'")
        assert sms_sent <= 1 + (time.monotonic() - committed) + 1  # at its pace, never faster
        assert await db.fetchval("select count(*) from touch_runs where channel = 'sms' and status = 'queued'") >= 490
        assert sum(1 for r in fake.requests if r.kind == "email") == 3
    record_property("measured", f"a 1/s sender holding 500 due touches: the same account's e-mail sent "
                                f"{latency_ms:.0f} ms after commit")


async def test_a_paced_sender_across_two_daemons_never_goes_faster_than_its_rate(db, db_url, record_property):
    rate, n = 10.0, 31
    account_id = await factories.account(db)
    await _pace(db, account_id, "sms", max_per_second=rate)
    await _backlog(db, account_id, n)
    async with SandboxProviders() as fake, contextlib.AsyncExitStack() as stack:
        daemons = [await stack.enter_async_context(running_daemon(db_url, daemon_settings(fake, worker_id=f"p-{i}")))
                   for i in range(2)]
        await wait_until(db_url, "select count(*) = $1 from touch_runs where status = 'sent'", n, timeout=30)
        times = sorted(r.received_at_mono for r in fake.requests)
        claimed = [d.dispatcher.stats.claimed for d in daemons if d.dispatcher is not None]
    span = times[-1] - times[0]
    # the k-th claim comes no earlier than first moment + k / rate, and the first at most one interval after its
    # moment (the pace keeps its schedule): n requests need (n - 2) / rate seconds at least, less the jitter between
    # a claim and its request
    assert span >= (n - 2) / rate - 0.15, span
    assert sum(claimed) == n
    record_property("measured", f"a {rate:g}/s sender over 2 daemons: {n} requests in {span:.2f} s "
                                f"(observed {(n - 1) / span:.2f}/s; claims per daemon {claimed})")


async def test_a_429_is_obeyed_and_slows_the_sender_for_every_daemon(db, db_url):
    account_id = await factories.account(db)
    settings_id = await _pace(db, account_id, "sms", max_per_second=8)
    lead_id = await factories.lead(db, account_id)
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake, lease_s=30)):
        fake.script("rate_limit:1")  # the first answer: 429, Retry-After: 1
        touch_id = await factories.touch(db, account_id, lead_id)
        await wait_until(db_url, "select status = 'sent' from touch_runs where id = $1", touch_id)
        first, retry = fake.requests[0], fake.requests[1]
    assert first.status == 429 and retry.status in (200, 201)
    assert retry.received_at_mono - first.received_at_mono >= 1.0  # Retry-After obeyed
    pacing = await db.fetchrow("select pushback_rate, pushback_from, pushback_until > now() as in_force, pushbacks"
                               " from sender_pacing where settings_id = $1", settings_id)
    assert dict(pacing) == {"pushback_rate": 4.0, "pushback_from": 8.0, "in_force": True, "pushbacks": 1}
    assert await db.fetchval("select sender_effective_rate(8, pushback_rate, pushback_from, pushback_until, now())"
                             " from sender_pacing where settings_id = $1", settings_id) == 4.0


async def test_an_unpaced_sender_drains_without_touching_the_pacing_rows(db, db_url):
    account_id = await factories.account(db)
    await _backlog(db, account_id, 300)
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake)):
        await wait_until(db_url, "select count(*) = 300 from touch_runs where status = 'sent'")
        assert len(fake.requests) == 300
    assert await db.fetchval("select count(*) from sender_pacing where next_at is not null"
                             " or pushback_until is not null") == 0


async def test_quota_loop_claims_again_at_once(db, db_url):
    """A sender that gave its whole share tells the dispatcher more is due: a lone backlog drains without
    waiting for a NOTIFY or the sweep, although each claim is shared with another account's trickle."""
    first = await factories.account(db, "First")
    second = await factories.account(db, "Second")
    await _backlog(db, first, 200)
    await _backlog(db, second, 3)
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake, sweep_interval_s=60)):
        await asyncio.wait_for(wait_until(db_url, "select count(*) = 203 from touch_runs where status = 'sent'"),
                               timeout=30)
        assert len(fake.requests) == 203
