"""Sending rules at dispatch (SPEC §13), end to end against the embedded PostgreSQL and the sandbox providers.

Whatever the hour the tests run at, the lead's time zone is chosen at run time (a fixed-offset Etc/GMT zone) so
that it is night — or day — at the lead's location now; caps race through two real connections and two daemons."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from listener.engine.sendcaps import send_rules_gate
from listener.providers.sandbox import SandboxProviders
from listener.settings import load_settings
from listener.store.database import connect
from listener.store.queries import Q
from tests import factories
from tests.cli_runner import cli, cli_env
from tests.harness import daemon_settings, events_of, running_daemon, wait_until

DEFAULT_QUIET = "21:00-08:00"


def zone_where_local_hour_is(hour: int, now: datetime | None = None) -> str:
    """A fixed-offset zone in which it is `hour`:xx right now (Etc/GMT signs are inverted: Etc/GMT-3 = UTC+3)."""
    now = now or datetime.now(UTC)
    offset = (hour - now.hour + 12) % 24 - 12  # in [-12, 11]
    name = f"Etc/GMT{-offset:+d}" if offset else "Etc/GMT"
    assert datetime.now(ZoneInfo(name)).hour in (hour, (hour + 1) % 24)  # the hour may tick over meanwhile
    return name


async def lead_in(db: asyncpg.Connection, account_id: Any, zone: str | None, **kw: Any) -> Any:
    lead_id = await factories.lead(db, account_id, **kw)
    await db.execute("update leads set timezone = $2 where id = $1", lead_id, zone)
    return lead_id


async def test_night_at_the_lead_defers_phone_touches_to_eight_local_once(db, db_url):
    account_id = await factories.account(db)
    night = zone_where_local_hour_is(2)
    sleeper = await lead_in(db, account_id, night)
    awake = await lead_in(db, account_id, zone_where_local_hour_is(12), phone="+14155550199", email="day@x.test")
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake, quiet_hours=DEFAULT_QUIET)):
        sms = await factories.touch(db, account_id, sleeper, channel="sms")
        dry = await factories.touch(db, account_id, sleeper, channel="whatsapp",
                                    payload_=factories.payload("whatsapp", meta={"dry_run": True}))
        email = await factories.touch(db, account_id, sleeper, channel="email")
        await wait_until(db_url, "select count(*) = 2 from touch_runs where id = any($1::uuid[]) and status = 'scheduled'"
                         " and locked_by is null", [sms, dry])
        await wait_until(db_url, "select status = 'sent' from touch_runs where id = $1", email)
        # a later touch for a lead in daylight goes; by then the deferred ones were not picked again
        later = await factories.touch(db, account_id, awake, channel="sms")
        await wait_until(db_url, "select status = 'sent' from touch_runs where id = $1", later)
    sent_to = [r.to for r in fake.requests]
    assert "+14155550123" not in sent_to and "+14155550199" in sent_to  # no provider call for the night lead's phone
    local_now = datetime.now(ZoneInfo(night))
    eight = local_now.replace(hour=8, minute=0, second=0, microsecond=0)
    for touch_id in (sms, dry):
        row = await db.fetchrow("select status, scheduled_at, error from touch_runs where id = $1", touch_id)
        assert row["status"] == "scheduled" and row["error"] is None
        assert row["scheduled_at"] == eight.astimezone(UTC)
        (event,) = await events_of(db, touch_id, "touch_deferred")  # one deferral, no spinning
        assert event["payload"]["reason"] == "quiet_hours" and event["payload"]["lead_timezone"] == night
        assert datetime.fromisoformat(event["payload"]["next_at"]) == eight
        assert event["direction"] == "internal"
    assert not await events_of(db, email, "touch_deferred")  # email is not bound by quiet hours


async def test_a_lead_in_daylight_is_not_deferred(db, db_url):
    account_id = await factories.account(db)
    lead_id = await lead_in(db, account_id, zone_where_local_hour_is(13))
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake, quiet_hours=DEFAULT_QUIET)):
        touch_id = await factories.touch(db, account_id, lead_id, channel="voice")
        await wait_until(db_url, "select status = 'sent' from touch_runs where id = $1", touch_id)
    assert len(fake.requests) == 1 and not await events_of(db, touch_id, "touch_deferred")


async def test_zone_from_the_phone_when_the_lead_has_none(db, db_url):
    account_id = await factories.account(db)
    lead_id = await lead_in(db, account_id, None, phone="+12125550123")  # New York
    ny_hour = datetime.now(ZoneInfo("America/New_York")).hour
    quiet = f"{ny_hour:02d}:00-{(ny_hour + 2) % 24:02d}:00"  # quiet now in New York, whatever the hour
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake, quiet_hours=quiet)):
        touch_id = await factories.touch(db, account_id, lead_id, channel="sms")
        await wait_until(db_url, "select status = 'scheduled' and locked_by is null from touch_runs where id = $1",
                         touch_id)
    (event,) = await events_of(db, touch_id, "touch_deferred")
    assert event["payload"]["lead_timezone"] == "America/New_York" and not fake.requests


async def test_bad_rules_fail_the_touch_naming_the_field(db, db_url):
    account_id = await factories.account(db)
    lead_id = await lead_in(db, account_id, "Mars/Olympus")  # ignored: the phone's zone (Los Angeles) is used
    bad_window = factories.payload("email")
    bad_window["routing"]["send_window"] = {"days": [1, 2, 9], "start": "09:00", "end": "17:00"}
    bad_country = factories.payload("email")
    bad_country["routing"]["skip_holidays"] = "XX"
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake)):
        t1 = await factories.touch(db, account_id, lead_id, channel="email", payload_=bad_window)
        t2 = await factories.touch(db, account_id, lead_id, channel="email", payload_=bad_country)
        await wait_until(db_url, "select count(*) = 2 from touch_runs where id = any($1::uuid[]) and status = 'failed'",
                         [t1, t2])
    (e1,) = await events_of(db, t1, "touch_failed")
    (e2,) = await events_of(db, t2, "touch_failed")
    assert e1["payload"]["error_code"] == e2["payload"]["error_code"] == "invalid_send_rules"
    assert e1["payload"]["failure_class"] == "permanent"
    assert e1["payload"]["error"].startswith("routing.send_window.days:")
    assert e2["payload"]["error"].startswith("routing.skip_holidays:")
    assert not fake.requests


async def test_lead_cap_across_channels_defers_until_a_slot_frees(db, db_url):
    account_id = await factories.account(db)
    lead_id = await lead_in(db, account_id, "UTC")
    first_sent = await db.fetchval(
        "insert into touch_runs (account_id, lead_id, channel, status, sent_at, payload) values"
        " ($1, $2, 'email', 'sent', now() - interval '2 hours', '{}') returning sent_at", account_id, lead_id)
    await db.execute("insert into touch_runs (account_id, lead_id, channel, status, sent_at, payload) values"
                     " ($1, $2, 'sms', 'sent', now() - interval '30 hours', '{}')", account_id, lead_id)  # too old
    capped = factories.payload("sms")
    capped["routing"]["max_touches_per_day"] = 1
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake)):
        touch_id = await factories.touch(db, account_id, lead_id, channel="sms", payload_=capped)
        await wait_until(db_url, "select status = 'scheduled' and locked_by is null from touch_runs where id = $1",
                         touch_id)
    (event,) = await events_of(db, touch_id, "touch_deferred")
    assert event["payload"]["reason"] == "lead_cap"
    assert await db.fetchval("select scheduled_at from touch_runs where id = $1", touch_id) == \
        first_sent + timedelta(hours=24)
    assert not fake.requests


async def test_sender_cap_holds_with_two_daemons_racing(db, db_url):
    account_id = await factories.account(db)
    await db.execute("update account_provider_settings set config = config || '{\"daily_cap\": 3}'"
                     " where account_id = $1 and channel = 'sms'", account_id)
    leads = [await lead_in(db, account_id, "UTC", phone=f"+1415555{i:04d}") for i in range(10)]
    await db.execute("insert into touch_runs (account_id, lead_id, channel, status, sent_at, payload) values"
                     " ($1, $2, 'sms', 'sent', now() - interval '1 hour', '{}')", account_id, leads[0])
    async with SandboxProviders() as fake:
        s1 = daemon_settings(fake, worker_id="racer-1", claim_batch=3)
        s2 = daemon_settings(fake, worker_id="racer-2", claim_batch=3)
        async with running_daemon(db_url, s1), running_daemon(db_url, s2):
            async with db.transaction():  # all ten become due in one commit: both daemons race for them
                touches = [await factories.touch(db, account_id, lead, channel="sms") for lead in leads]
            await wait_until(db_url, "select count(*) = 10 from touch_runs where id = any($1::uuid[])"
                             " and status in ('sent', 'scheduled') and locked_by is null", touches)
        # the other account's email is not capped by the sms row
    statuses = {r["id"]: r["status"] for r in await db.fetch("select id, status from touch_runs where id = any($1)",
                                                             touches)}
    assert sum(s == "sent" for s in statuses.values()) == 2  # 3 per 24 h, one already used
    assert len(fake.requests) == 2
    for touch_id, status in statuses.items():
        if status == "scheduled":
            (event,) = await events_of(db, touch_id, "touch_deferred")
            assert event["payload"]["reason"] == "sender_cap"


async def test_two_connections_racing_for_the_last_slot_hand_out_one(db, db_url):
    """The pre-send check, driven by hand on two connections: the second waits on the first's advisory lock and,
    once the first has committed its hand-out, sees the slot taken."""
    account_id = await factories.account(db)
    await db.execute("update account_provider_settings set config = config || '{\"daily_cap\": 2}'"
                     " where account_id = $1 and channel = 'voice'", account_id)
    lead_a = await lead_in(db, account_id, "UTC")
    lead_b = await lead_in(db, account_id, "UTC", phone="+14155550124")
    await db.execute("insert into touch_runs (account_id, lead_id, channel, status, sent_at, payload) values"
                     " ($1, $2, 'voice', 'sent', now() - interval '3 hours', '{}')", account_id, lead_a)
    touch_a = await factories.touch(db, account_id, lead_a, channel="voice")
    touch_b = await factories.touch(db, account_id, lead_b, channel="voice")
    settings = load_settings(quiet_hours="off")
    one, two = await connect(db_url), await connect(db_url)
    try:
        assert [r["id"] for r in await one.fetch(Q.claim_touches_with_context, "w1", 60, 1, None, None)] in ([touch_a], [touch_b])
        assert len(await two.fetch(Q.claim_touches_with_context, "w2", 60, 1, None, None)) == 1
        mine = {1: await one.fetchval("select id from touch_runs where locked_by = 'w1'"),
                2: await two.fetchval("select id from touch_runs where locked_by = 'w2'")}

        async def gate(conn: asyncpg.Connection, touch_id: Any) -> Any:
            row = await conn.fetchrow(
                "select t.id, t.channel, t.lead_id, t.payload, l.timezone as lead_timezone,"
                " le.timezone as enriched_timezone, l.phone as lead_phone, ps.id as provider_settings_id,"
                " ps.config as provider_config from touch_runs t join leads l on l.id = t.lead_id"
                " left join lead_enriched le on le.lead_id = t.lead_id left join account_provider_settings ps"
                " on ps.account_id = t.account_id and ps.channel = t.channel and ps.is_default where t.id = $1",
                touch_id)
            return await send_rules_gate(conn, [(row, None)], datetime.now(UTC), settings, [touch_id])

        tx1 = one.transaction()
        await tx1.start()
        first = await gate(one, mine[1])
        tx2 = two.transaction()
        await tx2.start()
        second_task = asyncio.create_task(gate(two, mine[2]))
        await wait_until(db_url, "select count(*) >= 1 from pg_locks where locktype = 'advisory' and not granted")
        assert not second_task.done()
        # w1 hands out (or defers) under its lock and commits
        if first.kept:
            await one.fetch(Q.complete_touches, json.dumps([{
                "id": str(mine[1]), "status": "sent", "error": None, "provider_message_id": "CA1",
                "payload_patch": None, "event_type": "touch_sent", "event_payload": {}}]), "w1", 200)
        else:
            await one.fetch(Q.defer_touches, [d.as_row() for d in first.deferrals], "w1")
        await tx1.commit()
        second = await second_task
        await tx2.commit()
    finally:
        await one.close()
        await two.close()
    # the last slot went to exactly one of them: w1 counted w2's in-flight touch (conservative) and deferred, then
    # w2 saw w1's touch back in scheduled — or w1 sent and w2 saw the slot used
    assert len(first.kept) + len(second.kept) == 1
    assert len(first.deferrals) + len(second.deferrals) == 1
    assert [d.reason for d in first.deferrals + second.deferrals] == ["sender_cap"]


async def test_status_and_lead_inspect_show_deferred_touches(db, db_url):
    account_id = await factories.account(db)
    lead_id = await lead_in(db, account_id, zone_where_local_hour_is(3))
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake, quiet_hours=DEFAULT_QUIET)):
        touch_id = await factories.touch(db, account_id, lead_id, channel="sms")
        await wait_until(db_url, "select status = 'scheduled' and locked_by is null from touch_runs where id = $1",
                         touch_id)
    by_reason = await db.fetch(Q.deferred_touches_by_reason)
    assert [(r["reason"], r["touches"]) for r in by_reason] == [("quiet_hours", 1)]
    (row,) = await db.fetch(Q.lead_deferred_touches, lead_id)
    assert row["id"] == touch_id and row["reason"] == "quiet_hours"
    assert row["next_at"] == await db.fetchval("select scheduled_at from touch_runs where id = $1", touch_id)
    status = await cli("status", env=cli_env(db_url))
    assert status.rc == 0, status.err
    assert f"deferred by sending rules: quiet_hours 1 (next {row['next_at'].astimezone(UTC):%Y-%m-%d %H:%M:%S}" \
        in status.out
    inspect = await cli("lead", "inspect", str(lead_id), env=cli_env(db_url))
    assert inspect.rc == 0, inspect.err
    assert "deferred sms touch" in inspect.out and ": quiet_hours · goes at " \
        f"{row['next_at'].astimezone(UTC):%Y-%m-%d %H:%M:%S} · lead time zone {row['lead_timezone']}" in inspect.out
