"""The lead intents: the seed's ``lead.inspect`` and ``lead.enroll`` (one implementation for `revenue-asi lead
inspect|enroll`, `GET /api/leads/{id}`, `POST /api/leads/{id}/enroll` and `POST /api/command-os`), and Command OS
v2's ``lead.stop`` and ``lead.suppress`` (SPEC §18), each with the preview that says what it would change."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from listener.engine.appointments import appointments_report
from listener.engine.enrichment import enrichment_report
from listener.engine.reactions import react_to_events
from listener.intents.errors import IntentError, NotFound
from listener.rules.contacts import normalise_email, normalise_phone
from listener.rules.errors import TouchFailure
from listener.rules.sendrules import valid_zone, zone_named
from listener.store.queries import Q

RECENT_TOUCHES = 10
RECENT_EVENTS = 15


class LeadError(IntentError):
    """A lead intent that cannot be done; the message says why (the CLI exits non-zero with it, the API answers
    409)."""


class LeadNotFound(NotFound, LeadError):
    """The lead or the campaign does not exist (the API answers 404)."""


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def _row(record: asyncpg.Record | None) -> dict[str, Any] | None:
    return None if record is None else jsonable(dict(record))


def _checked(kind: str, raw: str | None, region: str) -> dict[str, Any]:
    """A contact value as the dispatcher will see it: normalised, or why it cannot be used."""
    try:
        value = normalise_phone(raw, region) if kind == "phone" else normalise_email(raw)
    except TouchFailure as exc:
        return {"raw": raw, "valid": False, "normalised": None, "problem": exc.error_code}
    return {"raw": raw, "valid": True, "normalised": value, "problem": None}


async def inspect_lead(conn: asyncpg.Connection, lead_id: UUID, *, default_region: str = "US") -> dict[str, Any]:
    lead = await conn.fetchrow(Q.lead_inspect_lead, lead_id)
    if lead is None:
        raise LeadNotFound(f"no lead with id {lead_id}")
    contacts = {
        "phone": _checked("phone", lead["phone"], default_region),
        "email": _checked("email", lead["email"], default_region),
        "first_name": lead["first_name"], "company_name": lead["company_name"], "timezone": lead["timezone"],
        "sources": {"leads": {"phone": lead["raw_phone"], "email": lead["raw_email"]},
                    "lead_enriched": None if lead["enriched_at"] is None else {
                        "phone": lead["enriched_phone"], "email": lead["enriched_email"],
                        "first_name": lead["enriched_first_name"], "company_name": lead["enriched_company_name"],
                        "enriched_at": jsonable(lead["enriched_at"])}},
    }
    decisions = []
    for row in await conn.fetch(Q.lead_inspect_decisions, lead_id):
        item = jsonable(dict(row))
        if row["decision"] is None:
            item["decision"] = None
            item["note"] = "no touch yet: the touch orchestrator creates the step's first touch"
        decisions.append(item)
    return {
        "lead": {"id": str(lead["id"]), "full_name": lead["full_name"], "account_id": str(lead["account_id"]),
                 "account_name": lead["account_name"], "created_at": jsonable(lead["created_at"])},
        "contacts": contacts,
        "suppression": _row(await conn.fetchrow(Q.lead_inspect_suppression, lead_id)),
        "next_action": _row(await conn.fetchrow(Q.lead_inspect_next_action, lead_id)),
        "campaigns": [_row(r) for r in await conn.fetch(Q.lead_inspect_campaigns, lead_id)],
        "open_touches": [_row(r) for r in await conn.fetch(Q.lead_inspect_open_touches, lead_id)],
        "deferred_touches": [_row(r) for r in await conn.fetch(Q.lead_deferred_touches, lead_id)],  # §13
        "recent_touches": [_row(r) for r in await conn.fetch(Q.lead_inspect_recent_touches, lead_id, RECENT_TOUCHES)],
        "events": [_row(r) for r in await conn.fetch(Q.lead_inspect_events, lead_id, RECENT_EVENTS)],
        "decisions": decisions,
        "enrichment": await enrichment_report(conn, lead_id),  # SPEC §15: problems found by the engine
        "appointments": await appointments_report(conn, lead_id),
        "out_of_office": out_of_office(await conn.fetchrow(Q.lead_out_of_office, lead_id)),  # SPEC §19: the pause
        "unsubscribe": unsubscribe_source(await conn.fetchrow(Q.lead_unsubscribe_source, lead_id)),
    }


def out_of_office(row: asyncpg.Record | None) -> dict[str, Any] | None:
    """The lead's latest out-of-office pause (SPEC §19), with its resume moment also on the lead's wall clock; its
    ``state``: ``paused`` (in force), ``ended`` (a later reply ended it) or ``over`` (its resume moment passed)."""
    if row is None:
        return None
    item = jsonable(dict(row))
    item["until"] = row["until"].isoformat() if row["until"] is not None else None
    zone = row["lead_timezone"]
    if row["resume_at"] is not None and zone and valid_zone(zone):
        item["resume_at_local"] = row["resume_at"].astimezone(zone_named(zone)).isoformat()
    item["state"] = "paused" if row["in_force"] else "ended" if row["ended_at"] is not None else "over"
    return item


def unsubscribe_source(row: asyncpg.Record | None) -> dict[str, Any] | None:
    """What unsubscribed the lead (SPEC §19, §12, §18): ``source`` is ``one_click`` (the e-mail's List-Unsubscribe),
    ``inbound_stop`` (a STOP / BAJA reply), ``webhook`` (the provider said so: ElasticEmail Unsubscribed or
    AbuseReport), ``command_os`` (lead.suppress), else the event's own event_source."""
    if row is None:
        return None
    item = jsonable(dict(row))
    origin = row["event_source"] or ""
    if origin == "one_click":
        item["source"], item["label"] = "one_click", "one-click unsubscribe (the e-mail's List-Unsubscribe link)"
    elif origin == "webhook:twilio":
        word = (row["opt_out_type"] or (row["body"] or "").strip() or "STOP")[:40]
        item["source"], item["label"] = "inbound_stop", f"inbound {row['channel'] or 'message'} reply {word!r}"
    elif origin.startswith("webhook:"):
        item["source"] = "webhook"
        item["label"] = f"{origin.removeprefix('webhook:')} notification ({row['provider_status'] or row['event_type']})"
    elif origin == "command_os":
        item["source"], item["label"] = "command_os", "Command OS (lead.suppress)"
    else:
        item["source"], item["label"] = origin or "unknown", f"{row['event_type']} from {origin or 'an unknown source'}"
    return item


async def _enrolment_check(conn: asyncpg.Connection, lead_id: UUID, campaign_id: UUID) -> asyncpg.Record:
    """The enrolment's check row, or the LeadError that refuses it."""
    check = await conn.fetchrow(Q.lead_enroll_check, lead_id, campaign_id)
    if check is None:
        raise LeadNotFound(f"no lead with id {lead_id}")
    if check["campaign_id"] is None:
        raise LeadNotFound(f"no campaign with id {campaign_id}")
    name = f"campaign {check['campaign_name']!r} ({campaign_id})"
    if check["campaign_account_id"] != check["lead_account_id"]:
        raise LeadError(f"lead {lead_id} belongs to another account than {name}")
    if check["campaign_status"] == "archived":
        raise LeadError(f"{name} is archived")
    if check["steps"] == 0:
        raise LeadError(f"{name} has no steps")
    if check["enrolled_status"] is not None:
        raise LeadError(f"lead {lead_id} is already enrolled in {name} (status {check['enrolled_status']})")
    if check["is_unsubscribed"] or check["in_negative_cooldown"]:
        raise LeadError(f"lead {lead_id} is suppressed ({check['suppression_reason']}): not enrolled")
    return check


async def preview_enroll(conn: asyncpg.Connection, lead_id: UUID, campaign_id: UUID) -> dict[str, Any]:
    """What lead.enroll would do: the campaign lead it would create and the first step; refused as enroll_lead
    refuses."""
    check = await _enrolment_check(conn, lead_id, campaign_id)
    steps = await conn.fetch(Q.intent_campaign_steps, [campaign_id])
    first = await conn.fetchrow(Q.lead_enroll_first_step, campaign_id, steps[0]["step"]) if steps else None
    return {"lead": {"id": str(lead_id), "full_name": check["full_name"]},
            "campaign": {"id": str(campaign_id), "name": check["campaign_name"], "status": check["campaign_status"]},
            "campaign_leads_to_create": 1, "first_step": _row(first),
            "note": "the touch orchestrator creates the first step's first touch"
                    + (" once the campaign is active again" if check["campaign_status"] == "paused" else "")}


async def enroll_lead(conn: asyncpg.Connection, lead_id: UUID, campaign_id: UUID) -> dict[str, Any]:
    """Create the campaign lead (active, at the campaign's first step); the touch orchestrator then creates the
    step's first touch. Refuses an unknown lead or campaign, another account's campaign, an archived campaign or
    one without steps, a suppressed lead, and a lead already enrolled in the campaign."""
    async with conn.transaction():
        # the same lock a stop event takes (core_memory_events trigger): suppression cannot slip in between
        if await conn.fetchval(Q.lead_lock, lead_id) is None:
            raise LeadNotFound(f"no lead with id {lead_id}")
        check = await _enrolment_check(conn, lead_id, campaign_id)
        row = await conn.fetchrow(Q.lead_enroll_insert, campaign_id, lead_id)
        if row is None:  # enrolled meanwhile by someone else
            raise LeadError(f"lead {lead_id} is already enrolled in campaign {check['campaign_name']!r} "
                            f"({campaign_id})")
        step = await conn.fetchrow(Q.lead_enroll_first_step, campaign_id, row["current_step"])
    result = jsonable(dict(row))
    result.update({"campaign_lead_id": result.pop("id"), "campaign_name": check["campaign_name"],
                   "campaign_status": check["campaign_status"], "lead_name": check["full_name"],
                   "first_step": _row(step)})
    return result


# --- Command OS v2 (SPEC §18): lead.stop, lead.suppress ---------------------------------------------------------

LEAD_STOPPED = "lead_stopped"  # touch_canceled reason of lead.stop (the operator's reason is stop_reason)


async def _lead_and_state(conn: asyncpg.Connection, lead_id: UUID) -> tuple[dict[str, Any], asyncpg.Record]:
    lead = await conn.fetchrow(Q.intent_lead, lead_id)
    if lead is None:
        raise LeadNotFound(f"no lead with id {lead_id}")
    state = await conn.fetchrow(Q.intent_lead_state, lead_id)
    assert state is not None  # the view has a row for every lead
    return {"id": str(lead["id"]), "full_name": lead["full_name"], "account_name": lead["account_name"]}, state


def _open(state: asyncpg.Record) -> dict[str, Any]:
    by_channel = {k: int(v) for k, v in (state["open_touches"] or {}).items()}
    return {"touches_to_cancel": sum(by_channel.values()), "touches_to_cancel_by_channel": by_channel,
            "in_flight": state["in_flight"]}


async def preview_stop(conn: asyncpg.Connection, lead_id: UUID, reason: str) -> dict[str, Any]:
    """What lead.stop would change: the cadences (active or paused campaign leads) it stops, the touches it
    cancels (queued, scheduled; those in flight finish), the cooldown timers it ends."""
    lead, state = await _lead_and_state(conn, lead_id)
    cadences = state["cadences"] or []
    return {"lead": lead, "stop_reason": reason, "cadences_to_stop": len(cadences), "cadences": cadences,
            **_open(state), "cooldown_timers_to_end": state["cooldown_timers"]}


async def stop_lead(conn: asyncpg.Connection, lead_id: UUID, reason: str, command_run_id: UUID) -> dict[str, Any]:
    """lead.stop: the lead's active (and paused) campaign leads → stopped (stop_reason = reason), one
    cadence_stopped each; its queued and scheduled touches → canceled (touch_canceled, reason lead_stopped); its
    cooldown timers end. The lead is not suppressed: it can be enrolled again (lead.suppress is for never again)."""
    async with conn.transaction():
        if await conn.fetchval(Q.lead_lock, lead_id) is None:
            raise LeadNotFound(f"no lead with id {lead_id}")
        stopped = await conn.fetch(Q.stop_campaign_leads, lead_id, None, reason, None)
        events = [{"event_type": "cadence_stopped", "lead_id": str(lead_id), "campaign_id": str(r["campaign_id"]),
                   "step": r["current_step"], "campaign_lead_id": str(r["id"]), "reason": reason,
                   "command_run_id": str(command_run_id)} for r in stopped]
        if events:
            await conn.execute(Q.insert_cadence_events, events)
        canceled = await conn.fetch(Q.intent_cancel_lead_touches, lead_id, LEAD_STOPPED, reason, command_run_id)
        timers = await conn.fetch(Q.intent_drop_lead_cooldowns, lead_id)
        in_flight = (await conn.fetchrow(Q.intent_lead_state, lead_id))["in_flight"]
    by_channel: dict[str, int] = {}
    for row in canceled:
        by_channel[row["channel"]] = by_channel.get(row["channel"], 0) + 1
    return {"lead_id": str(lead_id), "stop_reason": reason,
            "cadences_stopped": len(stopped),
            "cadences": [{"campaign_lead_id": str(r["id"]), "campaign_id": str(r["campaign_id"]),
                          "step": r["current_step"]} for r in stopped],
            "touches_canceled": len(canceled), "touches_canceled_by_channel": by_channel,
            "touch_ids": [str(r["touch_run_id"]) for r in canceled[:100]],
            "cooldown_timers_ended": len(timers), "in_flight": in_flight}


async def preview_suppress(conn: asyncpg.Connection, lead_id: UUID) -> dict[str, Any]:
    """What lead.suppress would change: one do_not_contact event (none when the lead has one already), and then,
    as every suppression (SPEC §8), every open touch canceled and every cadence stopped."""
    lead, state = await _lead_and_state(conn, lead_id)
    already = bool(state["do_not_contact"])
    cadences = [] if already else (state["cadences"] or [])
    opened = _open(state) if not already else {"touches_to_cancel": 0, "touches_to_cancel_by_channel": {},
                                                "in_flight": state["in_flight"]}
    return {"lead": lead, "already_do_not_contact": already,
            "suppressed_now": bool(state["is_unsubscribed"] or state["in_negative_cooldown"]),
            "suppression_reason": state["suppression_reason"],
            "events_to_write": {} if already else {"do_not_contact": 1},
            "cadences_to_stop": len(cadences), "cadences": cadences, **opened}


async def suppress_lead(conn: asyncpg.Connection, lead_id: UUID, command_run_id: UUID) -> dict[str, Any]:
    """lead.suppress: a do_not_contact event (event_source command_os), and in the same transaction what the daemon
    does for it (listener/engine/reactions.py react_to_events): every open touch canceled
    (`suppressed:do_not_contact`), every cadence stopped. The daemon's own reaction to the event then finds nothing
    left to do. A lead that has a do_not_contact already gets nothing new."""
    async with conn.transaction():
        if await conn.fetchval(Q.lead_lock, lead_id) is None:
            raise LeadNotFound(f"no lead with id {lead_id}")
        state = await conn.fetchrow(Q.intent_lead_state, lead_id)
        if state["do_not_contact"]:
            return {"lead_id": str(lead_id), "already_do_not_contact": True, "event_id": None,
                    "touches_canceled": 0, "cadences_stopped": 0, "in_flight": state["in_flight"]}
        event = await conn.fetchrow(Q.intent_insert_do_not_contact, lead_id, command_run_id)
        stats = await react_to_events(conn, [event["id"]])
        in_flight = (await conn.fetchrow(Q.intent_lead_state, lead_id))["in_flight"]
    return {"lead_id": str(lead_id), "already_do_not_contact": False, "event_id": str(event["id"]),
            "touches_canceled": stats.touches_canceled, "cadences_stopped": stats.cadences_stopped,
            "in_flight": in_flight}
