"""Appointments and their reminders (SPEC §15): booking, reschedule, cancel, past appointments, the channel and its
fallback, reminders surviving reply_positive but not unsubscribe, replay, the brain view and lead inspect."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from listener.engine.appointments import choose_channel, drain_appointments, format_local, reminder_key
from listener.engine.reactions import drain_reactions
from listener.engine.replay import replay
from listener.intents.lead import inspect_lead
from listener.providers.sandbox import SandboxProviders
from listener.settings import SettingsError, load_settings
from listener.store.database import create_pool
from tests import factories
from tests.cli_runner import cli, cli_env
from tests.harness import daemon_settings, running_daemon, wait_until

REMINDERS = ("select id, channel, status, scheduled_at, idempotency_key, payload from touch_runs"
             " where payload->'meta'->>'appointment_id' = $1::uuid::text order by scheduled_at")


def test_reminder_setting_is_parsed_and_validated():
    assert load_settings().appointment_reminder_minutes == (1440, 60)
    assert load_settings(appointment_reminders=" 60, 1440,60 ").appointment_reminder_minutes == (1440, 60)
    assert load_settings(appointment_reminders="off").appointment_reminder_minutes == ()
    for bad in ("1h", "0", "-5", "60,,30", "999999"):
        with pytest.raises(SettingsError, match="REVENUE_ASI_APPOINTMENT_REMINDERS"):
            load_settings(appointment_reminders=bad)
    assert load_settings(appointment_channel="SMS").appointment_channel == "sms"
    with pytest.raises(SettingsError, match="REVENUE_ASI_APPOINTMENT_CHANNEL"):
        load_settings(appointment_channel="pigeon")


def test_channel_choice_and_fallback():
    mobile = "+34612345678"
    landline = "+34912345678"  # Spanish fixed line: no WhatsApp
    assert choose_channel("whatsapp", mobile, True, True) == "whatsapp"
    assert choose_channel("whatsapp", mobile, True, False) == "sms"  # no WhatsApp sender for the account
    assert choose_channel("whatsapp", landline, True, True) == "sms"
    assert choose_channel("whatsapp", None, True, True) == "email"
    assert choose_channel("whatsapp", None, False, True) is None
    assert choose_channel("voice", mobile, False, True) == "voice"


def test_starts_at_local_is_written_in_the_lead_zone_and_language():
    moment = datetime(2026, 12, 1, 16, 30, tzinfo=UTC)
    assert format_local(moment, "America/Mexico_City", "es") == "martes 1 de diciembre de 2026 a las 10:30 (CST)"
    assert format_local(moment, "America/New_York", "en") == "Tuesday, December 1, 2026 at 11:30 AM EST"
    epoch = int(moment.timestamp())
    assert reminder_key("a1", 60, moment) == f"appt:a1:60:{epoch}"


REMINDER_CONTENT_SID = "HX" + "ab" * 16


async def _lead(db, *, providers=True, phone="+14155550123", timezone="America/New_York", full_name="Ana Pérez",
                reminder_template=True):
    account_id = await factories.account(db, providers=providers)
    if reminder_template:  # the WhatsApp sender's approved reminder template (SPEC §12: no free-form outside 24 h)
        await db.execute("update account_provider_settings set config = config || jsonb_build_object("
                         "'appointment_content_sid', $2::text) where account_id = $1 and channel = 'whatsapp'",
                         account_id, REMINDER_CONTENT_SID)
    lead_id = await db.fetchval("insert into leads (account_id, full_name, phone, email, timezone)"
                                " values ($1, $2, $3, 'ana@example.com', $4) returning id",
                                account_id, full_name, phone, timezone)
    return account_id, lead_id


async def _book(db, account_id, lead_id, starts_in: timedelta, location="Clínica Centro"):
    return await db.fetchval("insert into appointments (account_id, lead_id, starts_at, location)"
                             " values ($1, $2, now() + $3::interval, $4) returning id",
                             account_id, lead_id, starts_in, location)


async def _events(db, lead_id, event_type):
    return [r["payload"] for r in await db.fetch(
        "select payload from core_memory_events where lead_id = $1 and event_type = $2 order by created_at",
        lead_id, event_type)]


async def _drain(db_url, **settings):
    pool = await create_pool(db_url)
    try:
        stats = await drain_appointments(pool, load_settings(**settings))
        await drain_reactions(pool)
        return stats
    finally:
        await pool.close()


async def test_booking_writes_appointment_booked_and_reminders_with_a_running_daemon(db, db_url):
    account_id, lead_id = await _lead(db)
    cadence_touch = await factories.touch(db, account_id, lead_id, status="scheduled", scheduled_in_s=3600)
    async with running_daemon(db_url, daemon_settings(None)):
        appt = await _book(db, account_id, lead_id, timedelta(days=3))
        await wait_until(db_url, "select count(*) = 1 from core_memory_events where lead_id = $1"
                         " and event_type = 'appointment_booked'", lead_id)
        # appointment_booked is a stop event: the open cadence touch is canceled by the existing reactions
        await wait_until(db_url, "select status = 'canceled' from touch_runs where id = $1", cadence_touch)
    starts_at = await db.fetchval("select starts_at from appointments where id = $1", appt)
    reminders = await db.fetch(REMINDERS, appt)
    assert [r["scheduled_at"] for r in reminders] == [starts_at - timedelta(minutes=1440),
                                                     starts_at - timedelta(minutes=60)]
    assert all(r["status"] == "scheduled" and r["channel"] == "whatsapp" for r in reminders)
    epoch = int(starts_at.timestamp())
    assert [r["idempotency_key"] for r in reminders] == [f"appt:{appt}:1440:{epoch}", f"appt:{appt}:60:{epoch}"]
    payload = reminders[0]["payload"]
    assert payload["meta"]["source"] == "appointment_reminder"
    assert payload["routing"]["stop_on_events"] == ["do_not_contact", "unsubscribe"]
    local = starts_at.astimezone(ZoneInfo("America/New_York"))
    body = payload["delivery"]["body"]
    assert body.startswith("Hola Ana, le recordamos su cita el ")  # no touch before: the default language, es
    assert f"a las {local:%H:%M}" in body and "Clínica Centro" in body
    (booked,) = await _events(db, lead_id, "appointment_booked")
    assert [r["touch_run_id"] for r in booked["reminders"]] == [str(r["id"]) for r in reminders]


async def test_language_of_the_last_touch_and_template_rows(db, db_url):
    account_id, lead_id = await _lead(db, timezone="Europe/Madrid")
    await factories.touch(db, account_id, lead_id, status="canceled",
                          payload_={"delivery": {"language": "en", "body": "hello"}})
    await db.execute("update message_templates set body = 'Reminder for {first_name}: {starts_at_local}, {location}.'"
                     " where template_name = 'appointment_reminder' and language = 'en'")
    appt = await _book(db, account_id, lead_id, timedelta(days=2), location=None)
    await _drain(db_url)
    (first, _second) = await db.fetch(REMINDERS, appt)
    starts_at = await db.fetchval("select starts_at from appointments where id = $1", appt)
    local = starts_at.astimezone(ZoneInfo("Europe/Madrid"))
    assert first["payload"]["delivery"]["language"] == "en"
    assert first["payload"]["delivery"]["body"] == (
        f"Reminder for Ana: {format_local(starts_at, 'Europe/Madrid', 'en')}, the agreed place.")
    assert f"{(local.hour % 12) or 12}:{local:%M}" in first["payload"]["delivery"]["body"]
    # no template row at all: the built-in text
    await db.execute("delete from message_templates where template_name = 'appointment_reminder'")
    other = await _book(db, account_id, lead_id, timedelta(days=4))
    await _drain(db_url)
    assert (await db.fetch(REMINDERS, other))[0]["payload"]["delivery"]["body"].startswith("Hi Ana, this is a reminder")


async def test_whatsapp_falls_back_to_sms_without_an_approved_reminder_template(db, db_url):
    account_id, lead_id = await _lead(db, reminder_template=False)
    async with running_daemon(db_url, daemon_settings(None)):
        appt = await _book(db, account_id, lead_id, timedelta(days=3))
        await wait_until(db_url, "select count(*) = 2 from touch_runs where payload->'meta'->>'appointment_id'"
                         " = $1::uuid::text", appt)
    assert {r["channel"] for r in await db.fetch(REMINDERS, appt)} == {"sms"}


async def test_whatsapp_reminders_carry_the_template_and_its_variables(db, db_url):
    account_id, lead_id = await _lead(db)
    async with running_daemon(db_url, daemon_settings(None)):
        appt = await _book(db, account_id, lead_id, timedelta(days=3))
        await wait_until(db_url, "select count(*) = 2 from touch_runs where payload->'meta'->>'appointment_id'"
                         " = $1::uuid::text", appt)
    payload = await db.fetchval("select payload from touch_runs where payload->'meta'->>'appointment_id'"
                                " = $1::uuid::text limit 1", appt)
    template = payload["delivery"]["channel_overrides"]["whatsapp"]
    assert template["content_sid"] == REMINDER_CONTENT_SID
    assert template["content_variables"]["1"] == "Ana" and template["content_variables"]["3"] == "Clínica Centro"


async def test_whatsapp_falls_back_to_sms_without_a_whatsapp_sender(db, db_url):
    account_id, lead_id = await _lead(db, providers=False)
    await db.execute("insert into account_provider_settings (account_id, channel, provider, is_default, config)"
                     " values ($1, 'sms', 'twilio', true, '{\"from\": \"+15005550006\"}')", account_id)
    appt = await _book(db, account_id, lead_id, timedelta(days=2))
    await _drain(db_url)
    assert {r["channel"] for r in await db.fetch(REMINDERS, appt)} == {"sms"}


async def test_reschedule_and_cancel(db, db_url):
    account_id, lead_id = await _lead(db)
    appt = await _book(db, account_id, lead_id, timedelta(days=3))
    await _drain(db_url)
    old = await db.fetch(REMINDERS, appt)
    await db.execute("update appointments set starts_at = starts_at + interval '1 day' where id = $1", appt)
    stats = await _drain(db_url)
    assert (stats.rescheduled, stats.reminders_created, stats.reminders_canceled) == (1, 2, 2)
    rows = await db.fetch(REMINDERS, appt)
    assert [r["status"] for r in rows if r["id"] in {o["id"] for o in old}] == ["canceled", "canceled"]
    new = [r for r in rows if r["status"] == "scheduled"]
    new_starts = await db.fetchval("select starts_at from appointments where id = $1", appt)
    assert [r["scheduled_at"] for r in new] == [new_starts - timedelta(minutes=1440), new_starts - timedelta(minutes=60)]
    (moved,) = await _events(db, lead_id, "appointment_rescheduled")
    assert moved["previous_starts_at"] == (new_starts - timedelta(days=1)).isoformat()
    assert sorted(moved["reminders_canceled"]) == sorted(str(o["id"]) for o in old)
    canceled_events = await _events(db, lead_id, "touch_canceled")
    assert {e["reason"] for e in canceled_events} == {"appointment_rescheduled"}

    await db.execute("update appointments set status = 'canceled' where id = $1", appt)
    await _drain(db_url)
    assert {r["status"] for r in await db.fetch(REMINDERS, appt)} == {"canceled"}
    (canceled,) = await _events(db, lead_id, "appointment_canceled")
    assert sorted(canceled["reminders_canceled"]) == sorted(str(r["id"]) for r in new)
    # an update that changes neither status nor starts_at files nothing
    await db.execute("update appointments set notes = 'bring x-rays' where id = $1", appt)
    assert await db.fetchval("select count(*) from appointment_inbox") == 0


async def test_a_new_location_rewrites_the_open_reminders(db, db_url):
    account_id, lead_id = await _lead(db)
    appt = await _book(db, account_id, lead_id, timedelta(days=3), location="Clínica Centro")
    await _drain(db_url)
    before = await db.fetch(REMINDERS, appt)
    assert [r["channel"] for r in before] == ["whatsapp", "whatsapp"]
    await db.execute("update appointments set location = 'Clínica Norte, planta 2' where id = $1", appt)
    stats = await _drain(db_url)
    assert (stats.updated, stats.reminders_updated, stats.reminders_created, stats.reminders_canceled) == (1, 2, 0, 0)
    after = await db.fetch(REMINDERS, appt)
    assert [(r["id"], r["status"], r["idempotency_key"], r["scheduled_at"]) for r in after] == \
        [(r["id"], r["status"], r["idempotency_key"], r["scheduled_at"]) for r in before]  # the same touches
    for row in after:
        delivery = row["payload"]["delivery"]
        assert "Clínica Norte, planta 2" in delivery["body"] and "Clínica Centro" not in delivery["body"]
        assert delivery["variables"]["location"] == "Clínica Norte, planta 2"
        assert delivery["channel_overrides"]["whatsapp"]["content_variables"]["3"] == "Clínica Norte, planta 2"
    (event,) = await _events(db, lead_id, "appointment_updated")
    assert (event["location"], event["previous_location"]) == ("Clínica Norte, planta 2", "Clínica Centro")
    assert sorted(event["reminders_updated"]) == sorted(str(r["id"]) for r in before)
    # the same location again files nothing; a canceled appointment's location change does nothing
    await db.execute("update appointments set location = 'Clínica Norte, planta 2' where id = $1", appt)
    assert await db.fetchval("select count(*) from appointment_inbox") == 0
    await db.execute("update appointments set status = 'canceled' where id = $1", appt)
    await _drain(db_url)
    await db.execute("update appointments set location = 'Otra' where id = $1", appt)
    stats = await _drain(db_url)
    assert (stats.updated, stats.reminders_updated) == (0, 0)
    assert len(await _events(db, lead_id, "appointment_updated")) == 1


async def test_past_reminders_are_not_created_and_a_past_appointment_says_why(db, db_url):
    account_id, lead_id = await _lead(db)
    soon = await _book(db, account_id, lead_id, timedelta(hours=3))
    past = await _book(db, account_id, lead_id, timedelta(days=-1))
    await _drain(db_url)
    (only,) = await db.fetch(REMINDERS, soon)
    assert only["idempotency_key"].split(":")[2] == "60"
    assert await db.fetch(REMINDERS, past) == []
    events = {e["appointment_id"]: e for e in await _events(db, lead_id, "appointment_booked")}
    assert [s["reason"] for s in events[str(soon)]["reminders_skipped"]] == ["reminder_time_past"]
    assert events[str(past)]["no_reminders_reason"] == "appointment_in_past"
    assert events[str(past)]["reminders"] == []
    assert await db.fetchval("select status from appointments where id = $1", past) == "booked"


async def test_unknown_lead_is_refused_by_the_database(db):
    account_id = await factories.account(db)
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await db.execute("insert into appointments (account_id, lead_id, starts_at) values ($1, $2, now())",
                         account_id, uuid.uuid4())
    with pytest.raises(asyncpg.CheckViolationError):
        _, lead_id = await _lead(db)
        await db.execute("insert into appointments (account_id, lead_id, starts_at, status)"
                         " values ($1, $2, now(), 'maybe')", account_id, lead_id)
    # another account's lead: its reminders would go out with the wrong account's senders
    other_account, other_lead = await _lead(db)
    with pytest.raises(asyncpg.ForeignKeyViolationError) as refused:
        await db.execute("insert into appointments (account_id, lead_id, starts_at) values ($1, $2, now())",
                         account_id, other_lead)
    assert refused.value.constraint_name == "appointments_lead_account_fkey"
    appt = await _book(db, other_account, other_lead, timedelta(days=1))
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await db.execute("update appointments set account_id = $1 where id = $2", account_id, appt)
    await db.execute("update leads set account_id = $1 where id = $2", account_id, other_lead)  # a lead moved
    assert await db.fetchval("select account_id from appointments where id = $1", appt) == account_id


async def test_reminders_survive_reply_positive_but_not_unsubscribe(db, db_url):
    account_id, lead_id = await _lead(db)
    appt = await _book(db, account_id, lead_id, timedelta(days=3))
    await _drain(db_url)
    await factories.event(db, lead_id, "reply_positive")
    await factories.event(db, lead_id, "appointment_booked")  # written by another system too
    await _drain(db_url)
    assert await db.fetchval("select count(*) from event_reactions") == 0  # the reactions ran
    assert {r["status"] for r in await db.fetch(REMINDERS, appt)} == {"scheduled"}
    await factories.event(db, lead_id, "unsubscribe")
    await _drain(db_url)
    assert {r["status"] for r in await db.fetch(REMINDERS, appt)} == {"canceled"}


async def test_replay_recreates_missing_reminders_idempotently(db, db_url):
    account_id, lead_id = await _lead(db)
    appt = await _book(db, account_id, lead_id, timedelta(days=3))
    # the daemon never ran: nothing was created
    pool = await create_pool(db_url)
    try:
        since = datetime.now(UTC) - timedelta(hours=1)
        dry = await replay(pool, since, dry_run=True, settings=load_settings())
        assert len(dry.reminders_created) == 2 and await db.fetch(REMINDERS, appt) == []
        first = await replay(pool, since, settings=load_settings())
        assert len(first.reminders_created) == 2
        second = await replay(pool, since, settings=load_settings())
        assert second.reminders_created == []
        # a reminder canceled (e.g. by an unsubscribe) is not re-created either
        await db.execute("update touch_runs set status = 'canceled' where payload->'meta'->>'appointment_id' = $1::text",
                         str(appt))
        assert (await replay(pool, since, settings=load_settings())).reminders_created == []
    finally:
        await pool.close()
    # the daemon's own reaction later creates no duplicates
    await _drain(db_url)
    assert len(await db.fetch(REMINDERS, appt)) == 2
    shown = await cli("replay", "--since", "1h", "--json", env=cli_env(db_url))
    assert shown.rc == 0, shown.err
    assert json.loads(shown.out)["reminders_created"] == []


async def test_brain_view_and_lead_inspect_see_the_appointment(db, db_url):
    account_id, lead_id = await _lead(db)
    # touched 60 days ago, nothing open: reactivate ...
    await factories.event(db, lead_id, "touch_sent", direction="outbound", channel="sms", created_ago_s=60 * 86400)
    await db.execute("delete from event_reactions")
    view = "select recommended_action from lead_next_action_view_v5 where lead_id = $1"
    assert await db.fetchval(view, lead_id) == "reactivate"
    # ... but not with an upcoming appointment, even before the daemon wrote appointment_booked
    appt = await _book(db, account_id, lead_id, timedelta(days=2))
    assert await db.fetchval(view, lead_id) == "do_nothing"
    await _drain(db_url)
    report = await inspect_lead(db, lead_id)
    (shown,) = report["appointments"]
    assert shown["id"] == str(appt) and shown["upcoming"] is True and len(shown["reminders"]) == 2
    out = await cli("lead", "inspect", str(lead_id), env=cli_env(db_url))
    assert out.rc == 0, out.err
    assert "appointment" in out.out and "Clínica Centro" in out.out


async def test_a_due_reminder_is_sent_after_reply_positive_by_the_running_daemon(db, db_url):
    """End to end: the dispatcher's pre-send stop-event re-check lets a reminder through after reply_positive."""
    account_id, lead_id = await _lead(db)
    async with SandboxProviders() as fake:
        # quiet hours off: the reminder is due within seconds whatever the hour (SPEC §13 applies otherwise)
        settings = daemon_settings(fake, appointment_reminders="2", quiet_hours="off")
        async with running_daemon(db_url, settings):
            appt = await _book(db, account_id, lead_id, timedelta(seconds=126))
            await wait_until(db_url, "select count(*) = 1 from touch_runs where status = 'scheduled'"
                             " and payload->'meta'->>'appointment_id' = $1::uuid::text", appt)
            # the lead wrote on WhatsApp: its 24 h session window is open, so the reminder goes out free-form (§12)
            await factories.event(db, lead_id, "reply_received", channel="whatsapp")
            await factories.event(db, lead_id, "reply_positive")
            await wait_until(db_url, "select status = 'sent' from touch_runs"
                             " where payload->'meta'->>'appointment_id' = $1::uuid::text", appt, timeout=30)
        (request,) = fake.requests
    assert request.to == "whatsapp:+14155550123"
    assert request.body.get("ContentSid") == REMINDER_CONTENT_SID or \
        "Hola Ana, le recordamos su cita" in request.body["Body"]



