"""The fallback decision (SPEC §7) as a pure function, mirroring 1:1 the SQL form
``decide_next_channel_for_lead`` (sql/views/05_decide_next_channel_for_lead.sql); a property test
(tests/test_decision_property.py) proves they agree on every case.

``decide(inputs, now)`` decides; ``listener.store.decisions`` reads one key's facts (``load_decision_inputs``)
and asks the database for the same decision (``decide_sql``). The rules, first match wins:

a. routing / routing.fallback missing -> stop ``no_fallback_plan``; not the v2 shape -> stop ``invalid_plan``
   (see :func:`parse_plan` for the exact shape);
b. a stop_on_events event of the lead in [cadence start, now] -> stop ``stop_event:<type>`` (the earliest);
c. suppressed at now (do_not_contact ever, an unsubscribe not followed by a resubscribe, reply_negative in the last
   30 days) ->
   stop ``suppressed:<reason>``;
d. now > expires_at -> stop ``expired``;
e. per channel: attempts (touch_sent + touch_failed events up to now), allowed (max_attempts, missing 1), a permanent
   failure (touch_failed, or a webhook's touch_undelivered / email_bounced, with failure_class permanent), reachability (phone for voice/whatsapp/sms, email for email); exhausted when any of them says so;
f. the current channel not exhausted: ``retry_same_channel`` once last attempt + cooldown <= now, else
   ``wait_cooldown``;
g. exhausted: ``switch_channel`` to the first later channel in the order that is not exhausted (from the start of the
   order when the current channel is not in it), naming the unreachable channels skipped; none -> stop ``exhausted``.

Numbers are exact on both sides: the loader parses the payload with ``Decimal`` (as PostgreSQL's numeric), and a
cooldown is ``minutes * 60e6`` rounded to whole microseconds, half away from zero (numeric ``round`` in SQL,
``Fraction`` here), so SQL and Python agree to the microsecond by construction."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from listener.rules import safejson
from listener.rules.payload import DEFAULT_STOP_EVENTS
from listener.rules.safejson import InvalidJson
from listener.rules.vocabulary import CHANNELS, PHONE_CHANNELS

DecisionKind = Literal["retry_same_channel", "wait_cooldown", "switch_channel", "stop"]

SUPPRESSION_EVENTS: frozenset[str] = frozenset({"unsubscribe", "do_not_contact"})
NEGATIVE_COOLDOWN = timedelta(days=30)  # 720 hours, as in SQL (interval '720 hours', not DST-dependent '30 days')
MAX_COOLDOWN_MINUTES = 525_600  # one year (SPEC §11): cooldowns and delays beyond it make a plan invalid
MAX_ATTEMPTS = 20  # SPEC §11: max_attempts is an integer 0..20
ATTEMPT_EVENTS: frozenset[str] = frozenset({"touch_sent", "touch_failed"})
# Provider webhooks (SPEC §12): not attempts, but a permanent one exhausts the channel like a permanent touch_failed.
UNDELIVERY_EVENTS: frozenset[str] = frozenset({"touch_undelivered", "email_bounced"})
PERMANENT_FAILURE_EVENTS: frozenset[str] = frozenset({"touch_failed"}) | UNDELIVERY_EVENTS

# expires_at: ISO 8601 with an offset, the same pattern as the SQL (fullmatch, ASCII digits only).
_ISO_TS = re.compile(
    r"[12][0-9]{3}-[0-9]{2}-[0-9]{2}[T ]([01][0-9]|2[0-3]):[0-5][0-9]"
    r"(:[0-5][0-9](\.[0-9]{1,6})?)?(Z|[+-](0[0-9]|1[0-5])(:?[0-5][0-9])?)"
)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


# --- inputs ---------------------------------------------------------------------------------------------------


class AttemptEvent(_Model):
    """One touch_sent / touch_failed event of a touch of the key."""

    event_type: str
    created_at: datetime
    failure_class: str | None = None


class ChannelHistory(_Model):
    """The attempt events of the key's touches on one channel (by the touch's channel column)."""

    channel: str
    attempts: list[AttemptEvent]


class LeadEvent(_Model):
    """An event of the lead that may stop the cadence or suppress the lead."""

    event_type: str
    created_at: datetime


class DecisionInputs(_Model):
    lead_id: UUID
    campaign_id: UUID | None
    step: int
    latest_touch_id: UUID
    latest_channel: str
    latest_payload: Any  # the newest touch's payload; numbers as int / Decimal for exactness
    cadence_started_at: datetime  # min(created_at) of the key's touches
    history: list[ChannelHistory]
    has_phone: bool
    has_email: bool
    lead_events: list[LeadEvent]


# --- outputs --------------------------------------------------------------------------------------------------


class ChannelState(_Model):
    channel: str
    attempts_done: int
    attempts_allowed: int
    last_attempt_at: datetime | None
    cooldown_until: datetime | None
    permanent_failure: bool
    reachable: bool
    exhausted: bool


class Decision(_Model):
    decision: DecisionKind
    current_channel: str
    next_channel: str | None
    cooldown_until: datetime | None
    stop_reason: str | None
    skipped_channels: list[str]
    latest_touch_id: UUID
    cadence_started_at: datetime
    channels: list[ChannelState]

    def event_payload(self) -> dict[str, Any]:
        """The payload of the ``fallback_decision`` event (SPEC §4), JSON-ready."""
        return {
            "touch_run_id": str(self.latest_touch_id),
            "decision": self.decision,
            "current_channel": self.current_channel,
            "next_channel": self.next_channel,
            "cooldown_until": self.cooldown_until.isoformat() if self.cooldown_until else None,
            "stop_reason": self.stop_reason,
            "skipped_channels": list(self.skipped_channels),
            "attempts": {c.channel: c.attempts_done for c in self.channels},
            "channels": [c.model_dump(mode="json") for c in self.channels],
            "cadence_started_at": self.cadence_started_at.isoformat(),
        }


# --- the plan -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """A touch's routing plan, validated as fallback_plan_v2 does in SQL (problem None = usable)."""

    problem: Literal["no_fallback_plan", "invalid_plan"] | None
    current_channel: str
    order: list[str] = field(default_factory=list)
    max_attempts: dict[str, int] = field(default_factory=dict)
    cooldown_minutes: dict[str, Fraction] = field(default_factory=dict)
    stop_on_events: list[str] = field(default_factory=list)
    expires_at: datetime | None = None

    def attempts_allowed(self, channel: str) -> int:
        return self.max_attempts.get(channel, 1)

    def cooldown(self, channel: str) -> timedelta:
        return cooldown_interval(self.cooldown_minutes.get(channel, Fraction(0)))


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        return False
    return not isinstance(value, (float, Decimal)) or math.isfinite(value)


