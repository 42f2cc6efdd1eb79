"""Appointments (SPEC §15, was `cron_dispatch_appointment_notifications`): the daemon reacts to each appointment
filed in appointment_inbox (by the appointments trigger: insert, or a change of status / starts_at).

* booked → an `appointment_booked` event (a stop event: the existing reactions end outreach cadences) and one
  reminder touch per REVENUE_ASI_APPOINTMENT_REMINDERS minutes before starts_at, on
  REVENUE_ASI_APPOINTMENT_CHANNEL (whatsapp falls back to sms when the lead's number cannot take WhatsApp, the
  account has no default whatsapp sender, or that sender has no approved reminder template,
  `config.appointment_content_sid`: §12 refuses free-form WhatsApp outside the 24-h window), idempotency_key `appt:<id>:<minutes>:<starts_at epoch>`,
  `meta.source = "appointment_reminder"`. A reminder already past is not created (the event lists it).
* starts_at moved → old reminders canceled, new ones created, `appointment_rescheduled`.
* canceled → reminders canceled, `appointment_canceled`; completed / no_show → open reminders canceled.
* location changed (SPEC is silent) → the open reminders rewritten with the new place, `appointment_updated`
  (payload: location, previous_location, reminders_updated).

Reminders carry `routing.stop_on_events = ["do_not_contact", "unsubscribe"]`, so `reply_positive` and
`appointment_booked` do not cancel them (neither in the reactions nor in the dispatcher's pre-send re-check)
while suppression does; they are ordinary touches, so the sending rules of §13 apply, and `routing.expires_at`
= starts_at, so one deferred past the appointment is canceled instead of sent."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import phonenumbers

from listener.engine.enrichment import valid_zone
from listener.engine.isolate import is_busy, one_by_one
from listener.engine.service import run_service
from listener.rules.contacts import normalise_phone
from listener.rules.errors import TouchFailure
from listener.rules.messages import DEFAULT_LANGUAGE, render_text
from listener.rules.vocabulary import (
    APPOINTMENT_BOOKED,
    APPOINTMENT_CANCELED,
    APPOINTMENT_RESCHEDULED,
    APPOINTMENT_UPDATED,
    DO_NOT_CONTACT,
    UNSUBSCRIBE,
)
from listener.settings import Settings
from listener.store.database import ROW_BUSY_ERRORS
from listener.store.queries import Q

log = logging.getLogger(__name__)

SOURCE = "appointment_reminder"
TEMPLATE = "appointment_reminder"
BATCH = 100
BOOKED, CANCELED = "booked", "canceled"
REMINDER_STOP_EVENTS = [DO_NOT_CONTACT, UNSUBSCRIBE]
# what one bad appointment raises (skipped with a warning, never a stall of the rest)
SKIPPED_ERRORS = (asyncpg.DataError, ValueError, OverflowError)

# Used when message_templates has no appointment_reminder row for the language (the migration seeds es and en).
BUILTIN_TEMPLATES: dict[str, tuple[str, str]] = {
    "es": ("Recordatorio de su cita",
           "Hola {first_name}, le recordamos su cita el {starts_at_local} en {location}. "
           "Si no puede asistir, responda a este mensaje."),
    "en": ("Appointment reminder",
           "Hi {first_name}, this is a reminder of your appointment on {starts_at_local} at {location}. "
           "If you cannot make it, reply to this message."),
}
NO_LOCATION = {"es": "el lugar acordado", "en": "the agreed place"}
_DAYS = {"es": ("lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"),
         "en": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")}
_MONTHS = {"es": ("enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre",
                  "octubre", "noviembre", "diciembre"),
           "en": ("January", "February", "March", "April", "May", "June", "July", "August", "September",
                  "October", "November", "December")}


def format_local(moment: datetime, zone: str, language: str) -> str:
    """starts_at in the lead's wall clock, written for the language (es, else en)."""
    local = moment.astimezone(ZoneInfo(zone))
    abbreviation = local.strftime("%Z")
    if language == "es":
        return (f"{_DAYS['es'][local.weekday()]} {local.day} de {_MONTHS['es'][local.month - 1]} de {local.year}"
                f" a las {local:%H:%M} ({abbreviation})")
    hour = local.hour % 12 or 12
    return (f"{_DAYS['en'][local.weekday()]}, {_MONTHS['en'][local.month - 1]} {local.day}, {local.year}"
            f" at {hour}:{local:%M} {'AM' if local.hour < 12 else 'PM'} {abbreviation}")


