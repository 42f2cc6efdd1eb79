"""Seed rule 2 (SPEC §1, §3): core_memory_events has exactly the seed's nine columns and the database itself
refuses UPDATE, DELETE and TRUNCATE on it."""

from __future__ import annotations

import asyncpg
import pytest

from tests import factories

SEED_COLUMNS = [
    "id", "lead_id", "event_type", "event_source", "channel", "direction", "payload", "score_delta", "created_at",
]


@pytest.fixture
async def event_row(db):
    account_id = await factories.account(db, providers=False)
    lead_id = await factories.lead(db, account_id)
    event_id = await factories.event(
        db, lead_id, "reply_positive", channel="sms", payload_={"text": "sí, llámame"}, score_delta=10
    )
    row = await db.fetchrow("select * from core_memory_events where id = $1", event_id)
    return dict(row)


async def all_events(db: asyncpg.Connection) -> list[dict]:
    return [dict(r) for r in await db.fetch("select * from core_memory_events order by created_at, id")]


async def test_exactly_the_nine_seed_columns(db):
    rows = await db.fetch(
        """select column_name, is_nullable from information_schema.columns
           where table_schema = 'public' and table_name = 'core_memory_events' order by ordinal_position"""
    )
    assert [r["column_name"] for r in rows] == SEED_COLUMNS
    nullable = {r["column_name"]: r["is_nullable"] for r in rows}
    assert nullable["lead_id"] == "NO"


async def test_lead_id_is_required(db):
    with pytest.raises(asyncpg.NotNullViolationError) as info:
        await db.execute("insert into core_memory_events (event_type) values ('reply_positive')")
    assert info.value.column_name == "lead_id"
    assert await db.fetchval("select count(*) from core_memory_events") == 0


async def test_update_is_refused(db, event_row):
    before = await all_events(db)
    with pytest.raises(asyncpg.PostgresError) as info:
        await db.execute("update core_memory_events set score_delta = 99 where id = $1", event_row["id"])
    assert "append-only" in str(info.value)
    assert "UPDATE" in str(info.value)
    assert await all_events(db) == before
    assert dict(await db.fetchrow("select * from core_memory_events where id = $1", event_row["id"])) == event_row


async def test_update_of_every_row_is_refused(db, event_row):
    before = await all_events(db)
    with pytest.raises(asyncpg.PostgresError) as info:
        await db.execute("update core_memory_events set payload = '{}'::jsonb")
    assert "append-only" in str(info.value)
    assert await all_events(db) == before


async def test_delete_is_refused(db, event_row):
    before = await all_events(db)
    with pytest.raises(asyncpg.PostgresError) as info:
        await db.execute("delete from core_memory_events where id = $1", event_row["id"])
    assert "append-only" in str(info.value)
    assert "DELETE" in str(info.value)
    with pytest.raises(asyncpg.PostgresError) as info:
        await db.execute("delete from core_memory_events")
    assert "append-only" in str(info.value)
    assert await all_events(db) == before
    assert await db.fetchval("select count(*) from core_memory_events where id = $1", event_row["id"]) == 1


async def test_truncate_is_refused(db, event_row):
    before = await all_events(db)
    with pytest.raises(asyncpg.PostgresError) as info:
        await db.execute("truncate core_memory_events")
    assert "append-only" in str(info.value)
    assert "TRUNCATE" in str(info.value)
    assert await all_events(db) == before


async def test_refusal_inside_a_transaction_rolls_it_back(db, event_row):
    """A caller that mixes an insert with a forbidden change loses both: no half-applied history."""
    before = await all_events(db)
    with pytest.raises(asyncpg.PostgresError):
        async with db.transaction():
            await factories.event(db, event_row["lead_id"], "note", direction="internal")
            await db.execute("delete from core_memory_events where id = $1", event_row["id"])
    assert await all_events(db) == before


async def test_inserts_still_work(db, event_row):
    await factories.event(db, event_row["lead_id"], "reply_negative", score_delta=-5)
    types = [e["event_type"] for e in await all_events(db)]
    assert sorted(types) == ["reply_negative", "reply_positive"]
