"""The Python fallback decision and the SQL one agree on every case (SPEC §7): hypothesis draws routing plans
(valid and broken) and histories, writes them as real rows into one database (a fresh lead per example), and
compares ``decide(load_decision_inputs(...), now)`` with ``decide_sql(..., now)`` at several ``now``s drawn around
the history, including exactly at (and a microsecond around) every boundary: cooldown ends, expiry, the 30-day
negative-reply window, the cadence start and every event time.

The test is synchronous and drives its own event loop (a module fixture with its own connection), so hypothesis runs
examples without pytest-asyncio in the way."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from listener.rules.decision import decide
from listener.store.decisions import decide_sql, decision_from_row, load_decision_inputs
from tests import factories
from tests.harness import LoopDatabase, loop_database

if TYPE_CHECKING:
    from tests.pg import TestServer

CHANNELS = ["voice", "whatsapp", "sms", "email"]
INBOUND = ["reply_positive", "appointment_booked", "do_not_contact", "reply_negative", "unsubscribe"]
T0 = datetime(2026, 1, 10, 8, 0, 0, tzinfo=UTC)
US = timedelta(microseconds=1)


@dataclass
class Env(LoopDatabase):
    campaigns: list[uuid.UUID] = field(default_factory=list)


@pytest.fixture(scope="module")
def env(migrated_template: TestServer) -> Iterator[Env]:
    """One database for the whole run, on a loop of our own."""
    with loop_database(migrated_template) as database:
        campaigns = [database.run(database.conn.fetchval(
            "insert into campaigns (account_id, name) values ($1, $2) returning id", database.account_id, name))
            for name in ("alpha", "beta")]
        yield Env(database.loop, database.conn, database.account_id, campaigns)


# --- strategies -------------------------------------------------------------------------------------------------

# Numbers as JSON text, so PostgreSQL and the loader see exactly what a payload writer would have written.
ATTEMPT_NUMBERS = st.sampled_from(["0", "1", "2", "2", "3", "3", "4", "4", "2.0", "3.00", "1e0", "1E+1", "20", "2.0e1"])
COOLDOWN_NUMBERS = st.one_of(
    st.sampled_from(["0", "0.05", "0.5", "1", "1.5", "0.0123", "10", "30", "0.000000075", "1e-9", "2.5e-8",
                     "0.33333333333333333333333", "7.5", "60", "120", "240", "1440", "1E+1", "0.0", "525600",
                     "5.256e5", "525599.999999999"]),
    st.floats(min_value=0, max_value=90, allow_nan=False, allow_infinity=False).map(repr),
    st.decimals(min_value=0, max_value=90, places=8, allow_nan=False, allow_infinity=False).map(str),
    st.integers(1, 10**9).map(lambda k: f"{k}e-10"),  # fractions of a microsecond (k * 0.006 µs), halves included
)
BROKEN = [
    ("routing", '"voice"'), ("fallback", '["voice"]'), ("order", "[]"), ("order", '["voice", "fax"]'),
    ("order", '["sms", "sms"]'), ("order", '"sms"'), ("max_attempts", '{"sms": "2"}'),
    ("max_attempts", '{"sms": 1.5}'), ("max_attempts", '{"sms": -1}'), ("max_attempts", '{"sms": true}'),
    ("cooldown_minutes", '{"sms": -0.5}'), ("cooldown_minutes", '{"sms": "5"}'), ("cooldown_minutes", "[1]"),
    ("cooldown_minutes", '{"sms": 100000001}'), ("current_channel", '"fax"'), ("current_channel", "7"),
    ("stop_on_events", '"reply_positive"'), ("stop_on_events", "[1]"), ("expires_at", '"tomorrow"'),
    ("expires_at", '"2026-01-10"'), ("expires_at", '"2026-01-10T08:00:00"'), ("expires_at", '"2026-02-30T00:00:00Z"'),
    ("expires_at", '"2026-01-10T24:00:00Z"'), ("expires_at", "1768032000"),
    # SPEC §11 bounds: max_attempts an integer 0..20, cooldowns 0..525600 minutes; beyond them, invalid_plan
    ("max_attempts", '{"sms": 21}'), ("max_attempts", '{"sms": 1e9}'), ("max_attempts", '{"sms": 1e5000}'),
    ("max_attempts", '{"sms": 20.5}'), ("max_attempts", '{"sms": 2.1e1}'), ("max_attempts", '{"sms": -0.5}'),
    ("max_attempts", '{"sms": ' + "9" * 5000 + "}"), ("max_attempts", '{"fax": 1e5000}'),
    ("max_attempts", '{"sms": 1e-5000}'), ("max_attempts", '{"sms": null}'), ("max_attempts", '{"sms": [2]}'),
    ("cooldown_minutes", '{"sms": 525600.000001}'), ("cooldown_minutes", '{"sms": 1e20}'),
    ("cooldown_minutes", '{"sms": 1e5000}'), ("cooldown_minutes", '{"sms": ' + "9" * 5000 + "}"),
    ("cooldown_minutes", '{"email": 1e-5000}'), ("cooldown_minutes", '{"sms": -1e-9}'),
    # the JSON bounds every reader applies (listener/rules/safejson.py): 64 levels are fine, 65 make the plan invalid
    ("deep", "[" * 62 + "]" * 62), ("deep", "[" * 63 + "]" * 63), ("deep", '{"a":' * 2000 + "1" + "}" * 2000),
    ("deep", "9" * 5000), ("deep", "1e5000"),
]


def iso(at: datetime, style: int) -> str:
    """expires_at in the ISO 8601 spellings a payload writer might use."""
    if style == 0:
        return at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if style == 1:
        return at.astimezone(timezone(timedelta(hours=2))).isoformat()
    if style == 2:
        text = at.astimezone(timezone(-timedelta(hours=5, minutes=30))).isoformat()
        return text[:-3] + text[-2:]  # -05:30 -> -0530
    return at.astimezone(UTC).isoformat(sep=" ")


@st.composite
def payload_texts(draw: st.DrawFn, main: str) -> str:
    """A touch payload as JSON text: a v2 routing plan, often valid, sometimes missing or broken. ``main`` (the
    channel most touches are on) is usually the current channel and usually in the order."""
    shape = draw(st.sampled_from(["valid"] * 20 + ["no_routing", "no_fallback", "null_fallback", "broken", "broken"]))
    if shape == "no_routing":
        return json.dumps({"message": "hola"})
    parts: dict[str, str] = {}
    if draw(st.booleans()):
        parts["current_channel"] = json.dumps(draw(st.sampled_from([main, main, main, *CHANNELS])))
    if draw(st.integers(0, 3)) == 0:
        parts["stop_on_events"] = json.dumps(draw(st.lists(st.sampled_from(INBOUND), max_size=3)))
    if draw(st.sampled_from([True, False, False, False])):
        offset = timedelta(seconds=draw(st.integers(-600, 12 * 3600)),
                           microseconds=draw(st.sampled_from([0, 1, 999_999])))
        parts["expires_at"] = json.dumps(iso(T0 + offset, draw(st.integers(0, 3))))
    fallback: dict[str, str] = {}
    if shape not in ("no_fallback", "null_fallback"):
        order = draw(st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=4, unique=True))
        if main not in order and draw(st.sampled_from([True, True, True, False])):
            order.insert(draw(st.integers(0, len(order))), main)
        fallback["order"] = json.dumps(order)
        if draw(st.integers(0, 9)):
            attempts = {c: draw(ATTEMPT_NUMBERS) for c in CHANNELS if draw(st.integers(0, 7))}
            fallback["max_attempts"] = "{" + ", ".join(f'"{k}": {v}' for k, v in attempts.items()) + "}"
        if draw(st.integers(0, 9)):
            cooldowns = {c: draw(COOLDOWN_NUMBERS) for c in CHANNELS if draw(st.integers(0, 7))}
            fallback["cooldown_minutes"] = "{" + ", ".join(f'"{k}": {v}' for k, v in cooldowns.items()) + "}"
    routing_text = None
    if shape == "broken":
        where, value = draw(st.sampled_from(BROKEN))
        if where == "routing":
            routing_text = value
        elif where in ("current_channel", "stop_on_events", "expires_at", "deep"):
            parts[where] = value  # "deep" sits at routing.deep: the payload nests 2 + its own depth
        elif where == "fallback":
            parts["fallback"] = value
        else:
            fallback[where] = value
    if shape == "null_fallback":
        parts["fallback"] = "null"
    elif shape != "no_fallback" and "fallback" not in parts:
        parts["fallback"] = "{" + ", ".join(f'"{k}": {v}' for k, v in fallback.items()) + "}"
    if routing_text is None:
        routing_text = "{" + ", ".join(f'"{k}": {v}' for k, v in parts.items()) + "}"
    return '{"message_class": "cold_outreach", "routing": ' + routing_text + "}"


def offsets(lo: int, hi: int) -> st.SearchStrategy[timedelta]:
    return st.builds(lambda s, us: timedelta(seconds=s, microseconds=us),
                     st.integers(lo, hi), st.sampled_from([0, 0, 1, 250_000, 999_999]))


ATTEMPT_KINDS = st.sampled_from(["sent", "sent", "sent", "failed", "failed", "failed_permanent", "failed_no_class",
                                  # provider webhooks (SPEC §12): not attempts; permanent ones exhaust the channel
                                  "undelivered_permanent", "undelivered_transient", "bounced_permanent"])
WEBHOOK_KINDS = {"undelivered_permanent": ("touch_undelivered", "permanent"),
                 "undelivered_transient": ("touch_undelivered", "transient"),
                 "bounced_permanent": ("email_bounced", "permanent")}
LEAD_EVENTS = [*INBOUND, "resubscribe", "resubscribe"]  # a resubscribe lifts an earlier unsubscribe (SPEC §12)


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    main = draw(st.sampled_from(CHANNELS))  # most touches on one channel, so its attempts add up
    touches: list[dict[str, Any]] = draw(st.lists(
        st.fixed_dictionaries({
            "channel": st.sampled_from([main, *CHANNELS]),
            "at": offsets(0, 2 * 3600),
            "attempts": st.one_of(st.just([]), st.lists(st.tuples(ATTEMPT_KINDS, offsets(0, 3600)), min_size=1,
                                                        max_size=3)),
        }), min_size=0, max_size=3))
    # the newest touch is on the main channel (usually the current one), so its attempts and cooldowns matter
    newest = max((t["at"] for t in touches), default=timedelta(0)) + timedelta(seconds=1)
    touches.append({"channel": main, "at": newest, "attempts": draw(
        st.lists(st.tuples(ATTEMPT_KINDS, offsets(0, 3600)), min_size=0, max_size=3))})
    start = min(t["at"] for t in touches)  # the cadence start, where stop events begin to count
    return {
        "payload": draw(payload_texts(main)),
        "campaign": draw(st.sampled_from([None, 0])),
        "step": draw(st.integers(1, 2)),
        "touches": touches,
        "lead_events": draw(st.one_of(st.just([]), st.lists(st.tuples(st.sampled_from(LEAD_EVENTS), st.one_of(
            offsets(-600, 3 * 3600), offsets(-40 * 86400, 0), st.sampled_from([start, start - US]))), max_size=3))),
        "decoy": draw(st.integers(0, 2)),
        "phone": draw(st.sampled_from(["+34600000001", "+34600000001", None, "  "])),
        "enriched_phone": draw(st.sampled_from([None, None, "+34600000002"])),
        "email": draw(st.sampled_from(["ana@example.com", "ana@example.com", None, ""])),
    }


@st.composite
def cooldown_scenarios(draw: st.DrawFn) -> dict[str, Any]:
    """Cadences in the middle of a channel: a valid plan, the current channel reachable with attempts left and a
    cooldown running, so nows at its end land on both sides of retry_same_channel / wait_cooldown."""
    main = draw(st.sampled_from(CHANNELS))
    order = draw(st.permutations(CHANNELS))[:draw(st.integers(1, 4))]
    if main not in order:
        order.insert(draw(st.integers(0, len(order))), main)
    attempts = {c: draw(ATTEMPT_NUMBERS) for c in order}
    attempts[main] = draw(st.sampled_from(["2", "3", "4", "3.0"]))
    cooldowns = {c: draw(COOLDOWN_NUMBERS) for c in order}
    max_attempts = ", ".join(f'"{k}": {v}' for k, v in attempts.items())  # numbers as written: "3.0", "2"
    cooldown_minutes = ", ".join(f'"{k}": {v}' for k, v in cooldowns.items())
    routing = (f'{{"current_channel": "{main}", "fallback": {{"order": {json.dumps(order)}, '
               f'"max_attempts": {{{max_attempts}}}, "cooldown_minutes": {{{cooldown_minutes}}}}}}}')
    return {
        "payload": '{"routing": ' + routing + "}",
        "campaign": draw(st.sampled_from([None, 0])),
        "step": 1,
        "touches": [{"channel": main, "at": timedelta(0), "attempts": draw(st.lists(
            st.tuples(st.sampled_from(["sent", "failed"]), offsets(0, 3600)), min_size=1, max_size=1))}],
        "lead_events": [],
        "decoy": draw(st.integers(0, 2)),
        "phone": "+34600000001",
        "enriched_phone": None,
        "email": "ana@example.com",
    }


# --- writing rows -----------------------------------------------------------------------------------------------

INSERT_TOUCH = """
insert into touch_runs (account_id, lead_id, campaign_id, step, channel, status, scheduled_at, payload, created_at)
values ($1, $2, $3, $4, $5, 'sent', $6, $7::text::jsonb, $6) returning id"""
INSERT_EVENT = """
insert into core_memory_events (lead_id, event_type, event_source, direction, payload, created_at)
values ($1, $2, 'property', $3, $4::text::jsonb, $5)"""


async def write(env: Env, case: dict[str, Any]) -> tuple[uuid.UUID, uuid.UUID | None, int]:
    conn = env.conn
    lead_id = await factories.lead(conn, env.account_id, phone=case["phone"], email=case["email"],
                                   enriched_phone=case["enriched_phone"])
    campaign = None if case["campaign"] is None else env.campaigns[0]
    step = case["step"]
    events: list[tuple[Any, ...]] = []
    for touch in case["touches"]:
        touch_id = await conn.fetchval(INSERT_TOUCH, env.account_id, lead_id, campaign, step, touch["channel"],
                                       T0 + touch["at"], case["payload"])
        for kind, offset in touch["attempts"]:
            payload: dict[str, Any] = {"touch_run_id": str(touch_id)}
            if kind in WEBHOOK_KINDS:
                event_type, failure_class = WEBHOOK_KINDS[kind]
                payload.update(failure_class=failure_class, error_code="30003")
                events.append((lead_id, event_type, "outbound", json.dumps(payload), T0 + touch["at"] + offset))
                continue
            if kind != "sent":
                payload["error_code"] = "x"
                if kind != "failed_no_class":
                    payload["failure_class"] = "permanent" if kind == "failed_permanent" else "transient"
            events.append((lead_id, "touch_sent" if kind == "sent" else "touch_failed", "outbound",
                           json.dumps(payload), T0 + touch["at"] + offset))
    for event_type, offset in case["lead_events"]:
        events.append((lead_id, event_type, "inbound", "{}", T0 + offset))
    # a decoy: the same lead on another key (another campaign, null vs not null, or another step), with permanent
    # failures that would change the decision if they leaked into this key
    decoy_campaign, decoy_step = [
        (env.campaigns[1], step),
        (env.campaigns[0] if campaign is None else None, step),
        (campaign, step + 1),
    ][case["decoy"]]
    decoy = await conn.fetchval(INSERT_TOUCH, env.account_id, lead_id, decoy_campaign, decoy_step,
                                case["touches"][0]["channel"], T0, case["payload"])
    for i in range(3):
        events.append((lead_id, "touch_failed", "outbound",
                       json.dumps({"touch_run_id": str(decoy), "failure_class": "permanent"}),
                       T0 + timedelta(seconds=i)))
    if events:
        await conn.executemany(INSERT_EVENT, events)
    return lead_id, campaign, step


async def boundaries(env: Env, key: tuple[uuid.UUID, uuid.UUID | None, int],
                     case: dict[str, Any]) -> dict[str, list[datetime]]:
    """Times where the decision may flip, by kind: cooldown ends (as SQL computes them when every attempt counts; the
    current channel's first), window edges (cadence start, expiry, the end of a negative reply's 30 days) and the
    time of every event."""
    far = await decide_sql(env.conn, *key, T0 + timedelta(days=60))
    assert far is not None
    states = sorted(far.channels, key=lambda c: c.channel != far.current_channel)
    edges: dict[str, list[datetime]] = {
        "cooldown": [c.cooldown_until for c in states if c.cooldown_until is not None],
        "window": [far.cadence_started_at],
        "event": [],
    }
    for touch in case["touches"]:
        edges["event"] += [T0 + touch["at"] + offset for _, offset in touch["attempts"]]
    for event_type, offset in case["lead_events"]:
        edges["event"].append(T0 + offset)
        if event_type == "reply_negative":
            edges["window"].append(T0 + offset + timedelta(days=30))
    try:
        routing = json.loads(case["payload"]).get("routing")
    except (ValueError, RecursionError):  # 5,000-digit numbers, 2,000 levels: no expiry edge to add
        routing = None
    if isinstance(routing, dict) and isinstance(routing.get("expires_at"), str):
        try:
            expires = datetime.fromisoformat(routing["expires_at"])
        except ValueError:
            expires = None
        if expires is not None and expires.tzinfo is not None:
            edges["window"].append(expires)
    return edges


DECIDE_AT_MANY = """
select n.now, d.*
from unnest($4::timestamptz[]) as n(now)
cross join lateral decide_next_channel_for_lead($1, $2, $3, n.now) d"""


async def check(env: Env, case: dict[str, Any], data: st.DataObject) -> None:
    key = await write(env, case)
    inputs = await load_decision_inputs(env.conn, *key)
    assert inputs is not None
    edges = await boundaries(env, key, case)
    # every edge, a microsecond before, at and after it; and a few nows anywhere
    nows = {edge + nudge for kind in edges.values() for edge in kind for nudge in (-US, timedelta(0), US)}
    nows |= {T0 + data.draw(offsets(-600, 6 * 3600), label="now offset") for _ in range(2)}
    rows = await env.conn.fetch(DECIDE_AT_MANY, *key, sorted(nows))
    assert len(rows) == len(nows)
    for row in rows:
        now, sql = row["now"], decision_from_row(row)
        py = decide(inputs, now)
        assert py == sql, f"now={now.isoformat()}\npython={py!r}\nsql={sql!r}"
        event(f"{sql.decision} {(sql.stop_reason or '').split(':')[0]}")
    # the named query gives the same as the batch above
    assert await decide_sql(env.conn, *key, now) == sql


@settings(max_examples=500, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(case=scenarios(), data=st.data())
def test_python_and_sql_decisions_agree(env: Env, case: dict[str, Any], data: st.DataObject) -> None:
    env.run(check(env, case, data))


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(case=cooldown_scenarios(), data=st.data())
def test_python_and_sql_agree_at_cooldown_ends(env: Env, case: dict[str, Any], data: st.DataObject) -> None:
    env.run(check(env, case, data))
