"""Deciding N events together equals deciding them one by one in order (SPEC §17, sql/views/09_reactions.sql).

Hypothesis draws a small world — leads with and without a phone or an e-mail, campaigns with steps and enrolments,
touches on (lead, campaign, step) keys with valid and broken routing plans, their past attempts, past stop events,
out-of-office pauses and deferrals — and a batch of new events (touch outcomes, permanent and transient
undeliveries, stop events, replies, out-of-office replies, outcomes naming no touch, another lead's touch or a touch
that does not exist). In ONE transaction, so that now() is the same for both sides, it writes them, reacts to the
whole batch in a savepoint (``react_to_events(conn, all_ids)``), takes a snapshot, rolls the savepoint back, reacts
to each event alone in (created_at, id) order, takes a snapshot and compares: every touch, campaign lead, pending
cooldown and event-reaction row, every event the reactions wrote, and the summed ReactionStats counters (all of
them: ``events`` and ``superseded`` add up the same). Ids the two sides create at random are named by what they
are (a new touch by its idempotency key, a new event by its type); times are 'now' (the reaction's moment) or their
distance from it.

The deterministic tests pin the batches hypothesis must be able to draw (two events of one lead, a stop event and a
send of one lead in both orders, leads interleaved, a cadence moved on and paused) and the drain's bad-row
isolation: a reaction the database refuses is set aside alone while every other event of its batch does exactly
what it does alone.

The property test is synchronous and drives its own event loop (a module fixture with its own connection), as
tests/test_decision_property.py does."""

from __future__ import annotations

import difflib
import json
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import pytest
from hypothesis import HealthCheck, Phase, event, example, find, given, note, settings
from hypothesis import strategies as st

from listener.engine.reactions import ReactionStats, drain_reactions, react_to_events
from listener.store.database import create_pool
from tests import factories
from tests.harness import LoopDatabase, loop_database
from tests.test_decision_property import BROKEN, CHANNELS, INBOUND

if TYPE_CHECKING:
    from tests.pg import TestServer

# World ids are fixed per label (every example rolls back, so they are reused): an example replays exactly, and a
# failure names rows by label (L0 a lead, C1 a campaign, T3 a touch, E2 a new event, H5 a past event).
NAMESPACE = uuid.UUID("5b0c6f1e-9a57-4d1b-8f0e-1f6d3c2a7b90")


def uid(label: str) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, label)


OUTCOMES = ("touch_sent", "touch_failed", "touch_undelivered", "email_bounced")
SENDS = ("touch_sent", "touch_failed")

# --- strategies -------------------------------------------------------------------------------------------------
# Strategies are module constants and choices are drawn as indexes (pick): building strategies inside a composite
# costs more than the database work of an example. Hypothesis draws index 0 often: each list starts with a choice
# that leads somewhere (a send, two attempts allowed, a cooldown of 3 s against events seconds apart).

T = TypeVar("T")


def pick(draw: st.DrawFn, options: Sequence[T]) -> T:
    return options[draw(st.integers(0, len(options) - 1))]


SHAPES = ["valid"] * 12 + ["no_routing", "no_fallback", "broken", "broken"]
MAX_ATTEMPTS = ["2", None, "1", "2", "3", "3", "0", "2.0"]  # None: not in the plan (1)
COOLDOWNS = ["0.05", None, None, "0", "0", "0.5", "30", "1440"]  # minutes (0.05: 3 s) against events seconds apart
STOP_LISTS = [None, None, None, [], ["reply_positive"], ["reply_received"], ["reply_out_of_office", "unsubscribe"],
              ["appointment_booked", "resubscribe"], ["reply_negative", "do_not_contact", "reply_positive"]]
EXPIRIES = [None] * 10 + [-3600, -10, 5, 600]  # seconds from now(): expired before or after the batch, or not yet


@st.composite
def plans(draw: st.DrawFn, main: str) -> dict[str, Any]:
    """A routing plan around the channel ``main`` (usually first and current), rendered into a payload when the
    world is written (its expiry is relative to now())."""
    shape = pick(draw, SHAPES)
    others = [c for c in draw(st.permutations(CHANNELS)) if c != main][:draw(st.integers(0, 3))]
    order = others if draw(st.integers(0, 7)) == 0 else [main, *others]
    if order and order[0] == main and draw(st.integers(0, 3)) == 0:
        order.insert(draw(st.integers(0, len(order) - 1)), order.pop(0))
    return {
        "shape": shape,
        "order": order or [main],
        "max_attempts": {c: n for c in CHANNELS if (n := pick(draw, MAX_ATTEMPTS)) is not None},
        "cooldown_minutes": {c: n for c in CHANNELS if (n := pick(draw, COOLDOWNS)) is not None},
        "current_channel": pick(draw, [None, None, None, main, main, "voice", "email"]),
        "stop_on_events": pick(draw, STOP_LISTS),
        "expires_in_s": pick(draw, EXPIRIES),
        "broken": list(pick(draw, BROKEN)) if shape == "broken" else None,
    }


def plan(order: list[str], attempts: dict[str, int] | None = None, cooldowns: dict[str, float] | None = None,
         stop_on_events: list[str] | None = None) -> dict[str, Any]:
    """A valid plan for the hand-written cases."""
    return {"shape": "valid", "order": order, "max_attempts": {c: str(n) for c, n in (attempts or {}).items()},
            "cooldown_minutes": {c: str(n) for c, n in (cooldowns or {}).items()}, "current_channel": None,
            "stop_on_events": stop_on_events, "expires_in_s": None, "broken": None}


def payload_text(p: dict[str, Any], base: datetime, primary: str | None = None) -> str:
    """The payload of a touch or a campaign step, as JSON text (numbers exactly as a writer would have spelled
    them): routing with primary_channel (steps), the plan's parts, and its brokenness."""
    parts: dict[str, str] = {}
    if primary is not None:
        parts["primary_channel"] = json.dumps(primary)
    if p["shape"] != "no_routing":
        if p["current_channel"] is not None:
            parts["current_channel"] = json.dumps(p["current_channel"])
        if p["stop_on_events"] is not None:
            parts["stop_on_events"] = json.dumps(p["stop_on_events"])
        if p["expires_in_s"] is not None:
            parts["expires_at"] = json.dumps((base + timedelta(seconds=p["expires_in_s"])).isoformat())
    fallback = {"order": json.dumps(p["order"])}
    if p["max_attempts"]:
        fallback["max_attempts"] = "{" + ", ".join(f'"{k}": {v}' for k, v in p["max_attempts"].items()) + "}"
    if p["cooldown_minutes"]:
        fallback["cooldown_minutes"] = "{" + ", ".join(f'"{k}": {v}' for k, v in p["cooldown_minutes"].items()) + "}"
    routing_text = None
    if p["shape"] == "broken":
        where, value = p["broken"]
        if where == "routing":
            routing_text = value
        elif where in ("current_channel", "stop_on_events", "expires_at", "deep", "fallback"):
            parts[where] = value
        else:
            fallback[where] = value
    if p["shape"] in ("valid", "broken") and "fallback" not in parts:
        parts["fallback"] = "{" + ", ".join(f'"{k}": {v}' for k, v in fallback.items()) + "}"
    if routing_text is None:
        routing_text = "{" + ", ".join(f'"{k}": {v}' for k, v in parts.items()) + "}"
    if p["shape"] == "no_routing" and primary is None:
        return '{"message_class": "cold_outreach", "delivery": {"body": "Hola {first_name}"}}'
    return '{"message_class": "cold_outreach", "delivery": {"body": "Hola {first_name}"}, "routing": ' + routing_text + "}"


