"""SPEC §3, §7, §8: the brain views on real rows."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import pytest

from tests import factories

DAY = 86400.0
MINUTES_PER_DAY = 1440


async def row(db: asyncpg.Connection, view: str, lead_id: uuid.UUID) -> dict:
    rows = await db.fetch(f"select * from {view} where lead_id = $1", lead_id)
    assert len(rows) == 1, f"{view} has {len(rows)} rows for the lead"
    return dict(rows[0])


@pytest.fixture
async def account_id(db) -> uuid.UUID:
    return await factories.account(db)


async def created_at(db: asyncpg.Connection, event_id: uuid.UUID) -> dt.datetime:
    return await db.fetchval("select created_at from core_memory_events where id = $1", event_id)


async def sent_touch(
    db: asyncpg.Connection, account_id: uuid.UUID, lead_id: uuid.UUID, *, days_ago: float, channel: str = "sms",
    campaign_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """A touch that went out days ago: the touch row (status sent) and its touch_sent event."""
    touch_id = await factories.touch(db, account_id, lead_id, channel=channel, status="sent", campaign_id=campaign_id)
    await factories.event(db, lead_id, "touch_sent", direction="outbound", channel=channel,
                          payload_={"touch_run_id": str(touch_id)}, created_ago_s=days_ago * DAY)
    return touch_id


async def campaign(db: asyncpg.Connection, account_id: uuid.UUID, *, status: str = "active") -> uuid.UUID:
    return await db.fetchval(
        "insert into campaigns (account_id, name, status) values ($1, 'Spring', $2) returning id", account_id, status
    )


async def enroll(db: asyncpg.Connection, campaign_id: uuid.UUID, lead_id: uuid.UUID, status: str = "active") -> None:
    await db.execute(
        "insert into campaign_leads (campaign_id, lead_id, status) values ($1, $2, $3)", campaign_id, lead_id, status
    )


# ---------------------------------------------------------------- lead_contacts_v1


async def test_contacts_prefer_lead_enriched(db, account_id):
    lead_id = await factories.lead(db, account_id, phone="+14155550123", email="john@example.com",
                                   enriched_phone="+34612345678", enriched_email="juan@empresa.es", first_name="Juan")
    await db.execute("update lead_enriched set company_name = 'Empresa SL', timezone = 'Europe/Madrid'"
                     " where lead_id = $1", lead_id)
    c = await row(db, "lead_contacts_v1", lead_id)
    assert c["phone"] == "+34612345678"
    assert c["email"] == "juan@empresa.es"
    assert c["first_name"] == "Juan"
    assert c["company_name"] == "Empresa SL"
    assert c["timezone"] == "Europe/Madrid"
    assert c["has_phone"] is True and c["has_email"] is True
    assert c["account_id"] == account_id


async def test_contacts_fall_back_to_leads(db, account_id):
    plain = await factories.lead(db, account_id, full_name="John Smith", phone="+14155550123", email="john@example.com")
    c = await row(db, "lead_contacts_v1", plain)
    assert (c["phone"], c["email"], c["first_name"], c["timezone"]) == (
        "+14155550123", "john@example.com", "John", "UTC")

    # An enriched row with blank or missing values does not hide the lead's own.
    blank = await factories.lead(db, account_id, full_name="Ana Ruiz", phone="+14155550124", email="ana@example.com")
    await db.execute("insert into lead_enriched (lead_id, phone, email, first_name) values ($1, '  ', null, '')", blank)
    c = await row(db, "lead_contacts_v1", blank)
    assert (c["phone"], c["email"], c["first_name"]) == ("+14155550124", "ana@example.com", "Ana")
    assert c["has_phone"] and c["has_email"]


async def test_contacts_missing_values(db, account_id):
    lead_id = await factories.lead(db, account_id, full_name=None, phone=None, email="  ")
    c = await row(db, "lead_contacts_v1", lead_id)
    assert c["phone"] is None and c["email"] is None
    assert c["has_phone"] is False and c["has_email"] is False
    # No name at all is NULL, not an empty string that would render "Hola " instead of failing the touch.
    assert c["first_name"] is None


async def test_contacts_one_row_per_lead(db, account_id):
    leads = [await factories.lead(db, account_id, enriched_phone="+34612345678" if i % 2 else None) for i in range(5)]
    n = await db.fetchval("select count(*) from lead_contacts_v1 where lead_id = any($1::uuid[])", leads)
    assert n == 5


# ---------------------------------------------------------------- lead_suppression_status_v1


async def test_clean_lead_is_not_suppressed(db, account_id):
    lead_id = await factories.lead(db, account_id)
    s = await row(db, "lead_suppression_status_v1", lead_id)
    assert s["is_unsubscribed"] is False
    assert s["in_negative_cooldown"] is False
    assert s["reason"] is None
    assert s["reactivation_eligible_at"] is None


@pytest.mark.parametrize("event_type", ["unsubscribe", "do_not_contact"])
async def test_unsubscribe_and_do_not_contact_suppress_forever(db, account_id, event_type):
    lead_id = await factories.lead(db, account_id)
    other = await factories.lead(db, account_id)
    await factories.event(db, lead_id, event_type, created_ago_s=400 * DAY)
    s = await row(db, "lead_suppression_status_v1", lead_id)
    assert s["is_unsubscribed"] is True
    assert s["reason"] == event_type
    assert s["reactivation_eligible_at"] is None
    assert s["in_negative_cooldown"] is False
    # Another lead of the same account is untouched.
    o = await row(db, "lead_suppression_status_v1", other)
    assert o["is_unsubscribed"] is False and o["reason"] is None


async def test_recent_negative_reply_is_a_cooldown(db, account_id):
    lead_id = await factories.lead(db, account_id)
    event_id = await factories.event(db, lead_id, "reply_negative", created_ago_s=10 * DAY)
    s = await row(db, "lead_suppression_status_v1", lead_id)
    assert s["in_negative_cooldown"] is True
    assert s["is_unsubscribed"] is False
    assert s["reason"] == "reply_negative"
    assert s["reactivation_eligible_at"] == await created_at(db, event_id) + dt.timedelta(days=30)


async def test_old_negative_reply_is_over(db, account_id):
    lead_id = await factories.lead(db, account_id)
    await factories.event(db, lead_id, "reply_negative", created_ago_s=31 * DAY)
    s = await row(db, "lead_suppression_status_v1", lead_id)
    assert s["in_negative_cooldown"] is False
    assert s["is_unsubscribed"] is False
    assert s["reason"] is None


async def test_the_newest_negative_reply_counts(db, account_id):
    lead_id = await factories.lead(db, account_id)
    await factories.event(db, lead_id, "reply_negative", created_ago_s=60 * DAY)
    newest = await factories.event(db, lead_id, "reply_negative", created_ago_s=2 * DAY)
    s = await row(db, "lead_suppression_status_v1", lead_id)
    assert s["in_negative_cooldown"] is True
    assert s["reactivation_eligible_at"] == await created_at(db, newest) + dt.timedelta(days=30)


async def test_unsubscribe_wins_over_negative_reply(db, account_id):
    lead_id = await factories.lead(db, account_id)
    await factories.event(db, lead_id, "reply_negative", created_ago_s=DAY)
    await factories.event(db, lead_id, "unsubscribe")
    s = await row(db, "lead_suppression_status_v1", lead_id)
    assert s["is_unsubscribed"] is True and s["reason"] == "unsubscribe"
    assert s["reactivation_eligible_at"] is None


# ---------------------------------------------------------------- v_lead_channel_attempts


async def attempts(db: asyncpg.Connection, lead_id: uuid.UUID) -> dict[tuple, dict]:
    rows = await db.fetch("select * from v_lead_channel_attempts where lead_id = $1", lead_id)
    return {(r["campaign_id"], r["step"], r["channel"]): dict(r) for r in rows}


async def outcome(db, lead_id, touch_id, event_type, *, ago_s, failure_class=None, channel="sms"):
    payload = {"touch_run_id": str(touch_id)}
    if failure_class:
        payload.update(failure_class=failure_class, error_code="21211", error="invalid number")
    return await factories.event(db, lead_id, event_type, direction="outbound", channel=channel,
                                 payload_=payload, created_ago_s=ago_s)


async def test_channel_attempts_count_sent_and_failed(db, account_id):
    lead_id = await factories.lead(db, account_id)
    camp_a = await campaign(db, account_id)
    camp_b = await campaign(db, account_id)
    t1 = await factories.touch(db, account_id, lead_id, campaign_id=camp_a, channel="sms", status="sent")
    t2 = await factories.touch(db, account_id, lead_id, campaign_id=camp_a, channel="sms", status="failed")
    t3 = await factories.touch(db, account_id, lead_id, campaign_id=camp_a, channel="sms", status="failed")
    t4 = await factories.touch(db, account_id, lead_id, campaign_id=camp_b, channel="sms", status="sent")
    await factories.touch(db, account_id, lead_id, campaign_id=camp_a, channel="voice")  # only touch_scheduled
    t6 = await factories.touch(db, account_id, lead_id, campaign_id=camp_a, step=2, channel="sms", status="sent")

    await outcome(db, lead_id, t1, "touch_sent", ago_s=3000)
    await outcome(db, lead_id, t2, "touch_failed", ago_s=2000, failure_class="transient")
    newest = await outcome(db, lead_id, t3, "touch_failed", ago_s=100, failure_class="permanent")
    await outcome(db, lead_id, t4, "touch_sent", ago_s=50)
    await outcome(db, lead_id, t6, "touch_sent", ago_s=10)
    # Events that are not attempts do not count, even when they name the touch.
    await factories.event(db, lead_id, "fallback_decision", direction="internal",
                          payload_={"touch_run_id": str(t1), "decision": "retry_same_channel"})
    await factories.event(db, lead_id, "touch_canceled", direction="internal", payload_={"touch_run_id": str(t1)})

    got = await attempts(db, lead_id)
    a = got[(camp_a, 1, "sms")]
    assert a["attempts_done"] == 3
    assert a["permanent_failures"] == 1
    assert a["last_attempt_at"] == await created_at(db, newest)

    b = got[(camp_b, 1, "sms")]
    assert b["attempts_done"] == 1 and b["permanent_failures"] == 0

    v = got[(camp_a, 1, "voice")]
    assert v["attempts_done"] == 0 and v["last_attempt_at"] is None and v["permanent_failures"] == 0

    assert got[(camp_a, 2, "sms")]["attempts_done"] == 1
    assert set(got) == {(camp_a, 1, "sms"), (camp_b, 1, "sms"), (camp_a, 1, "voice"), (camp_a, 2, "sms")}


async def test_channel_attempts_for_reactivation_touches_without_campaign(db, account_id):
    lead_id = await factories.lead(db, account_id)
    other = await factories.lead(db, account_id)
    t1 = await factories.touch(db, account_id, lead_id, channel="whatsapp", status="sent")
    t2 = await factories.touch(db, account_id, lead_id, channel="whatsapp", status="sent")
    t3 = await factories.touch(db, account_id, other, channel="whatsapp", status="sent")
    await outcome(db, lead_id, t1, "touch_sent", ago_s=20, channel="whatsapp")
    await outcome(db, lead_id, t2, "touch_sent", ago_s=10, channel="whatsapp")
    await outcome(db, other, t3, "touch_sent", ago_s=10, channel="whatsapp")
    got = await attempts(db, lead_id)
    assert list(got) == [(None, 1, "whatsapp")]
    assert got[(None, 1, "whatsapp")]["attempts_done"] == 2
    assert (await attempts(db, other))[(None, 1, "whatsapp")]["attempts_done"] == 1


# ---------------------------------------------------------------- lead_next_action_view_v5


async def action(db: asyncpg.Connection, lead_id: uuid.UUID) -> dict:
    return await row(db, "lead_next_action_view_v5", lead_id)


async def test_unsubscribed_lead_is_stop_all(db, account_id):
    lead_id = await factories.lead(db, account_id, full_name="Ana Ruiz")
    await factories.touch(db, account_id, lead_id)  # even with an open touch
    await factories.event(db, lead_id, "unsubscribe")
    a = await action(db, lead_id)
    assert a["recommended_action"] == "stop_all"
    assert a["recommended_channel"] is None
    assert a["lead_name"] == "Ana Ruiz"


async def test_do_not_contact_is_stop_all(db, account_id):
    lead_id = await factories.lead(db, account_id)
    await factories.event(db, lead_id, "do_not_contact", created_ago_s=100 * DAY)
    assert (await action(db, lead_id))["recommended_action"] == "stop_all"


async def test_recent_negative_reply_is_cooldown_until_it_ends(db, account_id):
    lead_id = await factories.lead(db, account_id)
    await factories.event(db, lead_id, "reply_negative", created_ago_s=10 * DAY)
    a = await action(db, lead_id)
    assert a["recommended_action"] == "cooldown"
    # 20 days left (less the few milliseconds since the insert, rounded up).
    assert 20 * MINUTES_PER_DAY - 1 <= a["recommended_delay_minutes"] <= 20 * MINUTES_PER_DAY


async def test_cooldown_delay_is_the_cooldown_not_the_reactivation_window(db, account_id):
    """A lead touched 12 days ago answered 'no' 10 days ago: the cooldown ends in 20 days, which is when the
    recommendation changes; reactivation eligibility (45 days after the touch) is a different date."""
    lead_id = await factories.lead(db, account_id)
    await sent_touch(db, account_id, lead_id, days_ago=12)
    await factories.event(db, lead_id, "reply_negative", created_ago_s=10 * DAY)
    a = await action(db, lead_id)
    assert a["recommended_action"] == "cooldown"
    assert 20 * MINUTES_PER_DAY - 1 <= a["recommended_delay_minutes"] <= 20 * MINUTES_PER_DAY


async def test_positive_reply_is_do_nothing(db, account_id):
    lead_id = await factories.lead(db, account_id)
    camp = await campaign(db, account_id)
    await enroll(db, camp, lead_id)
    await factories.event(db, lead_id, "reply_positive", score_delta=20)
    assert (await action(db, lead_id))["recommended_action"] == "do_nothing"


async def test_appointment_is_do_nothing(db, account_id):
    lead_id = await factories.lead(db, account_id)
    await sent_touch(db, account_id, lead_id, days_ago=90)
    await factories.event(db, lead_id, "appointment_booked", created_ago_s=80 * DAY)
    assert (await action(db, lead_id))["recommended_action"] == "do_nothing"


async def test_open_touch_is_send_with_its_delay(db, account_id):
    lead_id = await factories.lead(db, account_id)
    await sent_touch(db, account_id, lead_id, days_ago=60)  # would be reactivate without the open touch
    await factories.touch(db, account_id, lead_id, channel="email", status="scheduled", scheduled_in_s=7200)
    await factories.touch(db, account_id, lead_id, channel="sms", status="scheduled", scheduled_in_s=3 * 7200)
    a = await action(db, lead_id)
    assert a["recommended_action"] == "send"
    assert a["open_touches"] == 2
    assert 119 <= a["recommended_delay_minutes"] <= 120


async def test_active_campaign_is_send_now(db, account_id):
    lead_id = await factories.lead(db, account_id)
    await sent_touch(db, account_id, lead_id, days_ago=60)
    camp = await campaign(db, account_id)
    await enroll(db, camp, lead_id)
    a = await action(db, lead_id)
    assert a["recommended_action"] == "send"
    assert a["in_active_campaign"] is True
    assert a["recommended_delay_minutes"] == 0


async def test_never_touched_lead_is_send(db, account_id):
    with_phone = await factories.lead(db, account_id, phone="+14155550123", email=None)
    email_only = await factories.lead(db, account_id, phone=None, email="ana@example.com")
    a = await action(db, with_phone)
    assert a["recommended_action"] == "send"
    assert a["recommended_channel"] == "whatsapp"
    assert a["recommended_delay_minutes"] == 0
    b = await action(db, email_only)
    assert b["recommended_action"] == "send"
    assert b["recommended_channel"] == "email"


async def test_lead_without_any_contact_is_do_nothing(db, account_id):
    lead_id = await factories.lead(db, account_id, phone=None, email=None)
    a = await action(db, lead_id)
    assert a["recommended_action"] == "do_nothing"
    assert a["recommended_channel"] is None


async def test_touched_long_ago_is_reactivate_on_the_last_channel(db, account_id):
    lead_id = await factories.lead(db, account_id)
    await sent_touch(db, account_id, lead_id, days_ago=50, channel="sms")
    a = await action(db, lead_id)
    assert a["recommended_action"] == "reactivate"
    assert a["recommended_channel"] == "sms"
    assert a["recommended_delay_minutes"] == 0
    assert a["open_touches"] == 0 and a["in_active_campaign"] is False


@pytest.mark.parametrize(("campaign_status", "enrollment_status"),
                         [("paused", "active"), ("archived", "active"), ("active", "completed"), ("active", "stopped")])
async def test_inactive_campaigns_do_not_block_reactivation(db, account_id, campaign_status, enrollment_status):
    lead_id = await factories.lead(db, account_id)
    camp = await campaign(db, account_id, status=campaign_status)
    await enroll(db, camp, lead_id, enrollment_status)
    await sent_touch(db, account_id, lead_id, days_ago=50, campaign_id=camp)
    assert (await action(db, lead_id))["recommended_action"] == "reactivate"


async def test_touched_recently_is_do_nothing_until_reactivation(db, account_id):
    lead_id = await factories.lead(db, account_id)
    await sent_touch(db, account_id, lead_id, days_ago=10, channel="voice")
    a = await action(db, lead_id)
    assert a["recommended_action"] == "do_nothing"
    assert a["recommended_channel"] == "voice"
    assert 35 * MINUTES_PER_DAY - 1 <= a["recommended_delay_minutes"] <= 35 * MINUTES_PER_DAY


async def test_last_channel_unreachable_falls_back_to_a_reachable_one(db, account_id):
    lead_id = await factories.lead(db, account_id, phone=None, email="ana@example.com")
    await sent_touch(db, account_id, lead_id, days_ago=50, channel="whatsapp")
    a = await action(db, lead_id)
    assert a["recommended_action"] == "reactivate"
    assert a["recommended_channel"] == "email"


async def test_priority_is_score_plus_recency(db, account_id):
    fresh = await factories.lead(db, account_id)
    await factories.event(db, fresh, "lead_scored", direction="internal", score_delta=5)
    await factories.event(db, fresh, "lead_scored", direction="internal", score_delta=7)
    assert (await action(db, fresh))["priority_score"] == 12 + 30

    ten_days = await factories.lead(db, account_id)
    await factories.event(db, ten_days, "lead_scored", direction="internal", score_delta=5, created_ago_s=10 * DAY)
    await factories.event(db, ten_days, "lead_scored", direction="internal", score_delta=7, created_ago_s=10 * DAY)
    assert (await action(db, ten_days))["priority_score"] == 12 + 20

    old = await factories.lead(db, account_id)
    await factories.event(db, old, "lead_scored", direction="internal", score_delta=5, created_ago_s=40 * DAY)
    await factories.event(db, old, "lead_scored", direction="internal", score_delta=7, created_ago_s=90 * DAY)
    assert (await action(db, old))["priority_score"] == 12

    # Recency counts from the newest event; events without a score add nothing.
    mixed = await factories.lead(db, account_id)
    await factories.event(db, mixed, "lead_scored", direction="internal", score_delta=-20, created_ago_s=40 * DAY)
    await factories.event(db, mixed, "note", direction="internal")
    assert (await action(db, mixed))["priority_score"] == -20 + 30

    nothing = await factories.lead(db, account_id)
    assert (await action(db, nothing))["priority_score"] == 0


async def test_one_row_per_lead(db, account_id):
    leads = [await factories.lead(db, account_id) for _ in range(3)]
    camp = await campaign(db, account_id)
    for lead_id in leads:
        await enroll(db, camp, lead_id)
        await factories.touch(db, account_id, lead_id)
        await factories.touch(db, account_id, lead_id, channel="email")
        await factories.event(db, lead_id, "reply_negative", created_ago_s=40 * DAY)
    rows = await db.fetch("select lead_id from lead_next_action_view_v5")
    assert sorted(r["lead_id"] for r in rows) == sorted(leads)


async def test_a_lead_whose_only_attempts_failed_counts_as_touched(db):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    await factories.event(db, lead_id, "touch_failed", direction="outbound", created_ago_s=50 * 86400)
    action = await db.fetchval("select recommended_action from lead_next_action_view_v5 where lead_id = $1", lead_id)
    assert action == "reactivate"
