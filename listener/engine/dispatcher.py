"""Dispatch (SPEC §6, §11): claim with context → send, each touch on its own → the completer writes the outcome.
Replaces dispatch-touch, dispatch-touch-email and dispatch-touch-whatsapp and their crons.

* One statement claims a batch (status processing + lease, SKIP LOCKED) and reads, on its fresh snapshot, all the
  batch needs to be sent and every reason not to send it (suppression, stop events, expiry, reachability). It
  commits before any provider call, so a crash after it can never lead to a second send: the sweep turns an
  expired lease into failed / outcome_unknown.
* Each touch then goes through its own task: no database transaction is open across a provider call, and a slow
  or hanging send holds one slot — its own — while the claim refills every other slot as it frees up.
* Each outcome is handed to the completer the moment its provider call ends; status and event are written
  together, in small batches (listener/engine/completer.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Protocol
from uuid import UUID

import asyncpg
import orjson

from listener.engine import metrics
from listener.engine.completer import Completer, Outcome
from listener.engine.outbound import PreparedTouch, TouchContext, prepare_outbound
from listener.engine.sendcaps import Gate, send_rules_gate
from listener.providers.base import BEFORE_RETRY, ON_PUSHBACK, Provider
from listener.rules import safejson
from listener.rules.errors import ProviderError, TouchFailure
from listener.rules.messages import Template, template_key_for
from listener.rules.payload import TouchPayload, parse_payload
from listener.rules.sendrules import OUT_OF_OFFICE, Deferral
from listener.rules.text import clean_text
from listener.settings import Settings
from listener.store.queries import Q

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class ClaimedTouch:
    """One row of `claim_touches_with_context`: a leased touch, its lead, its provider row, its reasons not to go."""

    id: UUID
    account_id: UUID
    lead_id: UUID
    campaign_id: UUID | None
    step: int
    channel: str
    payload_json: str | None
    lead_phone: str | None
    lead_email: str | None
    first_name: str | None
    full_name: str | None
    company_name: str | None
    provider_name: str | None
    provider_config_json: str | None
    is_unsubscribed: bool
    in_negative_cooldown: bool
    suppression_reason: str | None
    stop_event: str | None
    checked_at: datetime
    last_whatsapp_reply_at: datetime | None = None  # the lead's last inbound WhatsApp message (SPEC §12)
    provider_settings_id: UUID | None = None
    lead_timezone: str | None = None
    enriched_timezone: str | None = None
    more_due: bool = False  # its sender gave its whole quota to this claim: more of it may be due (SPEC §16)
    claim_turn: int = 1  # the round of the claim's round robin that took it
    served_before: bool = False  # its sender came at or before the claim's cursor
    pause_resume_at: datetime | None = None  # SPEC §19: its lead is out of office until then
    pause_timezone: str | None = None

    @property
    def sender(self) -> tuple[UUID, str]:
        """The fairness unit: (account, channel), whose default settings row is the sender."""
        return (self.account_id, self.channel)

    @cached_property
    def provider_config(self) -> dict[str, Any]:
        """account_provider_settings.config, decoded once; TouchFailure when it is not a JSON object."""
        return _config(self.provider_config_json)

    @classmethod
    def from_record(cls, row: asyncpg.Record) -> ClaimedTouch:
        return cls(**dict(row.items()))


def decode_json(text: str | None, what: str) -> Any:
    """A jsonb value read as text: decoded here, per row, so a hostile value is that row's failure."""
    if text is None:
        return None
    if len(text) > safejson.MAX_JSON_CHARS:  # the same bounds as every other JSON the daemon reads
        raise TouchFailure("invalid_payload", f"{what} is larger than {safejson.MAX_JSON_CHARS // 1024} KiB")
    try:
        return orjson.loads(text)
    except ValueError as exc:  # orjson: too deep (1,024 levels), a number out of range, bad text
        raise TouchFailure("invalid_payload", f"{what} cannot be read: {clean_text(str(exc))[:120]}") from None


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
    error = clean_text(error)
    payload: dict[str, Any] = {"error_code": clean_text(failure.error_code), "error": error,
                               "failure_class": failure.failure_class}
    if provider:
        payload["provider"] = provider
    return Outcome(touch_id, "failed", "touch_failed", payload, error=f"{payload['error_code']}: {error}")


def canceled(touch_id: UUID, reason: str) -> Outcome:
    return Outcome(touch_id, "canceled", "touch_canceled", {"reason": reason}, error=f"canceled: {reason}")


class StopState(Protocol):
    @property
    def is_unsubscribed(self) -> bool: ...

    @property
    def in_negative_cooldown(self) -> bool: ...

    @property
    def suppression_reason(self) -> str | None: ...

    @property
    def stop_event(self) -> str | None: ...