LEADS = st.fixed_dictionaries({
    "phone": st.sampled_from(["+34600000001"] * 5 + [None, "  "]),
    "email": st.sampled_from(["ana@example.com"] * 5 + [None, ""]),
    "enriched_phone": st.sampled_from([None, None, None, "+34600000002"]),
    # out of office since an hour ago: its open touches deferred to the end of the pause (SPEC §19)
    "paused": st.sampled_from([False, False, False, False, True]),
})
NEWEST_STATUSES = ["sent"] * 5 + ["failed"] * 4 + ["queued", "scheduled", "processing", "canceled"]
OLD_STATUSES = ["sent", "failed", "canceled"]
HISTORY_ATTEMPTS = ["touch_sent", "touch_sent", "touch_failed:transient", "touch_failed:permanent",
                    "touch_undelivered:permanent", "touch_undelivered:transient", "email_bounced:permanent"]
SENDS_KINDS = ["touch_sent", "touch_sent", "touch_sent", "touch_failed:transient", "touch_failed:transient",
               "touch_failed:permanent", "touch_failed:"]
EVENT_KINDS = [
    # touch outcomes (decisions)
    *SENDS_KINDS, *SENDS_KINDS, "touch_undelivered:permanent", "touch_undelivered:transient",
    "email_bounced:permanent", "email_bounced:transient",
    # stop events
    *INBOUND,
    # replies and pauses
    "reply_received:", "reply_received:out_of_office", "reply_received:help", "reply_out_of_office",
    "reply_out_of_office", "reply_out_of_office",
    # payloads naming no touch, a bad id, a touch that does not exist; inert events
    "touch_sent:missing", "touch_failed:bad_id", "touch_sent:unknown", "touch_undelivered:bad_id", "resubscribe",
    "touch_delivered",
]
# what a paused lead says: a human reply ends the pause (its deferred touches are due at once), another one renews it
PAUSED_EVENT_KINDS = ["reply_received:", "reply_received:help", "reply_received:out_of_office", "reply_positive",
                      "reply_negative", "reply_out_of_office", "touch_sent"]
# reply_out_of_office payloads (sql/views/03_lead_pause_status_v1.sql): an empty one falls back to 8 days
OOO_KINDS = ["empty", "until+3", "until+1", "until-1", "until+0", "garbage", "resume_at+2h", "resume_at+300d"]
HISTORY_TYPES = [*INBOUND, "reply_out_of_office", "reply_out_of_office", "reply_received", "reply_received",
                 "resubscribe"]
HISTORY_AGES = [5, 90, 1440, 30 * 1440 + 5, 45 * 1440]  # minutes ago: the 30-day negative-reply window, both sides
# between the batch's events; 0: one created_at, ordered by id; an hour: a batch older than some of the world (a
# drain after downtime: a stop event before a touch or an enrolment, attempts an hour apart)
GAPS_MS = [1000, 1000, 2000, 5000, 30000, 1, 0, 3_600_000]


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    n_leads = draw(st.integers(1, 4))
    leads = [draw(LEADS) for _ in range(n_leads)]
    campaigns = []
    for _ in range(pick(draw, [1, 0, 1, 2])):
        steps = []
        for _ in range(pick(draw, [2, 1, 3])):
            channel = pick(draw, [*CHANNELS, "sms", "fax"])  # fax: a step with no touch to create
            steps.append({"channel": channel, "delay": pick(draw, ["0", "0", "5", "1440"]),
                          "plan": draw(plans("sms" if channel == "fax" else channel))})
        campaigns.append({"message_class": pick(draw, [None, "cold_outreach"]), "steps": steps})
    enrolments = []
    for lead in range(n_leads):
        for c, campaign in enumerate(campaigns):
            status = pick(draw, ["active", None, "active", "active", "active", "paused", "completed", "stopped"])
            if status is not None:
                enrolments.append({"lead": lead, "campaign": c, "status": status,
                                   "step": draw(st.integers(1, len(campaign["steps"]))),
                                   # seconds ago: 60 and 3 are inside the batch (stop events before it spare it)
                                   "enrolled_s": pick(draw, [172800, 172800, 36000, 60, 3])})
    keys = []
    for lead in range(n_leads):
        current = [(e["campaign"], e["step"]) for e in enrolments if e["lead"] == lead]
        options: list[tuple[int | None, int]] = [*current, (None, 1), *current, (None, 2), *current]
        options += [(c, s) for c, campaign in enumerate(campaigns) for s in range(1, len(campaign["steps"]) + 1)]
        chosen: list[tuple[int | None, int]] = []
        for _ in range(pick(draw, [1, 2, 0, 1, 2])):
            key = pick(draw, options)
            if key not in chosen:
                chosen.append(key)
        for campaign, step in chosen:
            main = pick(draw, CHANNELS)
            key_plan = (campaigns[campaign]["steps"][step - 1]["plan"]
                        if campaign is not None and draw(st.booleans()) else draw(plans(main)))
            n = pick(draw, [1, 1, 2, 3])
            ages = [pick(draw, [30, 60, 240, 1500])]  # minutes ago, the newest touch first
            for _ in range(n - 1):
                ages.append(ages[-1] + pick(draw, [5, 60, 600]))
            touches = []
            for j, age in enumerate(reversed(ages)):
                status = pick(draw, NEWEST_STATUSES if j == n - 1 else OLD_STATUSES)
                touches.append({
                    "channel": pick(draw, [main] * 4 + CHANNELS),
                    "status": status,
                    "age_min": age,
                    # when a scheduled touch is due: past, in an hour, in 3 days, in a month
                    "due_s": (pick(draw, [-300, 3600, 3 * 86400, 30 * 86400]) if status == "scheduled"
                              else -600 if status == "queued" else -60 * age),
                    "deferred": pick(draw, [None, None, "quiet_hours"]) if status == "scheduled" else None,
                    "attempts": [pick(draw, HISTORY_ATTEMPTS) for _ in range(pick(draw, [0, 0, 1, 2]))],
                })
            keys.append({"lead": lead, "campaign": campaign, "step": step, "plan": key_plan,
                         "step_key": campaign is not None and draw(st.booleans()), "touches": touches})
    history = [{"lead": draw(st.integers(0, n_leads - 1)), "type": pick(draw, HISTORY_TYPES),
                "age_min": pick(draw, HISTORY_AGES), "ooo": pick(draw, OOO_KINDS)}
               for _ in range(pick(draw, [0, 0, 0, 1, 2]))]
    events = []
    for _ in range(draw(st.integers(1, 8))):
        lead = draw(st.integers(0, n_leads - 1))
        kinds = PAUSED_EVENT_KINDS if leads[lead]["paused"] and draw(st.booleans()) else EVENT_KINDS
        events.append({"lead": lead, "kind": pick(draw, kinds),
                       "touch": pick(draw, [0, 0, 0, 0, 1, 2]),  # 0: the newest touch of the lead's first key
                       "foreign": draw(st.integers(0, 7)) == 7,  # an outcome naming another lead's touch
                       "gap_ms": pick(draw, GAPS_MS), "ooo": pick(draw, OOO_KINDS)})
    return {"leads": leads, "campaigns": campaigns, "enrolments": enrolments, "keys": keys, "history": history,
            "events": events}


