"""The enrichment engine (SPEC §15): name parsing, phone / email / time zone problems, the trigger → enriched at
once with a running daemon, unchanged data writes nothing, and the `tick enrichment` backfill."""

from __future__ import annotations

import json

import pytest

from listener.engine.enrichment import enrich, enrichment_job, first_name_from
from listener.engine.jobs import JOBS
from listener.intents.lead import inspect_lead
from listener.providers.sandbox import SandboxProviders
from listener.settings import load_settings
from listener.store.database import create_pool
from tests import factories
from tests.cli_runner import cli, cli_env
from tests.harness import daemon_settings, running_daemon, wait_until


@pytest.mark.parametrize(("full_name", "first_name"), [
    ("Dra. Ana María Pérez", "Ana"),
    ("PÉREZ, Ana", "Ana"),
    ("Pérez García, María José", "María"),
    ("Dr. John Smith", "John"),
    ("Mr.  JOHN   SMITH", "John"),
    ("Sra. doña Lucía", "Lucía"),
    ("madonna", "Madonna"),
    ("Madonna", "Madonna"),
    ("JEAN-PIERRE Dupont", "Jean-Pierre"),
    ("McDonald, Ronald", "Ronald"),
    ("DeShawn Jones", "DeShawn"),
    ("Smith,", "Smith"),
    ("", None),
    ("   ", None),
    (None, None),
    ("Dr.", None),
    ("123 456", None),
])
def test_first_name_from_full_name(full_name, first_name):
    assert first_name_from(full_name) == first_name


def test_phone_is_e164_with_region_from_the_number_else_the_default():
    assert enrich(None, "+34 612 34 56 78", None, None, "US").phone == "+34612345678"
    assert enrich(None, "(415) 555-0123", None, None, "US").phone == "+14155550123"
    assert enrich(None, "612 34 56 78", None, None, "ES").phone == "+34612345678"
    assert enrich(None, "0034612345678", None, None, "US").phone == "+34612345678"


def test_invalid_phone_and_email_are_problems_not_exceptions():
    result = enrich("Ana", "12", "ana@", None, "US")
    assert (result.phone, result.email) == (None, None)
    assert result.problems == ("invalid_phone", "invalid_email")
    assert "12" in result.details["invalid_phone"] and "@" in result.details["invalid_email"]
    blank = enrich("", "  ", "", None, "US")
    assert blank.problems == () and (blank.phone, blank.email, blank.first_name) == (None, None, None)


def test_email_is_normalised_without_network():
    assert enrich(None, None, "  Ana.Perez@EXAMPLE.COM ", None, "US").email == "Ana.Perez@example.com"
    assert enrich(None, None, "a b@example.com", None, "US").problems == ("invalid_email",)


def test_timezone_order_without_the_default():
    # leads.timezone wins when it is a zone name
    assert enrich(None, "+14155550123", None, "Europe/Madrid", "US").timezone == "Europe/Madrid"
    # else the phone's zone, when the number names exactly one
    assert enrich(None, "+14155550123", None, None, "US").timezone == "America/Los_Angeles"
    # an invalid name is a problem, and the phone's zone applies
    bad = enrich(None, "+12125550100", None, "Mars/Olympus", "US")
    assert (bad.timezone, bad.problems) == ("America/New_York", ("invalid_timezone",))
    # a number with two zones (Spain: Madrid and Canary) gives none; no default is applied
    assert enrich(None, "+34612345678", None, None, "US").timezone is None
    assert enrich(None, None, None, None, "US").timezone is None


async def _events(db, lead_id):
    return await db.fetch("select payload from core_memory_events where lead_id = $1 and event_type = 'lead_enriched'"
                          " order by created_at", lead_id)


async def test_trigger_enriches_at_once_with_a_running_daemon_and_unchanged_writes_nothing(db, db_url):
    account_id = await factories.account(db)
    async with running_daemon(db_url, daemon_settings(None)):
        lead_id = await db.fetchval(
            "insert into leads (account_id, full_name, phone, email, timezone)"
            " values ($1, 'Dra. Ana María Pérez', '+34 612 345 678', 'Ana@Example.COM', 'Atlantis/Nowhere') returning id",
            account_id)
        await wait_until(db_url, "select count(*) = 1 from core_memory_events where lead_id = $1"
                         " and event_type = 'lead_enriched'", lead_id)
        row = await db.fetchrow("select * from lead_enriched where lead_id = $1", lead_id)
        assert (row["phone"], row["email"], row["first_name"], row["timezone"]) == (
            "+34612345678", "Ana@example.com", "Ana", None)
        (event,) = await _events(db, lead_id)
        assert event["payload"]["changed"] == {"phone": "+34612345678", "email": "Ana@example.com",
                                               "first_name": "Ana"}
        assert event["payload"]["problems"] == ["invalid_timezone"]

        # an update of an unrelated value (same name) is not filed; an update to the same data writes nothing
        await db.execute("update leads set full_name = full_name, email = 'Ana@Example.COM' where id = $1", lead_id)
        assert await db.fetchval("select count(*) from lead_enrichment_inbox") == 0
        # a real change is enriched at once, with only what changed
        await db.execute("update leads set phone = '+1 212 555 0100', timezone = null where id = $1", lead_id)
        await wait_until(db_url, "select count(*) = 2 from core_memory_events where lead_id = $1"
                         " and event_type = 'lead_enriched'", lead_id)
        second = (await _events(db, lead_id))[1]["payload"]
        assert second["changed"] == {"phone": "+12125550100", "timezone": "America/New_York"}
        assert second["problems"] == []
        # re-filing the same data (e.g. a backfill) writes nothing
        enriched_at = await db.fetchval("select enriched_at from lead_enriched where lead_id = $1", lead_id)
        await db.execute("insert into lead_enrichment_inbox (lead_id) values ($1)", lead_id)
        await db.execute("select pg_notify('leads', 'wake')")
        await wait_until(db_url, "select count(*) = 0 from lead_enrichment_inbox")
    assert len(await _events(db, lead_id)) == 2
    assert await db.fetchval("select enriched_at from lead_enriched where lead_id = $1", lead_id) == enriched_at


