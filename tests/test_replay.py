"""`revenue-asi replay` (issue 5): the daemon's reactions re-run from core_memory_events, idempotently."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from listener.engine.replay import TimeFormatError, parse_time, replay
from listener.providers.sandbox import SandboxProviders
from listener.store.database import create_pool
from tests import factories
from tests.cli_runner import cli, cli_env
from tests.harness import daemon_settings, running_daemon, wait_until
from tests.test_orchestrators import campaign, enroll, step_payload

PLAN = {"order": ["voice", "sms", "email"], "max_attempts": {"voice": 1, "sms": 2, "email": 1},
        "cooldown_minutes": {"voice": 0, "sms": 0, "email": 0}}
HOUR_AGO = datetime.now(UTC) - timedelta(hours=1)


@pytest.fixture
async def pool(db_url):
    p = await create_pool(db_url, min_size=1, max_size=4)
    try:
        yield p
    finally:
        await p.close()


async def failed_touch_without_follow_up(conn: asyncpg.Connection, *, pending: bool = True) -> tuple[uuid.UUID, uuid.UUID]:
    """What downtime leaves behind: a touch failed, its touch_failed event written, and no daemon reacted (the
    event is still in the daemon's inbox) — or, with pending=False, the reaction was lost."""
    account_id = await factories.account(conn)
    lead_id = await factories.lead(conn, account_id)
    touch_id = await factories.touch(conn, account_id, lead_id, channel="voice", status="failed",
                                     payload_=factories.payload("voice", plan=PLAN))
    event_id = await factories.event(conn, lead_id, "touch_failed", direction="outbound", channel="voice",
                                     payload_={"touch_run_id": str(touch_id), "error_code": "21211",
                                               "failure_class": "permanent", "error": "invalid number"})
    if not pending:
        await conn.execute("delete from event_reactions where event_id = $1", event_id)
    return lead_id, touch_id


async def counts(conn: asyncpg.Connection) -> tuple[int, int]:
    return (await conn.fetchval("select count(*) from touch_runs"),
            await conn.fetchval("select count(*) from core_memory_events"))


def test_parse_time():
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert parse_time("2h", now) == now - timedelta(hours=2)
    assert parse_time("3d", now) == now - timedelta(days=3)
    assert parse_time("90s ago", now) == now - timedelta(seconds=90)
    assert parse_time("now", now) == now
    assert parse_time("2026-02-01T10:00:00Z") == datetime(2026, 2, 1, 10, tzinfo=UTC)
    assert parse_time("2026-02-01 10:00") == datetime(2026, 2, 1, 10, tzinfo=UTC)
    assert parse_time("2026-02-01T10:00:00+02:00") == datetime(2026, 2, 1, 8, tzinfo=UTC)
    with pytest.raises(TimeFormatError):
        parse_time("yesterday")


async def test_replay_rebuilds_missing_follow_up_once(db, pool):
    lead_id, touch_id = await failed_touch_without_follow_up(db)

    summary = await replay(pool, HOUR_AGO)

    assert summary.events_read == 1 and summary.pending_taken == 1 and summary.acted == 1
    assert summary.reactions.decisions == {"switch_channel": 1}
    (follow_up,) = await db.fetch("select * from touch_runs where id <> $1", touch_id)
    assert follow_up["idempotency_key"] == f"next:{touch_id}"
    assert (follow_up["channel"], follow_up["status"]) == ("sms", "queued")
    assert [c["touch_run_id"] for c in summary.as_dict()["created"]] == [str(follow_up["id"])]
    assert await db.fetchval("select count(*) from event_reactions") == 0  # the daemon will not redo it
    (decision,) = await db.fetch("select payload from core_memory_events where event_type = 'fallback_decision'")
    assert decision["payload"]["next_channel"] == "sms"

    before = await counts(db)
    again = await replay(pool, HOUR_AGO)
    assert await counts(db) == before  # nothing at all: no touch, no duplicate decision event
    assert again.events_read == 1 and again.acted == 0 and again.unchanged == 1
    assert again.as_dict()["touches_created"] == 0 and again.reactions.superseded == 1


async def test_replay_rebuilds_follow_up_of_a_lost_reaction(db, pool):
    lead_id, touch_id = await failed_touch_without_follow_up(db, pending=False)
    summary = await replay(pool, HOUR_AGO)
    assert summary.pending_taken == 0 and summary.as_dict()["touches_created"] == 1
    assert await db.fetchval("select channel from touch_runs where idempotency_key = $1", f"next:{touch_id}") == "sms"
    before = await counts(db)
    assert (await replay(pool, HOUR_AGO)).as_dict()["touches_created"] == 0
    assert await counts(db) == before


async def test_replay_dry_run_changes_nothing_and_reports(db, pool):
    lead_id, touch_id = await failed_touch_without_follow_up(db)
    before = await counts(db)

    summary = (await replay(pool, HOUR_AGO, dry_run=True)).as_dict()

    assert await counts(db) == before
    assert await db.fetchval("select count(*) from event_reactions") == 1  # still the daemon's to do
    assert summary["dry_run"] is True and summary["touches_created"] == 1
    (item,) = summary["created"]
    assert item["channel"] == "sms" and item["idempotency_key"] == f"next:{touch_id}"
    assert summary["decisions"] == {"switch_channel": 1}
    # and a real run then does exactly that
    real = (await replay(pool, HOUR_AGO)).as_dict()
    assert [(c["channel"], c["idempotency_key"]) for c in real["created"]] == [("sms", f"next:{touch_id}")]


async def test_replay_filters_by_lead_and_time(db, pool):
    first_lead, first_touch = await failed_touch_without_follow_up(db)
    second_lead, second_touch = await failed_touch_without_follow_up(db)
    only = await replay(pool, HOUR_AGO, lead_id=second_lead)
    assert only.events_read == 1
    assert await db.fetchval("select count(*) from touch_runs where idempotency_key like 'next:%'") == 1
    assert await db.fetchval("select lead_id from touch_runs where idempotency_key like 'next:%'") == second_lead
    nothing = await replay(pool, datetime.now(UTC) - timedelta(hours=3), until=HOUR_AGO)
    assert nothing.events_read == 0


async def test_replay_stop_event_cancels_open_touches(db, pool):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    campaign_id = await campaign(db, account_id, steps=[(60, step_payload("sms"))])
    await enroll(db, campaign_id, lead_id)
    touch_id = await factories.touch(db, account_id, lead_id, campaign_id=campaign_id, status="scheduled",
                                     scheduled_in_s=3600, payload_=factories.payload("sms", plan=PLAN))
    await factories.event(db, lead_id, "reply_positive")  # no daemon: not reacted to

    summary = (await replay(pool, HOUR_AGO)).as_dict()

    assert summary["touches_canceled"] == 1 and summary["cadences_stopped"] == 1
    assert await db.fetchval("select status from touch_runs where id = $1", touch_id) == "canceled"
    assert await db.fetchval("select status from campaign_leads where lead_id = $1", lead_id) == "stopped"
    before = await counts(db)
    again = (await replay(pool, HOUR_AGO)).as_dict()
    assert again["touches_canceled"] == 0 and again["unchanged"] == 1 and await counts(db) == before


async def test_replay_old_stop_event_does_not_cancel_newer_touches(db, pool):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    await factories.event(db, lead_id, "reply_positive", created_ago_s=1800)
    await db.execute("delete from event_reactions")  # the daemon reacted back then
    touch_id = await factories.touch(db, account_id, lead_id, status="scheduled", scheduled_in_s=3600,
                                     payload_=factories.payload("sms", plan=PLAN))
    summary = (await replay(pool, HOUR_AGO)).as_dict()
    assert summary["stale_stop_events"] == 1 and summary["touches_canceled"] == 0
    assert await db.fetchval("select status from touch_runs where id = $1", touch_id) == "scheduled"
    # suppression never goes stale
    await factories.event(db, lead_id, "unsubscribe", created_ago_s=900)
    await db.execute("delete from event_reactions")
    summary = (await replay(pool, HOUR_AGO)).as_dict()
    assert summary["touches_canceled"] == 1
    assert await db.fetchval("select status from touch_runs where id = $1", touch_id) == "canceled"


async def test_replay_after_a_full_cadence_creates_nothing(db, db_url, pool):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake)):
        fake.rule(to="+14155550123", mode="error:400:21211")  # voice and sms fail at once; email is sent
        await factories.touch(db, account_id, lead_id, channel="voice", payload_=factories.payload("voice", plan=PLAN))
        await wait_until(db_url, "select count(*) > 0 from core_memory_events where event_type = 'fallback_decision'"
                         " and payload->>'decision' = 'stop'")
    assert await db.fetchval("select count(*) from event_reactions") == 0
    before = await counts(db)
    summary = (await replay(pool, HOUR_AGO)).as_dict()
    assert summary["events_read"] == 3 and summary["by_event_type"] == {"touch_failed": 2, "touch_sent": 1}
    assert summary["touches_created"] == 0 and summary["unchanged"] == 3
    assert await counts(db) == before


async def test_replay_cli_text_json_and_dry_run(db, db_url):
    lead_id, touch_id = await failed_touch_without_follow_up(db)
    env = cli_env(db_url)

    dry = await cli("replay", "--since", "1h", "--dry-run", env=env)
    assert dry.rc == 0, dry.err
    assert "dry run" in dry.out and "would be created" in dry.out and "sms" in dry.out
    assert "events read" in dry.out and "switch_channel 1" in dry.out
    assert "replaying events: 1/1" in dry.err  # plain progress when not a terminal
    assert await db.fetchval("select count(*) from touch_runs") == 1

    real = await cli("replay", "--since", "1h", "--lead", str(lead_id), "--json", env=env)
    assert real.rc == 0, real.err
    summary = json.loads(real.out)
    assert summary["touches_created"] == 1 and summary["events_read"] == 1 and summary["dry_run"] is False
    assert summary["created"][0]["idempotency_key"] == f"next:{touch_id}"

    again = json.loads((await cli("replay", "--since", "1h", "--json", env=env)).out)
    assert again["touches_created"] == 0 and again["unchanged"] == 1

    bad = await cli("replay", "--since", "yesterday", env=env)
    assert bad.rc != 0 and "not a time" in bad.err
