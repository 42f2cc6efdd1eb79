"""Sending rules (SPEC §13): the recipient's clock. Pure — no database, no clock of its own (`now` is passed in).

Everything here is evaluated on the lead's local wall clock (zoneinfo, so DST-correct): quiet hours, a touch's
send window, its holiday calendar. `next_allowed` finds the earliest instant ≥ a given one at which all of them
allow a send. Caps are decided in the database (listener/engine/sendcaps.py); their release time is fed back through
`next_allowed` so a capped touch never lands in quiet hours either.

A rule the touch's author wrote but that cannot be honoured (a malformed window, an unknown holiday country, a
negative cap) fails the touch permanently with `invalid_send_rules`, naming the field: sending while ignoring
it could reach someone at a moment the author excluded. A time zone that cannot be resolved is only skipped
(with a reason), because the §13 order always ends in a valid zone (REVENUE_ASI_DEFAULT_TIMEZONE, checked at
start-up).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_timezone

from listener.rules.errors import TouchFailure

QUIET_HOURS, SEND_WINDOW, HOLIDAY, SENDER_CAP, LEAD_CAP = (
    "quiet_hours", "send_window", "holiday", "sender_cap", "lead_cap")
OUT_OF_OFFICE = "out_of_office"  # SPEC §19: the lead's pause (listener/engine/dispatcher.py, reactions)
QUIET_HOURS_CHANNELS = frozenset({"voice", "sms", "whatsapp"})  # email is not bound by quiet hours (§13)
INVALID_SEND_RULES = "invalid_send_rules"
CAP_WINDOW = timedelta(hours=24)
SEARCH_DAYS = 400  # a window + holidays leave some day free well within a year; beyond that the rules are void

_CLOCK = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")
MIDNIGHT_END = 24 * 60  # "24:00" as an end: the end of the day


def parse_clock(text: str, *, allow_24: bool = False) -> int:
    """'HH:MM' → minutes after midnight. '24:00' only where `allow_24` (an end)."""
    match = _CLOCK.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not a time of day HH:MM")
    minutes = int(match.group(1)) * 60 + int(match.group(2))
    if minutes > MIDNIGHT_END or (minutes == MIDNIGHT_END and not allow_24):
        raise ValueError(f"{text!r} is not a time of day HH:MM (00:00–23:59)")
    return minutes


@dataclass(frozen=True)
class QuietHours:
    """Quiet from `start` (inclusive) to `end` (exclusive), minutes after midnight; wraps midnight if start > end."""

    start: int
    end: int

    def contains(self, minute_of_day: float) -> bool:
        if self.start < self.end:
            return self.start <= minute_of_day < self.end
        return minute_of_day >= self.start or minute_of_day < self.end

    def intervals(self) -> list[tuple[int, int]]:
        if self.start < self.end:
            return [(self.start, self.end)]
        return [(0, self.end), (self.start, MIDNIGHT_END)]


def parse_quiet_hours(text: str) -> QuietHours | None:
    """REVENUE_ASI_QUIET_HOURS: 'HH:MM-HH:MM' (e.g. the default '21:00-08:00') or 'off' → None."""
    value = text.strip().lower()
    if value in ("off", "none", "false", "0", ""):
        return None
    start_text, sep, end_text = value.partition("-")
    if not sep:
        raise ValueError(f"{text!r}: expected HH:MM-HH:MM (e.g. 21:00-08:00) or off")
    start, end = parse_clock(start_text), parse_clock(end_text)
    if start == end:
        raise ValueError(f"{text!r}: start and end are equal (use off to disable quiet hours)")
    return QuietHours(start, end)


@dataclass(frozen=True)
class SendWindow:
    """routing.send_window: ISO weekdays (1 = Monday) and [start, end) in lead-local minutes after midnight."""

    days: frozenset[int]
    start: int
    end: int


def _invalid(field_name: str, why: str) -> TouchFailure:
    return TouchFailure(INVALID_SEND_RULES, f"{field_name}: {why}", "permanent")


def parse_send_window(raw: Any) -> SendWindow | None:
    """A missing window is every day, all day. A malformed one raises TouchFailure(invalid_send_rules)."""
    if raw is None:
        return None
    name = "routing.send_window"
    if not isinstance(raw, Mapping):
        raise _invalid(name, "must be an object {days, start, end}")
    days_raw = raw.get("days", [1, 2, 3, 4, 5, 6, 7])
    if (not isinstance(days_raw, list) or not days_raw
            or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 7 for d in days_raw)):
        raise _invalid(f"{name}.days", f"must be a non-empty list of ISO weekdays 1–7 (got {days_raw!r})")
    try:
        start = parse_clock(raw.get("start", "00:00"))
    except ValueError as exc:
        raise _invalid(f"{name}.start", str(exc)) from None
    try:
        end = parse_clock(raw.get("end", "24:00"), allow_24=True)
    except ValueError as exc:
        raise _invalid(f"{name}.end", str(exc)) from None
    if end <= start:
        raise _invalid(f"{name}.end", f"must be after start ({raw.get('start')!r} – {raw.get('end')!r})")
    return SendWindow(frozenset(days_raw), start, end)


class HolidayCalendar:
    """routing.skip_holidays: 'US', 'US-FL', 'MX', 'ES'… — the `holidays` package, by the lead's local date."""

    def __init__(self, code: str) -> None:
        import holidays  # imported here: only touches that ask for holidays pay for it

        country, _, subdivision = code.strip().upper().partition("-")
        self.code = code
        self._calendar = holidays.country_holidays(country, subdiv=subdivision or None)

    def name(self, day: date) -> str | None:
        found = self._calendar.get(day)
        return str(found) if found else None