# --- the world, resolved ----------------------------------------------------------------------------------------


@dataclass
class Touch:
    label: str
    lead: int
    key: dict[str, Any]
    spec: dict[str, Any]

    @property
    def id(self) -> uuid.UUID:
        return uid(self.label)


@dataclass
class NewEvent:
    label: str
    lead: int  # core_memory_events.lead_id
    event_type: str
    payload: dict[str, Any]
    direction: str
    channel: str | None
    offset_ms: int  # created_at = now() - 1 s + offset_ms (<= 0)
    touch: Touch | None  # the existing touch its payload names
    round_lead: int  # whose round it is in: the touch's lead for a touch outcome, else its own

    @property
    def id(self) -> uuid.UUID:
        return uid(self.label)

    @property
    def is_send(self) -> bool:
        return self.event_type in SENDS and self.touch is not None

    @property
    def is_stop(self) -> bool:
        return self.event_type in INBOUND


def touches_of(case: dict[str, Any]) -> list[Touch]:
    return [Touch(f"T{n}", key["lead"], key, spec)
            for n, (key, spec) in enumerate((k, t) for k in case["keys"] for t in k["touches"])]


def newest_first(touches: list[Touch]) -> list[Touch]:
    """The newest touch of each key first (an outcome of it is decided), then the older ones (superseded)."""
    return sorted(touches, key=lambda t: t.spec is not t.key["touches"][-1])


def ooo_payload(kind: str, base: datetime) -> dict[str, Any]:
    if kind == "empty":
        return {}
    if kind == "garbage":
        return {"until": "pronto", "resume_at": "nunca"}
    what, days = kind.split("+") if "+" in kind else kind.split("-")
    if what == "until":
        n = int(days) * (1 if "+" in kind else -1)
        return {"until": (base.date() + timedelta(days=n)).isoformat(), "lead_timezone": "UTC"}
    at = base + (timedelta(hours=2) if days == "2h" else timedelta(days=300))
    return {"until": at.date().isoformat(), "resume_at": at.isoformat()}


def resolve_events(case: dict[str, Any], base: datetime) -> list[NewEvent]:
    """The batch: each drawn event as the row it becomes, in the drawn (= time) order."""
    touches = touches_of(case)
    total = sum(e["gap_ms"] for e in case["events"])
    out: list[NewEvent] = []
    at = -total
    for n, spec in enumerate(case["events"]):
        at += spec["gap_ms"]
        lead = spec["lead"]
        event_type, _, variant = spec["kind"].partition(":")
        payload: dict[str, Any] = {}
        touch: Touch | None = None
        direction, channel = "inbound", None
        if event_type in OUTCOMES or event_type == "touch_delivered":
            direction = "outbound"
            own = newest_first([t for t in touches if t.lead == lead])
            foreign = newest_first([t for t in touches if t.lead != lead])
            pool = foreign if (spec["foreign"] and foreign) or not own else own
            if variant == "missing":
                pass
            elif variant == "bad_id":
                payload["touch_run_id"] = "not-a-uuid" if event_type == "touch_failed" else 12
            elif variant == "unknown":
                payload["touch_run_id"] = str(uid("nowhere"))
            elif pool:
                touch = pool[spec["touch"] % len(pool)]
                payload["touch_run_id"] = str(touch.id)
                channel = touch.spec["channel"]
            if event_type != "touch_sent" and event_type != "touch_delivered":
                klass = {"bad_id": "permanent", "": None}.get(variant, variant)
                if klass is not None:
                    payload["failure_class"] = klass
                payload["error_code"] = "30003"
        elif event_type == "reply_received":
            if variant:
                payload["classification"] = variant
            payload["body"] = "gracias"
        elif event_type == "reply_out_of_office":
            payload = ooo_payload(spec["ooo"], base)
        out.append(NewEvent(f"E{n}", lead, event_type, payload, direction, channel, at,
                            touch, touch.lead if touch is not None and event_type in OUTCOMES else lead))
    return out


def in_time_order(events: list[NewEvent]) -> list[NewEvent]:
    """(created_at, id), as PostgreSQL orders them (uuid order is byte order, as Python's)."""
    return sorted(events, key=lambda e: (e.offset_ms, e.id))


# --- writing rows -----------------------------------------------------------------------------------------------

INSERT_LEAD = "insert into leads (id, account_id, full_name, phone, email, timezone) values ($1, $2, $3, $4, $5, 'UTC')"
INSERT_ENRICHED = "insert into lead_enriched (lead_id, phone) values ($1, $2)"
INSERT_CAMPAIGN = "insert into campaigns (id, account_id, name, message_class) values ($1, $2, $3, $4)"
INSERT_STEP = """insert into campaign_steps (campaign_id, step, delay_minutes, payload)
                 values ($1, $2, $3::numeric, $4::text::jsonb)"""
INSERT_ENROLMENT = """
insert into campaign_leads (id, campaign_id, lead_id, status, current_step, stop_reason, enrolled_at, created_at,
                            updated_at)
values ($1, $2, $3, $4, $5, $6, $7, $7, $7)"""
INSERT_TOUCH = """
insert into touch_runs (id, account_id, lead_id, campaign_id, step, channel, status, scheduled_at, payload,
                        idempotency_key, locked_by, locked_until, created_at, updated_at)
values ($1, $2, $3, $4, $5, $6, $7, $8, $9::text::jsonb, $10, $11, $12, $13, $13)"""
INSERT_EVENT = """
insert into core_memory_events (id, lead_id, event_type, event_source, channel, direction, payload, created_at)
values ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8)"""


@dataclass
class World:
    base: datetime  # now() of the transaction
    labels: dict[str, str]  # str(id) -> label
    touch_ids: set[uuid.UUID]
    events: list[NewEvent]


