"""The completer (SPEC §11): outcomes written in batches, status and event together; a batch the database refuses
is written again one by one, so only the bad outcome loses its details and every neighbour keeps its own."""

from __future__ import annotations

import asyncio

from listener.engine.completer import Completer, Outcome
from listener.engine.reactions import drain_reactions
from listener.store.database import create_pool
from tests import factories
from tests.harness import daemon_settings, running_daemon

WORKER = "completer-test"


async def _claimed(db, n: int) -> list:
    account_id = await factories.account(db)
    ids = []
    for i in range(n):
        lead_id = await factories.lead(db, account_id, phone=f"+1415555{3000 + i}")
        ids.append(await factories.touch(db, account_id, lead_id, status="scheduled", scheduled_in_s=3600))
    await db.execute("update touch_runs set status = 'processing', locked_by = $2,"
                     " locked_until = now() + interval '1 minute' where id = any($1)", ids, WORKER)
    return ids


def _sent(touch_id, sid: str, patch: dict | None = None) -> Outcome:
    return Outcome(touch_id, "sent", "touch_sent", {"provider": "twilio", "provider_message_id": sid},
                   provider_message_id=sid, payload_patch=patch)


async def test_one_refused_outcome_leaves_its_neighbours_their_provider_ids(db, db_url):
    ids = await _claimed(db, 5)
    pool = await create_pool(db_url, min_size=1, max_size=2)
    try:
        completer = Completer(pool, WORKER)
        bad = {2: _sent(ids[2], "SMbad", patch={"note": "\u0000 is refused by jsonb"}),
               4: _sent(ids[4], "SMbad2", patch={"note": "a lone \ud800 surrogate cannot be encoded"})}
        batch = [bad.get(i) or _sent(ids[i], f"SM{i}") for i in range(5)]
        await completer.write(batch)
    finally:
        await pool.close()
    rows = {r["id"]: r for r in await db.fetch("select id, status, provider_message_id, locked_by from touch_runs"
                                                 " where id = any($1)", ids)}
    for i, touch_id in enumerate(ids):
        assert rows[touch_id]["status"] == "sent" and rows[touch_id]["locked_by"] is None
        assert rows[touch_id]["provider_message_id"] == (None if i in (2, 4) else f"SM{i}")
    events = {r["payload"]["touch_run_id"]: r["payload"] for r in await db.fetch(
        "select payload from core_memory_events where event_type = 'touch_sent'")}
    assert len(events) == 5
    assert "completion_error" in events[str(ids[2])] and "UntranslatableCharacter" in str(events[str(ids[2])])
    assert "completion_error" in events[str(ids[4])]
    assert completer.stats.split_batches == 1 and completer.stats.stripped == 2


async def test_outcomes_wait_while_the_database_is_unreachable_and_are_written_after(db, db_url):
    ids = await _claimed(db, 3)
    pool = await create_pool(db_url, min_size=1, max_size=1)
    stop = asyncio.Event()
    completer = Completer(pool, WORKER)
    try:
        async with pool.acquire() as held:  # the only connection is taken: the completer must wait, not drop
            task = asyncio.create_task(completer.run(stop))
            for i, touch_id in enumerate(ids):
                completer.put(_sent(touch_id, f"SMw{i}"))
            await asyncio.sleep(0)
            assert completer.backlog == 3
            assert await held.fetchval("select count(*) from touch_runs where id = any($1) and status = 'sent'",
                                       ids) == 0
        await completer.wait_idle()
        stop.set()
        await task
    finally:
        await pool.close()
    assert await db.fetchval("select count(*) from touch_runs where id = any($1) and status = 'sent'", ids) == 3


