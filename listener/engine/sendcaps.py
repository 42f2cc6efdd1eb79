"""Sending rules at send time (SPEC §13): the time rules of listener/rules/sendrules.py per touch, and the caps, decided
in the database inside the pre-send transaction.

Why the caps cannot be exceeded by racing daemons:
- Every touch is `processing` (committed by the claim) before any pre-send check looks at it, and a usage count is
  "sent in the last 24 h + processing (other than the batch being checked)". So a touch another daemon may be
  handing out right now is always counted: two checkers can never both see the same free slot. This alone is
  safe; it could only under-use a slot (two checkers each counting the other's touch and both deferring).
- The lock makes it exact: a checker takes a transaction-scoped advisory lock per capped sender and capped lead
  (sorted, so no deadlock), then counts in a new statement — under READ COMMITTED that statement's snapshot is
  taken after the lock was granted, so it sees everything the previous holder committed (PostgreSQL makes a
  commit visible before it releases the transaction's locks). The previous holder's touches are then either sent
  or processing (counted) or back to scheduled (not counted).
Touches without any cap take no lock and cost no round trip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from listener.rules.errors import TouchFailure
from listener.rules.sendrules import (
    CAP_WINDOW,
    LEAD_CAP,
    SENDER_CAP,
    Deferral,
    QuietHours,
    SendRulesInput,
    TouchRules,
    parse_quiet_hours,
    rules_for,
    unruled,
)
from listener.settings import Settings
from listener.store.queries import Q

SENDER_LOCK_NAMESPACE, LEAD_LOCK_NAMESPACE = 1301, 1302


@dataclass
class Gate:
    """What the sending rules decided for a batch: who may go on, who fails, who waits."""

    kept: list[Any] = field(default_factory=list)
    failures: list[tuple[UUID, TouchFailure]] = field(default_factory=list)
    deferrals: list[Deferral] = field(default_factory=list)


def quiet_hours_of(settings: Settings) -> QuietHours | None:
    return parse_quiet_hours(settings.quiet_hours)


def _release(oldest: datetime | None, now: datetime) -> datetime:
    return max(now, oldest + CAP_WINDOW) if oldest is not None else now + CAP_WINDOW


async def check_caps(conn: asyncpg.Connection, touches: Sequence[tuple[SendRulesInput, TouchRules]],
                     batch_ids: Sequence[UUID], now: datetime) -> dict[Any, Deferral]:
    """Sender and lead caps for touches the time rules allow now. Call inside the pre-send transaction; the
    locks it takes are held to its end. `batch_ids`: every touch of the batch (excluded from in-flight counts)."""
    senders = {ctx.sender_settings_id for ctx, rules in touches
               if rules.sender_cap is not None and ctx.sender_settings_id is not None}
    leads = {ctx.lead_id for ctx, rules in touches if rules.lead_cap is not None and ctx.lead_id is not None}
    if not senders and not leads:
        return {}
    keys = [(SENDER_LOCK_NAMESPACE, s) for s in senders] + [(LEAD_LOCK_NAMESPACE, lead) for lead in leads]
    await conn.fetchval(Q.sendrules_lock_cap_keys, [k[0] for k in keys], [k[1] for k in keys])
    batch = list(batch_ids)
    sender_use: dict[Any, list[Any]] = {}
    lead_use: dict[Any, list[Any]] = {}
    if senders:
        for r in await conn.fetch(Q.sendrules_sender_usage, list(senders), batch):
            sender_use[r["id"]] = [r["used"], r["oldest"]]
    if leads:
        for r in await conn.fetch(Q.sendrules_lead_usage, list(leads), batch):
            lead_use[r["lead_id"]] = [r["used"], r["oldest"]]
    deferred: dict[Any, Deferral] = {}
    for ctx, rules in touches:
        s_use = sender_use.get(ctx.sender_settings_id) if rules.sender_cap is not None else None
        l_use = lead_use.get(ctx.lead_id) if rules.lead_cap is not None else None
        if s_use is not None and rules.sender_cap is not None and s_use[0] >= rules.sender_cap:
            deferred[ctx.touch_id] = rules.deferral_at(ctx.touch_id, SENDER_CAP, _release(s_use[1], now))
            continue
        if l_use is not None and rules.lead_cap is not None and l_use[0] >= rules.lead_cap:
            deferred[ctx.touch_id] = rules.deferral_at(ctx.touch_id, LEAD_CAP, _release(l_use[1], now))
            continue
        # granted: later touches of the batch on the same sender / lead see it as used
        if ctx.sender_settings_id in sender_use:
            sender_use[ctx.sender_settings_id][0] += 1
            sender_use[ctx.sender_settings_id][1] = sender_use[ctx.sender_settings_id][1] or now
        if ctx.lead_id in lead_use:
            lead_use[ctx.lead_id][0] += 1
            lead_use[ctx.lead_id][1] = lead_use[ctx.lead_id][1] or now
    return deferred


async def send_rules_gate(conn: asyncpg.Connection, rows: Sequence[tuple[Mapping[str, Any], Any]], now: datetime,
                          settings: Settings, batch_ids: Sequence[UUID] | None = None) -> Gate:
    """The §13 check for a batch of (touch_send_contexts row, anything) pairs, in the pre-send transaction:
    time rules in Python (pure), then caps in the database. Returns who goes on (the same pairs), who fails
    (invalid_send_rules) and who is deferred (write them with Q.defer_touches)."""
    gate = Gate()
    quiet = quiet_hours_of(settings)
    allowed: list[tuple[tuple[Mapping[str, Any], Any], SendRulesInput, TouchRules]] = []
    for pair in rows:
        ctx = SendRulesInput.from_row(pair[0])
        if unruled(ctx, quiet):
            gate.kept.append(pair)
            continue
        try:
            rules = rules_for(ctx, quiet, settings.default_timezone, settings.default_region)
            reason = rules.rules.blocked(now.astimezone(rules.zone.zone))
            if reason is not None:
                gate.deferrals.append(rules.deferral_at(ctx.touch_id, reason, now))
                continue
        except TouchFailure as failure:
            gate.failures.append((ctx.touch_id, failure))
            continue
        allowed.append((pair, ctx, rules))
    capped = await check_caps(conn, [(ctx, rules) for _, ctx, rules in allowed],
                              batch_ids if batch_ids is not None else [pair[0]["id"] for pair in rows], now)
    for pair, ctx, _ in allowed:
        if ctx.touch_id in capped:
            gate.deferrals.append(capped[ctx.touch_id])
        else:
            gate.kept.append(pair)
    return gate
