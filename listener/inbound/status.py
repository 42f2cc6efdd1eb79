"""What a provider's status callback means for a touch (SPEC §12's table), decided without I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import phonenumbers

from listener.rules.vocabulary import (
    DO_NOT_CONTACT,
    EMAIL_BOUNCED,
    EMAIL_CLICKED,
    EMAIL_OPENED,
    PERMANENT,
    TOUCH_DELIVERED,
    TOUCH_READ,
    TOUCH_UNDELIVERED,
    TRANSIENT,
    UNSUBSCRIBE,
)

# Twilio error codes after which the channel cannot reach the lead (invalid / unsubscribed / unreachable number,
# landline, WhatsApp outside the session window).
PERMANENT_TWILIO_CODES: Final = frozenset({"21211", "21610", "21614", "30003", "30005", "30006", "63016"})
# ElasticEmail Error categories that are hard bounces.
HARD_BOUNCE_CATEGORIES: Final = frozenset({"nomailbox", "blacklisted", "spam", "accountproblem", "dnsproblem"})

WHATSAPP_PREFIX = "whatsapp:"


@dataclass(frozen=True)
class StatusEffect:
    """delivery_status to move to (None = leave), the event to write (None = none), its direction and payload."""

    delivery_status: str | None
    event_type: str | None = None
    direction: str = "outbound"
    payload: dict[str, Any] = field(default_factory=dict)


def _failure(event_type: str, delivery_status: str, permanent: bool, payload: dict[str, Any]) -> StatusEffect:
    return StatusEffect(delivery_status, event_type,
                        payload={**payload, "failure_class": PERMANENT if permanent else TRANSIENT})


def twilio_message_status(status: str, error_code: str | None) -> StatusEffect:
    """A Messages StatusCallback: queued/sent/delivered/read/undelivered/failed (others are only recorded)."""
    payload: dict[str, Any] = {"provider_status": status}
    if error_code:
        payload["error_code"] = error_code
    if status in ("queued", "accepted", "scheduled", "sending"):
        return StatusEffect("queued", payload=payload)
    if status == "sent":
        return StatusEffect("sent", payload=payload)
    if status == "delivered":
        return StatusEffect("delivered", TOUCH_DELIVERED, payload=payload)
    if status == "read":
        return StatusEffect("read", TOUCH_READ, payload=payload)
    if status in ("undelivered", "failed"):
        return _failure(TOUCH_UNDELIVERED, status, error_code in PERMANENT_TWILIO_CODES, payload)
    return StatusEffect(None, payload=payload)


def twilio_call_status(status: str, answered_by: str | None, error_code: str | None) -> StatusEffect:
    """A Calls StatusCallback: initiated/ringing/answered (in-progress)/completed, or busy/no-answer/failed/canceled."""
    payload: dict[str, Any] = {"provider_status": status}
    if error_code:
        payload["error_code"] = error_code
    if answered_by:
        payload["answered_by"] = answered_by
    if status == "queued":
        return StatusEffect("queued", payload=payload)
    if status in ("initiated", "ringing"):
        return StatusEffect("sent", payload=payload)
    if status == "in-progress":
        return StatusEffect("delivered", payload=payload)
    if status == "completed":
        return StatusEffect("delivered", TOUCH_DELIVERED, payload=payload)
    if status in ("busy", "no-answer", "failed", "canceled"):
        return _failure(TOUCH_UNDELIVERED, "failed" if status == "failed" else "undelivered",
                        error_code in PERMANENT_TWILIO_CODES, payload)
    return StatusEffect(None, payload=payload)


def elasticemail_status(status: str, category: str | None) -> StatusEffect:
    """An ElasticEmail notification: Sent / Opened / Clicked (engagement), Error (bounce), Unsubscribed,
    AbuseReport (suppression)."""
    payload: dict[str, Any] = {"provider_status": status}
    if category:
        payload["category"] = category
    kind = status.strip().lower()
    if kind == "sent":
        return StatusEffect("delivered", TOUCH_DELIVERED, payload=payload)
    if kind == "opened":
        return StatusEffect(None, EMAIL_OPENED, payload=payload)
    if kind == "clicked":
        return StatusEffect(None, EMAIL_CLICKED, payload=payload)
    if kind == "error":
        if (category or "").strip().lower() in HARD_BOUNCE_CATEGORIES:
            return _failure(EMAIL_BOUNCED, "undelivered", True, payload)
        return _failure(TOUCH_UNDELIVERED, "undelivered", False, payload)  # a soft bounce: no effect
    if kind == "unsubscribed":
        return StatusEffect(None, UNSUBSCRIBE, direction="inbound", payload=payload)
    if kind == "abusereport":
        return StatusEffect(None, DO_NOT_CONTACT, direction="inbound", payload=payload)
    return StatusEffect(None, payload=payload)


def strip_whatsapp(number: str) -> str:
    value = number.strip()
    return value[len(WHATSAPP_PREFIX):] if value.lower().startswith(WHATSAPP_PREFIX) else value


def digits(number: str) -> str:
    return "".join(ch for ch in number if ch.isdigit())


def phone_candidates(number: str, default_region: str) -> list[str]:
    """The digit strings a lead's stored phone may have for ``number``: its E.164 digits and, when it parses, its
    national significant number (a lead stored as "(415) 555-0123" matches +14155550123)."""
    value = strip_whatsapp(number)
    found = [digits(value)]
    try:
        parsed = phonenumbers.parse(value, None if value.startswith("+") else default_region)
    except phonenumbers.NumberParseException:
        return [d for d in found if d]
    found.append(digits(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)))
    found.append(str(parsed.national_number))
    return sorted({d for d in found if d})
