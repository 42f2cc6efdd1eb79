"""The campaign intents of Command OS v2 (SPEC §18): `campaign.list`, `campaign.pause`, `campaign.resume`, and the
lookup every intent that names a campaign shares (by id, or by name: case- and accent-insensitive; more than one
match is a 409 listing them).

Pause: `campaigns.status = 'paused'` — the touch orchestrator only creates touches for active campaigns
(orchestrator_candidates) — and the campaign's queued and scheduled touches are canceled with reason
`campaign_paused` (one `touch_canceled` each). Touches in flight (processing) finish.

Resume: status `active`, and at once, in the same transaction, every touch the pause canceled is created again
(same lead, step, channel and payload; due when it was due, or now) when it is still the newest touch of its
campaign lead's current step and the lead is not suppressed. The orchestrator cannot do that part: the canceled
touch holds its step's key (`step:<campaign>:<lead>:<step>`) and it only creates a step that has no touch at all.
The copies' key is `resume:<canceled touch id>`, so resuming twice (or two operators at once) creates them once.
Campaign leads enrolled while the campaign was paused (no touch yet) are the orchestrator's, as always: its next run
creates their first touch (`revenue-asi tick touch-orchestrator` runs it now)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from listener.intents.errors import Ambiguous, IntentError, NotFound
from listener.intents.lead import jsonable
from listener.intents.words import name_key
from listener.rules.vocabulary import CAMPAIGN_LEAD_STATUSES
from listener.store.queries import Q

CAMPAIGN_PAUSED = "campaign_paused"  # touch_canceled reason (SPEC §18)
CAMPAIGNS_LISTED = 500
CANDIDATES_LISTED = 20
TOUCHES_LISTED = 100


def campaign_doc(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    return {"id": str(row["id"]), "name": row["name"], "status": row["status"],
            "account_id": str(row["account_id"]), "account_name": row["account_name"]}


def as_uuid(ref: str | UUID) -> UUID | None:
    if isinstance(ref, UUID):
        return ref
    try:
        return UUID(ref.strip())
    except ValueError:
        return None


async def find_campaign(conn: asyncpg.Connection, ref: str | UUID, *,
                        account_id: UUID | None = None) -> dict[str, Any]:
    """The campaign `ref` names: its id, or its name — among `account_id`'s campaigns when given (lead.enroll: the
    lead's account), else among every account's. A name matches case- and accent-insensitively, punctuation aside
    ('revision gratuita' finds 'Revisión gratuita'); when no name is equal, a name that contains the words given
    ('revision' finds 'Revisión gratuita'). None → NotFound (404); more than one → Ambiguous (409) with the
    candidates (id, name, status, account)."""
    campaign_id = as_uuid(ref)
    if campaign_id is not None:
        row = await conn.fetchrow(Q.intent_campaign_by_id, campaign_id)
        if row is None:
            raise NotFound(f"no campaign with id {campaign_id}")
        return dict(row)
    assert isinstance(ref, str)
    wanted = name_key(ref)
    if not wanted:
        raise NotFound(f"no campaign named {ref!r}")
    rows = [dict(r) for r in await conn.fetch(Q.intent_campaign_names)
            if account_id is None or r["account_id"] == account_id]
    matches = [r for r in rows if name_key(r["name"]) == wanted]
    if not matches:
        matches = [r for r in rows if f" {wanted} " in f" {name_key(r['name'])} "]
    if not matches:
        raise NotFound(f"no campaign named {ref!r}")
    if len(matches) > 1:
        raise Ambiguous(f"{len(matches)} campaigns match {ref!r}: name one by its id",
                        candidates=[campaign_doc(r) for r in matches[:CANDIDATES_LISTED]])
    return matches[0]


# --- campaign.list --------------------------------------------------------------------------------------------


async def list_campaigns(conn: asyncpg.Connection) -> dict[str, Any]:
    """Every campaign (at most CAMPAIGNS_LISTED, by account and name) with its status, its campaign leads by status,
    and per step: the step's first channel and its campaign leads by status (those whose current step it is)."""
    rows = await conn.fetch(Q.intent_campaign_list, CAMPAIGNS_LISTED + 1)
    truncated = len(rows) > CAMPAIGNS_LISTED
    rows = rows[:CAMPAIGNS_LISTED]
    ids = [r["id"] for r in rows]
    steps: dict[UUID, dict[int, dict[str, Any]]] = {i: {} for i in ids}

    def step_of(campaign_id: UUID, number: int, channel: str | None = None) -> dict[str, Any]:
        return steps[campaign_id].setdefault(number, {"step": number, "primary_channel": channel,
                                                      **{s: 0 for s in CAMPAIGN_LEAD_STATUSES}})

    for s in await conn.fetch(Q.intent_campaign_steps, ids):
        step_of(s["campaign_id"], s["step"], s["primary_channel"])
    for c in await conn.fetch(Q.intent_campaign_lead_counts, ids):
        step_of(c["campaign_id"], c["step"])[c["status"]] = c["n"]
    campaigns = []
    for r in rows:
        by_step = [steps[r["id"]][n] for n in sorted(steps[r["id"]])]
        totals = {s: sum(step[s] for step in by_step) for s in CAMPAIGN_LEAD_STATUSES}
        campaigns.append({**campaign_doc(r), "message_class": r["message_class"],
                          "created_at": jsonable(r["created_at"]), "steps": r["steps"], "campaign_leads": totals,
                          "per_step": by_step})
    return {"campaigns": campaigns, "count": len(campaigns), "truncated": truncated}


