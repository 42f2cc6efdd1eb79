"""`touch.cancel` (SPEC §18): one queued or scheduled touch → `canceled` (reason `command_os`, one `touch_canceled`);
a touch in any other status is a 409 that names it. The cadence of the touch's key does not go on by itself after
it: a canceled touch has no outcome for the fallback decision to follow."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from listener.intents.errors import NotCancelable, NotFound
from listener.intents.lead import jsonable
from listener.rules.vocabulary import QUEUED, SCHEDULED
from listener.store.queries import Q

COMMAND_OS = "command_os"  # touch_canceled reason (SPEC §18)
CANCELABLE = (QUEUED, SCHEDULED)


def _doc(row: asyncpg.Record) -> dict[str, Any]:
    return {"id": str(row["id"]), "lead_id": str(row["lead_id"]), "lead_name": row["lead_name"],
            "campaign_id": jsonable(row["campaign_id"]), "campaign_name": row["campaign_name"], "step": row["step"],
            "channel": row["channel"], "status": row["status"], "scheduled_at": jsonable(row["scheduled_at"])}


async def _cancelable(conn: asyncpg.Connection, touch_id: UUID) -> asyncpg.Record:
    row = await conn.fetchrow(Q.intent_touch, touch_id)
    if row is None:
        raise NotFound(f"no touch with id {touch_id}")
    if row["status"] not in CANCELABLE:
        raise NotCancelable(f"touch {touch_id} is {row['status']}: only a queued or scheduled touch can be canceled",
                            status=row["status"])
    return row


async def preview_cancel(conn: asyncpg.Connection, touch_id: UUID) -> dict[str, Any]:
    row = await _cancelable(conn, touch_id)
    return {"touch": _doc(row), "status": {"from": row["status"], "to": "canceled"}, "touches_to_cancel": 1,
            "reason": COMMAND_OS}


async def cancel_touch(conn: asyncpg.Connection, touch_id: UUID, command_run_id: UUID) -> dict[str, Any]:
    async with conn.transaction():
        before = await _cancelable(conn, touch_id)
        canceled = await conn.fetchrow(Q.intent_cancel_touch, touch_id, COMMAND_OS, command_run_id)
        if canceled is None:  # claimed by a daemon between the read and the update: say what it is now
            await _cancelable(conn, touch_id)
            raise NotCancelable(f"touch {touch_id} changed while it was being canceled", status="unknown")
    return {"touch": {**_doc(before), "status": "canceled"}, "status": {"from": before["status"], "to": "canceled"},
            "touches_canceled": 1, "reason": COMMAND_OS, "event_id": jsonable(canceled["event_id"])}
