"""Claim → lock and re-check → send → complete (SPEC §6). Replaces dispatch-touch, dispatch-touch-email and
dispatch-touch-whatsapp and their crons.

A batch goes through two transactions. The claim (status processing + lease) commits first, on its own, so a
crash after it can never lead to a second send: the sweep turns an expired lease into failed/outcome_unknown.
The send transaction then locks the claimed rows and share-locks their leads, re-checks suppression, stop events
and expiry on a fresh snapshot, calls the providers, and writes each status with its event before committing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from listener.errors import ProviderError, TouchFailure
from listener.messages import Template, template_key_for
from listener.outbound import PreparedTouch, TouchContext, prepare_outbound
from listener.payload import TouchPayload, parse_payload
from listener.providers.base import Provider
from listener.queries import Q
from listener.sendcaps import send_rules_gate
from listener.settings import Settings

log = logging.getLogger(__name__)

# A send transaction for a few touches uses generic plans: with an array parameter PostgreSQL otherwise plans
# touch_send_contexts afresh on every call (~1-2 ms of planning for ~0.1 ms of work); for larger batches the
# custom plans are as good or better (docs/performance.md).
GENERIC_PLAN_MAX_BATCH = 8


@dataclass
class Outcome:
    """What happened to one touch; becomes one touch_runs update and one event."""

    id: UUID
    status: str  # sent | failed | canceled
    event_type: str
    event_payload: dict[str, Any]
    error: str | None = None
    provider_message_id: str | None = None
    payload_patch: dict[str, Any] | None = None

    def as_row(self) -> dict[str, Any]:
        return {"id": str(self.id), "status": self.status, "error": self.error,
                "provider_message_id": self.provider_message_id, "payload_patch": self.payload_patch,
                "event_type": self.event_type, "event_payload": self.event_payload}


def sent(touch_id: UUID, prepared: PreparedTouch, provider_message_id: str | None) -> Outcome:
    payload = {"provider": prepared.provider, "provider_message_id": provider_message_id,
               "to": prepared.message.to, "dry_run": prepared.dry_run}
    if prepared.real_recipient != prepared.message.to:
        payload["real_recipient"] = prepared.real_recipient
    patch = None
    if prepared.dry_run:  # the seed's WhatsApp v2 dry-run contract: to = QA_SINK ?? "whatsapp:" + phone
        to = prepared.message.to
        patch = {"dryRun": True, "provider": prepared.provider, "provider_config": prepared.provider_config,
                 "to": f"whatsapp:{to}" if prepared.message.channel == "whatsapp" else to}
    return Outcome(touch_id, "sent", "touch_sent", payload, provider_message_id=provider_message_id,
                   payload_patch=patch)


def failed(touch_id: UUID, failure: TouchFailure, scrub: Sequence[str], provider: str | None = None) -> Outcome:
    error = failure.error
    for secret in scrub:
        error = error.replace(secret, "***")
    payload: dict[str, Any] = {"error_code": failure.error_code, "error": error,
                               "failure_class": failure.failure_class}
    if provider:
        payload["provider"] = provider
    return Outcome(touch_id, "failed", "touch_failed", payload, error=f"{failure.error_code}: {error}")


def canceled(touch_id: UUID, reason: str) -> Outcome:
    return Outcome(touch_id, "canceled", "touch_canceled", {"reason": reason}, error=f"canceled: {reason}")


def cancel_reason(row: Mapping[str, Any], payload: TouchPayload | None, now: datetime) -> str | None:
    if row["is_unsubscribed"] or row["in_negative_cooldown"]:
        return f"suppressed:{row['suppression_reason']}"
    if row["stop_event"]:
        return f"stop_event:{row['stop_event']}"
    routing = payload.routing if payload is not None else None
    if routing is not None and routing.expires_at is not None:
        expires = routing.expires_at if routing.expires_at.tzinfo else routing.expires_at.replace(tzinfo=UTC)
        if now > expires:
            return "expired"
    return None


@dataclass
class DispatchStats:
    claimed: int = 0
    sent: int = 0
    failed: int = 0
    canceled: int = 0
    lost_lease: int = 0
    deferred: int = 0
    by_error: dict[str, int] = field(default_factory=dict)


class Dispatcher:
    def __init__(self, pool: asyncpg.Pool, settings: Settings, providers: Mapping[str, Provider | None],
                 worker_id: str) -> None:
        self.pool = pool
        self.settings = settings
        self.providers = providers
        self.worker_id = worker_id
        self.stats = DispatchStats()
        self._secrets = settings.secrets()

    async def claim(self, conn: asyncpg.Connection, limit: int) -> list[UUID]:
        rows = await conn.fetch(Q.claim_due_touches, self.worker_id, self.settings.lease_s, limit)
        self.stats.claimed += len(rows)
        return [r["id"] for r in rows]

    async def release(self, conn: asyncpg.Connection, touch_ids: Sequence[UUID]) -> None:
        await conn.execute(Q.release_claimed_touches, list(touch_ids), self.worker_id)

    async def process(self, touch_ids: Sequence[UUID], claimed_at: float,
                      stopping: Callable[[], bool] = lambda: False) -> list[Outcome]:
        """Send one claimed batch. Returns the outcomes committed (empty if the lease was lost, or if the daemon
        began stopping before the batch reached a provider: then the touches go back to the queue)."""
        deadline = claimed_at + self.settings.lease_s * 0.8
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                if len(touch_ids) <= GENERIC_PLAN_MAX_BATCH:
                    await conn.execute(Q.generic_plans_in_transaction)
                locked = {r["id"] for r in await conn.fetch(Q.lock_claimed_touches, list(touch_ids), self.worker_id)}
                self.stats.lost_lease += len(touch_ids) - len(locked)
                if not locked:
                    return []
                if stopping():
                    await self.release(conn, list(locked))
                    return []
                rows = await conn.fetch(Q.touch_send_contexts, list(locked))
                outcomes = await self._decide_and_send(conn, rows, deadline)
                if outcomes:
                    await conn.fetch(Q.complete_touches, [o.as_row() for o in outcomes], self.worker_id)
        for outcome in outcomes:
            setattr(self.stats, outcome.status, getattr(self.stats, outcome.status) + 1)
            if outcome.status == "failed":
                code = outcome.event_payload["error_code"]
                self.stats.by_error[code] = self.stats.by_error.get(code, 0) + 1
        return outcomes

    async def _decide_and_send(self, conn: asyncpg.Connection, rows: Sequence[asyncpg.Record],
                               deadline: float) -> list[Outcome]:
        now = datetime.now(UTC)
        outcomes: list[Outcome] = []
        parsed: list[tuple[asyncpg.Record, TouchPayload]] = []
        for row in rows:
            try:
                payload = parse_payload(row["payload"])
            except TouchFailure as failure:
                reason = cancel_reason(row, None, now)
                outcomes.append(canceled(row["id"], reason) if reason else failed(row["id"], failure, self._secrets))
                continue
            reason = cancel_reason(row, payload, now)
            if reason:
                outcomes.append(canceled(row["id"], reason))
            else:
                parsed.append((row, payload))
        # sending rules (SPEC §13): quiet hours, window, holidays, caps — on the same snapshot, before any send
        gate = await send_rules_gate(conn, parsed, now, self.settings, [row["id"] for row in rows])
        outcomes.extend(failed(touch_id, failure, self._secrets) for touch_id, failure in gate.failures)
        if gate.deferrals:
            await conn.fetch(Q.defer_touches, [d.as_row() for d in gate.deferrals], self.worker_id)
            self.stats.deferred += len(gate.deferrals)
        parsed = gate.kept
        templates = await self._templates_for(conn, parsed)
        sends = []
        for row, payload in parsed:
            try:
                context = TouchContext.model_validate(dict(row))
                prepared = prepare_outbound(context, payload, templates, self.settings)
            except TouchFailure as failure:
                outcomes.append(failed(row["id"], failure, self._secrets))
                continue
            sends.append(self._send_one(row["id"], prepared, deadline))
        outcomes.extend(await asyncio.gather(*sends))
        return outcomes

    async def _templates_for(self, conn: asyncpg.Connection,
                             parsed: Sequence[tuple[asyncpg.Record, TouchPayload]]) -> dict[tuple[str, str], Template]:
        keys = {key for row, payload in parsed if (key := template_key_for(payload, row["channel"])) is not None}
        if not keys:
            return {}
        names, languages = zip(*keys)
        rows = await conn.fetch(Q.templates_by_key, list(names), list(languages))
        return {(r["template_name"], r["language"]): Template(**dict(r)) for r in rows}

    async def _send_one(self, touch_id: UUID, prepared: PreparedTouch, deadline: float) -> Outcome:
        if prepared.dry_run:
            return sent(touch_id, prepared, None)
        provider = self.providers.get(prepared.message.channel)
        if provider is None:
            failure = TouchFailure("provider_not_configured",
                                   f"no credentials for the {prepared.message.channel} provider "
                                   f"({prepared.provider}); set them in the environment")
            return failed(touch_id, failure, self._secrets, prepared.provider)
        try:
            result = await provider.send(prepared.message, deadline=deadline)
        except ProviderError as error:
            return failed(touch_id, error, self._secrets, prepared.provider)
        except Exception as exc:  # a driver bug must fail one touch, not the batch
            log.exception("provider %s raised unexpectedly for touch %s", prepared.provider, touch_id)
            return failed(touch_id, TouchFailure("provider_error", f"{type(exc).__name__}", "transient"),
                          self._secrets, prepared.provider)
        return sent(touch_id, prepared, result.provider_message_id)


def monotonic() -> float:
    return time.monotonic()
