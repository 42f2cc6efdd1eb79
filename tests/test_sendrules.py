"""The sending rules' clock arithmetic (SPEC §13), pure: every instant is injected, so every branch runs on every
run whatever the hour — inside / outside quiet hours, window edges, DST change days in America/New_York and
Europe/Madrid, holidays, caps, bad input — plus a property test of next_allowed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from listener.rules.errors import TouchFailure
from listener.rules.sendrules import (
    QuietHours,
    Rules,
    SendRulesInput,
    deferral_for,
    next_allowed,
    parse_cap,
    parse_quiet_hours,
    parse_send_window,
    parse_skip_holidays,
    resolve_zone,
    rules_for,
)
from listener.settings import SettingsError, load_settings

NY, MADRID = ZoneInfo("America/New_York"), ZoneInfo("Europe/Madrid")
DEFAULT_QUIET = parse_quiet_hours("21:00-08:00")


def local(zone: ZoneInfo, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=zone, fold=fold)  # type: ignore[misc]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def touch(channel: str = "sms", routing: dict | None = None, tz: str | None = "America/New_York",
          **kw: object) -> SendRulesInput:
    return SendRulesInput(touch_id="t1", channel=channel, lead_timezone=tz, routing=routing or {}, **kw)  # type: ignore[arg-type]


# --- REVENUE_ASI_QUIET_HOURS ------------------------------------------------------------------------------------

def test_quiet_hours_parse_default_off_and_edges():
    quiet = parse_quiet_hours("21:00-08:00")
    assert quiet == QuietHours(21 * 60, 8 * 60)
    assert quiet.contains(21 * 60) and quiet.contains(23 * 60 + 59) and quiet.contains(0) and quiet.contains(479.9)
    assert not quiet.contains(8 * 60) and not quiet.contains(20 * 60 + 59.99) and not quiet.contains(12 * 60)
    assert parse_quiet_hours("off") is None and parse_quiet_hours(" OFF ") is None
    daytime = parse_quiet_hours("12:00-13:30")  # not wrapping midnight
    assert daytime is not None and daytime.contains(12 * 60) and not daytime.contains(13 * 60 + 30)
    for bad in ("21:00", "25:00-08:00", "21:00-08:60", "08:00-08:00", "9pm-8am", "24:00-08:00"):
        with pytest.raises(ValueError):
            parse_quiet_hours(bad)


def test_a_bad_quiet_hours_or_zone_stops_start_up_with_one_line(monkeypatch):
    monkeypatch.delenv("REVENUE_ASI_QUIET_HOURS", raising=False)
    monkeypatch.delenv("REVENUE_ASI_DEFAULT_TIMEZONE", raising=False)
    assert load_settings().quiet_hours == "21:00-08:00" and load_settings().default_timezone == "UTC"
    with pytest.raises(SettingsError) as err:
        load_settings(quiet_hours="21:00-25:00")
    assert str(err.value).startswith("invalid REVENUE_ASI_QUIET_HOURS") and "\n" not in str(err.value)
    with pytest.raises(SettingsError) as err:
        load_settings(default_timezone="Mars/Olympus_Mons")
    assert str(err.value).startswith("invalid REVENUE_ASI_DEFAULT_TIMEZONE") and "\n" not in str(err.value)
    assert load_settings(quiet_hours="off", default_timezone="Europe/Madrid").default_timezone == "Europe/Madrid"


# --- the lead's time zone ---------------------------------------------------------------------------------------

def test_zone_order_leads_then_enriched_then_phone_then_default():
    assert resolve_zone("Europe/Madrid", "Asia/Tokyo", "+12125550123", "UTC").name == "Europe/Madrid"
    got = resolve_zone(None, "Asia/Tokyo", "+12125550123", "UTC")
    assert (got.name, got.source) == ("Asia/Tokyo", "lead_enriched.timezone")
    got = resolve_zone("  ", None, "+12125550123", "UTC")
    assert (got.name, got.source) == ("America/New_York", "phone")
    got = resolve_zone(None, None, "+18005550123", "Europe/Madrid")  # toll-free: many zones, none chosen
    assert (got.name, got.source) == ("Europe/Madrid", "default")
    assert resolve_zone(None, None, "not a phone", "UTC").source == "default"
    assert resolve_zone(None, None, "2125550123", "UTC", region="US").name == "America/New_York"


def test_an_invalid_zone_name_is_skipped_with_a_reason():
    got = resolve_zone("Mars/Base", "../../etc/passwd", "+34911234567", "UTC")
    assert (got.name, got.source) == ("Europe/Madrid", "phone")
    assert got.ignored == ("leads.timezone 'Mars/Base' is not a known time zone",
                           "lead_enriched.timezone '../../etc/passwd' is not a known time zone")
    deferral = deferral_for(touch(tz="Nowhere/Land", phone="+12125550123"), local(NY, 2026, 6, 10, 23, 30),
                            DEFAULT_QUIET, "UTC")
    assert deferral is not None and deferral.lead_timezone == "America/New_York"
    assert deferral.as_row()["notes"] == ["leads.timezone 'Nowhere/Land' is not a known time zone"]


# --- quiet hours ------------------------------------------------------------------------------------------------

def test_inside_quiet_hours_defers_to_eight_local():
    deferral = deferral_for(touch(), local(NY, 2026, 6, 10, 23, 30), DEFAULT_QUIET, "UTC")
    assert deferral is not None and deferral.reason == "quiet_hours"
    assert deferral.next_at == local(NY, 2026, 6, 11, 8, 0) == utc(2026, 6, 11, 12, 0)
    early = deferral_for(touch(), local(NY, 2026, 6, 11, 7, 59, 59), DEFAULT_QUIET, "UTC")
    assert early is not None and early.next_at == local(NY, 2026, 6, 11, 8, 0)


def test_outside_quiet_hours_and_at_its_edges():
    for at in (local(NY, 2026, 6, 10, 12, 0), local(NY, 2026, 6, 10, 8, 0), local(NY, 2026, 6, 10, 20, 59, 59)):
        assert deferral_for(touch(), at, DEFAULT_QUIET, "UTC") is None
    at_nine = deferral_for(touch(), local(NY, 2026, 6, 10, 21, 0), DEFAULT_QUIET, "UTC")
    assert at_nine is not None and at_nine.reason == "quiet_hours"


def test_quiet_hours_bind_phone_channels_not_email_and_off_disables():
    night = local(NY, 2026, 6, 10, 23, 30)
    for channel in ("voice", "sms", "whatsapp"):
        assert deferral_for(touch(channel), night, DEFAULT_QUIET, "UTC") is not None
    assert deferral_for(touch("email"), night, DEFAULT_QUIET, "UTC") is None
    assert deferral_for(touch("voice"), night, None, "UTC") is None


# --- send windows -----------------------------------------------------------------------------------------------

WEEKDAYS = {"days": [1, 2, 3, 4, 5], "start": "09:00", "end": "17:30"}


def test_send_window_edges_and_weekend():
    # 2026-06-10 is a Wednesday
    assert deferral_for(touch(routing={"send_window": WEEKDAYS}), local(NY, 2026, 6, 10, 9, 0), DEFAULT_QUIET, "UTC") is None
    assert deferral_for(touch(routing={"send_window": WEEKDAYS}), local(NY, 2026, 6, 10, 17, 29, 59),
                        DEFAULT_QUIET, "UTC") is None
    before = deferral_for(touch(routing={"send_window": WEEKDAYS}), local(NY, 2026, 6, 10, 8, 59), DEFAULT_QUIET, "UTC")
    assert before is not None and before.reason == "send_window" and before.next_at == local(NY, 2026, 6, 10, 9, 0)
    end = deferral_for(touch(routing={"send_window": WEEKDAYS}), local(NY, 2026, 6, 10, 17, 30), DEFAULT_QUIET, "UTC")
    assert end is not None and end.reason == "send_window" and end.next_at == local(NY, 2026, 6, 11, 9, 0)
    friday = deferral_for(touch(routing={"send_window": WEEKDAYS}), local(NY, 2026, 6, 12, 18, 0), DEFAULT_QUIET, "UTC")
    assert friday is not None and friday.next_at == local(NY, 2026, 6, 15, 9, 0)  # Monday
    saturday = deferral_for(touch("email", routing={"send_window": WEEKDAYS}), local(NY, 2026, 6, 13, 12, 0), None, "UTC")
    assert saturday is not None and saturday.reason == "send_window" and saturday.next_at == local(NY, 2026, 6, 15, 9, 0)


def test_window_and_quiet_hours_intersect():
    late = {"days": [1, 2, 3, 4, 5, 6, 7], "start": "06:00", "end": "23:00"}
    got = deferral_for(touch(routing={"send_window": late}), local(NY, 2026, 6, 10, 6, 30), DEFAULT_QUIET, "UTC")
    assert got is not None and got.reason == "quiet_hours" and got.next_at == local(NY, 2026, 6, 10, 8, 0)
    email = deferral_for(touch("email", routing={"send_window": late}), local(NY, 2026, 6, 10, 6, 30), DEFAULT_QUIET, "UTC")
    assert email is None  # email: the window alone


# --- DST change days ------------------------------------------------------------------------------------------

def test_dst_spring_forward_new_york():
    # 2026-03-08 02:00 EST → 03:00 EDT. Quiet hours end at 08:00 EDT = 12:00 UTC (the day before: 13:00 UTC).
    got = deferral_for(touch(), local(NY, 2026, 3, 8, 0, 30), DEFAULT_QUIET, "UTC")
    assert got is not None and got.next_at == utc(2026, 3, 8, 12, 0)
    assert deferral_for(touch(), local(NY, 2026, 3, 7, 23, 0), DEFAULT_QUIET, "UTC").next_at == utc(2026, 3, 8, 12, 0)
    # a window opening inside the skipped hour opens when the clock jumps: 03:00 EDT = 07:00 UTC
    window = {"days": [7], "start": "02:30", "end": "05:00"}
    got = deferral_for(touch("email", routing={"send_window": window}), local(NY, 2026, 3, 8, 1, 0), None, "UTC")
    assert got is not None and got.next_at == utc(2026, 3, 8, 7, 0)


def test_dst_fall_back_new_york():
    # 2026-11-01 02:00 EDT → 01:00 EST. 08:00 EST = 13:00 UTC.
    got = deferral_for(touch(), local(NY, 2026, 11, 1, 0, 30), DEFAULT_QUIET, "UTC")
    assert got is not None and got.next_at == utc(2026, 11, 1, 13, 0)
    # 01:30 happens twice; a window starting then opens at the first one (EDT, 05:30 UTC)
    window = {"days": [7], "start": "01:30", "end": "01:45"}
    got = deferral_for(touch("email", routing={"send_window": window}), local(NY, 2026, 11, 1, 0, 0), None, "UTC")
    assert got is not None and got.next_at == utc(2026, 11, 1, 5, 30)
    # after the first window closed (01:45 EDT) it opens again at 01:30 EST (06:30 UTC)
    got = deferral_for(touch("email", routing={"send_window": window}), utc(2026, 11, 1, 5, 50), None, "UTC")
    assert got is not None and got.next_at == utc(2026, 11, 1, 6, 30)


def test_dst_change_days_madrid():
    # 2026-03-29 02:00 CET → 03:00 CEST: 08:00 CEST = 06:00 UTC; 2026-10-25 03:00 CEST → 02:00 CET: 08:00 = 07:00 UTC
    got = deferral_for(touch(tz="Europe/Madrid"), local(MADRID, 2026, 3, 29, 1, 0), DEFAULT_QUIET, "UTC")
    assert got is not None and got.next_at == utc(2026, 3, 29, 6, 0)
    got = deferral_for(touch(tz="Europe/Madrid"), local(MADRID, 2026, 10, 25, 1, 0), DEFAULT_QUIET, "UTC")
    assert got is not None and got.next_at == utc(2026, 10, 25, 7, 0)
    window = {"days": [7], "start": "02:15", "end": "04:00"}  # opens at the jump, 03:00 CEST = 01:00 UTC
    got = deferral_for(touch("email", tz="Europe/Madrid", routing={"send_window": window}),
                       utc(2026, 3, 29, 0, 0), None, "UTC")
    assert got is not None and got.next_at == utc(2026, 3, 29, 1, 0)


# --- holidays ---------------------------------------------------------------------------------------------------

def test_holiday_defers_to_the_next_working_moment():
    # 2026-12-25 (Christmas, a Friday) in the US: next is Saturday 08:00 local; with a weekday window, Monday 09:00
    got = deferral_for(touch(routing={"skip_holidays": "US"}), local(NY, 2026, 12, 25, 12, 0), DEFAULT_QUIET, "UTC")
    assert got is not None and got.reason == "holiday" and got.next_at == local(NY, 2026, 12, 26, 8, 0)
    got = deferral_for(touch(routing={"skip_holidays": "US", "send_window": WEEKDAYS}),
                       local(NY, 2026, 12, 25, 12, 0), DEFAULT_QUIET, "UTC")
    assert got is not None and got.reason == "holiday" and got.next_at == local(NY, 2026, 12, 28, 9, 0)
    # the lead's local date decides: 2026-01-06 (Epifanía) in Madrid, already the 6th there at 23:30 UTC on the 5th
    got = deferral_for(touch("email", tz="Europe/Madrid", routing={"skip_holidays": "ES"}), utc(2026, 1, 5, 23, 30),
                       None, "UTC")
    assert got is not None and got.reason == "holiday" and got.next_at == local(MADRID, 2026, 1, 7, 0, 0)
    assert deferral_for(touch(routing={"skip_holidays": "US"}), local(NY, 2026, 12, 28, 12, 0), DEFAULT_QUIET, "UTC") is None


def test_holiday_subdivision():
    # Sant Esteve (26 December) is a holiday in Catalonia (ES-CT), not in Spain as a whole
    catalonia = parse_skip_holidays("ES-CT")
    spain = parse_skip_holidays("ES")
    assert catalonia is not None and spain is not None
    boxing_day = datetime(2026, 12, 26).date()
    assert catalonia.name(boxing_day) and not spain.name(boxing_day)
    assert parse_skip_holidays("us-fl") is not None


# --- bad input --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("window", "field"), [
    ({"days": [1], "start": "17:00", "end": "09:00"}, "routing.send_window.end"),
    ({"days": [1], "start": "09:00", "end": "09:00"}, "routing.send_window.end"),
    ({"days": [1], "start": "25:00", "end": "26:00"}, "routing.send_window.start"),
    ({"days": [1], "start": "09:00", "end": "17:75"}, "routing.send_window.end"),
    ({"days": [0, 1], "start": "09:00", "end": "17:00"}, "routing.send_window.days"),
    ({"days": [8], "start": "09:00", "end": "17:00"}, "routing.send_window.days"),
    ({"days": [], "start": "09:00", "end": "17:00"}, "routing.send_window.days"),
    ({"days": "weekdays"}, "routing.send_window.days"),
    ("9-5", "routing.send_window"),
    ({"days": [1, 2, 3, 4, 5, 6, 7], "start": "22:00", "end": "23:00"}, "routing.send_window"),  # all quiet
])
def test_a_malformed_window_fails_the_touch_naming_the_field(window, field):
    with pytest.raises(TouchFailure) as err:
        deferral_for(touch(routing={"send_window": window}), local(NY, 2026, 6, 10, 12, 0), DEFAULT_QUIET, "UTC")
    assert err.value.error_code == "invalid_send_rules" and err.value.failure_class == "permanent"
    assert err.value.error.startswith(field + ":")


def test_unknown_holiday_country_and_negative_caps_fail_naming_the_field():
    for value in ("XX", "US-ZZ", 7):
        with pytest.raises(TouchFailure) as err:
            rules_for(touch(routing={"skip_holidays": value}), DEFAULT_QUIET, "UTC")
        assert err.value.error_code == "invalid_send_rules" and err.value.error.startswith("routing.skip_holidays:")
    with pytest.raises(TouchFailure) as err:
        rules_for(touch(routing={"max_touches_per_day": -1}), DEFAULT_QUIET, "UTC")
    assert err.value.error.startswith("routing.max_touches_per_day:")
    with pytest.raises(TouchFailure) as err:
        rules_for(touch(sender_config={"daily_cap": -5}), DEFAULT_QUIET, "UTC")
    assert err.value.error.startswith("account_provider_settings.config.daily_cap:")
    for bad in (1.5, "10", True):
        with pytest.raises(TouchFailure):
            parse_cap(bad, "x")
    assert parse_cap(0, "x") == 0 and parse_cap(None, "x") is None and parse_cap(3.0, "x") == 3
    parsed = rules_for(touch(routing={"max_touches_per_day": 2}, sender_config={"daily_cap": 100}), DEFAULT_QUIET, "UTC")
    assert (parsed.lead_cap, parsed.sender_cap) == (2, 100)


def test_cap_release_lands_in_an_allowed_moment():
    parsed = rules_for(touch(), DEFAULT_QUIET, "UTC")
    # a slot frees at 23:10 local: the touch waits for 08:00 the next morning instead
    deferral = parsed.deferral_at("t1", "sender_cap", local(NY, 2026, 6, 10, 23, 10))
    assert deferral.reason == "sender_cap" and deferral.next_at == local(NY, 2026, 6, 11, 8, 0)
    assert parse_send_window(None) is None and parse_skip_holidays(None) is None


# --- property: next_allowed is allowed, ≥ the instant, and nothing allowed lies between ---------------------------

ZONES = ["America/New_York", "Europe/Madrid", "UTC", "Asia/Kolkata", "Australia/Lord_Howe", "America/St_Johns",
         "Pacific/Chatham", "America/Sao_Paulo"]
clock = st.integers(min_value=0, max_value=24 * 60 - 1)


@st.composite
def windows(draw: st.DrawFn) -> dict | None:
    if draw(st.booleans()):
        return None
    start = draw(st.integers(min_value=0, max_value=24 * 60 - 1))
    end = draw(st.integers(min_value=start + 1, max_value=24 * 60))
    days = draw(st.lists(st.integers(1, 7), min_size=1, max_size=7, unique=True))
    return {"days": sorted(days), "start": f"{start // 60:02d}:{start % 60:02d}", "end": f"{end // 60:02d}:{end % 60:02d}"}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(instant=datetime(2025, 9, 27, 0, 0, tzinfo=UTC), zone_name="Pacific/Chatham",  # DST at 02:45 local, +12:45
         window={"days": [1, 2, 3, 4, 5, 6, 7], "start": "00:00", "end": "03:46"}, quiet=None, holidays=None)
@given(instant=st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)),
       zone_name=st.sampled_from(ZONES), window=windows(),
       quiet=st.one_of(st.none(), st.tuples(clock, clock).filter(lambda q: q[0] != q[1])),
       holidays=st.sampled_from([None, "US", "ES", "US-FL"]))
def test_next_allowed_is_the_first_allowed_moment(instant, zone_name, window, quiet, holidays):
    zone = ZoneInfo(zone_name)
    rules = Rules(quiet=QuietHours(*quiet) if quiet else None, window=parse_send_window(window),
                  holidays=parse_skip_holidays(holidays))
    if not rules.open_intervals():
        with pytest.raises(TouchFailure):
            next_allowed(instant, zone, rules)
        return
    found = next_allowed(instant, zone, rules)
    assert found >= instant
    assert rules.blocked(found.astimezone(zone)) is None
    if found > instant:
        assert rules.blocked((found - timedelta(seconds=1)).astimezone(zone)) is not None
    step, probe = timedelta(minutes=1), instant
    while probe < found:  # every minute over the gap is blocked
        assert rules.blocked(probe.astimezone(zone)) is not None, probe
        probe += step


@pytest.mark.parametrize("utc_hour", range(24))
def test_demo_places_its_leads_by_day_and_night_at_any_hour(utc_hour):
    from listener.demo import demo_zones

    now = utc(2026, 3, 29, utc_hour, 37)
    day, night = demo_zones("21:00-08:00", now)
    assert 11 <= now.astimezone(ZoneInfo(day)).hour <= 13
    assert night is not None and now.astimezone(ZoneInfo(night)).hour in (2, 3, 4)
    assert DEFAULT_QUIET.contains(now.astimezone(ZoneInfo(night)).hour * 60)
    assert demo_zones("off", now) == ("Europe/Madrid", None)