async def test_booked_again_puts_its_own_reminders_back_but_not_suppressed_ones(db, db_url):
    account_id, lead_id = await _lead(db)
    appt = await _book(db, account_id, lead_id, timedelta(days=3))
    await _drain(db_url)
    first = [r["id"] for r in await db.fetch(REMINDERS, appt)]
    await db.execute("update appointments set status = 'canceled' where id = $1", appt)
    await _drain(db_url)
    await db.execute("update appointments set status = 'booked' where id = $1", appt)
    stats = await _drain(db_url)
    assert stats.booked == 1 and stats.reminders_created == 2
    rows = await db.fetch(REMINDERS, appt)
    assert [r["id"] for r in rows] == first and {r["status"] for r in rows} == {"scheduled"}
    assert len(await _events(db, lead_id, "appointment_booked")) == 2
    # canceled by an unsubscribe instead: booking again does not bring them back (nor create new ones)
    await factories.event(db, lead_id, "unsubscribe")
    await _drain(db_url)
    await db.execute("update appointments set status = 'canceled' where id = $1", appt)
    await _drain(db_url)
    await db.execute("update appointments set status = 'booked' where id = $1", appt)
    await _drain(db_url)
    assert {r["status"] for r in await db.fetch(REMINDERS, appt)} == {"canceled"}
    (last,) = (await _events(db, lead_id, "appointment_booked"))[-1:]
    assert last["no_reminders_reason"] == "suppressed"