async def test_a_value_written_by_another_system_is_kept(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id, full_name="John Smith", first_name="Johnny")
    pool = await create_pool(db_url)
    try:
        stats = await enrichment_job(pool, load_settings(), False, None)
    finally:
        await pool.close()
    assert stats["leads"] == 1
    row = await db.fetchrow("select * from lead_enriched where lead_id = $1", lead_id)
    assert row["first_name"] == "Johnny"  # the provider's value, not "John"
    assert row["phone"] == "+14155550123"


async def test_tick_enrichment_backfills_in_batches_with_limit(db, db_url):
    account_id = await factories.account(db)
    await db.execute("insert into leads (account_id, full_name, phone, email)"
                     " select $1, 'Lead ' || i, '+1415555' || lpad(i::text, 4, '0'),"
                     " case when i % 10 = 0 then 'broken' else 'l' || i || '@example.com' end"
                     " from generate_series(1, 1200) i", account_id)
    # a lead from before the engine existed: not in the inbox, no state
    await db.execute("delete from lead_enrichment_inbox where lead_id = (select id from leads where full_name = 'Lead 7')")
    assert "enrichment" in JOBS
    env = cli_env(db_url)
    dry = await cli("tick", "enrichment", "--dry-run", "--json", env=env)
    assert dry.rc == 0, dry.err
    assert json.loads(dry.out)["pending"] == 1200
    first = await cli("tick", "enrichment", "--limit", "700", "--json", env=env)
    assert first.rc == 0, first.err
    assert json.loads(first.out)["leads"] == 700 and json.loads(first.out)["filed_never_enriched"] == 1
    rest = json.loads((await cli("tick", "enrichment", "--json", env=env)).out)
    assert rest["leads"] == 500
    assert await db.fetchval("select count(*) from core_memory_events where event_type = 'lead_enriched'"
                             " and payload->'problems' ? 'invalid_email'") == 120
    assert await db.fetchval("select count(*) from lead_enriched") == 1200
    assert await db.fetchval("select count(*) from core_memory_events where event_type = 'lead_enriched'") == 1200
    again = json.loads((await cli("tick", "enrichment", "--json", env=env)).out)
    assert again["leads"] == 0
    assert await db.fetchval("select count(*) from job_runs where job = 'enrichment'") == 4  # the dry run too


async def test_lead_inspect_shows_enrichment_problems(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id, phone="555", email="nope")
    pool = await create_pool(db_url)
    try:
        await enrichment_job(pool, load_settings(), False, None)
    finally:
        await pool.close()
    report = await inspect_lead(db, lead_id)
    assert report["enrichment"]["problems"] == ["invalid_phone", "invalid_email"]
    assert report["enrichment"]["pending"] is False
    shown = await cli("lead", "inspect", str(lead_id), env=cli_env(db_url))
    assert shown.rc == 0, shown.err
    assert "invalid_phone" in shown.out and "invalid_email" in shown.out


async def test_a_burst_in_one_transaction_is_enriched_while_touches_are_sent(db, db_url):
    """A full batch moves the enrichment to a worker process (listener.engine.enrichment); dispatch goes on meanwhile."""
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id, full_name="PÉREZ, Ana")
    async with SandboxProviders() as fake:
        async with running_daemon(db_url, daemon_settings(fake)):
            async with db.transaction():
                await db.execute("insert into leads (account_id, full_name, phone)"
                                 " select $1, 'PÉREZ, Ana', '+1415' || (2000000 + i) from generate_series(1, 1600) i",
                                 account_id)
            touch = await factories.touch(db, account_id, lead_id)
            await wait_until(db_url, "select status = 'sent' from touch_runs where id = $1", touch)
            await wait_until(db_url, "select count(*) = 0 from lead_enrichment_inbox", timeout=60)
    assert await db.fetchval("select count(*) from lead_enriched where first_name = 'Ana'") == 1601
    assert await db.fetchval("select count(*) from core_memory_events where event_type = 'lead_enriched'") == 1601
