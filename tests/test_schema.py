"""SPEC §3: every table, column, type, default, constraint and index of the data model, on a real database."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from tests import factories

UUID, TS, TEXT, INT, BOOL, JSONB, NUMERIC = (
    "uuid", "timestamp with time zone", "text", "integer", "boolean", "jsonb", "numeric",
)

# SPEC §3, column by column (id and created_at included where the SPEC implies them).
TABLES: dict[str, dict[str, str]] = {
    "accounts": {"id": UUID, "created_at": TS, "name": TEXT},
    "account_provider_settings": {
        "id": UUID, "created_at": TS, "account_id": UUID, "channel": TEXT, "provider": TEXT,
        "is_default": BOOL, "config": JSONB,
    },
    "leads": {
        "id": UUID, "created_at": TS, "account_id": UUID, "full_name": TEXT, "email": TEXT, "phone": TEXT,
        "timezone": TEXT,
    },
    "lead_enriched": {
        "lead_id": UUID, "phone": TEXT, "email": TEXT, "first_name": TEXT, "company_name": TEXT,
        "timezone": TEXT, "enriched_at": TS,
    },
    "campaigns": {"id": UUID, "created_at": TS, "account_id": UUID, "name": TEXT, "status": TEXT, "message_class": TEXT},
    "campaign_steps": {
        "id": UUID, "created_at": TS, "campaign_id": UUID, "step": INT, "delay_minutes": NUMERIC, "payload": JSONB,
    },
    "campaign_leads": {
        "id": UUID, "created_at": TS, "campaign_id": UUID, "lead_id": UUID, "status": TEXT, "current_step": INT,
        "stop_reason": TEXT, "enrolled_at": TS, "updated_at": TS,
    },
    "touch_runs": {
        "id": UUID, "created_at": TS, "account_id": UUID, "lead_id": UUID, "campaign_id": UUID, "step": INT,
        "channel": TEXT, "status": TEXT, "scheduled_at": TS, "sent_at": TS, "payload": JSONB, "error": TEXT,
        "idempotency_key": TEXT, "locked_by": TEXT, "locked_until": TS, "provider_message_id": TEXT,
        "updated_at": TS,
    },
    "core_memory_events": {
        "id": UUID, "lead_id": UUID, "event_type": TEXT, "event_source": TEXT, "channel": TEXT, "direction": TEXT,
        "payload": JSONB, "score_delta": INT, "created_at": TS,
    },
    "message_templates": {
        "id": UUID, "created_at": TS, "template_name": TEXT, "channel": TEXT, "language": TEXT, "subject": TEXT,
        "body": TEXT,
    },
    "job_runs": {
        "id": UUID, "created_at": TS, "job": TEXT, "started_at": TS, "finished_at": TS, "dry_run": BOOL,
        "stats": JSONB, "error": TEXT,
    },
}


async def columns(db: asyncpg.Connection, table: str) -> dict[str, asyncpg.Record]:
    rows = await db.fetch(
        """select column_name, data_type, column_default, is_nullable from information_schema.columns
           where table_schema = 'public' and table_name = $1""",
        table,
    )
    return {r["column_name"]: r for r in rows}


@pytest.mark.parametrize("table", sorted(TABLES))
async def test_table_has_the_spec_columns_and_types(db, table):
    actual = await columns(db, table)
    assert actual, f"table {table} is missing"
    for column, data_type in TABLES[table].items():
        assert column in actual, f"{table}.{column} is missing"
        assert actual[column]["data_type"] == data_type, f"{table}.{column} is {actual[column]['data_type']}"
    if "id" in TABLES[table]:
        assert actual["id"]["column_default"] == "gen_random_uuid()"
    # All times are timestamptz (SPEC §3), including any column added beyond the SPEC.
    for name, row in actual.items():
        if name.endswith("_at") or name == "locked_until":
            assert row["data_type"] == TS, f"{table}.{name} is {row['data_type']}"


async def test_lead_enriched_is_keyed_by_lead(db):
    pk = await db.fetch(
        """select a.attname from pg_index i
           join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
           where i.indrelid = 'lead_enriched'::regclass and i.indisprimary"""
    )
    assert [r["attname"] for r in pk] == ["lead_id"]
    account_id = await factories.account(db, providers=False)
    lead_id = await factories.lead(db, account_id, enriched_phone="+34612345678")
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute("insert into lead_enriched (lead_id, phone) values ($1, '+34600000000')", lead_id)


# ---------------------------------------------------------------- touch_runs


@pytest.fixture
async def ids(db):
    account_id = await factories.account(db, providers=False)
    lead_id = await factories.lead(db, account_id)
    return account_id, lead_id


async def test_touch_runs_channel_check(db, ids):
    account_id, lead_id = ids
    with pytest.raises(asyncpg.CheckViolationError) as info:
        await db.execute(
            "insert into touch_runs (account_id, lead_id, channel) values ($1, $2, 'fax')", account_id, lead_id
        )
    assert "touch_runs_channel_check" in str(info.value)
    assert info.value.constraint_name == "touch_runs_channel_check"
    for channel in ("voice", "whatsapp", "sms", "email"):
        await db.execute(
            "insert into touch_runs (account_id, lead_id, channel) values ($1, $2, $3)", account_id, lead_id, channel
        )
    assert await db.fetchval("select count(*) from touch_runs") == 4


async def test_touch_runs_status_check(db, ids):
    account_id, lead_id = ids
    with pytest.raises(asyncpg.CheckViolationError) as info:
        await db.execute(
            "insert into touch_runs (account_id, lead_id, channel, status) values ($1, $2, 'sms', 'delivered')",
            account_id, lead_id,
        )
    assert "touch_runs_status_check" in str(info.value)
    touch_id = await factories.touch(db, account_id, lead_id)
    with pytest.raises(asyncpg.CheckViolationError) as info:
        await db.execute("update touch_runs set status = 'done' where id = $1", touch_id)
    assert "touch_runs_status_check" in str(info.value)
    for status in ("queued", "scheduled", "sent", "failed", "canceled"):
        await db.execute("update touch_runs set status = $2 where id = $1", touch_id, status)
        assert await db.fetchval("select status from touch_runs where id = $1", touch_id) == status


async def test_touch_runs_idempotency_key_is_unique(db, ids):
    account_id, lead_id = ids
    await factories.touch(db, account_id, lead_id, idempotency_key="next:abc")
    with pytest.raises(asyncpg.UniqueViolationError) as info:
        await factories.touch(db, account_id, lead_id, idempotency_key="next:abc", channel="email")
    assert "idempotency_key" in str(info.value) or "idempotency_key" in (info.value.constraint_name or "")
    assert await db.fetchval("select count(*) from touch_runs where idempotency_key = 'next:abc'") == 1
    # NULL keys do not collide: touches without a key are always accepted.
    await factories.touch(db, account_id, lead_id)
    await factories.touch(db, account_id, lead_id)
    assert await db.fetchval("select count(*) from touch_runs where idempotency_key is null") == 2


async def test_processing_requires_a_lease(db, ids):
    account_id, lead_id = ids
    touch_id = await factories.touch(db, account_id, lead_id)
    with pytest.raises(asyncpg.CheckViolationError) as info:
        await db.execute("update touch_runs set status = 'processing' where id = $1", touch_id)
    assert "touch_runs_processing_has_lease" in str(info.value)
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute("update touch_runs set status = 'processing', locked_by = 'w1' where id = $1", touch_id)
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(
            "update touch_runs set status = 'processing', locked_until = now() + interval '2 minutes' where id = $1",
            touch_id,
        )
    assert await db.fetchval("select status from touch_runs where id = $1", touch_id) == "queued"
    await db.execute(
        "update touch_runs set status = 'processing', locked_by = 'w1', locked_until = now() + interval '2 minutes'"
        " where id = $1",
        touch_id,
    )
    assert await db.fetchval("select status from touch_runs where id = $1", touch_id) == "processing"


async def test_touch_runs_foreign_keys(db, ids):
    account_id, _ = ids
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await db.execute(
            "insert into touch_runs (account_id, lead_id, channel) values ($1, $2, 'sms')", account_id, uuid.uuid4()
        )


async def test_touch_runs_defaults(db, ids):
    account_id, lead_id = ids
    row = await db.fetchrow(
        "insert into touch_runs (account_id, lead_id, channel) values ($1, $2, 'sms') returning *, now() as tx_now",
        account_id, lead_id,
    )
    assert isinstance(row["id"], uuid.UUID) and row["id"].version == 4
    assert row["status"] == "queued"
    assert row["step"] == 1
    assert row["campaign_id"] is None
    assert row["scheduled_at"] == row["tx_now"]
    assert row["created_at"] == row["tx_now"]
    assert row["updated_at"] == row["tx_now"]
    assert row["payload"] == {}
    for column in ("sent_at", "error", "idempotency_key", "locked_by", "locked_until", "provider_message_id"):
        assert row[column] is None, column
    other = await db.fetchval(
        "insert into touch_runs (account_id, lead_id, channel) values ($1, $2, 'sms') returning id", account_id, lead_id
    )
    assert other != row["id"]


# ---------------------------------------------------------------- account_provider_settings


async def test_one_default_provider_per_account_and_channel(db):
    account_id = await factories.account(db)  # a default for each of the four channels
    with pytest.raises(asyncpg.UniqueViolationError) as info:
        await db.execute(
            "insert into account_provider_settings (account_id, channel, provider, is_default, config)"
            " values ($1, 'sms', 'twilio', true, '{\"from\": \"+15005550007\"}')",
            account_id,
        )
    assert "account_provider_settings_one_default" in str(info.value)
    # A second, non-default sender for the same channel is fine.
    await db.execute(
        "insert into account_provider_settings (account_id, channel, provider, is_default, config)"
        " values ($1, 'sms', 'twilio', false, '{\"from\": \"+15005550007\"}')",
        account_id,
    )
    # And another account has its own default.
    other = await factories.account(db, "Other Co")
    assert other != account_id
    counts = await db.fetch(
        "select account_id, count(*) filter (where is_default) as defaults, count(*) as total"
        " from account_provider_settings where channel = 'sms' group by account_id"
    )
    by_account = {r["account_id"]: (r["defaults"], r["total"]) for r in counts}
    assert by_account == {account_id: (1, 2), other: (1, 1)}


async def test_provider_settings_checks(db):
    account_id = await factories.account(db, providers=False)
    with pytest.raises(asyncpg.CheckViolationError) as info:
        await db.execute(
            "insert into account_provider_settings (account_id, channel, provider) values ($1, 'pager', 'twilio')",
            account_id,
        )
    assert "account_provider_settings_channel_check" in str(info.value)
    with pytest.raises(asyncpg.CheckViolationError) as info:
        await db.execute(
            "insert into account_provider_settings (account_id, channel, provider) values ($1, 'email', 'sendgrid')",
            account_id,
        )
    assert "account_provider_settings_provider_check" in str(info.value)
    row = await db.fetchrow(
        "insert into account_provider_settings (account_id, channel, provider) values ($1, 'email', 'elasticemail')"
        " returning is_default, config",
        account_id,
    )
    assert row["is_default"] is False and row["config"] == {}


# ---------------------------------------------------------------- campaigns


async def campaign(db: asyncpg.Connection, account_id: uuid.UUID, **kw) -> uuid.UUID:
    return await db.fetchval(
        "insert into campaigns (account_id, name) values ($1, $2) returning id", account_id, kw.get("name", "Spring")
    )


async def test_campaigns_status_check_and_default(db):
    account_id = await factories.account(db, providers=False)
    row = await db.fetchrow("insert into campaigns (account_id, name) values ($1, 'c') returning id, status", account_id)
    assert row["status"] == "active" and row["id"].version == 4
    with pytest.raises(asyncpg.CheckViolationError) as info:
        await db.execute("insert into campaigns (account_id, name, status) values ($1, 'c2', 'running')", account_id)
    assert "campaigns_status_check" in str(info.value)
    for status in ("paused", "archived", "active"):
        await db.execute("update campaigns set status = $2 where id = $1", row["id"], status)


async def test_campaign_leads_status_check_defaults_and_unique(db):
    account_id = await factories.account(db, providers=False)
    lead_id = await factories.lead(db, account_id)
    campaign_id = await campaign(db, account_id)
    row = await db.fetchrow(
        "insert into campaign_leads (campaign_id, lead_id) values ($1, $2)"
        " returning id, status, current_step, stop_reason, enrolled_at, updated_at, now() as tx_now",
        campaign_id, lead_id,
    )
    assert row["status"] == "active"
    assert row["current_step"] == 1
    assert row["stop_reason"] is None
    assert row["enrolled_at"] == row["tx_now"] == row["updated_at"]
    with pytest.raises(asyncpg.UniqueViolationError) as info:
        await db.execute("insert into campaign_leads (campaign_id, lead_id) values ($1, $2)", campaign_id, lead_id)
    assert "campaign_leads_campaign_lead_key" in str(info.value)
    with pytest.raises(asyncpg.CheckViolationError) as info:
        await db.execute("update campaign_leads set status = 'finished' where id = $1", row["id"])
    assert "campaign_leads_status_check" in str(info.value)
    for status in ("paused", "completed", "stopped", "active"):
        await db.execute("update campaign_leads set status = $2 where id = $1", row["id"], status)
    # The same lead in another campaign is fine.
    other = await campaign(db, account_id, name="Autumn")
    await db.execute("insert into campaign_leads (campaign_id, lead_id) values ($1, $2)", other, lead_id)
    assert await db.fetchval("select count(*) from campaign_leads where lead_id = $1", lead_id) == 2


async def test_campaign_steps_unique_per_campaign(db):
    account_id = await factories.account(db, providers=False)
    campaign_id = await campaign(db, account_id)
    await db.execute(
        "insert into campaign_steps (campaign_id, step, delay_minutes, payload) values ($1, 1, 0.05, $2)",
        campaign_id, factories.payload("voice"),
    )
    with pytest.raises(asyncpg.UniqueViolationError) as info:
        await db.execute("insert into campaign_steps (campaign_id, step) values ($1, 1)", campaign_id)
    assert "campaign_steps_campaign_step_key" in str(info.value)
    await db.execute("insert into campaign_steps (campaign_id, step, delay_minutes) values ($1, 2, 1440)", campaign_id)
    other = await campaign(db, account_id, name="Other")
    await db.execute("insert into campaign_steps (campaign_id, step) values ($1, 1)", other)
    # delay_minutes keeps fractions (SPEC §5: 0.05 = 3 s).
    delay = await db.fetchval(
        "select delay_minutes from campaign_steps where campaign_id = $1 and step = 1", campaign_id
    )
    assert str(delay) == "0.05"


async def test_message_templates_unique_per_name_and_language(db):
    await db.execute(
        "insert into message_templates (template_name, channel, language, subject, body)"
        " values ('welcome', 'email', 'es', 'Hola', 'Hola {first_name}')"
    )
    with pytest.raises(asyncpg.UniqueViolationError) as info:
        await db.execute(
            "insert into message_templates (template_name, language, body) values ('welcome', 'es', 'otra')"
        )
    assert "message_templates_name_language_key" in str(info.value)
    await db.execute(
        "insert into message_templates (template_name, channel, language, body) values ('welcome', 'email', 'en', 'Hi')"
    )
    assert await db.fetchval("select count(*) from message_templates where template_name = 'welcome'") == 2


async def test_job_runs_defaults(db):
    row = await db.fetchrow(
        "insert into job_runs (job) values ('sweep') returning id, started_at, finished_at, dry_run, stats, error,"
        " now() as tx_now"
    )
    assert row["id"].version == 4
    assert row["started_at"] == row["tx_now"]
    assert row["finished_at"] is None and row["error"] is None
    assert row["dry_run"] is False and row["stats"] == {}


# ---------------------------------------------------------------- indexes


async def index_defs(db: asyncpg.Connection, table: str) -> list[str]:
    rows = await db.fetch("select indexdef from pg_indexes where schemaname = 'public' and tablename = $1", table)
    return [r["indexdef"] for r in rows]


async def test_due_touches_are_found_through_the_one_index_of_open_touches(db):
    """Open touches by sender and moment (0013); the second index by moment alone is gone (0017: a plan kept for the
    session could walk it for every sender's touches)."""
    defs = await index_defs(db, "touch_runs")
    open_ = [d for d in defs if "WHERE" in d and "'queued'" in d and "'scheduled'" in d and "scheduled_at" in d]
    assert len(open_) == 1 and "(account_id, channel, scheduled_at)" in open_[0], defs


async def test_event_indexes_by_lead_and_touch_run_id(db):
    defs = await index_defs(db, "core_memory_events")
    assert any("(lead_id" in d for d in defs), defs
    assert any("(payload ->> 'touch_run_id'::text)" in d for d in defs), defs


async def test_touch_run_events_lookup_uses_the_expression_index(db, ids):
    """The expression index is usable by the query shape the views and the daemon use."""
    account_id, lead_id = ids
    touch_id = await factories.touch(db, account_id, lead_id)
    async with db.transaction():
        await db.execute("set local enable_seqscan = off")
        plan = "\n".join(
            r[0] for r in await db.fetch(
                "explain select * from core_memory_events where payload->>'touch_run_id' = $1", str(touch_id)
            )
        )
    assert "Index Cond" in plan and "touch_run_id" in plan, plan
