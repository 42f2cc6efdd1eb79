"""listener.store.database.migrate: numbered files once each, triggers + views re-applied as a set when they change,
an advisory lock for concurrent runs, one transaction per step."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import asyncpg
import pytest

from listener.store.database import (
    REPEATABLE_KEY,
    SQL_DIR,
    DatabaseError,
    connect,
    migrate,
    numbered_migrations,
)

LATEST = numbered_migrations()[-1].name
LOCK_KEY = "select pg_try_advisory_lock(hashtext('revenue_asi:migrate'))"


@pytest.fixture
def sql_copy(tmp_path) -> Path:
    target = tmp_path / "sql"
    shutil.copytree(SQL_DIR, target)
    return target


async def migrations(db: asyncpg.Connection) -> dict[str, tuple[str, object]]:
    rows = await db.fetch("select name, checksum, applied_at from schema_migrations")
    return {r["name"]: (r["checksum"], r["applied_at"]) for r in rows}


async def lock_is_free(url: str) -> bool:
    other = await connect(url)
    try:
        return await other.fetchval(LOCK_KEY)
    finally:
        await other.close()


async def test_migrate_on_an_empty_database(empty_db_url):
    conn = await connect(empty_db_url)
    try:
        report = await migrate(conn)
        assert report.applied == [p.name for p in numbered_migrations()]
        assert report.repeatable_applied is True
        assert report.version == LATEST
        assert set(await migrations(conn)) == {p.name for p in numbered_migrations()} | {REPEATABLE_KEY}
        assert await conn.fetchval("select to_regclass('public.v_lead_channel_attempts') is not null")
    finally:
        await conn.close()
    assert await lock_is_free(empty_db_url)


async def test_migrate_an_already_migrated_database_applies_nothing(db, db_url):
    before = await migrations(db)
    report = await migrate(db)
    assert report.applied == []
    assert report.repeatable_applied is False
    assert report.version == LATEST
    assert await migrations(db) == before
    assert await lock_is_free(db_url)


async def test_an_identical_copy_of_the_sql_folder_applies_nothing(db, sql_copy):
    report = await migrate(db, sql_copy)
    assert report.applied == [] and report.repeatable_applied is False


async def test_a_changed_view_file_reapplies_the_set(db, sql_copy):
    before = await migrations(db)
    view = sql_copy / "views" / "01_lead_contacts_v1.sql"
    view.write_text(view.read_text() + "\n-- a harmless change\n")
    report = await migrate(db, sql_copy)
    assert report.applied == []
    assert report.repeatable_applied is True
    after = await migrations(db)
    assert after[REPEATABLE_KEY][0] != before[REPEATABLE_KEY][0]
    # Numbered files were not touched.
    assert {k: v for k, v in after.items() if k != REPEATABLE_KEY} == {
        k: v for k, v in before.items() if k != REPEATABLE_KEY
    }
    # And once recorded, the same content is not applied again.
    again = await migrate(db, sql_copy)
    assert again.repeatable_applied is False and again.applied == []


async def test_a_changed_trigger_file_is_really_executed(db, sql_copy):
    trigger = sql_copy / "triggers" / "touch_runs_notify.sql"
    trigger.write_text(trigger.read_text() + "\ncomment on function touch_runs_notify_wake() is 'marker-7';\n")
    assert await db.fetchval("select obj_description('touch_runs_notify_wake'::regproc, 'pg_proc')") is None
    report = await migrate(db, sql_copy)
    assert report.repeatable_applied is True
    assert await db.fetchval("select obj_description('touch_runs_notify_wake'::regproc, 'pg_proc')") == "marker-7"
    # The whole set was re-applied, and the triggers still work afterwards.
    assert await db.fetchval(
        "select count(*) from pg_trigger where tgrelid = 'touch_runs'::regclass and not tgisinternal"
    ) >= 3


async def test_a_new_numbered_file_is_applied_once(db, sql_copy):
    (sql_copy / "9001_probe.sql").write_text(
        "create table migration_probe (id int primary key);\ninsert into migration_probe values (1);\n"
    )
    report = await migrate(db, sql_copy)
    assert report.applied == ["9001_probe.sql"]
    assert report.version == "9001_probe.sql"
    assert report.repeatable_applied is True  # views are rebuilt after any schema change
    again = await migrate(db, sql_copy)
    assert again.applied == [] and again.repeatable_applied is False
    assert again.version == "9001_probe.sql"
    assert await db.fetchval("select count(*) from migration_probe") == 1


async def test_a_changed_numbered_file_is_not_reapplied(db, sql_copy, caplog):
    schema = sql_copy / "0001_schema.sql"
    schema.write_text(schema.read_text() + "\n-- edited after it was applied\n")
    with caplog.at_level(logging.WARNING, logger="listener.store.database"):
        report = await migrate(db, sql_copy)
    assert report.applied == []
    assert any("0001_schema.sql" in r.getMessage() for r in caplog.records)


async def test_numbered_files_run_in_order(db, sql_copy):
    (sql_copy / "9003_second.sql").write_text("insert into migration_order values ('0003');\n")
    (sql_copy / "9002_first.sql").write_text(
        "create table migration_order (name text, at timestamptz default clock_timestamp());\n"
        "insert into migration_order (name) values ('0002');\n"
    )
    report = await migrate(db, sql_copy)
    assert report.applied == ["9002_first.sql", "9003_second.sql"]
    assert [r["name"] for r in await db.fetch("select name from migration_order order by at")] == ["0002", "0003"]


async def test_a_failing_numbered_file_leaves_the_previous_state(db, db_url, sql_copy):
    (sql_copy / "9002_broken.sql").write_text("create table half_done (id int);\nselect 1 / 0;\n")
    before = await migrations(db)
    with pytest.raises((asyncpg.PostgresError, DatabaseError)):
        await migrate(db, sql_copy)
    assert await db.fetchval("select to_regclass('public.half_done')") is None
    assert await migrations(db) == before
    assert await lock_is_free(db_url)  # the advisory lock is released on failure


async def test_a_broken_view_names_the_file_and_keeps_the_old_views(db, sql_copy):
    view = sql_copy / "views" / "04_lead_next_action_view_v5.sql"
    view.write_text("create or replace view lead_next_action_view_v5 as select no_such_column from leads;\n")
    with pytest.raises(DatabaseError) as info:
        await migrate(db, sql_copy)
    assert "04_lead_next_action_view_v5.sql" in str(info.value)
    # The previous definition is still there and works.
    assert await db.fetchval("select count(*) from lead_next_action_view_v5") == 0
    columns = await db.fetch(
        "select column_name from information_schema.columns where table_name = 'lead_next_action_view_v5'"
    )
    assert {"recommended_action", "priority_score"} <= {r["column_name"] for r in columns}


async def test_missing_sql_folder_is_a_clear_error(db, tmp_path):
    with pytest.raises(DatabaseError) as info:
        await migrate(db, tmp_path / "nowhere")
    assert "nowhere" in str(info.value)


async def test_concurrent_migrations_wait_for_each_other(empty_db_url):
    conns = [await connect(empty_db_url) for _ in range(3)]
    try:
        reports = await asyncio.gather(*(migrate(c) for c in conns))
        applied = [r for r in reports if r.applied]
        assert len(applied) == 1
        assert applied[0].applied == [p.name for p in numbered_migrations()]
        assert all(r.version == LATEST for r in reports)
        assert sum(r.repeatable_applied for r in reports) == 1
    finally:
        for c in conns:
            await c.close()
