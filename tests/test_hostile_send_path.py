"""Hostile input on the send path (SPEC §11, issue 10), for the dispatcher rewrite (issue 9). WIP: these fail on
the pre-rewrite code, and pass when
  * listener/store/database.py decodes jsonb/json with listener.rules.safejson.decode_jsonb (one line in _init_connection),
  * a failed completion batch is retried item by item,
  * the send transaction no longer waits on a lead row locked elsewhere (lock_timeout / no lead lock held across
    the provider call).
Each test names the neighbours that must be unaffected: sent, with their provider ids."""

from __future__ import annotations

import uuid

import asyncpg

from listener.providers.sandbox import SandboxProviders
from listener.store.database import connect
from tests import factories
from tests.harness import daemon_settings, running_daemon, wait_terminal, wait_until

DEEP = "[" * 2000 + "]" * 2000


async def _neighbours(db: asyncpg.Connection, account_id: uuid.UUID, n: int = 4) -> list[uuid.UUID]:
    lead_id = await factories.lead(db, account_id, full_name="Neighbour", phone="+14155550140")
    return [await factories.touch(db, account_id, lead_id, payload_=factories.payload("sms", body=f"vecino {i}"))
            for i in range(n)]


async def _assert_sent(db: asyncpg.Connection, touch_ids: list[uuid.UUID]) -> None:
    rows = await db.fetch("select status, provider_message_id from touch_runs where id = any($1::uuid[])", touch_ids)
    assert [(r["status"], bool(r["provider_message_id"])) for r in rows] == [("sent", True)] * len(touch_ids)


async def test_undecodable_payloads_fail_alone_in_their_batch(db, db_url):
    """Payload nested 2,000 deep / a 5,000-digit number: today the jsonb decoder (json.loads) raises inside the
    fetch of the batch, so every touch of the batch ends outcome_unknown after the lease, provider ids lost."""
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    bad = []
    async with db.transaction():
        neighbours = await _neighbours(db, account_id)
        for text in (DEEP, '{"message": "x", "n": ' + "9" * 5000 + "}"):
            bad.append(await db.fetchval("insert into touch_runs (account_id, lead_id, channel, payload)"
                                         " values ($1, $2, 'sms', $3::text::jsonb) returning id", account_id, lead_id,
                                         text))
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake)):
        for touch_id in [*neighbours, *bad]:
            await wait_terminal(db_url, touch_id)
    await _assert_sent(db, neighbours)
    for touch_id in bad:
        code = await db.fetchval("select payload->>'error_code' from core_memory_events where event_type ="
                                 " 'touch_failed' and payload->>'touch_run_id' = $1", str(touch_id))
        assert code == "invalid_payload"


async def test_a_failing_completion_keeps_the_neighbours_provider_ids(db, db_url):
    """One touch's completion cannot be written (here: a trigger refuses its update, standing in for any row-level
    failure). The provider accepted every touch of the batch; the neighbours must keep status sent and their ids."""
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id, phone="+14155550141")
    async with db.transaction():
        neighbours = await _neighbours(db, account_id)
        poison = await factories.touch(db, account_id, lead_id, payload_=factories.payload("sms", body="veneno"))
    await db.execute(f"""
        create function refuse_completion() returns trigger language plpgsql as $$
        begin raise exception 'completion refused for the test'; end $$;
        create trigger refuse_completion before update on touch_runs for each row
          when (new.id = '{poison}' and new.status = 'sent') execute function refuse_completion();""")
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake)):
        for touch_id in neighbours:
            await wait_terminal(db_url, touch_id)
    await _assert_sent(db, neighbours)


async def test_a_lead_row_locked_longer_than_the_lease_delays_only_its_own_touch(db, db_url):
    """The lead row is held FOR UPDATE by another session for longer than the lease, and its touch is claimed in the
    same batch as four neighbours: the neighbours must go out (with ids) while the lock is still held."""
    account_id = await factories.account(db)
    locked_lead = await factories.lead(db, account_id, phone="+14155550142")
    async with db.transaction():  # one batch: the locked lead's touch and its neighbours
        locked_touch = await factories.touch(db, account_id, locked_lead,
                                             payload_=factories.payload("sms", body="espera"))
        neighbours = await _neighbours(db, account_id)
    holder = await connect(db_url)
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("select 1 from leads where id = $1 for update", locked_lead)
        async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake, lease_s=3)):
            await wait_until(db_url, "select count(*) = 4 from touch_runs where id = any($1::uuid[])"
                                     " and status = 'sent'", neighbours, timeout=20)
            await transaction.rollback()
            row = await wait_terminal(db_url, locked_touch)
        await _assert_sent(db, neighbours)
        assert row["status"] in ("sent", "failed")  # its own outcome, whatever the rewrite decides
    finally:
        await holder.close()