def _parse_expires_at(value: Any) -> datetime | None:
    """An ISO 8601 timestamp with an offset (the SQL pattern), else None (invalid)."""
    if not isinstance(value, str) or _ISO_TS.fullmatch(value) is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def parse_plan(payload: Any, touch_channel: str) -> Plan:
    """Mirror of SQL fallback_plan_v2: the plan, or why there is none ('no_fallback_plan' / 'invalid_plan')."""
    if isinstance(payload, InvalidJson):  # beyond the JSON bounds (listener.rules.safejson): SQL checks the same first
        return Plan(problem="invalid_plan", current_channel=touch_channel)
    routing = payload.get("routing") if isinstance(payload, dict) else None
    current = touch_channel
    if isinstance(routing, dict) and isinstance(routing.get("current_channel"), str) \
            and routing["current_channel"] in CHANNELS:
        current = routing["current_channel"]

    if routing is None:
        return Plan(problem="no_fallback_plan", current_channel=current)
    if not isinstance(routing, dict):
        return Plan(problem="invalid_plan", current_channel=current)
    fallback = routing.get("fallback")
    if fallback is None:
        return Plan(problem="no_fallback_plan", current_channel=current)
    invalid = Plan(problem="invalid_plan", current_channel=current)
    if not isinstance(fallback, dict):
        return invalid

    raw_current = routing.get("current_channel")
    if raw_current is not None and not (isinstance(raw_current, str) and raw_current in CHANNELS):
        return invalid

    order = fallback.get("order")
    if not isinstance(order, list) or not order:
        return invalid
    if not all(isinstance(c, str) and c in CHANNELS for c in order) or len(set(order)) != len(order):
        return invalid

    raw_attempts = fallback.get("max_attempts")
    raw_attempts = {} if raw_attempts is None else raw_attempts
    if not isinstance(raw_attempts, dict):
        return invalid
    max_attempts: dict[str, int] = {}
    for key, value in raw_attempts.items():
        if not _is_number(value):
            return invalid
        if not 0 <= value <= MAX_ATTEMPTS:  # bounded before Fraction: 1e5000 must not become a 5,001-digit int
            return invalid
        exact = Fraction(value)
        if exact.denominator != 1:
            return invalid
        max_attempts[key] = int(exact)

    raw_cooldown = fallback.get("cooldown_minutes")
    raw_cooldown = {} if raw_cooldown is None else raw_cooldown
    if not isinstance(raw_cooldown, dict):
        return invalid
    cooldown: dict[str, Fraction] = {}
    for key, value in raw_cooldown.items():
        if not _is_number(value):
            return invalid
        if not 0 <= value <= MAX_COOLDOWN_MINUTES:
            return invalid
        cooldown[key] = Fraction(value)

    raw_stop = routing.get("stop_on_events")
    if raw_stop is None:
        stop_on_events = list(DEFAULT_STOP_EVENTS)
    elif isinstance(raw_stop, list) and all(isinstance(e, str) for e in raw_stop):
        stop_on_events = list(raw_stop)
    else:
        return invalid

    raw_expires = routing.get("expires_at")
    expires_at: datetime | None = None
    if raw_expires is not None:
        expires_at = _parse_expires_at(raw_expires)
        if expires_at is None:
            return invalid

    return Plan(problem=None, current_channel=current, order=list(order), max_attempts=max_attempts,
                cooldown_minutes=cooldown, stop_on_events=stop_on_events, expires_at=expires_at)