async def write_world(conn: asyncpg.Connection, account_id: uuid.UUID, case: dict[str, Any]) -> World:
    """Everything in the past of now(): the world minutes to days ago, the batch in the last minutes."""
    base: datetime = await conn.fetchval("select now()")
    labels: dict[str, str] = {str(account_id): "A"}

    def ago(**kw: float) -> datetime:
        return base - timedelta(**kw)

    def name(label: str) -> uuid.UUID:
        labels[str(uid(label))] = label
        return uid(label)

    leads = [name(f"L{n}") for n in range(len(case["leads"]))]
    await conn.executemany(INSERT_LEAD, [(leads[n], account_id, f"Lead {n}", lead["phone"], lead["email"])
                                         for n, lead in enumerate(case["leads"])])
    enriched = [(leads[n], lead["enriched_phone"]) for n, lead in enumerate(case["leads"]) if lead["enriched_phone"]]
    if enriched:
        await conn.executemany(INSERT_ENRICHED, enriched)
    campaigns = [name(f"C{n}") for n in range(len(case["campaigns"]))]
    if campaigns:
        await conn.executemany(INSERT_CAMPAIGN, [(campaigns[n], account_id, f"campaign {n}", c["message_class"])
                                                 for n, c in enumerate(case["campaigns"])])
        await conn.executemany(INSERT_STEP, [
            (campaigns[n], s + 1, step["delay"], payload_text(step["plan"], base, primary=step["channel"]))
            for n, c in enumerate(case["campaigns"]) for s, step in enumerate(c["steps"])])
    if case["enrolments"]:
        await conn.executemany(INSERT_ENROLMENT, [
            (name(f"CL{e['lead']}.{e['campaign']}"), campaigns[e["campaign"]], leads[e["lead"]], e["status"],
             e["step"], "earlier" if e["status"] == "stopped" else None, ago(seconds=e["enrolled_s"]))
            for e in case["enrolments"]])
    touches = touches_of(case)
    rows, history = [], []
    paused_until = base.date() + timedelta(days=3)
    resume_at = datetime.combine(paused_until + timedelta(days=1), time(9), UTC)
    for n, lead in enumerate(case["leads"]):
        if lead.get("paused"):  # its pause, and a touch of its own (key step 9) the pause deferred
            history.append(("reply_out_of_office", leads[n], "inbound", "sms",
                            {"until": paused_until.isoformat(), "lead_timezone": "UTC"}, ago(minutes=60)))
            rows.append((name(f"P{n}"), account_id, leads[n], None, 9, "sms", "scheduled", resume_at,
                         payload_text(plan(["sms"]), base), None, None, None, ago(minutes=120)))
            history.append(("touch_deferred", leads[n], "internal", "sms",
                            {"touch_run_id": str(uid(f"P{n}")), "reason": "out_of_office"}, ago(minutes=59)))
    for touch in touches:
        key, spec = touch.key, touch.spec
        name(touch.label)
        first = spec is key["touches"][0]
        campaign = None if key["campaign"] is None else campaigns[key["campaign"]]
        step_key = f"step:{campaign}:{leads[key['lead']]}:{key['step']}" if first and key["step_key"] else None
        processing = spec["status"] == "processing"
        status, due, deferred = spec["status"], base + timedelta(seconds=spec["due_s"]), spec["deferred"]
        if case["leads"][touch.lead].get("paused") and status in ("queued", "scheduled"):
            status, due, deferred = "scheduled", resume_at, "out_of_office"  # as the pause deferred it
        rows.append((touch.id, account_id, leads[touch.lead], campaign, key["step"], spec["channel"], status, due,
                     payload_text(key["plan"], base), step_key, "daemon-x" if processing else None,
                     base + timedelta(seconds=60) if processing else None, ago(minutes=spec["age_min"])))
        for n, kind in enumerate(spec["attempts"]):
            event_type, _, klass = kind.partition(":")
            payload = {"touch_run_id": str(touch.id), **({"failure_class": klass} if klass else {})}
            history.append((event_type, leads[touch.lead], "outbound", spec["channel"], payload,
                            ago(minutes=max(spec["age_min"] - n - 1, 5))))
        if deferred:
            history.append(("touch_deferred", leads[touch.lead], "internal", spec["channel"],
                            {"touch_run_id": str(touch.id), "reason": deferred}, ago(minutes=4)))
    await conn.executemany(INSERT_TOUCH, rows)
    for past in case["history"]:
        payload = ooo_payload(past["ooo"], base - timedelta(minutes=past["age_min"])) \
            if past["type"] == "reply_out_of_office" else {}
        history.append((past["type"], leads[past["lead"]], "inbound", None, payload, ago(minutes=past["age_min"])))
    if history:
        await conn.executemany(INSERT_EVENT, [
            (name(f"H{n}"), lead, event_type, "history", channel, direction, json.dumps(payload), at)
            for n, (event_type, lead, direction, channel, payload, at) in enumerate(history)])
    events = resolve_events(case, base)
    for e in events:
        name(e.label)
    await conn.executemany(INSERT_EVENT, [
        (e.id, leads[e.lead], e.event_type, "batch", e.channel, e.direction, json.dumps(e.payload),
         base - timedelta(seconds=1) + timedelta(milliseconds=e.offset_ms)) for e in events])
    return World(base, labels, {r[0] for r in rows}, events)


# --- snapshots --------------------------------------------------------------------------------------------------


def _rel(column: str) -> str:
    """A time as 'now' (the reaction's moment, $1) or as its distance from $2."""
    return f"case when {column} = $1::timestamptz then 'now' else ({column} - $2::timestamptz)::text end"


SNAPSHOT_TOUCHES = f"""
select id, idempotency_key,
       jsonb_build_array(id, lead_id, campaign_id, step, channel, status, {_rel('scheduled_at')}, {_rel('sent_at')},
                         error, idempotency_key, payload, locked_by, {_rel('locked_until')}, {_rel('created_at')},
                         {_rel('updated_at')}, provider_message_id)::text as row
from touch_runs"""
SNAPSHOT_TABLES = {
    "campaign_leads": f"""
        select jsonb_build_array(id, campaign_id, lead_id, status, current_step, stop_reason, {_rel('enrolled_at')},
                                 {_rel('updated_at')})::text as row
        from campaign_leads""",
    "pending_cooldowns": f"""
        select jsonb_build_array(lead_id, campaign_id, step, latest_touch_id, {_rel('due_at')},
                                 {_rel('created_at')})::text as row
        from pending_cooldowns""",
}
SNAPSHOT_EVENT_REACTIONS = f"""
select jsonb_build_array(event_id, lead_id, event_type, {_rel('created_at')}, attempts, error,
                         failed_at is not null, retry_at is not null)::text as row
from event_reactions"""
SNAPSHOT_NEW_EVENTS = f"""
select id, event_type,
       jsonb_build_array(lead_id, event_type, event_source, channel, direction, payload, score_delta,
                         {_rel('created_at')})::text as row
from core_memory_events where not (id = any($3::uuid[]))"""
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
ISO_RE = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})")


