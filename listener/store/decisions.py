"""The fallback decision's database side: one key's facts for ``listener.rules.decision.decide`` in one round
trip, and the SQL form's own decision (``decide_next_channel_for_lead``) for one key or many."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from listener.rules.decision import (
    AttemptEvent,
    ChannelHistory,
    ChannelState,
    Decision,
    DecisionInputs,
    LeadEvent,
    payload_for_decision,
)
from listener.store.queries import Q


def _json(value: Any) -> Any:
    """jsonb as asyncpg returns it: text without a codec, already decoded with one."""
    return json.loads(value) if isinstance(value, str) else value


async def load_decision_inputs(
    conn: asyncpg.Connection, lead_id: UUID, campaign_id: UUID | None, step: int
) -> DecisionInputs | None:
    """One round trip: the facts decide() needs for the key, or None when the key has no touch."""
    row = await conn.fetchrow(Q.decision_inputs_for_key, lead_id, campaign_id, step)
    if row is None:
        return None
    by_channel: dict[str, list[AttemptEvent]] = {}
    for channel, event_type, created_at, failure_class in zip(
        row["attempt_channels"], row["attempt_types"], row["attempt_times"], row["attempt_failure_classes"],
        strict=True,
    ):
        by_channel.setdefault(channel, []).append(
            AttemptEvent(event_type=event_type, created_at=created_at, failure_class=failure_class))
    return DecisionInputs(
        lead_id=lead_id,
        campaign_id=campaign_id,
        step=step,
        latest_touch_id=row["latest_touch_id"],
        latest_channel=row["latest_channel"],
        latest_payload=payload_for_decision(row["latest_payload"]),
        cadence_started_at=row["cadence_started_at"],
        history=[ChannelHistory(channel=c, attempts=a) for c, a in by_channel.items()],
        has_phone=row["has_phone"],
        has_email=row["has_email"],
        lead_events=[LeadEvent(event_type=t, created_at=at)
                     for t, at in zip(row["event_types"], row["event_times"], strict=True)],
    )


def decision_from_row(row: asyncpg.Record) -> Decision:
    """A Decision from a row of decide_next_channel_for_lead (decide_for_key / decide_for_keys)."""
    return Decision(
        decision=row["decision"],
        current_channel=row["current_channel"],
        next_channel=row["next_channel"],
        cooldown_until=row["cooldown_until"],
        stop_reason=row["stop_reason"],
        skipped_channels=list(row["skipped_channels"]),
        latest_touch_id=row["latest_touch_id"],
        cadence_started_at=row["cadence_started_at"],
        channels=[ChannelState.model_validate(c) for c in _json(row["channels"])],
    )


async def decide_sql(
    conn: asyncpg.Connection, lead_id: UUID, campaign_id: UUID | None, step: int, now: datetime
) -> Decision | None:
    """The SQL form's decision for the key at ``now``, or None when the key has no touch."""
    row = await conn.fetchrow(Q.decide_for_key, lead_id, campaign_id, step, now)
    return None if row is None else decision_from_row(row)


async def decide_sql_many(
    conn: asyncpg.Connection, keys: Sequence[tuple[UUID, UUID | None, int]], now: datetime
) -> dict[tuple[UUID, UUID | None, int], Decision]:
    """decide_for_keys: many keys in one round trip; keys without a touch are absent from the result."""
    rows = await conn.fetch(Q.decide_for_keys, [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], now)
    return {(r["lead_id"], r["campaign_id"], r["step"]): decision_from_row(r) for r in rows}
