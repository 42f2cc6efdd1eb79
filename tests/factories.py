"""Rows for tests, inserted with plain SQL the way another program would (SPEC: SQL rows in)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg

FULL_PLAN: dict[str, Any] = {
    "order": ["voice", "whatsapp", "sms", "email"],
    "max_attempts": {"voice": 2, "whatsapp": 3, "sms": 2, "email": 3},
    "cooldown_minutes": {"voice": 0, "whatsapp": 0, "sms": 0, "email": 0},
}


async def account(conn: asyncpg.Connection, name: str = "Acme Dental", *, providers: bool = True) -> uuid.UUID:
    account_id: uuid.UUID = await conn.fetchval("insert into accounts (name) values ($1) returning id", name)
    if providers:
        await default_providers(conn, account_id)
    return account_id


async def default_providers(conn: asyncpg.Connection, account_id: uuid.UUID) -> None:
    rows = [
        ("voice", "twilio", {"from": "+15005550006"}),
        ("sms", "twilio", {"from": "+15005550006"}),
        ("whatsapp", "twilio", {"from": "whatsapp:+14155238886"}),
        ("email", "elasticemail", {"from_email": "hola@acme.test", "from_name": "Acme"}),
    ]
    for channel, provider, config in rows:
        await conn.execute(
            "insert into account_provider_settings (account_id, channel, provider, is_default, config)"
            " values ($1, $2, $3, true, $4)",
            account_id, channel, provider, config,
        )


async def lead(
    conn: asyncpg.Connection,
    account_id: uuid.UUID,
    *,
    full_name: str = "John Smith",
    phone: str | None = "+14155550123",
    email: str | None = "john@example.com",
    enriched_phone: str | None = None,
    enriched_email: str | None = None,
    first_name: str | None = None,
) -> uuid.UUID:
    lead_id: uuid.UUID = await conn.fetchval(
        "insert into leads (account_id, full_name, phone, email, timezone) values ($1, $2, $3, $4, 'UTC') returning id",
        account_id, full_name, phone, email,
    )
    if enriched_phone or enriched_email or first_name:
        await conn.execute(
            "insert into lead_enriched (lead_id, phone, email, first_name) values ($1, $2, $3, $4)",
            lead_id, enriched_phone, enriched_email, first_name,
        )
    return lead_id


# An approved WhatsApp template (SPEC §12): outside the 24 h session window, WhatsApp goes out only as one.
WHATSAPP_CONTENT_SID = "HX" + "0123456789abcdef" * 2


def payload(
    channel: str = "sms",
    *,
    body: str | None = "Hola {first_name}",
    plan: dict[str, Any] | None = None,
    expires_at: str | None = None,
    stop_on_events: list[str] | None = None,
    whatsapp_template: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    routing: dict[str, Any] = {"primary_channel": channel, "current_channel": channel}
    if plan is not None:
        routing["fallback"] = plan
    if expires_at is not None:
        routing["expires_at"] = expires_at
    if stop_on_events is not None:
        routing["stop_on_events"] = stop_on_events
    data: dict[str, Any] = {"message_class": "cold_outreach", "routing": routing,
                            "delivery": {"language": "es", "variables": {"first_name": "John"}}}
    if body is not None:
        data["delivery"]["body"] = body
    if whatsapp_template:
        data["delivery"]["channel_overrides"] = {
            "whatsapp": {"content_sid": WHATSAPP_CONTENT_SID, "content_variables": {"1": "John"}}}
    data.update(extra)
    return data


async def touch(
    conn: asyncpg.Connection,
    account_id: uuid.UUID,
    lead_id: uuid.UUID,
    *,
    channel: str = "sms",
    campaign_id: uuid.UUID | None = None,
    step: int = 1,
    status: str = "queued",
    scheduled_in_s: float = 0,
    payload_: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> uuid.UUID:
    touch_id: uuid.UUID = await conn.fetchval(
        """insert into touch_runs (account_id, lead_id, campaign_id, step, channel, status, scheduled_at, payload,
                                   idempotency_key)
           values ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7), $8, $9) returning id""",
        account_id, lead_id, campaign_id, step, channel, status, scheduled_in_s,
        payload_ if payload_ is not None else payload(channel), idempotency_key,
    )
    return touch_id


async def event(
    conn: asyncpg.Connection,
    lead_id: uuid.UUID,
    event_type: str,
    *,
    direction: str = "inbound",
    channel: str | None = None,
    payload_: dict[str, Any] | None = None,
    score_delta: int | None = None,
    created_ago_s: float = 0,
) -> uuid.UUID:
    event_id: uuid.UUID = await conn.fetchval(
        """insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload, score_delta,
                                           created_at)
           values ($1, $2, 'test', $3, $4, $5, $6, now() - make_interval(secs => $7)) returning id""",
        lead_id, event_type, channel, direction, payload_ or {}, score_delta, created_ago_s,
    )
    return event_id


def dumps(value: Any) -> str:
    return json.dumps(value)