def relabel(text: str, labels: dict[str, str], now_at: datetime | None = None) -> str:
    """Ids by their labels; inside payloads, the reaction's moment (as iso text) as 'now'."""
    text = UUID_RE.sub(lambda m: labels.get(m.group(0), m.group(0)), text)
    if now_at is None:
        return text

    def moment(m: re.Match[str]) -> str:
        try:
            return "now" if datetime.fromisoformat(m.group(0)) == now_at else m.group(0)
        except ValueError:  # a broken plan's expires_at ("2026-02-30T00:00:00Z")
            return m.group(0)

    return ISO_RE.sub(moment, text)


async def snapshot(conn: asyncpg.Connection, *, now_at: datetime, anchor: datetime, labels: dict[str, str],
                   old_touches: set[uuid.UUID], old_events: set[uuid.UUID],
                   event_reactions: bool = True) -> dict[str, list[str]]:
    """Every row the reactions may have written, as sorted text with ids relabelled: a touch they created by its
    idempotency key, an event they wrote by its type; times as 'now' (now_at, the reaction's moment) or as their
    distance from anchor."""
    labels = dict(labels)
    touch_rows = await conn.fetch(SNAPSHOT_TOUCHES, now_at, anchor)
    for r in touch_rows:
        if r["id"] not in old_touches:
            labels[str(r["id"])] = f"new-touch<{relabel(r['idempotency_key'] or '?', labels)}>"
    event_rows = await conn.fetch(SNAPSHOT_NEW_EVENTS, now_at, anchor, list(old_events))
    for r in event_rows:
        labels[str(r["id"])] = f"new-event<{r['event_type']}>"
    tables = {name: [r["row"] for r in await conn.fetch(query, now_at, anchor)]
              for name, query in SNAPSHOT_TABLES.items()}
    if event_reactions:
        tables["event_reactions"] = [r["row"] for r in await conn.fetch(SNAPSHOT_EVENT_REACTIONS, now_at, anchor)]
    tables["touch_runs"] = [r["row"] for r in touch_rows]
    tables["new_events"] = [r["row"] for r in event_rows]
    return {name: sorted(relabel(row, labels, now_at) for row in rows) for name, rows in sorted(tables.items())}


def differences(left: dict[str, list[str]], right: dict[str, list[str]], names: tuple[str, str]) -> str:
    out = []
    for table in left:
        if left[table] != right[table]:
            out.append(f"--- {table}")
            out += difflib.unified_diff(left[table], right[table], names[0], names[1], lineterm="", n=0)
    return "\n".join(out)


# --- batch against one by one ---------------------------------------------------------------------------------


Env = LoopDatabase  # every example runs in a transaction rolled back


@pytest.fixture(scope="module")
def env(migrated_template: TestServer) -> Iterator[Env]:
    """One database for the whole module, on a loop of our own; every example runs in a transaction rolled back."""
    with loop_database(migrated_template) as database:
        yield database


@dataclass
class Outcome:
    world: World
    batch: dict[str, list[str]]
    batch_stats: ReactionStats
    one_by_one: dict[str, list[str]]
    one_by_one_stats: ReactionStats
    order: list[str] = field(default_factory=list)  # labels, as reacted to one by one

    def rows(self, table: str, *needles: str) -> list[str]:
        return [row for row in self.batch[table] if all(n in row for n in needles)]


async def batch_and_one_by_one(env: Env, case: dict[str, Any],
                               arrange: Callable[[list[uuid.UUID]], list[uuid.UUID]] = lambda ids: ids) -> Outcome:
    """Both sides in one transaction (one now()), rolled back; ``arrange`` orders the one-by-one side (the time
    order; a test of the test reverses it)."""
    conn = env.conn
    transaction = conn.transaction()
    await transaction.start()
    try:
        world = await write_world(conn, env.account_id, case)
        ids = [e.id for e in world.events]
        order = [r["id"] for r in await conn.fetch(
            "select id from core_memory_events where id = any($1::uuid[]) order by created_at, id", ids)]
        assert order == [e.id for e in in_time_order(world.events)]
        old_events = {r["id"] for r in await conn.fetch("select id from core_memory_events")}
        shot = {"now_at": world.base, "anchor": world.base, "labels": world.labels, "old_touches": world.touch_ids,
                "old_events": old_events}
        savepoint = conn.transaction()
        await savepoint.start()
        batch_stats = await react_to_events(conn, list(reversed(ids)))  # the function orders the batch itself
        batch = await snapshot(conn, **shot)
        await savepoint.rollback()
        one_by_one_stats = ReactionStats()
        for event_id in arrange(order):
            one_by_one_stats.add(await react_to_events(conn, [event_id]))
        one_by_one = await snapshot(conn, **shot)
    finally:
        await transaction.rollback()
    return Outcome(world, batch, batch_stats, one_by_one, one_by_one_stats,
                   [world.labels[str(i)] for i in order])


def assert_equal(outcome: Outcome) -> None:
    diff = differences(outcome.batch, outcome.one_by_one, ("batch", "one by one"))
    assert not diff, f"batch != one by one (events in order {outcome.order}):\n{diff}"
    assert outcome.batch_stats.as_dict() == outcome.one_by_one_stats.as_dict(), (
        f"counters: batch {outcome.batch_stats.as_dict()} != one by one {outcome.one_by_one_stats.as_dict()}")


def kinds_of_batch(events: list[NewEvent]) -> list[str]:
    """What kind of batch it is (hypothesis.event labels)."""
    ordered = in_time_order(events)
    by_lead: dict[int, list[NewEvent]] = {}
    for e in ordered:
        by_lead.setdefault(e.round_lead, []).append(e)
    kinds = [f"{len(events)} event(s), {max(len(v) for v in by_lead.values())} round(s)"]
    if any(len(v) >= 2 for v in by_lead.values()):
        kinds.append("two events of one lead")
    for mine in by_lead.values():
        stops = [n for n, e in enumerate(mine) if e.is_stop]
        sends = [n for n, e in enumerate(mine) if e.is_send]
        if stops and sends:
            kinds.append("stop + send of one lead: stop first" if min(stops) < min(sends)
                         else "stop + send of one lead: send first")
    leads = [e.round_lead for e in ordered]  # a lead, another one, the first again
    if any(leads[i] == leads[j] and any(leads[k] != leads[i] for k in range(i + 1, j))
           for i in range(len(leads)) for j in range(i + 2, len(leads))):
        kinds.append("leads interleaved")
    if any(e.touch is not None and e.touch.lead != e.lead for e in events):
        kinds.append("an outcome names another lead's touch")
    if any(e.event_type in OUTCOMES and e.touch is None for e in events):
        kinds.append("an outcome names no existing touch")
    if len({e.offset_ms for e in events}) < len(events):
        kinds.append("two events at the same created_at")
    return kinds