def cooldown_interval(minutes: Fraction | Decimal | int | float) -> timedelta:
    """A cooldown of ``minutes`` (>= 0) in whole microseconds, rounded half away from zero, exactly as the SQL
    ``interval '1 microsecond' * round(minutes * 60000000)`` (numeric arithmetic; 0.05 = 3 s)."""
    microseconds = math.floor(Fraction(minutes) * 60_000_000 + Fraction(1, 2))
    return timedelta(microseconds=microseconds)


# --- the decision ---------------------------------------------------------------------------------------------


def suppression_reason(events: Sequence[LeadEvent], now: datetime) -> str | None:
    """Mirror of SQL lead_suppression_status_at(lead, now).reason."""
    resubscribed = [e.created_at for e in events if e.event_type == "resubscribe" and e.created_at <= now]
    unsubscribes = sorted((e.created_at, e.event_type) for e in events
                          if e.event_type in SUPPRESSION_EVENTS and e.created_at <= now
                          and (e.event_type == "do_not_contact" or not any(r > e.created_at for r in resubscribed)))
    if unsubscribes:
        return unsubscribes[0][1]
    if any(e.event_type == "reply_negative" and now - NEGATIVE_COOLDOWN < e.created_at <= now for e in events):
        return "reply_negative"
    return None


