"""outcome_unknown reconciled where the provider can tell (SPEC §11): the reconciler asks the (fake) provider what
became of a touch whose request may or may not have reached it, and writes one `touch_reconciled`."""

from __future__ import annotations

from listener.engine.jobs import run_job_on_pool
from listener.providers.sandbox import SandboxProviders
from listener.store.database import create_pool
from tests import factories
from tests.harness import daemon_settings, events_of, running_daemon, wait_terminal


async def _reconcile(db_url: str, settings) -> dict:
    pool = await create_pool(db_url, min_size=1, max_size=2)
    try:
        return await run_job_on_pool(pool, settings, "reconcile")
    finally:
        await pool.close()


async def _age(db, touch_id) -> None:  # the reconciler leaves a failure alone for its first 5 s
    await db.execute("update touch_runs set updated_at = updated_at - interval '10 seconds' where id = $1", touch_id)


async def test_a_timed_out_request_the_provider_accepted_is_reconciled_as_reached(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    async with SandboxProviders() as fake:
        settings = daemon_settings(fake, provider_timeout_s=0.5)
        async with running_daemon(db_url, settings):
            fake.script("slow:1.5")  # accepted, but answered after our read timeout
            touch_id = await factories.touch(db, account_id, lead_id)
            row = await wait_terminal(db_url, touch_id)
        assert row["status"] == "failed" and row["error"].startswith("outcome_unknown")
        await fake.wait_for_requests(1)
        (sid,) = [k for k in fake.created if k.startswith("SM")]
        await _age(db, touch_id)
        stats = await _reconcile(db_url, settings)
        assert stats["reached"] == 1
        (event,) = await events_of(db, touch_id, "touch_reconciled")
        assert event["payload"]["reached_provider"] is True
        assert event["payload"]["provider_message_id"] == sid and event["payload"]["provider_status"] == "queued"
        assert await db.fetchval("select provider_message_id from touch_runs where id = $1", touch_id) == sid
        again = await _reconcile(db_url, settings)  # concluded: never looked up again
        assert again["looked_up"] == 0 and len(await events_of(db, touch_id, "touch_reconciled")) == 1


async def test_a_request_that_never_reached_the_provider_is_reconciled_as_not_reached(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    other = await factories.lead(db, account_id, phone="+14155550188")
    async with SandboxProviders() as fake:
        settings = daemon_settings(fake, provider_timeout_s=0.5)
        async with running_daemon(db_url, settings):
            sent = await factories.touch(db, account_id, other)  # another message exists, to another number
            assert (await wait_terminal(db_url, sent))["status"] == "sent"
            fake.script("hang")  # never answers: the fake creates nothing
            touch_id = await factories.touch(db, account_id, lead_id)
            assert (await wait_terminal(db_url, touch_id))["error"].startswith("outcome_unknown")
        await _age(db, touch_id)
        assert (await _reconcile(db_url, settings))["not_reached"] == 1
        (event,) = await events_of(db, touch_id, "touch_reconciled")
        assert event["payload"]["reached_provider"] is False and event["payload"]["provider_status"] == "not_found"


async def test_an_expired_lease_with_a_known_sid_is_looked_up_by_that_sid(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    async with SandboxProviders() as fake:
        settings = daemon_settings(fake)
        async with running_daemon(db_url, settings):
            first = await factories.touch(db, account_id, lead_id)
            assert (await wait_terminal(db_url, first))["status"] == "sent"
        sid = await db.fetchval("select provider_message_id from touch_runs where id = $1", first)
        # a touch the sweep failed as outcome_unknown, whose sid had been recorded (written by hand here)
        touch_id = await factories.touch(db, account_id, lead_id, status="scheduled", scheduled_in_s=3600)
        await db.execute("update touch_runs set status = 'failed', error = 'outcome_unknown: lease expired',"
                         " provider_message_id = $2, updated_at = now() - interval '1 minute' where id = $1",
                         touch_id, sid)
        assert (await _reconcile(db_url, settings))["reached"] == 1
        (event,) = await events_of(db, touch_id, "touch_reconciled")
        assert event["payload"] == {**event["payload"], "reached_provider": True, "provider_message_id": sid}


async def test_an_email_without_any_id_is_noted_once_and_never_asked_again(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    async with SandboxProviders() as fake:
        settings = daemon_settings(fake, provider_timeout_s=0.5)
        async with running_daemon(db_url, settings):
            fake.script("hang")
            touch_id = await factories.touch(db, account_id, lead_id, channel="email")
            assert (await wait_terminal(db_url, touch_id))["error"].startswith("outcome_unknown")
        await _age(db, touch_id)
        assert (await _reconcile(db_url, settings))["not_reconcilable"] == 1
        assert await events_of(db, touch_id, "touch_reconciled") == []
        note = await db.fetchrow("select done, note from touch_reconciliations where touch_run_id = $1", touch_id)
        assert note["done"] is True and "transaction or message id" in note["note"]
        assert (await _reconcile(db_url, settings))["looked_up"] == 0