def kinds_of_effects(outcome: Outcome) -> list[str]:
    stats = outcome.batch_stats
    kinds = [f"decision {d}" for d in sorted(stats.decisions)]
    for row in outcome.rows("new_events", '"fallback_decision"'):
        reason = json.loads(row)[5].get("stop_reason")
        if reason:
            kinds.append(f"stop {reason.split(':')[0]}")
    for counter in ("touches_created", "touches_canceled", "superseded", "cadences_completed", "cadences_stopped",
                    "steps_advanced", "touches_deferred", "touches_resumed", "without_touch"):
        if getattr(stats, counter):
            kinds.append(counter)
    if outcome.batch["pending_cooldowns"]:
        kinds.append("pending cooldown")
    return kinds


EXAMPLE_LEAD = {"phone": "+34600000001", "email": "ana@example.com", "enriched_phone": None}


def touch_spec(channel: str, status: str, age_min: int, attempts: list[str] | None = None,
               due_s: int | None = None, deferred: str | None = None) -> dict[str, Any]:
    return {"channel": channel, "status": status, "age_min": age_min,
            "due_s": (-60 * age_min if due_s is None else due_s), "deferred": deferred, "attempts": attempts or []}


def batch_event(lead: int, kind: str, touch: int = 0, gap_ms: int = 1000, ooo: str = "until+3") -> dict[str, Any]:
    return {"lead": lead, "kind": kind, "touch": touch, "foreign": False, "gap_ms": gap_ms, "ooo": ooo}


SMS_EMAIL = plan(["sms", "email"], {"sms": 2, "email": 1})


def stop_and_send(stop_first: bool) -> dict[str, Any]:
    """One lead in a campaign: its step-1 touch was sent (a send arrives) and a reactivation touch is open; a
    reply_positive arrives before or after the send."""
    stop, send = batch_event(0, "reply_positive"), batch_event(0, "touch_sent", touch=0)
    return {
        "leads": [EXAMPLE_LEAD],
        "campaigns": [{"message_class": None, "steps": [{"channel": "sms", "delay": "0", "plan": SMS_EMAIL},
                                                        {"channel": "email", "delay": "0", "plan": SMS_EMAIL}]}],
        "enrolments": [{"lead": 0, "campaign": 0, "status": "active", "step": 1, "enrolled_s": 172800}],
        "keys": [{"lead": 0, "campaign": 0, "step": 1, "plan": SMS_EMAIL, "step_key": True,
                  "touches": [touch_spec("sms", "sent", 60)]},
                 {"lead": 0, "campaign": None, "step": 1, "plan": SMS_EMAIL, "step_key": False,
                  "touches": [touch_spec("email", "queued", 30)]}],
        "history": [],
        "events": [stop, send] if stop_first else [send, stop],
    }


TWO_EVENTS_OF_ONE_LEAD: dict[str, Any] = {
    "leads": [EXAMPLE_LEAD],
    "campaigns": [],
    "enrolments": [],
    "keys": [{"lead": 0, "campaign": None, "step": 1, "plan": SMS_EMAIL, "step_key": False,
              "touches": [touch_spec("sms", "sent", 60)]}],
    "history": [],
    # the send and then its permanent failure: the first decides (the channel is exhausted by the second: switch
    # to e-mail), the second finds a newer touch of its key (superseded)
    "events": [batch_event(0, "touch_sent"), batch_event(0, "touch_failed:permanent")],
}

INTERLEAVED: dict[str, Any] = {
    "leads": [EXAMPLE_LEAD, EXAMPLE_LEAD, {**EXAMPLE_LEAD, "phone": None}, EXAMPLE_LEAD],
    "campaigns": [{"message_class": "cold_outreach",
                   "steps": [{"channel": "sms", "delay": "0", "plan": plan(["sms"])},
                             {"channel": "email", "delay": "0", "plan": plan(["email", "sms"])}]}],
    "enrolments": [{"lead": 1, "campaign": 0, "status": "active", "step": 1, "enrolled_s": 172800},
                   {"lead": 3, "campaign": 0, "status": "active", "step": 1, "enrolled_s": 172800}],
    "keys": [
        # L0: sms with attempts left: a retry, then its own out-of-office reply defers the follow-up it created
        {"lead": 0, "campaign": None, "step": 1, "plan": plan(["sms", "email"], {"sms": 3}), "step_key": False,
         "touches": [touch_spec("sms", "sent", 90)]},
        # L1: an open touch a reply_positive cancels (and its cadence stops); then a send of its other key: stop
        {"lead": 1, "campaign": 0, "step": 1, "plan": plan(["sms"]), "step_key": True,
         "touches": [touch_spec("sms", "scheduled", 120, due_s=3600)]},
        {"lead": 1, "campaign": None, "step": 2, "plan": SMS_EMAIL, "step_key": False,
         "touches": [touch_spec("sms", "sent", 100)]},
        # L2 (no phone): a permanent e-mail failure, sms unreachable: exhausted
        {"lead": 2, "campaign": None, "step": 1, "plan": plan(["email", "sms"], {"email": 2, "sms": 2}),
         "step_key": False, "touches": [touch_spec("email", "failed", 80)]},
        # L3: its only step-1 attempt exhausts the step: step 2's touch is created, then deferred by its pause
        {"lead": 3, "campaign": 0, "step": 1, "plan": plan(["sms"]), "step_key": True,
         "touches": [touch_spec("sms", "sent", 70)]},
    ],
    "history": [],
    "events": [batch_event(0, "touch_sent", touch=0), batch_event(1, "reply_positive"),
               batch_event(3, "touch_sent", touch=0), batch_event(0, "reply_out_of_office", ooo="empty"),
               batch_event(2, "touch_failed:permanent", touch=0), batch_event(1, "touch_sent", touch=1),
               batch_event(3, "reply_out_of_office", ooo="until+3"), batch_event(2, "touch_failed:bad_id")],
}

# Outcomes naming another lead's touch are in that touch's lead's rounds: L1's send and L0's failure of L0's T0 are
# two rounds (two decisions of T0's key, as one by one); L3's send of L2's T1 comes before L2's reply_positive (the
# decision stops the cadence with its reason, not the reply).
CROSS_LEAD: dict[str, Any] = {
    "leads": [EXAMPLE_LEAD] * 4,
    "campaigns": [{"message_class": None, "steps": [{"channel": "sms", "delay": "0", "plan": SMS_EMAIL}]}],
    "enrolments": [{"lead": 2, "campaign": 0, "status": "active", "step": 1, "enrolled_s": 172800}],
    "keys": [{"lead": 0, "campaign": None, "step": 1, "plan": plan(["sms"], {"sms": 3}, {"sms": 30}),
              "step_key": False, "touches": [touch_spec("sms", "sent", 60)]},
             {"lead": 2, "campaign": 0, "step": 1, "plan": SMS_EMAIL, "step_key": True,
              "touches": [touch_spec("sms", "sent", 60)]}],
    "history": [],
    "events": [{**batch_event(1, "touch_sent", touch=0), "foreign": True},
               batch_event(0, "touch_failed:transient", touch=0),
               {**batch_event(3, "touch_sent", touch=1), "foreign": True},
               batch_event(2, "reply_positive")],
}


