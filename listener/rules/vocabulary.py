"""One vocabulary for the whole daemon: channels, providers, statuses and event types (SPEC §3, §4, §12–§15).
SQL spells the same names; `tests/test_vocabulary.py` checks them against the schema's check constraints."""

from __future__ import annotations

from typing import Final, Literal

Channel = Literal["voice", "whatsapp", "sms", "email"]
CHANNELS: Final[tuple[Channel, ...]] = ("voice", "whatsapp", "sms", "email")
PHONE_CHANNELS: Final[frozenset[str]] = frozenset({"voice", "whatsapp", "sms"})
MESSAGE_CHANNELS: Final[frozenset[str]] = frozenset({"whatsapp", "sms"})  # Twilio Messages API

PROVIDER_FOR_CHANNEL: Final[dict[str, str]] = {
    "voice": "twilio", "whatsapp": "twilio", "sms": "twilio", "email": "elasticemail"}

# touch_runs.status
QUEUED, SCHEDULED, PROCESSING, SENT, FAILED, CANCELED = "queued", "scheduled", "processing", "sent", "failed", "canceled"
TOUCH_STATUSES: Final = (QUEUED, SCHEDULED, PROCESSING, SENT, FAILED, CANCELED)
OPEN_STATUSES: Final = (QUEUED, SCHEDULED, PROCESSING)
TERMINAL_STATUSES: Final = (SENT, FAILED, CANCELED)

# touch_runs.delivery_status (§12): only moves forward, in this order ('failed' ranks with 'undelivered')
DELIVERY_STATUSES: Final = ("queued", "sent", "delivered", "read", "undelivered", "failed")

# campaign_leads.status and campaigns.status
CAMPAIGN_LEAD_STATUSES: Final = ("active", "paused", "completed", "stopped")
CAMPAIGN_STATUSES: Final = ("active", "paused", "archived")

# failure_class of touch_failed
TRANSIENT, PERMANENT = "transient", "permanent"

# core_memory_events.event_type — written by the daemon
TOUCH_SCHEDULED = "touch_scheduled"
TOUCH_SENT = "touch_sent"
TOUCH_FAILED = "touch_failed"
TOUCH_CANCELED = "touch_canceled"
TOUCH_DEFERRED = "touch_deferred"
TOUCH_RECONCILED = "touch_reconciled"
FALLBACK_DECISION = "fallback_decision"
REACTIVATION_CREATED = "reactivation_created"
CADENCE_COMPLETED = "cadence_completed"
CADENCE_STOPPED = "cadence_stopped"
# delivery and engagement (§12)
TOUCH_DELIVERED = "touch_delivered"
TOUCH_READ = "touch_read"
TOUCH_UNDELIVERED = "touch_undelivered"
EMAIL_OPENED = "email_opened"
EMAIL_CLICKED = "email_clicked"
EMAIL_BOUNCED = "email_bounced"
REPLY_RECEIVED = "reply_received"
RESUBSCRIBE = "resubscribe"
# enrichment and appointments (§15)
LEAD_ENRICHED = "lead_enriched"
APPOINTMENT_RESCHEDULED = "appointment_rescheduled"
APPOINTMENT_CANCELED = "appointment_canceled"
APPOINTMENT_UPDATED = "appointment_updated"  # a booked appointment's location changed (beside SPEC §15)
# written by other systems (inbound) and acted on at once
REPLY_POSITIVE = "reply_positive"
REPLY_NEGATIVE = "reply_negative"
APPOINTMENT_BOOKED = "appointment_booked"
DO_NOT_CONTACT = "do_not_contact"
UNSUBSCRIBE = "unsubscribe"
# out-of-office replies (§19): not a stop event, a pause
REPLY_OUT_OF_OFFICE = "reply_out_of_office"

DEFAULT_STOP_EVENTS: Final[tuple[str, ...]] = (REPLY_POSITIVE, APPOINTMENT_BOOKED, DO_NOT_CONTACT)
SUPPRESSION_EVENTS: Final[tuple[str, ...]] = (DO_NOT_CONTACT, UNSUBSCRIBE)
INBOUND_STOP_TYPES: Final[tuple[str, ...]] = (REPLY_POSITIVE, REPLY_NEGATIVE, APPOINTMENT_BOOKED, DO_NOT_CONTACT,
                                              UNSUBSCRIBE)

# touch_deferred.reason (§13)
DEFERRAL_REASONS: Final = ("quiet_hours", "send_window", "holiday", "sender_cap", "lead_cap", "out_of_office")
# event_source of the one-click unsubscribe (§19)
ONE_CLICK = "one_click"