def _channel_state(channel: str, plan: Plan, inputs: DecisionInputs, now: datetime) -> ChannelState:
    seen = [a for h in inputs.history if h.channel == channel for a in h.attempts if a.created_at <= now]
    events = [a for a in seen if a.event_type in ATTEMPT_EVENTS]
    attempts_done = len(events)
    allowed = plan.attempts_allowed(channel)
    last = max((a.created_at for a in events), default=None)
    permanent = any(a.event_type in PERMANENT_FAILURE_EVENTS and a.failure_class == "permanent" for a in seen)
    reachable = inputs.has_email if channel == "email" else (inputs.has_phone if channel in PHONE_CHANNELS else False)
    return ChannelState(
        channel=channel,
        attempts_done=attempts_done,
        attempts_allowed=allowed,
        last_attempt_at=last,
        cooldown_until=None if last is None else last + plan.cooldown(channel),
        permanent_failure=permanent,
        reachable=reachable,
        exhausted=attempts_done >= allowed or permanent or not reachable,
    )


def decide(inputs: DecisionInputs, now: datetime) -> Decision:
    """The fallback decision for one key at ``now`` (timezone-aware), exactly as the SQL function decides it."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("decide() needs a timezone-aware now")
    plan = parse_plan(inputs.latest_payload, inputs.latest_channel)
    current = plan.current_channel

    def result(kind: DecisionKind, *, next_channel: str | None = None, cooldown_until: datetime | None = None,
               stop_reason: str | None = None, skipped: list[str] | None = None,
               channels: list[ChannelState] | None = None) -> Decision:
        return Decision(decision=kind, current_channel=current, next_channel=next_channel,
                        cooldown_until=cooldown_until, stop_reason=stop_reason, skipped_channels=skipped or [],
                        latest_touch_id=inputs.latest_touch_id, cadence_started_at=inputs.cadence_started_at,
                        channels=channels or [])

    # a. the plan
    if plan.problem is not None:
        return result("stop", stop_reason=plan.problem)

    states = {c: _channel_state(c, plan, inputs, now) for c in plan.order}
    channels = [states[c] for c in plan.order]
    cur = states.get(current) or _channel_state(current, plan, inputs, now)

    # b. a stop event since the cadence began
    stops = sorted((e.created_at, e.event_type) for e in inputs.lead_events
                   if e.event_type in plan.stop_on_events and inputs.cadence_started_at <= e.created_at <= now)
    if stops:
        return result("stop", stop_reason=f"stop_event:{stops[0][1]}", channels=channels)

    # c. suppression
    reason = suppression_reason(inputs.lead_events, now)
    if reason is not None:
        return result("stop", stop_reason=f"suppressed:{reason}", channels=channels)

    # d. expiry
    if plan.expires_at is not None and now > plan.expires_at:
        return result("stop", stop_reason="expired", channels=channels)

    # f. the current channel still has attempts
    if not cur.exhausted:
        if cur.cooldown_until is None or cur.cooldown_until <= now:
            return result("retry_same_channel", next_channel=current, channels=channels)
        return result("wait_cooldown", cooldown_until=cur.cooldown_until, channels=channels)

    # g. switch to the next channel after the current one, or stop
    start = plan.order.index(current) + 1 if current in states else 0
    skipped: list[str] = []
    for channel in plan.order[start:]:
        state = states[channel]
        if not state.exhausted:
            return result("switch_channel", next_channel=channel, skipped=skipped, channels=channels)
        if not state.reachable:
            skipped.append(channel)
    return result("stop", stop_reason="exhausted", channels=channels)


def payload_for_decision(text: str) -> Any:
    """A touch payload's text, numbers exact (as PostgreSQL's numeric); beyond the JSON bounds, InvalidJson."""
    try:
        return safejson.loads(text, parse_float=safejson.exact_number, parse_int=safejson.exact_number)
    except safejson.UnsafeJson as exc:
        return InvalidJson(exc.reason, len(text))
