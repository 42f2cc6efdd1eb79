"""`revenue-asi reactions retry`: reactions set aside after they raised are queued again by the operator, and the
reaction then happens once."""

from __future__ import annotations

import uuid

from listener.engine.reactions import drain_reactions
from listener.store.database import create_pool
from tests import factories
from tests.cli_runner import cli, cli_env


async def _set_aside(db, lead_id, event_type: str) -> uuid.UUID:
    event_id = await factories.event(db, lead_id, event_type)
    await db.execute("update event_reactions set failed_at = now(), attempts = 5, error = 'RuntimeError: boom'"
                     " where event_id = $1", event_id)
    return event_id


async def test_retry_requeues_what_was_set_aside_and_the_reaction_then_happens(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    other = await factories.lead(db, account_id, phone="+14155550188")
    open_touch = await factories.touch(db, account_id, lead_id, status="scheduled", scheduled_in_s=3600)
    first = await _set_aside(db, lead_id, "unsubscribe")
    second = await _set_aside(db, other, "do_not_contact")
    env = cli_env(db_url)

    refused = await cli("reactions", "retry", env=env)
    assert refused.rc == 2 and "--all" in refused.err
    bad = await cli("reactions", "retry", "not-a-uuid", env=env)
    assert bad.rc == 2

    one = await cli("reactions", "retry", str(first), str(uuid.uuid4()), env=env)
    assert one.rc == 1 and "requeued 1 reaction(s)" in one.out and "not set aside" in one.err
    row = await db.fetchrow("select failed_at, retry_at, attempts, error from event_reactions where event_id = $1",
                            first)
    assert tuple(row) == (None, None, 0, None)
    assert await db.fetchval("select failed_at is not null from event_reactions where event_id = $1", second)

    pool = await create_pool(db_url)
    try:
        stats = await drain_reactions(pool)
    finally:
        await pool.close()
    assert stats.touches_canceled == 1
    assert await db.fetchval("select status from touch_runs where id = $1", open_touch) == "canceled"
    assert await db.fetchval("select count(*) from event_reactions where event_id = $1", first) == 0

    everything = await cli("reactions", "retry", "--all", env=env)
    assert everything.rc == 0 and "requeued 1 reaction(s)" in everything.out
    nothing = await cli("reactions", "retry", "--all", env=env)
    assert nothing.rc == 0 and "no reaction set aside" in nothing.out