async def test_the_daemon_sessions_carry_time_limits(db, db_url):
    async with running_daemon(db_url, daemon_settings(None, statement_timeout_ms=12_000, lock_timeout_ms=3_000,
                                                      idle_in_transaction_timeout_ms=45_000)) as daemon:
        async with daemon.pool.acquire() as conn:
            limits = [await conn.fetchval(f"show {name}") for name in
                      ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")]
    assert limits == ["12s", "3s", "45s"]


async def test_one_expired_lease_the_database_refuses_does_not_stall_the_sweep(db, db_url):
    """A row written before a constraint existed (here: scheduled in year 20000, from before 0003) cannot be updated;
    the sweep settles every other expired lease one by one and names the one it cannot."""
    from listener.engine.sweeper import expire_leases

    ids = await _claimed(db, 3)
    await db.execute("update touch_runs set locked_until = now() - interval '1 minute' where id = any($1)", ids)
    await db.execute("alter table touch_runs drop constraint touch_runs_times_in_range")
    await db.execute("update touch_runs set scheduled_at = '20000-01-01' where id = $1", ids[1])
    await db.execute("alter table touch_runs add constraint touch_runs_times_in_range check"
                     " (scheduled_at between '0001-01-01' and '9999-12-31 23:59:59') not valid")
    pool = await create_pool(db_url, min_size=1, max_size=2)
    try:
        assert await expire_leases(pool) == 2
    finally:
        await pool.close()
    rows = {r["id"]: r["status"] for r in await db.fetch("select id, status from touch_runs where id = any($1)", ids)}
    assert rows == {ids[0]: "failed", ids[1]: "processing", ids[2]: "failed"}


async def test_the_decisions_after_a_batch_are_made_in_its_transaction_without_a_wake_up(db, db_url):
    """SPEC §17: the completer's one statement writes the outcomes, their events and the fallback decision after
    each: when it returns, every decision is there and no reaction is left filed, and no NOTIFY woke a reaction
    service for them (the completer made them)."""
    ids = await _claimed(db, 4)
    pool = await create_pool(db_url, min_size=1, max_size=2)
    woken: list[str] = []

    def on_notify(*args: object) -> None:
        woken.append(str(args[-1]))

    await db.add_listener("core_memory_events", on_notify)
    reacted = []
    try:
        completer = Completer(pool, WORKER, on_reacted=reacted.append)
        await completer.write([_sent(t, f"SMr{i}") for i, t in enumerate(ids)])
    finally:
        await pool.close()
    decisions = await db.fetch("select payload from core_memory_events where event_type = 'fallback_decision'")
    assert sorted(d["payload"]["touch_run_id"] for d in decisions) == sorted(map(str, ids))
    assert await db.fetchval("select count(*) from event_reactions") == 0
    assert [s.decisions for s in reacted] == [{"stop": 4}] and reacted[0].events == 4
    await db.execute("select pg_notify('core_memory_events', 'marker')")  # delivered after anything sent before
    for _ in range(100):
        if woken:
            break
        await asyncio.sleep(0.01)
    assert woken == ["marker"]
    await db.remove_listener("core_memory_events", on_notify)


async def test_a_decision_the_database_refuses_is_left_to_the_reaction_service_and_the_outcome_commits(db, db_url):
    """The completer's reaction part runs in a subtransaction: when it fails — here a follow-up touch a constraint
    forbids — the outcomes commit anyway, the reactions stay filed in event_reactions with a wake-up, and the
    reaction service isolates the bad one (set aside with its reason) while its neighbour's decision is made."""
    account_id = await factories.account(db)
    plan = {"order": ["sms"], "max_attempts": {"sms": 3}}
    ids = []
    for i, marker in enumerate(({}, {"legacy": 1})):
        lead_id = await factories.lead(db, account_id, phone=f"+1415555{4000 + i}")
        ids.append(await factories.touch(db, account_id, lead_id, status="scheduled", scheduled_in_s=3600,
                                         payload_={**factories.payload("sms", plan=plan), **marker}))
    await db.execute("update touch_runs set status = 'processing', locked_by = $2,"
                     " locked_until = now() + interval '1 minute' where id = any($1)", ids, WORKER)
    await db.execute("alter table touch_runs add constraint no_more_legacy check (payload ->> 'legacy' is null"
                     " or idempotency_key not like 'next:%') not valid")  # a legacy touch gets no follow-up
    pool = await create_pool(db_url, min_size=1, max_size=2)
    try:
        completer = Completer(pool, WORKER)
        failure = Outcome(ids[1], "failed", "touch_failed", {"error_code": "http_500", "failure_class": "transient"},
                          error="http_500: boom")
        await completer.write([_sent(ids[0], "SMok"), failure])
        assert completer.stats.reactions_deferred == 2 and completer.stats.written == 2
        assert await db.fetchval("select count(*) from event_reactions where failed_at is null") == 2
        assert await db.fetchval("select count(*) from core_memory_events where event_type = 'fallback_decision'") == 0
        stats = await drain_reactions(pool)
    finally:
        await pool.close()
    assert stats.decisions == {"retry_same_channel": 1}
    aside = await db.fetchrow("select * from event_reactions")
    assert aside["failed_at"] is not None and "no_more_legacy" in aside["error"]
    statuses = dict(await db.fetch("select id, status from touch_runs where id = any($1)", ids))
    assert statuses == {ids[0]: "sent", ids[1]: "failed"}
