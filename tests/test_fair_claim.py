"""SPEC §16 at the claim: the slots are shared among the senders (account, channel) that have due touches, oldest
due first within each; a paced sender gives at most what its pace allows, held in sender_pacing for every daemon.
These tests call the claim statement itself (Q.claim_touches_with_context), as a daemon does."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter

import asyncpg
import pytest

from listener.engine.statistics import refresh_planner_statistics
from listener.store.database import connect, create_pool
from listener.store.plans import explain_function
from listener.store.queries import Q
from tests import factories

WORKER = "test-claim"


async def claim(conn: asyncpg.Connection, limit: int, cursor: tuple[uuid.UUID, str] | None = None,
                worker: str = WORKER) -> list[asyncpg.Record]:
    account, channel = cursor if cursor is not None else (None, None)
    return await conn.fetch(Q.claim_touches_with_context, worker, 120, limit, account, channel)


async def backlog(conn: asyncpg.Connection, account_id: uuid.UUID, n: int, *, channel: str = "sms",
                  ago_s: float = 60.0) -> list[uuid.UUID]:
    """n due touches of one lead of the account, the oldest first (scheduled ago_s … ago_s - n ms ago)."""
    lead_id = await factories.lead(conn, account_id)
    rows = await conn.fetch(
        """insert into touch_runs (account_id, lead_id, channel, status, scheduled_at, payload)
           select $1, $2, $3, 'queued', now() - make_interval(secs => $4 - i / 1000.0), $5
           from generate_series(1, $6) as i returning id""",
        account_id, lead_id, channel, ago_s, factories.payload(channel), n)
    return [r["id"] for r in rows]


async def pace(conn: asyncpg.Connection, account_id: uuid.UUID, channel: str, **config: float) -> uuid.UUID:
    settings_id: uuid.UUID = await conn.fetchval(
        "update account_provider_settings set config = config || $3::jsonb"
        " where account_id = $1 and channel = $2 and is_default returning id", account_id, channel, config)
    return settings_id


async def test_a_backlog_of_one_account_shares_the_batch_with_another(db):
    big = await factories.account(db, "Big launch")
    small = await factories.account(db, "Small clinic")
    big_touches = await backlog(db, big, 500, ago_s=600)  # older than anything of the small account
    small_touches = await backlog(db, small, 3, ago_s=1)
    rows = await claim(db, 10)
    by_account = Counter(r["account_id"] for r in rows)
    assert by_account == {big: 5, small: 3}  # each account's share is half the batch
    # within an account, oldest due first
    assert {r["id"] for r in rows if r["account_id"] == big} == set(big_touches[:5])
    assert {r["id"] for r in rows if r["account_id"] == small} == set(small_touches)
    # the big account gave its whole share: more is due, and the dispatcher claims again at once
    assert all(r["more_due"] for r in rows if r["account_id"] == big)
    assert not any(r["more_due"] for r in rows if r["account_id"] == small)
    again = await claim(db, 10)
    assert {r["id"] for r in again} == set(big_touches[5:15])


async def test_one_slot_at_a_time_alternates_between_accounts(db):
    first = await factories.account(db, "First")
    second = await factories.account(db, "Second")
    await backlog(db, first, 50, ago_s=600)
    await backlog(db, second, 50, ago_s=1)
    served, cursor = [], None
    for _ in range(6):
        (row,) = await claim(db, 1, cursor)
        served.append(row["account_id"])
        cursor = (row["account_id"], row["channel"])
    assert Counter(served) == {first: 3, second: 3}
    assert all(a != b for a, b in zip(served, served[1:], strict=False))  # strictly alternating


async def test_senders_of_one_account_share_its_part(db):
    account_id = await factories.account(db)
    other = await factories.account(db, "Other")
    await backlog(db, account_id, 100, channel="sms", ago_s=600)
    emails = await backlog(db, account_id, 100, channel="email", ago_s=300)
    await backlog(db, other, 100, channel="sms", ago_s=60)
    rows = await claim(db, 8)
    shares = Counter((r["account_id"], r["channel"]) for r in rows)
    assert shares == {(account_id, "sms"): 2, (account_id, "email"): 2, (other, "sms"): 4}
    assert {r["id"] for r in rows if r["channel"] == "email"} == set(emails[:2])


async def test_an_idle_account_costs_the_claim_nothing(db):
    """Accounts without open touches are never visited: the claim walks touch_runs_open_by_sender only."""
    await db.execute(
        """with a as (insert into accounts (name) select 'Idle ' || i from generate_series(1, 3000) i returning id),
                s as (insert into account_provider_settings (account_id, channel, provider, is_default, config)
                      select a.id, c, case when c = 'email' then 'elasticemail' else 'twilio' end, true,
                             '{"from": "+15005550006", "max_per_second": 1}'
                      from a, unnest(array['sms', 'email']) c returning account_id),
                l as (insert into leads (account_id, full_name, phone) select id, 'Idle', '+14155550100' from a
                      returning id, account_id)
           insert into touch_runs (account_id, lead_id, channel, status, payload)
           select account_id, id, 'sms', 'sent', '{}' from l""")
    busy = await factories.account(db, "Busy")
    await backlog(db, busy, 5)
    await db.execute("analyze")
    plan = "\n".join(await explain_function(db, "claim_touches_with_context", (WORKER, 120.0, 10, None, None),
                                             analyze=True, options="costs off, timing off, summary off"))
    assert len(await claim(db, 10)) == 5  # the explained claim was rolled back
    # the walk finds the one sender with open touches; nothing reads every account, sender or touch
    assert re.search(r"Recursive Union \(actual rows=1(\.00)? loops=1\)", plan), plan
    for table in ("touch_runs", "account_provider_settings", "sender_pacing", "accounts", "leads"):
        assert f"Seq Scan on {table} " not in plan, plan
    # at most a lead's own touches of its step (the cadence start), whatever the number of accounts
    assert max(float(m) for m in re.findall(r"actual rows=([0-9.]+)", plan)) <= 10, plan


async def test_a_paced_sender_gives_one_touch_per_interval_and_its_email_goes_on(db):
    account_id = await factories.account(db)
    settings_id = await pace(db, account_id, "sms", max_per_second=1)
    await backlog(db, account_id, 50, channel="sms", ago_s=600)
    emails = await backlog(db, account_id, 5, channel="email", ago_s=1)
    rows = await claim(db, 16)
    assert Counter(r["channel"] for r in rows) == {"sms": 1, "email": 5}
    assert {r["id"] for r in rows if r["channel"] == "email"} == set(emails)
    next_at = await db.fetchval("select next_at - now() from sender_pacing where settings_id = $1", settings_id)
    assert 0.9 < next_at.total_seconds() <= 1.0
    assert await claim(db, 16) == []  # waiting for pace: nothing claimed, the touches stay queued
    assert await db.fetchval("select count(*) from touch_runs where channel = 'sms' and status = 'queued'") == 49
    assert await db.fetchval("select count(*) from core_memory_events where event_type not in"
                             " ('touch_scheduled')") == 0  # waiting writes no event
    await db.execute("update sender_pacing set next_at = now() - interval '1 ms' where settings_id = $1", settings_id)
    assert len(await claim(db, 16)) == 1


async def test_a_paced_sender_is_shared_by_racing_claims(db_url, db):
    account_id = await factories.account(db)
    await pace(db, account_id, "sms", max_per_second=2)
    await backlog(db, account_id, 40)
    conns = [await connect(db_url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(claim(c, 8, worker=f"w{i}") for i, c in enumerate(conns)))
    finally:
        for c in conns:
            await c.close()
    assert sum(len(r) for r in results) == 1  # one request per 1/rate seconds, whoever claims


async def test_max_in_flight_bounds_processing_touches(db):
    account_id = await factories.account(db)
    settings_id = await pace(db, account_id, "sms", max_in_flight=3)
    await backlog(db, account_id, 20)
    assert len(await claim(db, 10)) == 3
    assert await claim(db, 10) == []
    assert await db.fetchval("select count(*) from touch_runs where provider_settings_id = $1"
                             " and status = 'processing'", settings_id) == 3
    await db.execute("update touch_runs set status = 'sent', locked_by = null where id = (select id from touch_runs"
                     " where status = 'processing' limit 1)")
    assert len(await claim(db, 10)) == 1


@pytest.mark.parametrize("config", [{"max_per_second": 0}, {"max_per_second": -1}, {"max_per_second": "5"},
                                    {"max_in_flight": 0}, {"max_in_flight": 2.5}, {"max_in_flight": "3"}])
async def test_a_bad_pace_is_refused_where_it_is_written(db, config):
    account_id = await factories.account(db)
    with pytest.raises(asyncpg.CheckViolationError, match="max_(per_second_positive|in_flight_positive)"):
        await pace(db, account_id, "sms", **config)


async def test_pushback_halves_the_rate_once_per_burst_and_climbs_back(db):
    account_id = await factories.account(db)
    settings_id = await pace(db, account_id, "sms", max_per_second=10)
    first = await db.fetchrow(Q.sender_pushback, settings_id, account_id, "sms")
    assert first["pushback_rate"] == 5.0 and first["pushback_from"] == 10.0
    again = await db.fetchrow(Q.sender_pushback, settings_id, account_id, "sms")  # the same burst
    assert again["pushback_rate"] == 5.0
    await db.execute("update sender_pacing set pushback_at = now() - interval '2 seconds' where settings_id = $1",
                     settings_id)
    later = await db.fetchrow(Q.sender_pushback, settings_id, account_id, "sms")
    assert later["pushback_rate"] == 2.5 and later["pushback_from"] == 10.0
    rates = await db.fetchrow(
        """select sender_effective_rate(10, 2.5, 10, now() + interval '60 seconds', now() + interval '30 seconds')
                    as during,
                  sender_effective_rate(10, 2.5, 10, now() + interval '60 seconds', now() + interval '90 seconds')
                    as climbing,
                  sender_effective_rate(10, 2.5, 10, now() + interval '60 seconds', now() + interval '121 seconds')
                    as back,
                  sender_effective_rate(null, 2.5, 5, now() + interval '60 seconds', now() + interval '121 seconds')
                    as unpaced_again""")
    assert rates["during"] == 2.5 and 2.5 < rates["climbing"] < 10 and rates["back"] == 10
    assert rates["unpaced_again"] is None


async def test_pushback_of_an_unpaced_sender_starts_from_its_measured_rate(db):
    account_id = await factories.account(db)
    settings_id = await db.fetchval("select id from account_provider_settings where account_id = $1"
                                    " and channel = 'sms'", account_id)
    lead_id = await factories.lead(db, account_id)
    await db.execute(
        """insert into touch_runs (account_id, lead_id, channel, status, sent_at, payload)
           select $1, $2, 'sms', 'sent', now() - interval '2 seconds', '{}' from generate_series(1, 60)""",
        account_id, lead_id)
    row = await db.fetchrow(Q.sender_pushback, settings_id, account_id, "sms")
    assert row["pushback_from"] == 6.0 and row["pushback_rate"] == 3.0  # 60 in the last 10 s
    await backlog(db, account_id, 10)
    assert len(await claim(db, 10)) == 1  # paced now, at 3/s


HISTORY_TABLES = ("touch_runs", "core_memory_events", "leads", "lead_enriched")
CONFIG_TABLES = ("account_provider_settings", "sender_pacing")
KEYED = ("lead_id =", "(id =", "account_id =", "provider_settings_id =", "settings_id =", "ROW(account_id, channel) >")


def unkeyed_scans(plan: list[str], tables: tuple[str, ...]) -> list[str]:
    """The plan's scans of `tables` that are not a probe by a key of the claimed rows (the lead, the touch, the
    sender): each with its conditions."""
    found = []
    pattern = re.compile(r"Scan.* on ({})\b".format("|".join(tables)))
    for i, line in enumerate(plan):
        if not pattern.search(line):
            continue
        if "touch_runs_open_by_sender" in line and "Index Only Scan" in line:
            continue  # the loose index scan's ordered first probe (limit 1)
        conditions = "\n".join(c for c in plan[i + 1:i + 4] if "Cond:" in c)
        if not any(key in conditions for key in KEYED):
            found.append(f"{line.strip()}\n{conditions}")
    return found


async def test_the_claims_plan_is_made_once_and_planned_again_when_the_history_outgrows_its_statistics(db, db_url):
    """SPEC §17: the claim is planned once per connection (a generic plan, force_generic_plan), and PostgreSQL plans
    it again only when statistics change. A plan made on an empty, analysed database cannot tell a probe by key
    from reading a one-page table whole; after a bulk load the statistics service analyses every table that
    outgrew its statistics, and the plan made then probes every table of the history by a key of the claimed rows
    (the lead, the touch, the sender) — no seq scan, no hash or merge join, no index walked in time order and
    filtered by lead. (Caught the out-of-office index keyed by time, sql/0017_claim_plan_once.sql.)"""
    config = await db.fetchval("select proconfig from pg_proc where proname = 'claim_touches_with_context'")
    assert "plan_cache_mode=force_generic_plan" in config
    await db.execute("analyze")  # the statistics of an empty database
    young = await explain_function(db, "claim_touches_with_context", (WORKER, 120.0, 64, None, None))
    assert unkeyed_scans(young, HISTORY_TABLES) != []  # what the statistics service is for
    account_id = await factories.account(db)  # young: one account, one lead with a backlog and a history
    await backlog(db, account_id, 2000, ago_s=600)
    await db.execute("""insert into core_memory_events (lead_id, event_type, direction, payload)
                        select lead_id, e, 'inbound', '{}' from touch_runs,
                        unnest(array['reply_received', 'reply_out_of_office', 'opened']) e""")
    await db.execute("""insert into leads (account_id, full_name, phone) select $1, 'Lead ' || i, '+14155550100'
                        from generate_series(1, 4000) i""", account_id)
    pool = await create_pool(db_url, min_size=1, max_size=1)
    try:
        analysed = await refresh_planner_statistics(pool)
    finally:
        await pool.close()
    assert {"touch_runs", "core_memory_events", "leads"} <= set(analysed)
    plan = await explain_function(db, "claim_touches_with_context", (WORKER, 120.0, 64, None, None))
    text = "\n".join(plan)
    assert "Seq Scan" not in text and "Hash Join" not in text and "Merge Join" not in text, text
    assert len([line for line in plan if re.search(r"Scan.* on ({})\b".format("|".join(HISTORY_TABLES)), line)]) > 10
    assert unkeyed_scans(plan, HISTORY_TABLES) == [], "\n\n".join(unkeyed_scans(plan, HISTORY_TABLES))


async def test_a_config_table_that_outgrows_its_statistics_is_analysed_and_the_claim_planned_again(db, db_url):
    """The small tables a plan made on a young database may read whole (account_provider_settings, sender_pacing:
    one row per sender) are analysed by the statistics service as soon as they pass twice the size their
    statistics saw, and the claim's next plan probes them by key (ANALYZE makes every session plan again)."""
    await db.execute("analyze")
    assert unkeyed_scans(await explain_function(db, "claim_touches_with_context", (WORKER, 120.0, 64, None, None)),
                         CONFIG_TABLES) != []  # young: the tie between a probe and a whole read of one page
    await db.execute(
        """with a as (insert into accounts (name) select 'Onboarded ' || i from generate_series(1, 3000) i
                      returning id)
           insert into account_provider_settings (account_id, channel, provider, is_default, config)
           select a.id, c, case when c = 'email' then 'elasticemail' else 'twilio' end, true,
                  '{"from": "+15005550006", "max_per_second": 1}'
           from a, unnest(array['sms', 'email']) c""")
    pool = await create_pool(db_url, min_size=1, max_size=1)
    try:
        assert "account_provider_settings" in await refresh_planner_statistics(pool)
        assert "account_provider_settings" not in await refresh_planner_statistics(pool)  # in step now
    finally:
        await pool.close()
    plan = await explain_function(db, "claim_touches_with_context", (WORKER, 120.0, 64, None, None))
    assert unkeyed_scans(plan, ("account_provider_settings",)) == [], "\n".join(plan)