def lead_zone(lead_timezone: str | None, enriched_timezone: str | None, phone: str | None, default: str) -> str:
    """SPEC §13: leads.timezone, else lead_enriched.timezone, else the phone's one zone, else the default."""
    for candidate in (lead_timezone, enriched_timezone):
        if candidate and candidate.strip() and valid_zone(candidate.strip()):
            return candidate.strip()
    if phone:
        from phonenumbers import timezone as phone_timezone

        zones = phone_timezone.time_zones_for_number(phonenumbers.parse(phone))
        if len(zones) == 1 and valid_zone(zones[0]):
            return zones[0]
    return default if valid_zone(default) else "UTC"


def whatsapp_capable(e164: str) -> bool:
    kind = phonenumbers.number_type(phonenumbers.parse(e164))
    return kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)


def choose_channel(setting: str, phone: str | None, has_email: bool, has_whatsapp_sender: bool) -> str | None:
    """The reminder channel: the setting; whatsapp → sms when the number cannot take WhatsApp or the account has no
    WhatsApp sender; a phone channel → email when the lead has no valid phone; None when unreachable."""
    if setting == "whatsapp" and phone:
        return "whatsapp" if whatsapp_capable(phone) and has_whatsapp_sender else "sms"
    if setting in ("sms", "voice") and phone:
        return setting
    if has_email:
        return "email"
    return None


def reminder_key(appointment_id: UUID | str, minutes: int, starts_at: datetime) -> str:
    return f"appt:{appointment_id}:{minutes}:{int(starts_at.timestamp())}"


def render_reminder(templates: Mapping[str, tuple[str | None, str]], language: str, first_name: str | None,
                    starts_at_local: str, location: str | None) -> tuple[str | None, str, dict[str, str]]:
    """(subject, body, variables) from the template row for the language, else the built-in text."""
    subject, body = templates.get(language) or BUILTIN_TEMPLATES.get(language) or BUILTIN_TEMPLATES[DEFAULT_LANGUAGE]
    variables = {"first_name": (first_name or "").strip(), "starts_at_local": starts_at_local,
                 "location": (location or "").strip() or NO_LOCATION.get(language, NO_LOCATION["en"])}
    text = render_text(body, variables)
    text = re.sub(r"[ \t]+([,.;:!?])", r"\1", re.sub(r"[ \t]{2,}", " ", text)).strip()  # "Hola , …" without a name
    return (render_text(subject, variables) if subject else None), text, variables


