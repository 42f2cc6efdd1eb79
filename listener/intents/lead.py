"""The seed's Command OS intents ``lead.inspect`` and ``lead.enroll``: one implementation for `revenue-asi lead
inspect|enroll`, `GET /api/leads/{id}`, `POST /api/leads/{id}/enroll` and `POST /api/command-os`."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from listener.engine.appointments import appointments_report
from listener.engine.enrichment import enrichment_report
from listener.rules.contacts import normalise_email, normalise_phone
from listener.rules.errors import TouchFailure
from listener.store.queries import Q

RECENT_TOUCHES = 10
RECENT_EVENTS = 15


class LeadError(Exception):
    """A lead intent that cannot be done; the message says why (the CLI exits non-zero with it, the API answers
    409)."""


class LeadNotFound(LeadError):
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
    }


async def enroll_lead(conn: asyncpg.Connection, lead_id: UUID, campaign_id: UUID) -> dict[str, Any]:
    """Create the campaign lead (active, at the campaign's first step); the touch orchestrator then creates the
    step's first touch. Refuses an unknown lead or campaign, another account's campaign, an archived campaign or
    one without steps, a suppressed lead, and a lead already enrolled in the campaign."""
    async with conn.transaction():
        # the same lock a stop event takes (core_memory_events trigger): suppression cannot slip in between
        if await conn.fetchval(Q.lead_lock, lead_id) is None:
            raise LeadNotFound(f"no lead with id {lead_id}")
        check = await conn.fetchrow(Q.lead_enroll_check, lead_id, campaign_id)
        assert check is not None
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
        row = await conn.fetchrow(Q.lead_enroll_insert, campaign_id, lead_id)
        if row is None:  # enrolled meanwhile by someone else
            raise LeadError(f"lead {lead_id} is already enrolled in {name}")
        step = await conn.fetchrow(Q.lead_enroll_first_step, campaign_id, row["current_step"])
    result = jsonable(dict(row))
    result.update({"campaign_lead_id": result.pop("id"), "campaign_name": check["campaign_name"],
                   "campaign_status": check["campaign_status"], "lead_name": check["full_name"],
                   "first_step": _row(step)})
    return result
