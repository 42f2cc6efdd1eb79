"""Touch payload v2 (SPEC §5), as pydantic models. Unknown keys are kept; wrong shapes are refused with a
message naming the field, so a malformed payload fails its one touch clearly."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from listener.rules import safejson
from listener.rules.errors import TouchFailure
from listener.rules.vocabulary import DEFAULT_STOP_EVENTS, Channel


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Fallback(_Open):
    order: list[Channel]
    max_attempts: dict[str, int] = Field(default_factory=dict)
    cooldown_minutes: dict[str, float] = Field(default_factory=dict)

    @field_validator("max_attempts")
    @classmethod
    def _non_negative_attempts(cls, value: dict[str, int]) -> dict[str, int]:
        for channel, n in value.items():
            if n < 0:
                raise ValueError(f"max_attempts.{channel} must be >= 0")
        return value

    @field_validator("cooldown_minutes")
    @classmethod
    def _non_negative_cooldown(cls, value: dict[str, float]) -> dict[str, float]:
        for channel, n in value.items():
            if n < 0:
                raise ValueError(f"cooldown_minutes.{channel} must be >= 0")
        return value

    def attempts_allowed(self, channel: str) -> int:
        return int(self.max_attempts.get(channel, 1))

    def cooldown(self, channel: str) -> float:
        return float(self.cooldown_minutes.get(channel, 0))


class Routing(_Open):
    primary_channel: Channel | None = None
    current_channel: Channel | None = None
    fallback: Fallback | None = None
    stop_on_events: list[str] | None = None
    expires_at: datetime | None = None

    def stop_events(self) -> list[str]:
        return list(self.stop_on_events) if self.stop_on_events is not None else list(DEFAULT_STOP_EVENTS)


class ChannelOverride(_Open):
    subject: str | None = None
    template_name: str | None = None
    content_sid: str | None = None  # whatsapp: an approved template (Twilio ContentSid), SPEC §12
    content_variables: dict[str, Any] | None = None


class Delivery(_Open):
    template_key: str | None = None
    language: str | None = None
    body: str | None = None
    variables: dict[str, Any] = Field(default_factory=dict)
    channel_overrides: dict[str, ChannelOverride] = Field(default_factory=dict)


class ProviderChoice(_Open):
    forced_provider: str | None = None
    forced_sender_id: str | None = None


class Meta(_Open):
    dry_run: bool | None = None
    debug_tag: str | None = None
    created_by: str | None = None
    source: str | None = None


class TouchPayload(_Open):
    message_class: str | None = None
    campaign_id: str | None = None
    step: int | None = None
    routing: Routing | None = None
    delivery: Delivery | None = None
    # `provider` is the v2 provider choice on the way in; the dry-run contract overwrites it with the provider name.
    provider: ProviderChoice | str | None = None
    meta: Meta | None = None
    message: str | None = None
    body: str | None = None
    dry_run: bool | None = None

    @property
    def is_dry_run(self) -> bool:
        return bool(self.dry_run or (self.meta is not None and self.meta.dry_run))

    @property
    def forced_sender_id(self) -> str | None:
        return self.provider.forced_sender_id if isinstance(self.provider, ProviderChoice) else None


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "payload"
    return f"payload.{where}: {first['msg']}"


def parse_payload(raw: Any) -> TouchPayload:
    """Parse a touch payload; a wrong shape raises TouchFailure(invalid_payload) naming the field.

    JSON ``null``, an array, a scalar, or a value beyond the JSON bounds (listener.rules.safejson: nested too deep, too
    large, numbers too big) is ``invalid_payload`` too — the column is NOT NULL, so ``None`` here is JSON null."""
    reason = safejson.reason_if_invalid(raw)
    if reason is not None:
        raise TouchFailure("invalid_payload", f"payload: {reason}")
    if raw is None:
        raise TouchFailure("invalid_payload", "payload must be a JSON object, got null")
    if not isinstance(raw, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(type(raw), type(raw).__name__)
        raise TouchFailure("invalid_payload", f"payload must be a JSON object, got {kind}")
    problem = safejson.bounds_problem(raw)
    if problem is not None:
        raise TouchFailure("invalid_payload", f"payload: {problem}")
    try:
        return TouchPayload.model_validate(raw)
    except ValidationError as exc:
        raise TouchFailure("invalid_payload", _describe(exc)) from None
