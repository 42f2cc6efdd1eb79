"""One vocabulary (listener/rules/vocabulary.py): the names Python uses are the names the schema allows."""

from __future__ import annotations

from listener.rules import vocabulary as v


async def _allowed(db, table: str, column: str) -> set[str]:
    definitions = await db.fetch(
        "select pg_get_constraintdef(c.oid) as d from pg_constraint c join pg_class t on t.oid = c.conrelid"
        " where t.relname = $1 and c.contype = 'c'", table)
    text = " ".join(r["d"] for r in definitions if column in r["d"])
    return {part.split("'")[1] for part in text.split("ARRAY[")[1].split("]")[0].split(",")} if "ARRAY[" in text \
        else set()


async def test_channels_and_statuses_match_the_schema(db):
    assert await _allowed(db, "touch_runs", "channel") == set(v.CHANNELS)
    assert await _allowed(db, "touch_runs", "status") == set(v.TOUCH_STATUSES)
    assert await _allowed(db, "campaign_leads", "status") == set(v.CAMPAIGN_LEAD_STATUSES)
    assert await _allowed(db, "campaigns", "status") == set(v.CAMPAIGN_STATUSES)
    assert await _allowed(db, "account_provider_settings", "provider") == set(v.PROVIDER_FOR_CHANNEL.values())


def test_stop_events_and_statuses_are_consistent():
    assert set(v.DEFAULT_STOP_EVENTS) <= set(v.INBOUND_STOP_TYPES)
    assert set(v.OPEN_STATUSES) | set(v.TERMINAL_STATUSES) == set(v.TOUCH_STATUSES)
    assert set(v.PHONE_CHANNELS) | {"email"} == set(v.CHANNELS)


async def test_the_default_stop_events_are_the_same_in_sql(db):
    assert await db.fetchval("select default_stop_events()") == list(v.DEFAULT_STOP_EVENTS)
    assert await db.fetchval("select touch_stop_events('{}'::jsonb)") == list(v.DEFAULT_STOP_EVENTS)
    plan = '{"routing": {"stop_on_events": ["reply_negative"]}}'
    assert await db.fetchval("select touch_stop_events($1::text::jsonb)", plan) == ["reply_negative"]