@dataclass(frozen=True)
class RecheckedStop:
    is_unsubscribed: bool
    in_negative_cooldown: bool
    suppression_reason: str | None
    stop_event: str | None


class SendStopped(Exception):
    """A retry found that the touch may no longer go; the send ends with a cancel, not a failure."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def stop_reason(state: StopState) -> str | None:
    if state.is_unsubscribed or state.in_negative_cooldown:
        return f"suppressed:{state.suppression_reason}"
    if state.stop_event:
        return f"stop_event:{state.stop_event}"
    return None


def cancel_reason(touch: ClaimedTouch, payload: TouchPayload | None, now: datetime) -> str | None:
    if (reason := stop_reason(touch)) is not None:
        return reason
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
    deferred: int = 0
    pushbacks: int = 0  # 429s that slowed a sender (SPEC §16)
    by_error: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: Outcome) -> None:
        setattr(self, outcome.status, getattr(self, outcome.status) + 1)
        if outcome.status == "failed":
            code = str(outcome.event_payload.get("error_code"))
            self.by_error[code] = self.by_error.get(code, 0) + 1


Ready = tuple[ClaimedTouch, dict[str, Any], TouchPayload]


async def _write_deferrals(conn: asyncpg.Connection, deferrals: Sequence[Deferral], worker_id: str) -> None:
    """Back to `scheduled` at each one's next moment, with its touch_deferred event: one statement for the batch."""
    if deferrals:
        await conn.execute(Q.defer_touches, [d.as_row() for d in deferrals], worker_id)


def _has_cap(row: Mapping[str, Any]) -> bool:
    routing = row["payload"].get("routing") if isinstance(row["payload"], dict) else None
    return "daily_cap" in row["provider_config"] or (isinstance(routing, dict) and "max_touches_per_day" in routing)