async def test_a_burst_into_an_analysed_queue_gets_fresh_statistics(db, db_url):
    """Statistics taken while the table held 1,500 finished touches (not a tiny table) say "no open touch"; 2,000
    queued ones arrive in one transaction. The statistics service analyses touch_runs once the change is reported
    (it changed more than its rows since its last ANALYZE), and not again after."""
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    await db.execute("""insert into touch_runs (account_id, lead_id, channel, status, payload)
                        select $1, $2, 'sms', 'sent', $3 from generate_series(1, 1500)""",
                     account_id, lead_id, factories.payload("sms"))
    await db.execute("analyze touch_runs")
    assert await db.fetchval("select relpages from pg_class where relname = 'touch_runs'") >= 16
    await backlog(db, account_id, 2000)
    await db.execute("select pg_stat_force_next_flush()")  # the insert's counts reported when this session idles
    pool = await create_pool(db_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            for _ in range(200):  # the report is asynchronous: at most a few tenths of a second
                if await conn.fetchval("select n_mod_since_analyze from pg_stat_user_tables"
                                       " where relname = 'touch_runs'") >= 2000:
                    break
                await asyncio.sleep(0.02)
        assert "touch_runs" in await refresh_planner_statistics(pool)
        assert "touch_runs" not in await refresh_planner_statistics(pool)
    finally:
        await pool.close()
    status = await db.fetchval("select most_common_vals::text from pg_stats where tablename = 'touch_runs'"
                               " and attname = 'status'")
    assert "queued" in status