# --- campaign.pause -------------------------------------------------------------------------------------------


async def _campaign(conn: asyncpg.Connection, campaign_id: UUID, *, lock: bool = False) -> asyncpg.Record:
    row = await conn.fetchrow(Q.intent_campaign_lock if lock else Q.intent_campaign_by_id, campaign_id)
    if row is None:
        raise NotFound(f"no campaign with id {campaign_id}")
    if row["status"] == "archived":
        raise IntentError(f"campaign {row['name']!r} ({campaign_id}) is archived: it cannot be paused or resumed")
    return row


async def _open_touches(conn: asyncpg.Connection, campaign_id: UUID) -> tuple[dict[str, int], int]:
    rows = await conn.fetch(Q.intent_campaign_open_touches, campaign_id)
    return {r["channel"]: r["open"] for r in rows if r["open"]}, sum(r["in_flight"] for r in rows)


async def preview_pause(conn: asyncpg.Connection, campaign_id: UUID) -> dict[str, Any]:
    campaign = await _campaign(conn, campaign_id)
    by_channel, in_flight = await _open_touches(conn, campaign_id)
    return {"campaign": campaign_doc(campaign), "status": {"from": campaign["status"], "to": "paused"},
            "already_paused": campaign["status"] == "paused",
            "touches_to_cancel": sum(by_channel.values()), "touches_to_cancel_by_channel": by_channel,
            "in_flight": in_flight,
            "note": "queued and scheduled touches are canceled (reason campaign_paused); touches in flight finish; "
                    "the touch orchestrator creates nothing for a paused campaign"}


async def pause_campaign(conn: asyncpg.Connection, campaign_id: UUID, command_run_id: UUID) -> dict[str, Any]:
    async with conn.transaction():
        campaign = await _campaign(conn, campaign_id, lock=True)
        await conn.execute(Q.intent_campaign_set_status, campaign_id, "paused")
        canceled = await conn.fetch(Q.intent_cancel_campaign_touches, campaign_id, CAMPAIGN_PAUSED, command_run_id)
        _, in_flight = await _open_touches(conn, campaign_id)
    by_channel: dict[str, int] = {}
    for row in canceled:
        by_channel[row["channel"]] = by_channel.get(row["channel"], 0) + 1
    return {"campaign": {**campaign_doc(campaign), "status": "paused"},
            "status": {"from": campaign["status"], "to": "paused"},
            "touches_canceled": len(canceled), "touches_canceled_by_channel": by_channel,
            "touch_ids": [str(r["touch_run_id"]) for r in canceled[:TOUCHES_LISTED]], "in_flight": in_flight}


# --- campaign.resume ------------------------------------------------------------------------------------------


async def _resume_plan(conn: asyncpg.Connection, campaign_id: UUID) -> dict[str, list[asyncpg.Record]]:
    rows = await conn.fetch(Q.intent_resume_candidates, campaign_id)
    paused = [r for r in rows if r["paused_touch"] and r["status"] == "canceled"]
    return {"recreate": [r for r in paused if not r["suppressed"]],
            "suppressed": [r for r in paused if r["suppressed"]],
            "not_started": [r for r in rows if r["latest_touch_id"] is None and not r["suppressed"]]}


def _by_channel(rows: list[asyncpg.Record]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r["channel"]] = out.get(r["channel"], 0) + 1
    return out


ORCHESTRATOR_NOTE = ("campaign leads enrolled while it was paused get their first touch from the touch "
                     "orchestrator's next run (revenue-asi tick touch-orchestrator runs it now)")


async def preview_resume(conn: asyncpg.Connection, campaign_id: UUID) -> dict[str, Any]:
    campaign = await _campaign(conn, campaign_id)
    plan = await _resume_plan(conn, campaign_id)
    return {"campaign": campaign_doc(campaign), "status": {"from": campaign["status"], "to": "active"},
            "already_active": campaign["status"] == "active",
            "touches_to_recreate": len(plan["recreate"]), "touches_to_recreate_by_channel": _by_channel(
                plan["recreate"]),
            "skipped_suppressed": len(plan["suppressed"]), "not_started": len(plan["not_started"]),
            "note": "each touch the pause canceled is created again at once, due when it was due (or now); "
                    + ORCHESTRATOR_NOTE}


async def resume_campaign(conn: asyncpg.Connection, campaign_id: UUID, command_run_id: UUID) -> dict[str, Any]:
    async with conn.transaction():
        campaign = await _campaign(conn, campaign_id, lock=True)
        await conn.execute(Q.intent_campaign_set_status, campaign_id, "active")
        plan = await _resume_plan(conn, campaign_id)
        created = await conn.fetch(Q.intent_resume_touches, [r["latest_touch_id"] for r in plan["recreate"]])
    return {"campaign": {**campaign_doc(campaign), "status": "active"},
            "status": {"from": campaign["status"], "to": "active"},
            "touches_recreated": len(created), "touches_recreated_by_channel": _by_channel(list(created)),
            "already_existed": len(plan["recreate"]) - len(created),
            "skipped_suppressed": len(plan["suppressed"]), "not_started": len(plan["not_started"]),
            "touches": [{"touch_run_id": str(r["id"]), "lead_id": str(r["lead_id"]), "step": r["step"],
                         "channel": r["channel"], "status": r["status"], "scheduled_at": jsonable(r["scheduled_at"])}
                        for r in created[:TOUCHES_LISTED]],
            "note": ORCHESTRATOR_NOTE}