@lru_cache(maxsize=256)
def _holiday_calendar(code: str) -> HolidayCalendar:
    return HolidayCalendar(code)


def parse_skip_holidays(raw: Any) -> HolidayCalendar | None:
    if raw is None or raw is False or raw == "":
        return None
    name = "routing.skip_holidays"
    if not isinstance(raw, str):
        raise _invalid(name, f"must be a country code like 'US' or 'US-FL' (got {raw!r})")
    try:
        return _holiday_calendar(raw.strip().upper())
    except (NotImplementedError, KeyError, ValueError) as exc:  # holidays raises NotImplementedError for unknown
        raise _invalid(name, f"unknown country or subdivision {raw!r} ({exc})") from None


def parse_cap(raw: Any, field_name: str) -> int | None:
    """A per-day cap: a non-negative integer (0 stops all sends), or absent."""
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0 or raw != int(raw):
        raise _invalid(field_name, f"must be a non-negative integer (got {raw!r})")
    return int(raw)


@dataclass(frozen=True)
class Rules:
    """The time rules for one touch, already parsed."""

    quiet: QuietHours | None = None
    window: SendWindow | None = None
    holidays: HolidayCalendar | None = None

    def day_blocked(self, day: date) -> str | None:
        if self.holidays is not None and self.holidays.name(day):
            return HOLIDAY
        if self.window is not None and day.isoweekday() not in self.window.days:
            return SEND_WINDOW
        return None

    def blocked(self, local: datetime) -> str | None:
        """Why a send may not happen at this lead-local moment, or None. Order: quiet hours, holiday, window."""
        minute = local.hour * 60 + local.minute + local.second / 60 + local.microsecond / 60e6
        if self.quiet is not None and self.quiet.contains(minute):
            return QUIET_HOURS
        day = self.day_blocked(local.date())
        if day is not None:
            return day
        if self.window is not None and not (self.window.start <= minute < self.window.end):
            return SEND_WINDOW
        return None

    def open_intervals(self) -> list[tuple[int, int]]:
        """The allowed minutes of an allowed day: the window minus quiet hours, as sorted [start, end) pieces."""
        pieces = [(self.window.start, self.window.end)] if self.window else [(0, MIDNIGHT_END)]
        for q_start, q_end in (self.quiet.intervals() if self.quiet else []):
            cut: list[tuple[int, int]] = []
            for a, b in pieces:
                if q_end <= a or q_start >= b:
                    cut.append((a, b))
                    continue
                if a < q_start:
                    cut.append((a, q_start))
                if q_end < b:
                    cut.append((q_end, b))
            pieces = cut
        return sorted(pieces)


class NoAllowedMoment(TouchFailure):
    def __init__(self, why: str) -> None:
        super().__init__(INVALID_SEND_RULES, why, "permanent")