class Dispatcher:
    """Claims, decides and sends; slots are counted per touch (REVENUE_ASI_CONCURRENCY of them)."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings, providers: Mapping[str, Provider | None],
                 worker_id: str, completer: Completer) -> None:
        self.pool = pool
        self.settings = settings
        self.providers = providers
        self.worker_id = worker_id
        self.completer = completer
        self.stats = DispatchStats()
        self.in_flight = 0
        self.slot_freed = asyncio.Event()
        self.sends: set[asyncio.Task[None]] = set()
        self._undecided: set[UUID] = set()
        # touch id → epoch seconds of its claim's check (the latest 10,000): the start of the stop window, which runs
        # to the provider call (README, tests/test_stop_window.py; metric revenue_asi_stop_window_seconds)
        self.checked_at: dict[str, float] = {}
        self._secrets = settings.secrets()
        # the sender this daemon's claims served last: the next claim's round robin starts after it (SPEC §16)
        self.cursor: tuple[UUID, str] | None = None
        self.more_due = False  # the last claim left more due touches of a sender that gave its whole quota

    @property
    def free_slots(self) -> int:
        return self.settings.concurrency - self.in_flight

    async def claim(self, limit: int) -> list[ClaimedTouch]:
        cursor_account, cursor_channel = self.cursor if self.cursor is not None else (None, None)
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(Q.claim_touches_with_context, self.worker_id, self.settings.lease_s, limit,
                                    cursor_account, cursor_channel)
        self.stats.claimed += len(rows)
        touches = [ClaimedTouch.from_record(r) for r in rows]
        self.more_due = any(t.more_due for t in touches)
        if touches:  # the last sender in the claim's round-robin order
            last = max(touches, key=lambda t: (t.claim_turn, t.served_before, t.account_id.bytes, t.channel))
            self.cursor = last.sender
        return touches

    async def claim_and_start(self, limit: int) -> int:
        """Claim up to `limit` due touches and start each one's send; returns how many were claimed."""
        touches = await self.claim(limit)
        if touches:
            await self.start(touches, time.monotonic())
        return len(touches)

    async def start(self, touches: Sequence[ClaimedTouch], claimed_at: float) -> None:
        """Decide each claimed touch; the ones that may go get a send task, the others an outcome at once. Whatever
        goes wrong here fails the touches not yet decided (no provider was called), never the loop."""
        self._take_slots(len(touches))
        self._undecided = {t.id for t in touches}
        try:
            await self._start(touches, claimed_at)
        except Exception as exc:
            log.exception("dispatch: deciding a batch of %d failed; its undecided touches fail", len(touches))
            failure = TouchFailure("dispatch_error", f"{type(exc).__name__}: {clean_text(str(exc))[:200]}",
                                   "transient")
            for touch_id in list(self._undecided):
                self._done(failed(touch_id, failure, self._secrets))
        finally:
            self._undecided = set()

    async def _start(self, touches: Sequence[ClaimedTouch], claimed_at: float) -> None:
        deadline = claimed_at + self.settings.lease_s * 0.8
        now = datetime.now(UTC)
        ready: list[Ready] = []
        for touch in touches:
            try:
                raw = decode_json(touch.payload_json, "payload")
                payload = parse_payload(raw)
            except TouchFailure as failure:
                reason = cancel_reason(touch, None, now)
                self._done(canceled(touch.id, reason) if reason else failed(touch.id, failure, self._secrets))
                continue
            reason = cancel_reason(touch, payload, now)
            if reason:
                self._done(canceled(touch.id, reason))
            else:
                ready.append((touch, raw or {}, payload))
        if ready:
            ready = await self._apply_sending_rules(ready, now)
        templates = await self._templates_for(ready) if ready else {}
        for touch, raw, payload in ready:
            try:
                context = TouchContext.model_construct(
                    id=touch.id, account_id=touch.account_id, lead_id=touch.lead_id, campaign_id=touch.campaign_id,
                    step=touch.step, channel=touch.channel, payload=raw,
                    lead_phone=touch.lead_phone, lead_email=touch.lead_email, first_name=touch.first_name,
                    full_name=touch.full_name, company_name=touch.company_name, provider_name=touch.provider_name,
                    provider_config=touch.provider_config,
                    last_whatsapp_reply_at=touch.last_whatsapp_reply_at)
                prepared = prepare_outbound(context, payload, templates, self.settings)
            except TouchFailure as failure:
                self._done(failed(touch.id, failure, self._secrets))
                continue
            self._undecided.discard(touch.id)
            task = asyncio.create_task(self._send(touch, prepared, deadline))
            self.sends.add(task)
            task.add_done_callback(self.sends.discard)

    async def _apply_sending_rules(self, ready: list[Ready], now: datetime) -> list[Ready]:
        """SPEC §13 on the claim's snapshot, before any provider call: a touch outside its window, on a holiday or
        over a cap goes back to `scheduled` at its next allowed moment (one touch_deferred event); bad rules fail it.
        First of all, a touch of a lead paused out of office (SPEC §19) goes back to `scheduled` at the pause's
        resume moment (reason out_of_office), where the rules here are checked again.
        Caps are decided in the database under per-sender / per-lead advisory locks (listener/engine/sendcaps.py), in one
        short transaction that commits before the sends start; touches without caps take no lock and no query."""
        paused = [Deferral(touch.id, OUT_OF_OFFICE, touch.pause_resume_at, touch.pause_timezone or "UTC")
                  for touch, _, _ in ready if touch.pause_resume_at is not None and touch.pause_resume_at > now]
        held = {d.touch_id for d in paused}
        ready = [item for item in ready if item[0].id not in held]  # out of office: before any other rule or cap
        rows = []
        for touch, raw, _ in ready:
            try:
                config = touch.provider_config
            except TouchFailure:  # the touch fails on it when it is prepared
                config = {}
            rows.append(({"id": touch.id, "channel": touch.channel, "lead_id": touch.lead_id, "payload": raw,
                          "lead_timezone": touch.lead_timezone, "enriched_timezone": touch.enriched_timezone,
                          "lead_phone": touch.lead_phone, "provider_settings_id": touch.provider_settings_id,
                          "provider_config": config}, (touch, raw)))
        batch_ids = [touch.id for touch, _, _ in ready]
        gate = Gate()
        if any(_has_cap(row) for row, _ in rows):
            async with self.pool.acquire() as conn, conn.transaction():
                gate = await send_rules_gate(conn, rows, now, self.settings, batch_ids)
                await _write_deferrals(conn, paused + gate.deferrals, self.worker_id)
        else:
            if rows:
                gate = await send_rules_gate(None, rows, now, self.settings, batch_ids)  # type: ignore[arg-type]
            if paused or gate.deferrals:
                async with self.pool.acquire() as conn:
                    await _write_deferrals(conn, paused + gate.deferrals, self.worker_id)
        for touch_id, failure in gate.failures:
            self._done(failed(touch_id, failure, self._secrets))
        for deferral in (*paused, *gate.deferrals):
            self._undecided.discard(deferral.touch_id)
            self._free_slot()
        self.stats.deferred += len(paused) + len(gate.deferrals)
        kept = {pair[0].id for _, pair in gate.kept}
        return [item for item in ready if item[0].id in kept]

    def _take_slots(self, n: int) -> None:
        self.in_flight += n
        metrics.IN_FLIGHT.inc(n)

    def _done(self, outcome: Outcome) -> None:
        """Hand one outcome to the completer and free its slot."""
        self._undecided.discard(outcome.id)
        self.completer.put(outcome)
        self.stats.count(outcome)
        self._free_slot()

    def _free_slot(self) -> None:
        self.in_flight -= 1
        metrics.IN_FLIGHT.dec()
        self.slot_freed.set()

    async def _templates_for(self, ready: Sequence[tuple[ClaimedTouch, dict[str, Any], TouchPayload]],
                             ) -> dict[tuple[str, str], Template]:
        keys = {key for touch, _, payload in ready if (key := template_key_for(payload, touch.channel)) is not None}
        if not keys:
            return {}
        names, languages = zip(*keys, strict=True)
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(Q.templates_by_key, list(names), list(languages))
        return {(r["template_name"], r["language"]): Template(**dict(r)) for r in rows}

    async def _send(self, touch: ClaimedTouch, prepared: PreparedTouch, deadline: float) -> None:
        try:
            outcome = await self._send_one(touch, prepared, deadline)
        except asyncio.CancelledError:  # shutdown past its grace: the lease settles this touch
            self._free_slot()
            raise
        self._done(outcome)

    async def _send_one(self, touch: ClaimedTouch, prepared: PreparedTouch, deadline: float) -> Outcome:
        touch_id = touch.id
        if prepared.dry_run:
            return sent(touch_id, prepared, None)
        provider = self.providers.get(prepared.message.channel)
        if provider is None:
            failure = TouchFailure("provider_not_configured",
                                   f"no credentials for the {prepared.message.channel} provider "
                                   f"({prepared.provider}); set them in the environment")
            return failed(touch_id, failure, self._secrets, prepared.provider)
        BEFORE_RETRY.set(lambda: self._recheck(touch_id))  # this task's own context
        if self.settings.provider_pushback:
            ON_PUSHBACK.set(lambda error: self._pushback(touch))
        checked = touch.checked_at.timestamp()
        if len(self.checked_at) >= 10_000:
            self.checked_at.pop(next(iter(self.checked_at)))
        self.checked_at[str(touch_id)] = checked
        metrics.STOP_WINDOW.observe(time.time() - checked)
        try:
            result = await provider.send(prepared.message, deadline=deadline)
        except SendStopped as stopped:
            return canceled(touch_id, stopped.reason)
        except ProviderError as error:
            return failed(touch_id, error, self._secrets, prepared.provider)
        except Exception as exc:  # a driver bug must fail one touch, not the loop
            log.exception("provider %s raised unexpectedly for touch %s", prepared.provider, touch_id)
            return failed(touch_id, TouchFailure("provider_error", f"{type(exc).__name__}", "transient"),
                          self._secrets, prepared.provider)
        return sent(touch_id, prepared, clean_text(result.provider_message_id) or None)

    async def _pushback(self, touch: ClaimedTouch) -> None:
        """A 429 from the touch's sender: halve its effective rate for 60 s, for every daemon (SPEC §16)."""
        if touch.provider_settings_id is None:
            return
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q.sender_pushback, touch.provider_settings_id, touch.account_id, touch.channel)
        self.stats.pushbacks += 1
        if row is not None:
            log.info("sender %s answered 429: paced at %.2f/s until %s", touch.provider_settings_id,
                     row["pushback_rate"], row["pushback_until"])

    async def _recheck(self, touch_id: UUID) -> None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q.touch_stop_reason, touch_id)
        if row is not None and (reason := stop_reason(RecheckedStop(**dict(row.items())))) is not None:
            raise SendStopped(reason)

    async def drain(self, limit: int | None = None) -> None:
        """Claim and send until nothing is due (or `limit` touches were claimed), then wait for every send and
        every outcome to be written: `revenue-asi tick sweep`, where no daemon runs."""
        remaining = limit
        while remaining is None or remaining > 0:
            while self.free_slots <= 0:
                self.slot_freed.clear()
                await self.slot_freed.wait()
            want = min(self.free_slots, self.settings.claim_batch)
            claimed = await self.claim_and_start(want if remaining is None else min(want, remaining))
            if not claimed:
                break
            if remaining is not None:
                remaining -= claimed
        if self.sends:
            await asyncio.wait(set(self.sends))
        await self.completer.wait_idle()


def _config(text: str | None) -> dict[str, Any]:
    value = decode_json(text, "account_provider_settings.config")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TouchFailure("invalid_provider_config", "account_provider_settings.config must be a JSON object")
    return value
