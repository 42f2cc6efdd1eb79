"""The fallback decision (SPEC §7) on real rows: every case of the matrix, decided by the SQL function and by the
Python mirror, which must agree (``both``). Times are explicit, so nothing depends on the wall clock."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from listener.rules.decision import Decision, decide, parse_plan
from listener.store.decisions import decide_sql, decide_sql_many, load_decision_inputs
from listener.store.queries import Q
from tests import factories

T0 = datetime(2026, 3, 2, 9, 30, 0, 250_000, tzinfo=UTC)
US = timedelta(microseconds=1)


def plan(order: list[str] | None = None, max_attempts: dict[str, Any] | None = None,
         cooldown: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"order": order if order is not None else ["voice", "whatsapp", "sms", "email"],
            "max_attempts": max_attempts if max_attempts is not None else {"voice": 2, "whatsapp": 3, "sms": 2,
                                                                            "email": 3},
            "cooldown_minutes": cooldown if cooldown is not None else {}}


async def touch_at(db: asyncpg.Connection, account_id: uuid.UUID, lead_id: uuid.UUID, at: datetime, *,
                   channel: str = "sms", campaign_id: uuid.UUID | None = None, step: int = 1,
                   payload: dict[str, Any] | str | None = None, status: str = "sent") -> uuid.UUID:
    """A touch created at ``at``; ``payload`` is a dict or raw JSON text (for numbers Python cannot write)."""
    if payload is None:
        payload = factories.payload(channel, plan=plan())
    touch_id: uuid.UUID = await db.fetchval(
        """insert into touch_runs (account_id, lead_id, campaign_id, step, channel, status, scheduled_at, payload,
                                   created_at)
           values ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb, $7) returning id""",
        account_id, lead_id, campaign_id, step, channel, status, at,
        payload if isinstance(payload, str) else json.dumps(payload),
    )
    return touch_id


async def event_at(db: asyncpg.Connection, lead_id: uuid.UUID, event_type: str, at: datetime,
                   payload: dict[str, Any] | None = None) -> None:
    await db.execute(
        """insert into core_memory_events (lead_id, event_type, event_source, direction, payload, created_at)
           values ($1, $2, 'test', 'inbound', $3, $4)""",
        lead_id, event_type, payload or {}, at,
    )


async def attempt(db: asyncpg.Connection, lead_id: uuid.UUID, touch_id: uuid.UUID, at: datetime, *,
                  failed: bool = False, failure_class: str = "transient") -> None:
    payload: dict[str, Any] = {"touch_run_id": str(touch_id)}
    if failed:
        payload.update(error_code="x", error="x", failure_class=failure_class)
    await event_at(db, lead_id, "touch_failed" if failed else "touch_sent", at, payload)


async def both(db: asyncpg.Connection, lead_id: uuid.UUID, now: datetime, *,
               campaign_id: uuid.UUID | None = None, step: int = 1) -> Decision:
    """The SQL decision, after checking that the Python mirror decides the same."""
    sql = await decide_sql(db, lead_id, campaign_id, step, now)
    inputs = await load_decision_inputs(db, lead_id, campaign_id, step)
    assert sql is not None and inputs is not None
    assert decide(inputs, now) == sql
    return sql


@pytest.fixture
async def acct(db: asyncpg.Connection) -> uuid.UUID:
    return await factories.account(db, providers=False)


@pytest.fixture
async def lead(db: asyncpg.Connection, acct: uuid.UUID) -> uuid.UUID:
    return await factories.lead(db, acct)


# --- a. the plan ------------------------------------------------------------------------------------------------


async def test_no_touch_no_decision(db, acct, lead):
    assert await decide_sql(db, lead, None, 1, T0) is None
    assert await load_decision_inputs(db, lead, None, 1) is None
    assert await db.fetch(Q.decide_for_key, lead, None, 1, T0) == []


async def test_missing_fallback_stops(db, acct, lead):
    await touch_at(db, acct, lead, T0, payload=factories.payload("sms"))
    d = await both(db, lead, T0)
    assert (d.decision, d.stop_reason, d.current_channel, d.next_channel) == ("stop", "no_fallback_plan", "sms", None)
    assert d.channels == [] and d.skipped_channels == []


async def test_missing_routing_stops(db, acct, lead):
    await touch_at(db, acct, lead, T0, payload={"message": "hola"})
    d = await both(db, lead, T0)
    assert (d.decision, d.stop_reason) == ("stop", "no_fallback_plan")


INVALID_ROUTINGS: list[Any] = [
    "voice",
    ["voice"],
    {"fallback": ["voice"]},
    {"fallback": {"order": []}},
    {"fallback": {}},
    {"fallback": {"order": "voice"}},
    {"fallback": {"order": ["voice", "fax"]}},
    {"fallback": {"order": ["voice", "voice"]}},
    {"fallback": {"order": ["voice", 1]}},
    {"fallback": {"order": ["voice"], "max_attempts": {"voice": "2"}}},
    {"fallback": {"order": ["voice"], "max_attempts": {"voice": 1.5}}},
    {"fallback": {"order": ["voice"], "max_attempts": {"voice": -1}}},
    {"fallback": {"order": ["voice"], "max_attempts": {"fax": None}}},
    {"fallback": {"order": ["voice"], "max_attempts": {"voice": True}}},
    {"fallback": {"order": ["voice"], "max_attempts": [2]}},
    {"fallback": {"order": ["voice"], "cooldown_minutes": {"voice": "5"}}},
    {"fallback": {"order": ["voice"], "cooldown_minutes": {"voice": -0.5}}},
    {"fallback": {"order": ["voice"], "cooldown_minutes": {"voice": 525_600.5}}},
    {"fallback": {"order": ["voice"], "max_attempts": {"voice": 21}}},  # SPEC §11: an integer 0..20
    {"fallback": {"order": ["voice"], "max_attempts": {"voice": 10**9}}},
    {"fallback": {"order": ["voice"], "cooldown_minutes": 5}},
    {"fallback": {"order": ["voice"]}, "current_channel": "fax"},
    {"fallback": {"order": ["voice"]}, "current_channel": 3},
    {"fallback": {"order": ["voice"]}, "stop_on_events": "reply_positive"},
    {"fallback": {"order": ["voice"]}, "stop_on_events": ["reply_positive", 1]},
    {"fallback": {"order": ["voice"]}, "expires_at": "tomorrow"},
    {"fallback": {"order": ["voice"]}, "expires_at": "2026-12-31"},
    {"fallback": {"order": ["voice"]}, "expires_at": "2026-12-31T23:59:59"},
    {"fallback": {"order": ["voice"]}, "expires_at": "2026-02-30T00:00:00Z"},
    {"fallback": {"order": ["voice"]}, "expires_at": "2026-12-31T24:00:00Z"},
    {"fallback": {"order": ["voice"]}, "expires_at": "2026-12-31T23:59:60Z"},
    {"fallback": {"order": ["voice"]}, "expires_at": "2026-12-31T23:59:59.1234567Z"},
    {"fallback": {"order": ["voice"]}, "expires_at": 1767225599},
]


@pytest.mark.parametrize("routing", INVALID_ROUTINGS, ids=lambda r: json.dumps(r)[:60])
async def test_invalid_plan_stops(db, acct, lead, routing):
    await touch_at(db, acct, lead, T0, channel="voice", payload={"routing": routing})
    d = await both(db, lead, T0)
    assert (d.decision, d.stop_reason, d.current_channel) == ("stop", "invalid_plan", "voice")


VALID_EXPIRIES = ["2026-12-31T23:59:59Z", "2026-12-31 23:59:59Z", "2026-12-31T23:59Z", "2026-12-31T23:59:59.5+05",
                  "2026-12-31T23:59:59.123456-0530", "2026-12-31T23:59:59+15:59", "1999-01-01T00:00:00-00:00"]


@pytest.mark.parametrize("expires_at", VALID_EXPIRIES)
async def test_plan_parsing_matches_sql(db, expires_at):
    payload = {"routing": {"current_channel": "email", "expires_at": expires_at,
                           "fallback": {"order": ["sms", "email"], "max_attempts": {"sms": 2.0, "email": 1e1},
                                        "cooldown_minutes": {"sms": 0.05}}}}
    row = await db.fetchrow("select * from fallback_plan_v2($1::text::jsonb, 'voice')", json.dumps(payload))
    parsed = parse_plan(json.loads(json.dumps(payload), parse_float=Decimal), "voice")
    assert row["problem"] is None and parsed.problem is None
    assert row["expires_at"] == parsed.expires_at == datetime.fromisoformat(expires_at)
    assert row["current_channel"] == parsed.current_channel == "email"
    assert row["channel_order"] == parsed.order == ["sms", "email"]
    assert parsed.max_attempts == {"sms": 2, "email": 10}


async def test_integral_float_attempts_are_integers(db, acct, lead):
    routing = {"current_channel": "sms", "fallback": plan(["sms", "email"], {"sms": 2.0, "email": 1e1})}
    await touch_at(db, acct, lead, T0, payload={"routing": routing})
    d = await both(db, lead, T0)
    assert [(c.channel, c.attempts_allowed) for c in d.channels] == [("sms", 2), ("email", 10)]


# --- e/f. attempts and cooldowns --------------------------------------------------------------------------------


async def test_channel_missing_from_max_attempts_gets_one(db, acct, lead):
    t = await touch_at(db, acct, lead, T0, payload=factories.payload("sms", plan=plan(["sms", "email"], {"email": 3})))
    d = await both(db, lead, T0)
    assert (d.decision, d.next_channel) == ("retry_same_channel", "sms")
    assert d.channels[0].attempts_allowed == 1 and d.channels[0].attempts_done == 0
    await attempt(db, lead, t, T0 + timedelta(seconds=1))
    d = await both(db, lead, T0 + timedelta(seconds=2))
    assert (d.decision, d.next_channel, d.skipped_channels) == ("switch_channel", "email", [])
    assert d.channels[0].exhausted and d.channels[0].attempts_done == 1


async def test_channel_missing_from_cooldown_gets_zero(db, acct, lead):
    t = await touch_at(db, acct, lead, T0, payload=factories.payload("sms", plan=plan(["sms"], {"sms": 3},
                                                                                       {"email": 60})))
    await attempt(db, lead, t, T0)
    d = await both(db, lead, T0)
    assert (d.decision, d.next_channel, d.cooldown_until) == ("retry_same_channel", "sms", None)
    assert d.channels[0].cooldown_until == T0 == d.channels[0].last_attempt_at


@pytest.mark.parametrize(("minutes", "delta"), [
    ("1440", timedelta(days=1)),
    ("0.05", timedelta(seconds=3)),
    ("0.0123", timedelta(microseconds=738_000)),
    ("0.000000075", timedelta(microseconds=5)),  # 4.5 µs: half away from zero
    ("0.00000004", timedelta(microseconds=2)),  # 2.4 µs
    ("1e-400", timedelta(0)),  # far below a microsecond: no cooldown (and no float underflow in SQL)
    ("1234.56789", timedelta(minutes=1234, microseconds=34_073_400)),
    ("525600", timedelta(minutes=525_600)),  # the SPEC §11 bound: one year
])
async def test_cooldown_boundary(db, acct, lead, minutes, delta):
    text = json.dumps(factories.payload("sms", plan=plan(["sms"], {"sms": 3}, {"sms": "@"})))
    t = await touch_at(db, acct, lead, T0, payload=text.replace('"@"', minutes))
    last = T0 + timedelta(seconds=1)
    await attempt(db, lead, t, last)
    until = last + delta
    d = await both(db, lead, until)
    assert (d.decision, d.next_channel, d.cooldown_until) == ("retry_same_channel", "sms", None)
    assert d.channels[0].cooldown_until == until
    if delta:
        d = await both(db, lead, until - US)
        assert (d.decision, d.next_channel, d.cooldown_until) == ("wait_cooldown", None, until)


async def test_attempts_after_now_do_not_count(db, acct, lead):
    t = await touch_at(db, acct, lead, T0, payload=factories.payload("sms", plan=plan(["sms", "email"], {"sms": 1})))
    await attempt(db, lead, t, T0 + timedelta(minutes=5))
    d = await both(db, lead, T0 + timedelta(minutes=5) - US)
    assert (d.decision, d.channels[0].attempts_done) == ("retry_same_channel", 0)
    d = await both(db, lead, T0 + timedelta(minutes=5))
    assert (d.decision, d.next_channel) == ("switch_channel", "email")


async def test_every_attempt_event_of_every_touch_counts(db, acct, lead):
    p = factories.payload("sms", plan=plan(["sms", "email"], {"sms": 3}, {"sms": 10}))
    t1 = await touch_at(db, acct, lead, T0, payload=p)
    await attempt(db, lead, t1, T0 + timedelta(seconds=1), failed=True)
    t2 = await touch_at(db, acct, lead, T0 + timedelta(minutes=11), payload=p)
    await attempt(db, lead, t2, T0 + timedelta(minutes=11, seconds=1))
    await event_at(db, lead, "touch_canceled", T0 + timedelta(minutes=12), {"touch_run_id": str(t2)})
    d = await both(db, lead, T0 + timedelta(minutes=12))
    assert (d.decision, d.cooldown_until) == ("wait_cooldown", T0 + timedelta(minutes=21, seconds=1))
    assert d.channels[0].attempts_done == 2 and d.latest_touch_id == t2 and d.cadence_started_at == T0
    t3 = await touch_at(db, acct, lead, T0 + timedelta(minutes=22), payload=p)
    await attempt(db, lead, t3, T0 + timedelta(minutes=22))
    d = await both(db, lead, T0 + timedelta(minutes=22))
    assert (d.decision, d.next_channel) == ("switch_channel", "email")


async def test_max_attempts_zero_exhausts_at_once(db, acct, lead):
    await touch_at(db, acct, lead, T0, payload=factories.payload("sms", plan=plan(["sms", "email"], {"sms": 0})))
    d = await both(db, lead, T0)
    assert (d.decision, d.next_channel) == ("switch_channel", "email")


# --- g. switching -----------------------------------------------------------------------------------------------


async def test_current_not_in_order(db, acct, lead):
    routing_plan = plan(["whatsapp", "email"], {"voice": 2})
    t = await touch_at(db, acct, lead, T0, channel="voice", payload=factories.payload("voice", plan=routing_plan))
    await attempt(db, lead, t, T0)
    d = await both(db, lead, T0)  # voice has attempts left: retried although not in the order
    assert (d.decision, d.next_channel) == ("retry_same_channel", "voice")
    assert [c.channel for c in d.channels] == ["whatsapp", "email"]
    await attempt(db, lead, t, T0 + US, failed=True)
    d = await both(db, lead, T0 + US)  # exhausted: the first channel of the order
    assert (d.decision, d.current_channel, d.next_channel) == ("switch_channel", "voice", "whatsapp")


async def test_current_channel_defaults_to_touch_channel(db, acct, lead):
    payload = {"routing": {"fallback": plan(["email", "sms", "voice"], {"sms": 1})}}
    t = await touch_at(db, acct, lead, T0, channel="sms", payload=payload)
    await attempt(db, lead, t, T0)
    d = await both(db, lead, T0)
    assert (d.decision, d.current_channel, d.next_channel) == ("switch_channel", "sms", "voice")


async def test_every_channel_exhausted_stops(db, acct, lead):
    p = factories.payload("sms", plan=plan(["whatsapp", "sms", "email"], {"whatsapp": 1, "sms": 1, "email": 1}))
    tw = await touch_at(db, acct, lead, T0, channel="whatsapp", payload=p)
    ts = await touch_at(db, acct, lead, T0 + timedelta(seconds=1), channel="sms", payload=p)
    te = await touch_at(db, acct, lead, T0 + timedelta(seconds=2), channel="email",
                        payload=factories.payload("email", plan=p["routing"]["fallback"]))
    await attempt(db, lead, tw, T0)
    await attempt(db, lead, ts, T0 + timedelta(seconds=1))
    d = await both(db, lead, T0 + timedelta(seconds=3))
    assert (d.decision, d.current_channel, d.next_channel) == ("retry_same_channel", "email", "email")
    await attempt(db, lead, te, T0 + timedelta(seconds=3), failed=True)
    d = await both(db, lead, T0 + timedelta(seconds=3))
    assert (d.decision, d.stop_reason, d.next_channel) == ("stop", "exhausted", None)
    assert all(c.exhausted for c in d.channels)


async def test_earlier_channels_are_not_revisited(db, acct, lead):
    p = factories.payload("email", plan=plan(["sms", "email"], {"sms": 5, "email": 1}))
    t = await touch_at(db, acct, lead, T0, channel="email", payload=p)
    await attempt(db, lead, t, T0)
    d = await both(db, lead, T0)
    assert (d.decision, d.stop_reason) == ("stop", "exhausted")
    assert not d.channels[0].exhausted


async def test_permanent_failure_exhausts_at_once(db, acct, lead):
    p = factories.payload("sms", plan=plan(["sms", "email"], {"sms": 5}))
    t = await touch_at(db, acct, lead, T0, payload=p)
    await attempt(db, lead, t, T0, failed=True, failure_class="transient")
    d = await both(db, lead, T0)
    assert (d.decision, d.channels[0].permanent_failure) == ("retry_same_channel", False)
    await attempt(db, lead, t, T0 + US, failed=True, failure_class="permanent")
    d = await both(db, lead, T0 + US)
    assert (d.decision, d.next_channel) == ("switch_channel", "email")
    assert d.channels[0].permanent_failure and d.channels[0].exhausted and d.channels[0].attempts_done == 2


async def test_unreachable_channels_skipped_and_named(db, acct):
    lead = await factories.lead(db, acct, phone=None, email="ana@example.com")
    p = factories.payload("voice", plan=plan())
    await touch_at(db, acct, lead, T0, channel="voice", payload=p)
    d = await both(db, lead, T0)
    assert (d.decision, d.next_channel, d.skipped_channels) == ("switch_channel", "email", ["whatsapp", "sms"])
    assert [c.reachable for c in d.channels] == [False, False, False, True]


async def test_only_unreachable_channels_are_named(db, acct):
    lead = await factories.lead(db, acct, phone="  ", enriched_phone="+34600000000", email=None)
    p = factories.payload("sms", plan=plan(["sms", "whatsapp", "email", "voice"], {"sms": 1, "whatsapp": 1}))
    tw = await touch_at(db, acct, lead, T0, channel="whatsapp", payload=p)
    ts = await touch_at(db, acct, lead, T0 + timedelta(seconds=1), channel="sms", payload=p)
    await attempt(db, lead, tw, T0)
    await attempt(db, lead, ts, T0 + timedelta(seconds=1))
    d = await both(db, lead, T0 + timedelta(seconds=1))
    assert (d.decision, d.next_channel, d.skipped_channels) == ("switch_channel", "voice", ["email"])


async def test_unreachable_everywhere_stops_exhausted(db, acct):
    lead = await factories.lead(db, acct, phone=None, email=" ")
    await touch_at(db, acct, lead, T0, payload=factories.payload("sms", plan=plan()))
    d = await both(db, lead, T0)
    assert (d.decision, d.stop_reason, d.skipped_channels) == ("stop", "exhausted", [])


# --- b/c/d. stops -----------------------------------------------------------------------------------------------


async def test_expired_plan(db, acct, lead):
    expires = T0 + timedelta(hours=1)
    p = factories.payload("sms", plan=plan(), expires_at=expires.isoformat())
    await touch_at(db, acct, lead, T0, payload=p)
    d = await both(db, lead, expires)
    assert d.decision == "retry_same_channel"
    d = await both(db, lead, expires + US)
    assert (d.decision, d.stop_reason) == ("stop", "expired")
    assert len(d.channels) == 4


async def test_stop_event_before_and_after_cadence_start(db, acct, lead):
    await touch_at(db, acct, lead, T0, payload=factories.payload("sms", plan=plan()))
    await event_at(db, lead, "reply_positive", T0 - US)
    d = await both(db, lead, T0 + timedelta(minutes=1))
    assert d.decision == "retry_same_channel"
    await event_at(db, lead, "appointment_booked", T0 + timedelta(seconds=30))
    d = await both(db, lead, T0 + timedelta(seconds=30) - US)  # not yet
    assert d.decision == "retry_same_channel"
    d = await both(db, lead, T0 + timedelta(seconds=30))
    assert (d.decision, d.stop_reason) == ("stop", "stop_event:appointment_booked")
    await event_at(db, lead, "reply_positive", T0)  # at the cadence start exactly: counts, and is earliest
    d = await both(db, lead, T0 + timedelta(minutes=1))
    assert (d.decision, d.stop_reason) == ("stop", "stop_event:reply_positive")


async def test_custom_stop_events(db, acct, lead):
    p = factories.payload("sms", plan=plan(), stop_on_events=["reply_negative"])
    await touch_at(db, acct, lead, T0, payload=p)
    await event_at(db, lead, "reply_positive", T0 + timedelta(seconds=1))
    d = await both(db, lead, T0 + timedelta(seconds=2))
    assert d.decision == "retry_same_channel"
    await event_at(db, lead, "reply_negative", T0 + timedelta(seconds=2))
    d = await both(db, lead, T0 + timedelta(seconds=2))
    assert (d.decision, d.stop_reason) == ("stop", "stop_event:reply_negative")


async def test_stop_events_empty_list_stops_nothing(db, acct, lead):
    await touch_at(db, acct, lead, T0, payload=factories.payload("sms", plan=plan(), stop_on_events=[]))
    await event_at(db, lead, "appointment_booked", T0 + timedelta(seconds=1))
    d = await both(db, lead, T0 + timedelta(seconds=2))
    assert d.decision == "retry_same_channel"


@pytest.mark.parametrize(("days", "suppressed"), [(29, True), (31, False)])
async def test_negative_reply_cooldown(db, acct, lead, days, suppressed):
    now = T0 + timedelta(minutes=1)
    await touch_at(db, acct, lead, T0, payload=factories.payload("sms", plan=plan()))
    await event_at(db, lead, "reply_negative", now - timedelta(days=days))
    d = await both(db, lead, now)
    if suppressed:
        assert (d.decision, d.stop_reason) == ("stop", "suppressed:reply_negative")
    else:
        assert d.decision == "retry_same_channel"


async def test_negative_reply_window_boundary(db, acct, lead):
    reply = T0 - timedelta(days=3)
    await touch_at(db, acct, lead, T0, payload=factories.payload("sms", plan=plan()))
    await event_at(db, lead, "reply_negative", reply)
    d = await both(db, lead, reply + timedelta(days=30) - US)
    assert d.stop_reason == "suppressed:reply_negative"
    d = await both(db, lead, reply + timedelta(days=30))  # the window is (now - 30 days, now]
    assert d.decision == "retry_same_channel"


async def test_unsubscribe_suppresses(db, acct, lead):
    await event_at(db, lead, "unsubscribe", T0 - timedelta(days=400))
    await touch_at(db, acct, lead, T0, payload=factories.payload("sms", plan=plan()))
    d = await both(db, lead, T0)
    assert (d.decision, d.stop_reason) == ("stop", "suppressed:unsubscribe")
    assert (await db.fetchrow("select * from lead_suppression_status_v1 where lead_id = $1", lead))["is_unsubscribed"]


async def test_do_not_contact_stop_event_or_suppression(db, acct, lead):
    await touch_at(db, acct, lead, T0, payload=factories.payload("sms", plan=plan()))
    await event_at(db, lead, "do_not_contact", T0 + timedelta(seconds=5))
    d = await both(db, lead, T0 + timedelta(seconds=5))
    assert d.stop_reason == "stop_event:do_not_contact"  # a stop event wins over suppression
    other = await factories.lead(db, acct)
    await event_at(db, other, "do_not_contact", T0 - timedelta(seconds=5))
    await touch_at(db, acct, other, T0, payload=factories.payload("sms", plan=plan()))
    d = await both(db, other, T0)
    assert d.stop_reason == "suppressed:do_not_contact"


async def test_precedence_of_stops(db, acct, lead):
    """stop event > suppression > expiry > exhaustion."""
    p = factories.payload("sms", plan=plan(["sms"], {"sms": 1}), expires_at=T0.isoformat())
    t = await touch_at(db, acct, lead, T0, payload=p)
    await attempt(db, lead, t, T0)
    now = T0 + timedelta(seconds=10)
    assert (await both(db, lead, now)).stop_reason == "expired"
    await event_at(db, lead, "reply_negative", T0 + timedelta(seconds=1))
    assert (await both(db, lead, now)).stop_reason == "suppressed:reply_negative"
    await event_at(db, lead, "reply_positive", T0 + timedelta(seconds=2))
    assert (await both(db, lead, now)).stop_reason == "stop_event:reply_positive"


# --- keys -------------------------------------------------------------------------------------------------------


async def test_two_campaigns_kept_apart(db, acct, lead):
    c1 = await db.fetchval("insert into campaigns (account_id, name) values ($1, 'one') returning id", acct)
    c2 = await db.fetchval("insert into campaigns (account_id, name) values ($1, 'two') returning id", acct)
    p = factories.payload("sms", plan=plan(["sms", "email"], {"sms": 1}))
    t1 = await touch_at(db, acct, lead, T0, campaign_id=c1, payload=p)
    t2 = await touch_at(db, acct, lead, T0 + timedelta(seconds=1), campaign_id=c2, payload=p)
    await attempt(db, lead, t1, T0)
    now = T0 + timedelta(seconds=1)
    d1 = await both(db, lead, now, campaign_id=c1)
    d2 = await both(db, lead, now, campaign_id=c2)
    assert (d1.decision, d1.next_channel, d1.latest_touch_id) == ("switch_channel", "email", t1)
    assert (d2.decision, d2.next_channel, d2.latest_touch_id) == ("retry_same_channel", "sms", t2)
    assert await decide_sql(db, lead, c1, 2, now) is None


async def test_null_campaign_keys(db, acct, lead):
    campaign = await db.fetchval("insert into campaigns (account_id, name) values ($1, 'one') returning id", acct)
    p = factories.payload("sms", plan=plan(["sms", "email"], {"sms": 1}))
    t_null = await touch_at(db, acct, lead, T0, payload=p)
    t_camp = await touch_at(db, acct, lead, T0 + timedelta(seconds=1), campaign_id=campaign, payload=p)
    t_step2 = await touch_at(db, acct, lead, T0 + timedelta(seconds=2), step=2, payload=p)
    await attempt(db, lead, t_null, T0)
    now = T0 + timedelta(seconds=3)
    d = await both(db, lead, now)
    assert (d.decision, d.latest_touch_id, d.cadence_started_at) == ("switch_channel", t_null, T0)
    d = await both(db, lead, now, campaign_id=campaign)
    assert (d.decision, d.latest_touch_id) == ("retry_same_channel", t_camp)
    d = await both(db, lead, now, step=2)
    assert (d.decision, d.latest_touch_id) == ("retry_same_channel", t_step2)

    keys = [(lead, None, 1), (lead, campaign, 1), (lead, None, 2), (lead, None, 3)]
    many = await decide_sql_many(db, keys, now)
    assert set(many) == set(keys[:3])
    for key in keys[:3]:
        assert many[key] == await decide_sql(db, *key, now)
    view = await db.fetch("select * from lead_fallback_decisions_v1 where lead_id = $1", lead)
    assert len(view) == 3


async def test_newest_touch_gives_the_plan(db, acct, lead):
    await touch_at(db, acct, lead, T0, payload=factories.payload("sms", plan=plan(["sms"], {"sms": 1})))
    t2 = await touch_at(db, acct, lead, T0 + timedelta(seconds=1), channel="email",
                        payload=factories.payload("email", plan=plan(["sms", "email"], {"email": 2})))
    d = await both(db, lead, T0 + timedelta(seconds=1))
    assert (d.decision, d.current_channel, d.latest_touch_id) == ("retry_same_channel", "email", t2)


async def test_event_payload_is_json(db, acct, lead):
    t = await touch_at(db, acct, lead, T0, payload=factories.payload("sms", plan=plan(["sms", "email"], {"sms": 2},
                                                                                       {"sms": 30})))
    await attempt(db, lead, t, T0)
    d = await both(db, lead, T0 + timedelta(minutes=1))
    payload = json.loads(json.dumps(d.event_payload()))
    assert payload["decision"] == "wait_cooldown"
    assert payload["cooldown_until"] == (T0 + timedelta(minutes=30)).isoformat()
    assert payload["attempts"] == {"sms": 1, "email": 0}
    assert payload["touch_run_id"] == str(t)
    assert payload["channels"][0]["attempts_allowed"] == 2


# --- cost: one lead's rows only ---------------------------------------------------------------------------------


def _plan_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [node]
    for child in node.get("Plans", []):
        nodes.extend(_plan_nodes(child))
    return nodes


def _check_plan(plan_json: Any) -> set[str]:
    if isinstance(plan_json, str):
        plan_json = json.loads(plan_json)
    nodes = _plan_nodes(plan_json[0]["Plan"])
    # (lead_enriched is left out: with a few dozen rows it fits one page, which the planner rightly reads whole)
    seq = [n for n in nodes if n["Node Type"] == "Seq Scan"
           and n.get("Relation Name") in {"touch_runs", "core_memory_events", "leads"}]
    assert seq == [], [(n.get("Relation Name"), n.get("Filter")) for n in seq]
    assert not [n for n in nodes if n.get("Function Name") == "decide_next_channel_for_lead"], "not inlined"
    return {n["Index Name"] for n in nodes if "Index Name" in n}


async def _many_other_leads(db: asyncpg.Connection, acct: uuid.UUID) -> None:
    await db.execute(
        """insert into leads (account_id, full_name, phone, email)
           select $1, 'Lead ' || g, '+1415555' || lpad(g::text, 4, '0'), 'l' || g || '@example.com'
           from generate_series(1, 600) g""", acct)
    await db.execute(
        """insert into lead_enriched (lead_id, phone, first_name)
           select l.id, l.phone, 'Lead' from leads l where l.account_id = $1 and l.phone like '%0'""", acct)
    await db.execute(
        """insert into touch_runs (account_id, lead_id, channel, status, payload, created_at)
           select l.account_id, l.id, (array['voice','whatsapp','sms','email'])[1 + s % 4], 'sent',
                  jsonb_build_object('routing', jsonb_build_object('fallback',
                    jsonb_build_object('order', jsonb_build_array('voice','whatsapp','sms','email')))),
                  $2::timestamptz - make_interval(mins => s)
           from leads l cross join generate_series(1, 4) s
           where l.account_id = $1""", acct, T0)
    await db.execute(
        """insert into core_memory_events (lead_id, event_type, direction, payload, created_at)
           select t.lead_id, case when s = 1 then 'touch_sent' else 'touch_failed' end, 'outbound',
                  jsonb_build_object('touch_run_id', t.id, 'failure_class', 'transient'),
                  t.created_at + make_interval(secs => s)
           from touch_runs t cross join generate_series(1, 2) s""")
    await db.execute("analyze")


async def test_decision_reads_only_the_leads_rows(db, acct, lead):
    await _many_other_leads(db, acct)
    t = await touch_at(db, acct, lead, T0, payload=factories.payload("sms", plan=plan()))
    await attempt(db, lead, t, T0)
    await event_at(db, lead, "reply_negative", T0 - timedelta(days=40))
    assert await db.fetchval("select count(*) from core_memory_events") > 5000
    await db.execute("analyze")

    # custom plan (values known to the planner)
    plan_json = await db.fetchval(
        "explain (format json) select * from decide_next_channel_for_lead($1::uuid, null, 1, $2::timestamptz)",
        lead, T0)
    used = _check_plan(plan_json)
    assert {"touch_runs_lead_key", "core_memory_events_touch_run", "core_memory_events_lead"} <= used

    # many keys at once (the daemon's batch form)
    others = [r["lead_id"] for r in await db.fetch("select lead_id from touch_runs where lead_id <> $1 limit 20", lead)]
    plan_json = await db.fetchval("explain (format json) " + Q.decide_for_keys,
                                  [lead, *others], [None] * (1 + len(others)), [1] * (1 + len(others)), T0)
    assert {"touch_runs_lead_key", "core_memory_events_touch_run"} <= _check_plan(plan_json)

    # generic plan (what a prepared statement ends up with), for both key forms
    await db.execute("prepare decide_q(uuid, uuid, int, timestamptz) as "
                     "select * from decide_next_channel_for_lead($1, $2, $3, $4)")
    await db.execute("prepare inputs_q(uuid, uuid, int) as " + Q.decision_inputs_for_key)
    await db.execute("set plan_cache_mode = force_generic_plan")
    for campaign in ("null", f"'{uuid.uuid4()}'"):
        plan_json = await db.fetchval(f"explain (format json) execute decide_q('{lead}', {campaign}, 1, now())")
        assert {"touch_runs_lead_key", "core_memory_events_touch_run"} <= _check_plan(plan_json)
        plan_json = await db.fetchval(f"explain (format json) execute inputs_q('{lead}', {campaign}, 1)")
        assert {"touch_runs_lead_key", "core_memory_events_touch_run"} <= _check_plan(plan_json)
    await db.execute("reset plan_cache_mode")


async def test_no_seq_scan_happens(db, acct, lead):
    """Counted by the server: calling the SQL form and loading the Python inputs (many times, so prepared statements
    go generic) leaves seq_scan of touch_runs and core_memory_events unchanged."""
    await _many_other_leads(db, acct)
    t = await touch_at(db, acct, lead, T0, payload=factories.payload("sms", plan=plan()))
    await attempt(db, lead, t, T0)
    await db.execute("analyze")
    counts = """select relname, seq_scan from pg_stat_user_tables
                where relname in ('touch_runs', 'core_memory_events') order by relname"""

    async def snapshot() -> list[tuple[str, int]]:
        await db.execute("select pg_stat_force_next_flush()")
        await db.execute("select pg_stat_clear_snapshot()")
        return [tuple(r) for r in await db.fetch(counts)]

    before = await snapshot()
    for i in range(12):
        now = T0 + timedelta(seconds=i)
        sql = await decide_sql(db, lead, None, 1, now)
        inputs = await load_decision_inputs(db, lead, None, 1)
        assert inputs is not None and sql == decide(inputs, now)
        await decide_sql_many(db, [(lead, None, 1)], now)
    after = await snapshot()
    assert after == before
    # the counter does move when a seq scan happens (so the check above means something)
    await db.execute("set enable_indexscan = off; set enable_bitmapscan = off")
    await db.fetch("select * from decide_next_channel_for_lead($1, null, 1, $2) -- not a cached plan", lead, T0)
    await db.execute("reset enable_indexscan; reset enable_bitmapscan")
    assert await snapshot() != before


@pytest.mark.parametrize("tz", ["America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe"])
async def test_session_time_zone_changes_nothing(db, acct, lead, tz):
    """Across a daylight-saving change in the session's zone: the 30-day window is 720 hours, timestamps in the
    channels JSON carry their offset, so SQL and Python still agree to the microsecond."""
    await db.execute(f"set timezone = '{tz}'")
    start = datetime(2026, 3, 20, 12, tzinfo=UTC)  # New York moved its clocks on 8 March, Lord Howe moves in April
    t = await touch_at(db, acct, lead, start, payload=factories.payload(
        "sms", plan=plan(["sms", "email"], {"sms": 3}, {"sms": 0.05}), expires_at="2026-04-30T00:00:00+05:45"))
    await attempt(db, lead, t, start)
    await event_at(db, lead, "reply_negative", start - timedelta(days=30) + timedelta(minutes=1))
    d = await both(db, lead, start)
    assert d.stop_reason == "suppressed:reply_negative"
    d = await both(db, lead, start + timedelta(minutes=1))
    assert (d.decision, d.channels[0].cooldown_until) == ("retry_same_channel", start + timedelta(seconds=3))
    d = await both(db, lead, datetime(2026, 4, 29, 18, 15, 0, 1, tzinfo=UTC))
    assert d.stop_reason == "expired"