@pytest.mark.timeout(600)  # passing takes ~20 s; a failure is shrunk to a small world, which can take minutes
@settings(max_examples=400, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(case=cases())
@example(case=TWO_EVENTS_OF_ONE_LEAD)
@example(case=stop_and_send(stop_first=True))
@example(case=stop_and_send(stop_first=False))
@example(case=INTERLEAVED)
@example(case=CROSS_LEAD)
def test_a_batch_is_decided_as_its_events_one_by_one_in_order(env: Env, case: dict[str, Any]) -> None:
    outcome = env.run(batch_and_one_by_one(env, case))
    note(f"events in (created_at, id) order: {outcome.order}")
    for kind in kinds_of_batch(outcome.world.events) + kinds_of_effects(outcome):
        event(kind)
    assert_equal(outcome)


# --- the batches hypothesis must be able to draw, pinned ------------------------------------------------------


def test_two_events_of_one_lead_in_one_batch(env: Env) -> None:
    outcome = env.run(batch_and_one_by_one(env, TWO_EVENTS_OF_ONE_LEAD))
    assert_equal(outcome)
    assert "two events of one lead" in kinds_of_batch(outcome.world.events)
    assert outcome.batch_stats.decisions == {"switch_channel": 1} and outcome.batch_stats.superseded == 1
    (follow_up,) = outcome.rows("touch_runs", '"new-touch<next:T0>"')
    assert '"email"' in follow_up and '"queued"' in follow_up


def test_a_stop_event_and_a_send_of_one_lead_in_both_orders(env: Env) -> None:
    stop_first = env.run(batch_and_one_by_one(env, stop_and_send(stop_first=True)))
    send_first = env.run(batch_and_one_by_one(env, stop_and_send(stop_first=False)))
    for outcome, kind in ((stop_first, "stop first"), (send_first, "send first")):
        assert_equal(outcome)
        assert f"stop + send of one lead: {kind}" in kinds_of_batch(outcome.world.events)
        # either way: the open touch is canceled and the send's decision is a stop (the reply is there at now())
        assert outcome.batch_stats.touches_canceled == 1 and outcome.batch_stats.decisions == {"stop": 1}
        (canceled,) = outcome.rows("touch_runs", '"canceled: stop_event:reply_positive"')
        assert '"T1"' in canceled
    # the order shows: whoever comes first stops the cadence, with its own reason (and one cadence_stopped)
    (stopped,) = stop_first.batch["campaign_leads"]
    assert '"stopped", 1, "reply_positive"' in stopped
    (stopped,) = send_first.batch["campaign_leads"]
    assert '"stopped", 1, "stop_event:reply_positive"' in stopped
    assert stop_first.batch != send_first.batch
    for outcome in (stop_first, send_first):
        assert len(outcome.rows("new_events", '"cadence_stopped"')) == 1


def test_events_of_different_leads_interleaved(env: Env) -> None:
    outcome = env.run(batch_and_one_by_one(env, INTERLEAVED))
    assert_equal(outcome)
    assert {"two events of one lead", "leads interleaved"} <= set(kinds_of_batch(outcome.world.events))
    stats = outcome.batch_stats
    assert stats.decisions == {"retry_same_channel": 1, "stop": 3}, stats
    assert (stats.events, stats.touches_canceled, stats.steps_advanced, stats.touches_deferred,
            stats.without_touch) == (8, 1, 1, 2, 1), stats
    # the touches created in round 1 are deferred in round 2, each by its own lead's pause
    for created in ("new-touch<next:T0>", "new-touch<step:C0:L3:2>"):
        (deferred,) = outcome.rows("new_events", '"touch_deferred"', f'"{created}"')
        (touch,) = outcome.rows("touch_runs", f'"{created}"', '"scheduled"')
        assert '"now"' not in json.dumps(json.loads(touch)[6]), touch  # due when the pause ends, not now
    stop_reasons = sorted(json.loads(r)[5]["stop_reason"] for r in outcome.rows("new_events", '"fallback_decision"')
                          if json.loads(r)[5]["decision"] == "stop")
    assert stop_reasons == ["exhausted", "exhausted", "stop_event:reply_positive"]


def test_an_outcome_naming_another_leads_touch_is_in_that_leads_rounds(env: Env) -> None:
    outcome = env.run(batch_and_one_by_one(env, CROSS_LEAD))
    assert_equal(outcome)
    assert "an outcome names another lead's touch" in kinds_of_batch(outcome.world.events)
    assert outcome.batch_stats.decisions == {"wait_cooldown": 2, "stop": 1}, outcome.batch_stats
    triggers = sorted(json.loads(r)[5]["trigger_event_id"] for r in outcome.rows("new_events", '"T0"', "wait_cooldown"))
    assert triggers == ["E0", "E1"]
    (stopped,) = outcome.batch["campaign_leads"]
    assert '"stopped", 1, "stop_event:reply_positive"' in stopped


@pytest.mark.parametrize("predicate", ["two events of one lead", "stop + send of one lead: stop first",
                                       "stop + send of one lead: send first", "leads interleaved",
                                       "an outcome names another lead's touch", "an outcome names no existing touch",
                                       "two events at the same created_at"])
def test_the_strategy_draws_every_kind_of_batch(predicate: str) -> None:
    """No database: the drawn cases alone contain each kind of batch (hypothesis finds one quickly)."""
    base = datetime(2026, 1, 10, 8, 0, tzinfo=UTC)
    found = find(cases(), lambda case: predicate in kinds_of_batch(resolve_events(case, base)),
                 settings=settings(max_examples=2000, database=None, phases=[Phase.generate]))
    assert predicate in kinds_of_batch(resolve_events(found, base))


# --- a bad row in the drain -------------------------------------------------------------------------------------


async def test_a_refused_reaction_is_set_aside_alone_and_its_batch_does_what_each_event_does_alone(db, db_url):
    """The drain (drain_reactions, one batch): a touch_failed whose follow-up a constraint added later (NOT VALID)
    refuses, among good events of other leads (and a later event of its own lead). The batch raises; each event is
    run again alone: the refused one is set aside with the constraint's name, every other one does exactly what
    it does alone (computed beforehand, in a transaction rolled back), and nothing else is set aside."""
    account_id = await factories.account(db, providers=False)
    full = factories.payload("sms", plan=factories.FULL_PLAN)
    campaign = await db.fetchval("insert into campaigns (account_id, name) values ($1, 'spring') returning id",
                                 account_id)
    await db.execute("insert into campaign_steps (campaign_id, step, payload) values ($1, 1, $2)", campaign,
                     {"routing": {"primary_channel": "sms", "fallback": factories.FULL_PLAN}})
    legacy = await factories.lead(db, account_id, full_name="Legacy")
    stopper = await factories.lead(db, account_id, full_name="Stopper")
    retry = await factories.lead(db, account_id, full_name="Retry")
    twice = await factories.lead(db, account_id, full_name="Twice")
    legacy_touch = await factories.touch(db, account_id, legacy, status="failed", payload_={**full, "legacy": 1})
    # another key of the poison's lead, open, stopped by a reply (which does not stop the poison's own key)
    legacy_open = await factories.touch(db, account_id, legacy, channel="email", status="scheduled", step=2,
                                        scheduled_in_s=3600,
                                        payload_=factories.payload("email", stop_on_events=["reply_received"]))
    await db.execute("insert into campaign_leads (campaign_id, lead_id) values ($1, $2)", campaign, stopper)
    stopper_open = await factories.touch(db, account_id, stopper, campaign_id=campaign, status="scheduled",
                                         scheduled_in_s=3600, payload_=full)
    retry_touch = await factories.touch(db, account_id, retry, status="failed", payload_=full)
    once = factories.payload("sms", plan={"order": ["sms", "email"], "max_attempts": {"sms": 1, "email": 1}})
    twice_touch = await factories.touch(db, account_id, twice, status="sent", payload_=once)
    # the world began an hour ago (cadences and enrolments before the events), then the constraint came
    await db.execute("update touch_runs set created_at = created_at - interval '1 hour',"
                     " updated_at = updated_at - interval '1 hour'")
    await db.execute("update campaign_leads set enrolled_at = enrolled_at - interval '1 hour',"
                     " updated_at = updated_at - interval '1 hour'")
    await db.execute("alter table touch_runs add constraint no_more_legacy check (payload ->> 'legacy' is null)"
                     " not valid")
    await db.execute("delete from event_reactions")  # the world's own events are not part of the batch
    events: dict[str, uuid.UUID] = {}
    async with db.transaction():  # one batch, in this order
        for label, lead, event_type, payload, ago_s in (
                ("poison", legacy, "touch_failed", {"touch_run_id": str(legacy_touch), "failure_class": "transient"},
                 6),
                ("stop", stopper, "reply_positive", {}, 5),
                ("retry", retry, "touch_failed", {"touch_run_id": str(retry_touch), "failure_class": "transient"}, 4),
                ("switch", twice, "touch_sent", {"touch_run_id": str(twice_touch)}, 3),
                ("pause", twice, "reply_out_of_office", {}, 2),  # defers the e-mail touch the switch created
                ("after poison", legacy, "reply_received", {"classification": "question"}, 1)):
            events[label] = await factories.event(db, lead, event_type, payload_=payload, created_ago_s=ago_s,
                                                  direction="outbound" if event_type.startswith("touch_") else "inbound")
    assert await db.fetchval("select count(*) from event_reactions") == len(events)
    anchor = await db.fetchval("select min(created_at) from core_memory_events where id = any($1::uuid[])",
                               list(events.values()))
    old_touches = {r["id"] for r in await db.fetch("select id from touch_runs")}
    old_events = {r["id"] for r in await db.fetch("select id from core_memory_events")}
    good = [events[k] for k in ("stop", "retry", "switch", "pause", "after poison")]

    # expected: each good event alone, in order (in a transaction rolled back); the poison alone is refused
    transaction = db.transaction()
    await transaction.start()
    try:
        now_at = await db.fetchval("select now()")
        with pytest.raises(asyncpg.CheckViolationError, match="no_more_legacy"):
            async with db.transaction():
                await react_to_events(db, [events["poison"]])
        alone = ReactionStats()
        for event_id in good:
            alone.add(await react_to_events(db, [event_id]))
        expected = await snapshot(db, now_at=now_at, anchor=anchor, labels={}, old_touches=old_touches,
                                  old_events=old_events, event_reactions=False)
    finally:
        await transaction.rollback()
    assert await db.fetchval("select count(*) from touch_runs") == len(old_touches)

    pool = await create_pool(db_url, max_size=2)
    try:
        drained = await drain_reactions(pool)
    finally:
        await pool.close()
    created_at = {r["created_at"] for r in await db.fetch(
        "select created_at from core_memory_events where not (id = any($1::uuid[]))", list(old_events))}
    assert len(created_at) == 1  # one transaction: the batch that failed and each event alone
    actual = await snapshot(db, now_at=created_at.pop(), anchor=anchor, labels={}, old_touches=old_touches,
                            old_events=old_events, event_reactions=False)
    diff = differences(expected, actual, ("each alone", "drained"))
    assert not diff, diff
    assert drained.as_dict() == alone.as_dict()

    # the poison alone is set aside, with the constraint that refused it; nothing else is
    aside = await db.fetch("select * from event_reactions")
    assert [(r["event_id"], r["attempts"]) for r in aside] == [(events["poison"], 1)]
    assert aside[0]["failed_at"] is not None and aside[0]["retry_at"] is None
    assert "CheckViolationError" in aside[0]["error"] and "no_more_legacy" in aside[0]["error"]
    # the concrete effects, for the reader
    touches = {r["id"]: r for r in await db.fetch("select * from touch_runs")}
    assert touches[stopper_open]["status"] == "canceled"
    assert touches[stopper_open]["error"] == "canceled: stop_event:reply_positive"
    assert await db.fetchval("select status || ':' || stop_reason from campaign_leads") == "stopped:reply_positive"
    follow_up = await db.fetchrow("select * from touch_runs where idempotency_key = $1", f"next:{retry_touch}")
    assert (follow_up["status"], follow_up["channel"]) == ("queued", "sms")
    switched = await db.fetchrow("select * from touch_runs where idempotency_key = $1", f"next:{twice_touch}")
    assert (switched["status"], switched["channel"]) == ("scheduled", "email")  # deferred by the pause
    assert switched["scheduled_at"] > await db.fetchval("select now() + interval '7 days'")
    assert touches[legacy_open]["error"] == "canceled: stop_event:reply_received"  # the poison's lead goes on
    assert not await db.fetchval("select count(*) from touch_runs where idempotency_key = $1",
                                 f"next:{legacy_touch}")
    assert not await db.fetchval("select count(*) from core_memory_events where event_type = 'fallback_decision'"
                                 " and payload ->> 'touch_run_id' = $1", str(legacy_touch))
    assert drained.decisions == {"retry_same_channel": 1, "switch_channel": 1}
    assert (drained.events, drained.touches_canceled, drained.touches_deferred) == (5, 2, 1)

