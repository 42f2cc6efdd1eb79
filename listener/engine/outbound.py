"""From a claimed touch to the message a provider sends (SPEC §3, §5, §6): recipient, sender, text,
QA sinks and dry-run, decided without any I/O."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from listener.providers.base import PROVIDER_FOR_CHANNEL, OutboundMessage
from listener.providers.elasticemail import email_header_problem
from listener.rules.contacts import normalise_email, normalise_phone
from listener.rules.errors import TouchFailure
from listener.rules.messages import Template, render_message
from listener.rules.payload import ProviderChoice, TouchPayload
from listener.rules.unsubscribe import list_unsubscribe_headers, unsubscribe_url
from listener.rules.vocabulary import CHANNELS, PHONE_CHANNELS, Channel
from listener.settings import Settings


class TouchContext(BaseModel):
    """A claimed touch joined with its lead and the account's default provider row."""

    id: UUID
    account_id: UUID
    lead_id: UUID
    campaign_id: UUID | None = None
    step: int = 1
    channel: str
    payload: dict[str, Any]
    lead_phone: str | None = None  # lead_enriched first, then leads (the SQL does it)
    lead_email: str | None = None
    first_name: str | None = None
    full_name: str | None = None
    company_name: str | None = None
    provider_name: str | None = None  # default account_provider_settings.provider; None = no row
    provider_config: dict[str, Any] | None = None
    last_whatsapp_reply_at: datetime | None = None  # the lead's last inbound WhatsApp message (SPEC §12)


WHATSAPP_SESSION = timedelta(hours=24)
_CONTENT_SID = re.compile(r"HX[0-9a-fA-F]{32}")


class PreparedTouch(BaseModel):
    model_config = ConfigDict(frozen=True)

    message: OutboundMessage
    real_recipient: str  # before the QA sink
    provider: str
    provider_config: dict[str, Any]
    dry_run: bool


def _config_str(config: Mapping[str, Any], key: str) -> str | None:
    value = config.get(key)
    return value.strip() or None if isinstance(value, str) else None


def base_variables(ctx: TouchContext) -> dict[str, object]:
    """Template variables from the lead; ``first_name`` falls back to the first word of ``full_name``."""
    first_name = ctx.first_name
    if not (first_name and first_name.strip()) and ctx.full_name and ctx.full_name.strip():
        first_name = ctx.full_name.split()[0]
    values = {"first_name": first_name, "full_name": ctx.full_name, "company_name": ctx.company_name}
    return {k: v for k, v in values.items() if v is not None}