@dataclass
class AppointmentStats:
    appointments: int = 0
    booked: int = 0
    rescheduled: int = 0
    canceled: int = 0
    updated: int = 0
    reminders_created: int = 0
    reminders_canceled: int = 0
    reminders_updated: int = 0
    set_aside: int = 0  # rows locked by another session: back in the inbox for the next run (SPEC §20)

    def add(self, other: AppointmentStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment else None


async def _templates(conn: asyncpg.Connection) -> dict[str, tuple[str | None, str]]:
    return {r["language"]: (r["subject"], r["body"]) for r in await conn.fetch(Q.appointment_templates, TEMPLATE)}


async def plan_reminders(conn: asyncpg.Connection, settings: Settings, appt: Mapping[str, Any],
                         now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str | None]:
    """(reminder touches to insert, reminders skipped with why, why there are none at all or None)."""
    starts_at: datetime = appt["starts_at"]
    minutes_list = settings.appointment_reminder_minutes
    if starts_at <= now:
        return [], [{"minutes_before": m, "reason": "appointment_in_past"} for m in minutes_list], \
            "appointment_in_past"
    if not minutes_list:
        return [], [], "reminders_off"
    ctx = await conn.fetchrow(Q.appointment_lead_context, appt["lead_id"], appt["account_id"])
    if ctx is None:
        return [], [], "unknown_lead"
    if ctx["is_unsubscribed"]:
        return [], [{"minutes_before": m, "reason": "suppressed"} for m in minutes_list], "suppressed"
    try:
        phone: str | None = normalise_phone(ctx["phone"], settings.default_region) if ctx["phone"] else None
    except TouchFailure:
        phone = None
    # SPEC §12: WhatsApp outside the 24-h session window takes only an approved template, and a reminder is sent
    # hours or a day later: without the account's reminder template (config.appointment_content_sid) it goes by sms.
    content_sid = ctx["whatsapp_content_sid"]
    channel = choose_channel(settings.appointment_channel, phone, bool(ctx["email"]),
                             ctx["has_whatsapp_sender"] and content_sid is not None)
    if channel is None:
        return [], [{"minutes_before": m, "reason": "unreachable"} for m in minutes_list], "unreachable"
    language = (ctx["last_language"] or DEFAULT_LANGUAGE).strip().lower()
    templates = await _templates(conn)
    if language not in templates and language not in BUILTIN_TEMPLATES:
        language = DEFAULT_LANGUAGE
    zone = lead_zone(ctx["lead_timezone"], ctx["enriched_timezone"], phone, settings.default_timezone)
    subject, body, variables = render_reminder(templates, language, ctx["first_name"],
                                               format_local(starts_at, zone, language), appt["location"])
    touches, skipped = [], []
    for minutes in minutes_list:
        at = starts_at - timedelta(minutes=minutes)
        if at <= now:
            skipped.append({"minutes_before": minutes, "reason": "reminder_time_past", "would_be_at": _iso(at)})
            continue
        payload = {
            "message_class": SOURCE,
            "routing": {"primary_channel": channel, "current_channel": channel,
                        "stop_on_events": REMINDER_STOP_EVENTS, "expires_at": _iso(starts_at)},
            "delivery": {"template_key": TEMPLATE, "language": language, "body": body, "variables": variables,
                         "channel_overrides": {
                             **({"email": {"subject": subject}} if subject else {}),
                             **({"whatsapp": {"content_sid": content_sid, "content_variables": {
                                 "1": str(variables.get("first_name") or ""),
                                 "2": str(variables.get("starts_at_local") or ""),
                                 "3": str(variables.get("location") or "")}}} if channel == "whatsapp" else {})}},
            "meta": {"source": SOURCE, "appointment_id": str(appt["id"]), "minutes_before": minutes,
                     "lead_timezone": zone, "created_by": "appointments"},
        }
        touches.append({"account_id": str(appt["account_id"]), "lead_id": str(appt["lead_id"]), "channel": channel,
                        "scheduled_at": _iso(at), "payload": payload,
                        "idempotency_key": reminder_key(appt["id"], minutes, starts_at)})
    return touches, skipped, (None if touches else "reminder_times_past")


@dataclass
class Reminders:
    created: list[dict[str, Any]]  # inserted, or put back
    keys: list[str]  # every reminder the appointment should have now
    skipped: list[dict[str, Any]]
    why_none: str | None
    updated: list[str]  # open reminders rewritten with the planned content


async def ensure_reminders(conn: asyncpg.Connection, settings: Settings, appt: Mapping[str, Any], now: datetime,
                           *, revive: bool = False) -> Reminders:
    """Create the reminders an appointment should have (idempotent). With `revive` (the daemon's reaction, not
    replay), reminders its own earlier cancellation canceled are put back, and open reminders whose planned
    content changed (its location, or a text of an earlier booking) are rewritten."""
    touches, skipped, why_none = await plan_reminders(conn, settings, appt, now)
    created = []
    keys = [t["idempotency_key"] for t in touches]
    rows = list(await conn.fetch(Q.appointment_insert_reminders, touches)) if touches else []
    updated: list[str] = []
    if touches and revive:
        rows += await conn.fetch(Q.appointment_revive_reminders, keys, "appointment_booked_again")
        updated = [str(r["id"]) for r in await conn.fetch(Q.appointment_refresh_reminders, touches)]
    for row in rows:
        created.append({"touch_run_id": str(row["id"]), "channel": row["channel"],
                        "scheduled_at": _iso(row["scheduled_at"]), "idempotency_key": row["idempotency_key"]})
    revived = {c["touch_run_id"] for c in created}
    return Reminders(created, keys, skipped, why_none, [u for u in updated if u not in revived])


async def _cancel(conn: asyncpg.Connection, appt: Mapping[str, Any], reason: str, keep: Sequence[str]) -> list[str]:
    rows = await conn.fetch(Q.appointment_cancel_reminders, appt["lead_id"], str(appt["id"]), reason, list(keep))
    return [r["touch_run_id"] for r in rows]


async def react_to_appointment(conn: asyncpg.Connection, settings: Settings, appt: Mapping[str, Any],
                               now: datetime, stats: AppointmentStats) -> None:
    """One taken inbox row: compare the appointment with the state the daemon last saw and act. In a transaction."""
    stats.appointments += 1
    booked = appt["status"] == BOOKED
    was_booked = not appt["is_new"] and appt["prev_status"] == BOOKED
    if booked and not was_booked:
        kind, event_type = "booked", APPOINTMENT_BOOKED
    elif booked and appt["prev_starts_at"] != appt["starts_at"]:
        kind, event_type = "rescheduled", APPOINTMENT_RESCHEDULED
    elif booked and appt["prev_location"] != appt["location"]:
        kind, event_type = "updated", APPOINTMENT_UPDATED
    elif was_booked and appt["status"] == CANCELED:
        kind, event_type = "canceled", APPOINTMENT_CANCELED
    elif was_booked or (not booked and not appt["is_new"]):
        kind, event_type = appt["status"], None  # completed / no_show (or status changes after it ended)
    else:
        return  # stored already canceled / completed: nothing was booked
    reminders = Reminders([], [], [], None, [])
    if booked:
        reminders = await ensure_reminders(conn, settings, appt, now, revive=True)
    created, skipped, why_none = reminders.created, reminders.skipped, reminders.why_none
    canceled = await _cancel(conn, appt, f"appointment_{kind}", reminders.keys)
    stats.reminders_created += len(created)
    stats.reminders_canceled += len(canceled)
    stats.reminders_updated += len(reminders.updated)
    if event_type is None:
        return
    setattr(stats, kind, getattr(stats, kind) + 1)
    payload: dict[str, Any] = {"appointment_id": str(appt["id"]), "status": appt["status"],
                               "starts_at": _iso(appt["starts_at"]), "location": appt["location"],
                               "reminders": created, "reminders_canceled": canceled}
    if kind == "rescheduled":
        payload["previous_starts_at"] = _iso(appt["prev_starts_at"])
    if kind == "updated":
        payload["previous_location"] = appt["prev_location"]
    if reminders.updated:
        payload["reminders_updated"] = reminders.updated
    if booked:
        payload["reminders_skipped"] = skipped
        if why_none:
            payload["no_reminders_reason"] = why_none
    direction = "inbound" if event_type == APPOINTMENT_BOOKED else "internal"
    await conn.execute(Q.appointment_insert_event, appt["lead_id"], event_type, direction, payload)


async def drain_appointments(pool: asyncpg.Pool, settings: Settings, batch: int = BATCH) -> AppointmentStats:
    """React to the inbox until it is empty, each appointment in its own savepoint: one bad appointment is skipped
    (logged), and one whose rows another session holds (its reminder touches, its lead) goes back to the inbox for
    the next run (SPEC §20) — neither stalls the rest."""
    stats = AppointmentStats()
    set_aside: list[UUID] = []
    while True:
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(Q.appointment_take, batch, set_aside)
            if not rows:
                return stats
            busy = await _react_each(conn, settings, rows, stats)
            if busy:
                await conn.execute(Q.appointment_refile, *(
                    [r[column] for r in busy]
                    for column in ("id", "is_new", "prev_status", "prev_starts_at", "prev_location", "queued_at")))
                set_aside += [r["id"] for r in busy]
                stats.set_aside += len(busy)
                log.info("appointments: %d locked by another session, left for the next run", len(busy))


async def _react_each(conn: asyncpg.Connection, settings: Settings, rows: Sequence[asyncpg.Record],
                      stats: AppointmentStats) -> list[asyncpg.Record]:
    """React to each taken row in its own savepoint; returns the rows another session's lock stopped."""
    now: datetime = await conn.fetchval(Q.appointment_now)

    async def react(row: asyncpg.Record) -> None:
        one = AppointmentStats()
        await react_to_appointment(conn, settings, row, now, one)
        stats.add(one)

    busy = []
    for row, exc in await one_by_one(conn, rows, react, catch=(*ROW_BUSY_ERRORS, *SKIPPED_ERRORS)):
        if is_busy(exc):
            busy.append(row)
        else:
            log.warning("appointment %s skipped: %s", row["id"], exc)
    return busy


async def run_appointment_service(pool: asyncpg.Pool, settings: Settings, wake: asyncio.Event,
                                  stop: asyncio.Event) -> None:
    """The daemon's appointment service: drain the inbox whenever `appointments` notifies (and every sweep
    interval), in the daemon's one loop-and-backoff helper."""

    async def step() -> float:
        stats = await drain_appointments(pool, settings)
        if stats.appointments:
            log.info("appointments: %s", stats.as_dict())
        return settings.sweep_interval_s

    await run_service("appointments", step, stop=stop, wake=wake, idle_s=settings.sweep_interval_s)


# --- replay and lead inspect ----------------------------------------------------------------------------------

async def replay_reminders(conn: asyncpg.Connection, settings: Settings, since: datetime, until: datetime,
                           lead_id: UUID | None) -> list[dict[str, Any]]:
    """Re-create missing reminders of booked, upcoming appointments changed in [since, until). Idempotent: a
    reminder that exists (in any status, canceled too) keeps its key and is not created again. In a transaction."""
    now: datetime = await conn.fetchval(Q.appointment_now)
    created: list[dict[str, Any]] = []
    for appt in await conn.fetch(Q.appointment_replay_candidates, since, until, lead_id):
        made = (await ensure_reminders(conn, settings, appt, now)).created
        created.extend({**m, "lead_id": str(appt["lead_id"]), "appointment_id": str(appt["id"])} for m in made)
    return created


async def appointments_report(conn: asyncpg.Connection, lead_id: UUID) -> list[dict[str, Any]]:
    """The lead's appointments (newest first) with their reminders, for `lead inspect`."""
    return [{"id": str(r["id"]), "starts_at": _iso(r["starts_at"]), "status": r["status"], "location": r["location"],
             "notes": r["notes"], "upcoming": r["upcoming"], "reminders": r["reminders"]}
            for r in await conn.fetch(Q.appointments_of_lead, lead_id)]