@lru_cache(maxsize=16384)
def _local_instants(day: date, minute: int, zone: ZoneInfo) -> tuple[datetime, ...]:
    """The UTC instants whose lead-local wall clock reads `day minute` (both folds; zoneinfo maps a time in a
    spring-forward gap to an instant after the gap, which the transition candidate covers)."""
    if minute >= MIDNIGHT_END:
        return ()
    wall = datetime.combine(day, time(minute // 60, minute % 60))
    return tuple(wall.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1))


@lru_cache(maxsize=16384)
def _transitions(day: date, zone: ZoneInfo) -> tuple[datetime, ...]:
    """UTC instants where the zone's offset changes during the 24 h after this day's local midnight (minute
    precision, found by bisection) — the moments a DST jump can open an allowed interval."""
    start = datetime.combine(day, time(0)).replace(tzinfo=zone).astimezone(UTC) - timedelta(hours=3)
    end = start + timedelta(hours=30)
    if start.astimezone(zone).utcoffset() == end.astimezone(zone).utcoffset():
        return ()
    lo, hi = start, end  # offset(lo) != offset(hi); find the first minute with offset(hi)
    target = hi.astimezone(zone).utcoffset()
    while hi - lo > timedelta(minutes=1):
        mid = lo + (hi - lo) / 2
        mid = mid.replace(second=0, microsecond=0)
        if mid <= lo:
            break
        if mid.astimezone(zone).utcoffset() == target:
            hi = mid
        else:
            lo = mid
    return (hi,)


def next_allowed(instant: datetime, zone: ZoneInfo, rules: Rules) -> datetime:
    """The earliest UTC instant ≥ `instant` at which `rules` allow a send in `zone`."""
    instant = instant.astimezone(UTC)
    if rules.blocked(instant.astimezone(zone)) is None:
        return instant
    intervals = rules.open_intervals()
    if not intervals:
        raise NoAllowedMoment("routing.send_window: lies entirely within quiet hours; no moment is allowed")
    first_day = instant.astimezone(zone).date() - timedelta(days=1)
    for offset in range(SEARCH_DAYS):
        day = first_day + timedelta(days=offset)
        if rules.day_blocked(day) is not None:
            continue
        candidates = [c for a, _ in intervals for c in _local_instants(day, a, zone)]
        # a transition found from this day's search window may fall on the next local day: that day's own
        # candidates (its midnight, before the jump) come first, so it waits for its day
        candidates += [c for c in _transitions(day, zone) if c.astimezone(zone).date() == day]
        good = [c for c in candidates if c >= instant and rules.blocked(c.astimezone(zone)) is None]
        if good:
            return min(good)
    raise NoAllowedMoment(f"no allowed moment within {SEARCH_DAYS} days (send window days, holidays)")


# --- the lead's time zone -------------------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def zone_named(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def valid_zone(name: str) -> bool:
    try:
        zone_named(name.strip())
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
        return False
    return True


@lru_cache(maxsize=8192)
def phone_zone(phone: str, region: str | None = None) -> str | None:
    """The phone number's zone when phonenumbers names exactly one, else None."""
    try:
        parsed = phonenumbers.parse(phone, region)
    except phonenumbers.NumberParseException:
        return None
    zones = phone_timezone.time_zones_for_number(parsed)
    if len(zones) == 1 and zones[0] != phone_timezone.UNKNOWN_TIMEZONE:
        return str(zones[0])
    return None


@dataclass(frozen=True)
class LeadZone:
    zone: ZoneInfo
    name: str
    source: str  # leads.timezone | lead_enriched.timezone | phone | default
    ignored: tuple[str, ...] = ()  # why a higher source was skipped (invalid names)


@lru_cache(maxsize=65536)
def resolve_zone(lead_timezone: str | None, enriched_timezone: str | None, phone: str | None,
                 default_timezone: str, region: str | None = None) -> LeadZone:
    """§13 order: leads.timezone → lead_enriched.timezone → the phone's single zone → the default."""
    ignored: list[str] = []
    for source, name in (("leads.timezone", lead_timezone), ("lead_enriched.timezone", enriched_timezone)):
        if name is None or not name.strip():
            continue
        if valid_zone(name):
            return LeadZone(zone_named(name.strip()), name.strip(), source, tuple(ignored))
        ignored.append(f"{source} {name!r} is not a known time zone")
    if phone:
        from_phone = phone_zone(phone, region)
        if from_phone is not None and valid_zone(from_phone):
            return LeadZone(zone_named(from_phone), from_phone, "phone", tuple(ignored))
    return LeadZone(zone_named(default_timezone), default_timezone, "default", tuple(ignored))


# --- one touch ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SendRulesInput:
    """What the rules need to know about one due touch (columns of touch_send_contexts)."""

    touch_id: Any
    channel: str
    lead_id: Any = None
    lead_timezone: str | None = None
    enriched_timezone: str | None = None
    phone: str | None = None
    routing: Mapping[str, Any] = field(default_factory=dict)
    sender_settings_id: Any = None
    sender_config: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> SendRulesInput:
        payload = row.get("payload")
        routing = payload.get("routing") if isinstance(payload, Mapping) else None
        config = row.get("provider_config")
        return cls(touch_id=row["id"], channel=row["channel"], lead_id=row.get("lead_id"),
                   lead_timezone=row.get("lead_timezone"), enriched_timezone=row.get("enriched_timezone"),
                   phone=row.get("lead_phone"), routing=routing if isinstance(routing, Mapping) else {},
                   sender_settings_id=row.get("provider_settings_id"),
                   sender_config=config if isinstance(config, Mapping) else {})


@dataclass(frozen=True)
class Deferral:
    touch_id: Any
    reason: str
    next_at: datetime
    lead_timezone: str
    notes: tuple[str, ...] = ()

    def as_row(self) -> dict[str, Any]:
        return {"id": str(self.touch_id), "reason": self.reason, "next_at": self.next_at.isoformat(),
                "lead_timezone": self.lead_timezone, "notes": list(self.notes) or None}


@dataclass(frozen=True)
class TouchRules:
    """A touch's parsed rules: its zone, its time rules and its caps."""

    zone: LeadZone
    rules: Rules
    sender_cap: int | None
    lead_cap: int | None

    def deferral_at(self, touch_id: Any, reason: str, not_before: datetime) -> Deferral:
        return Deferral(touch_id, reason, next_allowed(not_before, self.zone.zone, self.rules), self.zone.name,
                        self.zone.ignored)


RULE_KEYS = ("send_window", "skip_holidays", "max_touches_per_day")


def unruled(ctx: SendRulesInput, quiet: QuietHours | None) -> bool:
    """True when no rule can apply to this touch (the common case costs no zone lookup): no quiet hours for its
    channel, no window, holidays or lead cap in its routing, no daily cap on its sender."""
    return ((quiet is None or ctx.channel not in QUIET_HOURS_CHANNELS)
            and not any(ctx.routing.get(key) is not None for key in RULE_KEYS)
            and ctx.sender_config.get("daily_cap") is None)


def rules_for(ctx: SendRulesInput, quiet: QuietHours | None, default_timezone: str,
              region: str | None = None) -> TouchRules:
    """Parse a touch's rules; raises TouchFailure(invalid_send_rules) for a rule that cannot be honoured."""
    rules = Rules(quiet=quiet if ctx.channel in QUIET_HOURS_CHANNELS else None,
                  window=parse_send_window(ctx.routing.get("send_window")),
                  holidays=parse_skip_holidays(ctx.routing.get("skip_holidays")))
    if rules.window is not None and not rules.open_intervals():  # quiet hours alone always leave some time
        raise NoAllowedMoment("routing.send_window: lies entirely within quiet hours; no moment is allowed")
    zone = resolve_zone(ctx.lead_timezone, ctx.enriched_timezone, ctx.phone, default_timezone, region)
    return TouchRules(zone, rules,
                      sender_cap=parse_cap(ctx.sender_config.get("daily_cap"),
                                           "account_provider_settings.config.daily_cap"),
                      lead_cap=parse_cap(ctx.routing.get("max_touches_per_day"), "routing.max_touches_per_day"))


def deferral_for(ctx: SendRulesInput, now: datetime, quiet: QuietHours | None, default_timezone: str,
                 region: str | None = None) -> Deferral | None:
    """The time rules for one touch at `now`: None if it may go now (caps aside), else its deferral."""
    if unruled(ctx, quiet):
        return None
    parsed = rules_for(ctx, quiet, default_timezone, region)
    reason = parsed.rules.blocked(now.astimezone(parsed.zone.zone))
    if reason is None:
        return None
    return parsed.deferral_at(ctx.touch_id, reason, now)


def cap_release(usage_times: Iterable[datetime], cap: int, now: datetime) -> datetime:
    """When a cap of `cap` per rolling 24 h frees a slot, given the hand-out times counted against it (in-flight
    touches count as handed out `now`)."""
    ordered = sorted(usage_times)
    if cap <= 0 or len(ordered) < cap:
        return now + CAP_WINDOW if cap <= 0 else now
    return max(now, ordered[len(ordered) - cap] + CAP_WINDOW)