def prepare_outbound(
    ctx: TouchContext,
    payload: TouchPayload,
    templates: Mapping[tuple[str, str], Template],
    settings: Settings,
    now: datetime | None = None,
) -> PreparedTouch:
    """Everything needed to send (or dry-run) ``ctx``; a TouchFailure (permanent) when it cannot be sent."""
    if ctx.channel not in CHANNELS:
        raise TouchFailure("unknown_channel", f"channel {ctx.channel!r} is not one of {', '.join(CHANNELS)}")
    channel: Channel = ctx.channel  # narrowed by the membership test above
    expected_provider = PROVIDER_FOR_CHANNEL[channel]

    if channel in PHONE_CHANNELS:
        real_recipient = normalise_phone(ctx.lead_phone, settings.default_region)
        recipient = settings.qa_sink_phone or real_recipient
    else:
        real_recipient = normalise_email(ctx.lead_email)
        recipient = settings.qa_sink_email or real_recipient

    if ctx.provider_name is None:
        raise TouchFailure(
            "no_default_provider", f"account has no default account_provider_settings row for channel {channel}"
        )
    forced = payload.provider.forced_provider if isinstance(payload.provider, ProviderChoice) else None
    for name, source in ((ctx.provider_name, "account_provider_settings"), (forced, "payload.provider.forced_provider")):
        if name is not None and name != expected_provider:
            raise TouchFailure(
                "unsupported_provider", f"{source} names {name!r}; channel {channel} is sent with {expected_provider}"
            )
    config = dict(ctx.provider_config or {})
    link = one_click_link(ctx, settings)
    system_variables = {"unsubscribe_url": link} if link else None

    template = None
    if channel == "whatsapp" and not in_whatsapp_session(ctx, now or datetime.now(UTC)):
        template = whatsapp_template(payload)
        if template is None:
            raise TouchFailure(
                "whatsapp_template_required",
                "free-form WhatsApp only within 24 h of the lead's last inbound WhatsApp message; outside it name an "
                "approved template in delivery.channel_overrides.whatsapp.content_sid",
            )
    if template is None:
        rendered = render_message(payload, channel, templates, base_variables(ctx), system_variables)
        body, language, subject = rendered.body, rendered.language, rendered.subject
    else:
        try:  # the template carries the text; a body, when there is one, is kept for the record
            rendered = render_message(payload, channel, templates, base_variables(ctx), system_variables)
            body, language = rendered.body, rendered.language
        except TouchFailure:
            body, language = "", (payload.delivery.language if payload.delivery and payload.delivery.language else "es")
        subject = None

    sender_key = "from_email" if channel == "email" else "from"
    sender = (payload.forced_sender_id or "").strip() or _config_str(config, sender_key)
    message = OutboundMessage(
        touch_run_id=ctx.id,
        channel=channel,
        to=recipient,
        sender=sender,
        sender_name=_config_str(config, "from_name"),
        messaging_service_sid=_config_str(config, "messaging_service_sid"),
        subject=subject if channel == "email" else None,
        body=body,
        language=language,
        voice=_config_str(config, "voice") if channel == "voice" else None,
        content_sid=template[0] if template else None,
        content_variables=template[1] if template else None,
        headers=list_unsubscribe_headers(link) if link and channel == "email" else {},
    )
    if channel == "email":  # refused before any request, dry runs included (SPEC §11)
        problem = email_header_problem(message)
        if problem is not None:
            raise TouchFailure(problem.error_code, problem.error, "permanent")
    return PreparedTouch(
        message=message,
        real_recipient=real_recipient,
        provider=expected_provider,
        provider_config=config,
        dry_run=settings.dry_run or payload.is_dry_run,
    )


def one_click_link(ctx: TouchContext, settings: Settings) -> str | None:
    """``{PUBLIC_URL}/u/{token}`` for this touch's lead, account and touch (SPEC §19), or None without a public URL.
    The same link goes in the e-mail's List-Unsubscribe header and, as ``{unsubscribe_url}``, in any template."""
    if not settings.one_click_unsubscribe:
        return None
    assert settings.public_url is not None and settings.unsubscribe_secret is not None
    return unsubscribe_url(settings.public_url, settings.unsubscribe_secret.get_secret_value(), ctx.lead_id,
                           ctx.account_id, ctx.id)


def in_whatsapp_session(ctx: TouchContext, now: datetime) -> bool:
    """Within 24 h of the lead's last inbound WhatsApp message: free-form text is allowed (SPEC §12)."""
    last = ctx.last_whatsapp_reply_at
    return last is not None and now - last < WHATSAPP_SESSION


def whatsapp_template(payload: TouchPayload) -> tuple[str, str | None] | None:
    """(ContentSid, ContentVariables as a JSON string) from delivery.channel_overrides.whatsapp, or None."""
    override = payload.delivery.channel_overrides.get("whatsapp") if payload.delivery else None
    if override is None or not override.content_sid or not override.content_sid.strip():
        return None
    sid = override.content_sid.strip()
    if not _CONTENT_SID.fullmatch(sid):
        raise TouchFailure("invalid_payload",
                           "delivery.channel_overrides.whatsapp.content_sid must be HX followed by 32 hex digits")
    variables = override.content_variables
    return sid, (json.dumps({k: str(v) for k, v in variables.items()}, ensure_ascii=False) if variables else None)
