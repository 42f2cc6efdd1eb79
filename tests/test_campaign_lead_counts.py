"""Cadences by status (0008): the counts the triggers keep equal a count of the table after any mix of inserts,
status changes, deletes, folds and concurrent transactions — and the status query reads them, not the table."""

from __future__ import annotations

import asyncio
import random

import pytest

from listener.store.database import connect
from listener.store.queries import Q
from tests import factories

EXACT = "select coalesce(jsonb_object_agg(status, n order by status), '{}'::jsonb) from " \
        "(select status, count(*)::bigint as n from campaign_leads group by status) s"


class Rollback(Exception):
    pass


async def kept(db) -> dict:
    return dict(await db.fetchval("select campaign_leads from (" + Q.status_cadences + ") s"))


async def exact(db) -> dict:
    return dict(await db.fetchval(EXACT))


async def _campaigns(db, account_id, n: int) -> list:
    return [await db.fetchval("insert into campaigns (account_id, name, message_class) values ($1, $2, 'cold_outreach')"
                              " returning id", account_id, f"C{i}") for i in range(n)]


async def test_counts_follow_inserts_updates_deletes_and_folds(db):
    rng = random.Random(8)
    account_id = await factories.account(db)
    leads = [await factories.lead(db, account_id) for _ in range(30)]
    campaigns = await _campaigns(db, account_id, 3)
    assert await kept(db) == {} == await exact(db)
    await db.execute("insert into campaign_leads (campaign_id, lead_id) select c, l from unnest($1::uuid[]) c, "
                     "unnest($2::uuid[]) l", campaigns, leads)
    assert await kept(db) == await exact(db) == {"active": 90}
    for step in range(40):
        action = rng.choice(["update", "update", "delete", "fold", "noop_update"])
        if action == "update":
            await db.execute("update campaign_leads set status = $1 where id in (select id from campaign_leads "
                             "order by random() limit $2)", rng.choice(["active", "paused", "completed", "stopped"]),
                             rng.randint(1, 20))
        elif action == "noop_update":  # a change that keeps the status (the step) changes no count
            await db.execute("update campaign_leads set current_step = current_step + 1 where status = 'active'")
        elif action == "delete":
            await db.execute("delete from campaign_leads where id in (select id from campaign_leads "
                             "order by random() limit 3)")
        else:
            await db.execute(Q.fold_campaign_lead_counts)
            assert await db.fetchval("select count(*) from campaign_lead_count_deltas") == 0
        assert await kept(db) == await exact(db), (step, action)
    before = await exact(db)
    with pytest.raises(Rollback):
        async with db.transaction():  # rolled back: neither the change nor its delta stays
            await db.execute("update campaign_leads set status = 'stopped'")
            assert await kept(db) == {"stopped": sum(before.values())}
            raise Rollback
    assert await kept(db) == await exact(db) == before
    await db.execute("truncate campaign_leads")
    assert await kept(db) == {} == await exact(db)


async def test_concurrent_transactions_and_folds_stay_exact(db, db_url):
    account_id = await factories.account(db)
    leads = [await factories.lead(db, account_id) for _ in range(40)]
    campaigns = await _campaigns(db, account_id, 4)

    async def writer(campaign_id) -> None:
        conn = await connect(db_url)
        try:
            for lead_id in leads:
                async with conn.transaction():
                    await conn.execute("insert into campaign_leads (campaign_id, lead_id) values ($1, $2)",
                                       campaign_id, lead_id)
                    if lead_id.int % 3 == 0:
                        await conn.execute("update campaign_leads set status = 'completed' "
                                           "where campaign_id = $1 and lead_id = $2", campaign_id, lead_id)
        finally:
            await conn.close()

    async def folder(stop: asyncio.Event) -> int:
        conn = await connect(db_url)
        folds = 0
        try:
            while not stop.is_set():
                await conn.execute(Q.fold_campaign_lead_counts)
                folds += 1
                await asyncio.sleep(0)
        finally:
            await conn.close()
        return folds

    stop = asyncio.Event()
    folders = [asyncio.create_task(folder(stop)) for _ in range(2)]
    await asyncio.gather(*(writer(c) for c in campaigns))
    stop.set()
    assert all(n > 0 for n in await asyncio.gather(*folders))
    assert await kept(db) == await exact(db)
    assert sum((await exact(db)).values()) == 160


async def test_a_migration_seeds_the_counts_from_rows_already_there(db):
    account_id = await factories.account(db)
    leads = [await factories.lead(db, account_id) for _ in range(5)]
    [campaign_id] = await _campaigns(db, account_id, 1)
    for lead_id in leads:
        await db.execute("insert into campaign_leads (campaign_id, lead_id, status) values ($1, $2, 'paused')",
                         campaign_id, lead_id)
    await db.execute("delete from campaign_lead_counts; delete from campaign_lead_count_deltas")  # counts lost
    assert await kept(db) == {}
    from listener.store.database import SQL_DIR
    await db.execute((SQL_DIR / "triggers" / "campaign_leads_counts.sql").read_text())  # what migrate re-runs
    assert await kept(db) == await exact(db) == {"paused": 5}
