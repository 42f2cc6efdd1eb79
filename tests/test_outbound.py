"""prepare_outbound: from a claimed touch to the message a provider sends (SPEC §5, §6)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from listener.engine.outbound import PreparedTouch, TouchContext, prepare_outbound
from listener.rules.errors import TouchFailure
from listener.rules.messages import Template
from listener.rules.payload import parse_payload
from listener.settings import Settings, load_settings

TEMPLATES = {
    ("intro", "es"): Template("intro", "es", None, "Hola {first_name}", "Hola {first_name}, soy de {company_name}"),
}

PHONE_CONFIG = {"from": "+14155550199", "messaging_service_sid": "MG42"}
EMAIL_CONFIG = {"from_email": "ventas@acme.test", "from_name": "Acme Ventas"}


def settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"dry_run": False, "qa_sink_phone": None, "qa_sink_email": None, "default_region": "US"}
    return load_settings(**{**base, **overrides})


def context(channel: str = "sms", **fields: Any) -> TouchContext:
    defaults: dict[str, Any] = {
        "id": uuid4(),
        "account_id": uuid4(),
        "lead_id": uuid4(),
        "campaign_id": uuid4(),
        "step": 1,
        "channel": channel,
        "payload": {},
        "lead_phone": "(415) 555-2671",
        "lead_email": "Ana@Example.COM",
        "first_name": "Ana",
        "full_name": "Ana Díaz",
        "company_name": "Acme",
        "provider_name": "elasticemail" if channel == "email" else "twilio",
        "provider_config": EMAIL_CONFIG if channel == "email" else PHONE_CONFIG,
        # the lead wrote on WhatsApp an hour ago: free-form WhatsApp is allowed (SPEC §12, tests/test_whatsapp_window.py)
        "last_whatsapp_reply_at": datetime.now(UTC) - timedelta(hours=1),
    }
    return TouchContext(**{**defaults, **fields})


def prepare(ctx: TouchContext, payload: dict[str, Any] | None = None, **settings_overrides: Any) -> PreparedTouch:
    raw = payload if payload is not None else {"delivery": {"template_key": "intro"}}
    return prepare_outbound(ctx, parse_payload(raw), TEMPLATES, settings(**settings_overrides))


@pytest.mark.parametrize("channel", ["sms", "whatsapp", "voice"])
def test_phone_channels(channel: str) -> None:
    ctx = context(channel)
    prepared = prepare(ctx)

    m = prepared.message
    assert (m.touch_run_id, m.channel, m.to, m.sender) == (ctx.id, channel, "+14155552671", "+14155550199")
    assert m.messaging_service_sid == "MG42" and m.subject is None
    assert (m.body, m.language) == ("Hola Ana, soy de Acme", "es")
    assert prepared.real_recipient == "+14155552671"
    assert (prepared.provider, prepared.provider_config, prepared.dry_run) == ("twilio", PHONE_CONFIG, False)


def test_whatsapp_recipient_has_no_prefix() -> None:
    prepared = prepare(context("whatsapp", lead_phone="whatsapp:+34 612 34 56 78"))
    assert prepared.message.to == "+34612345678"


def test_email() -> None:
    ctx = context("email")
    prepared = prepare(ctx)

    m = prepared.message
    assert (m.channel, m.to, m.sender, m.sender_name) == ("email", "Ana@example.com", "ventas@acme.test", "Acme Ventas")
    assert (m.subject, m.body) == ("Hola Ana", "Hola Ana, soy de Acme")
    assert m.messaging_service_sid is None
    assert (prepared.provider, prepared.real_recipient) == ("elasticemail", "Ana@example.com")


def test_email_subject_override() -> None:
    payload = {"delivery": {"body": "Hola", "channel_overrides": {"email": {"subject": "Para {company_name}"}}}}
    assert prepare(context("email"), payload).message.subject == "Para Acme"


def test_region_reads_national_numbers() -> None:
    assert prepare(context("sms", lead_phone="612 34 56 78"), default_region="ES").message.to == "+34612345678"


def test_unknown_channel() -> None:
    with pytest.raises(TouchFailure) as info:
        prepare(context("fax", provider_name="twilio"))
    assert (info.value.error_code, info.value.failure_class) == ("unknown_channel", "permanent")


@pytest.mark.parametrize(
    ("channel", "fields", "code"),
    [
        ("sms", {"lead_phone": None}, "no_phone"),
        ("voice", {"lead_phone": "12"}, "invalid_phone"),
        ("whatsapp", {"lead_phone": ""}, "no_phone"),
        ("email", {"lead_email": None}, "no_email"),
        ("email", {"lead_email": "not-an-email"}, "invalid_email"),
    ],
)
def test_bad_contacts_fail_permanently(channel: str, fields: dict[str, Any], code: str) -> None:
    with pytest.raises(TouchFailure) as info:
        prepare(context(channel, **fields))
    assert (info.value.error_code, info.value.failure_class) == (code, "permanent")


def test_invalid_contact_fails_even_with_a_qa_sink() -> None:
    with pytest.raises(TouchFailure) as info:
        prepare(context("sms", lead_phone="12"), qa_sink_phone="+14155550100")
    assert info.value.error_code == "invalid_phone"


@pytest.mark.parametrize("channel", ["sms", "email"])
def test_missing_default_provider_row(channel: str) -> None:
    with pytest.raises(TouchFailure) as info:
        prepare(context(channel, provider_name=None, provider_config=None))
    assert (info.value.error_code, info.value.failure_class) == ("no_default_provider", "permanent")
    assert info.value.error == f"account has no default account_provider_settings row for channel {channel}"


def test_provider_row_for_the_wrong_provider() -> None:
    with pytest.raises(TouchFailure) as info:
        prepare(context("email", provider_name="twilio"))
    assert info.value.error_code == "unsupported_provider"


def test_forced_provider_must_match_the_channel() -> None:
    payload = {"message": "x", "provider": {"forced_provider": "elasticemail"}}
    with pytest.raises(TouchFailure) as info:
        prepare(context("sms"), payload)
    assert info.value.error_code == "unsupported_provider"
    ok = {"message": "x", "provider": {"forced_provider": "twilio"}}
    assert prepare(context("sms"), ok).provider == "twilio"


@pytest.mark.parametrize(("channel", "forced"), [("sms", "+14155550111"), ("whatsapp", "whatsapp:+14155550111"),
                                                 ("email", "otro@acme.test")])
def test_forced_sender_wins(channel: str, forced: str) -> None:
    payload = {"message": "Hola", "provider": {"forced_provider": None, "forced_sender_id": forced}}
    assert prepare(context(channel), payload).message.sender == forced


def test_no_sender_in_config_leaves_it_to_the_provider() -> None:
    prepared = prepare(context("sms", provider_config={"messaging_service_sid": "MG42"}))
    assert prepared.message.sender is None and prepared.message.messaging_service_sid == "MG42"
    prepared = prepare(context("voice", provider_config=None))
    assert prepared.message.sender is None and prepared.provider_config == {}


@pytest.mark.parametrize("channel", ["sms", "whatsapp", "voice"])
def test_qa_sink_phone(channel: str) -> None:
    prepared = prepare(context(channel), qa_sink_phone="+1 415 555 0100")
    assert prepared.message.to == "+14155550100"
    assert prepared.real_recipient == "+14155552671"


def test_qa_sink_phone_does_not_touch_email() -> None:
    prepared = prepare(context("email"), qa_sink_phone="+14155550100")
    assert prepared.message.to == "Ana@example.com"


def test_qa_sink_email() -> None:
    prepared = prepare(context("email"), qa_sink_email="qa@acme.test")
    assert (prepared.message.to, prepared.real_recipient) == ("qa@acme.test", "Ana@example.com")
    assert prepare(context("sms"), qa_sink_email="qa@acme.test").message.to == "+14155552671"


@pytest.mark.parametrize(
    ("payload", "setting", "expected"),
    [
        ({"message": "x"}, False, False),
        ({"message": "x"}, True, True),
        ({"message": "x", "meta": {"dry_run": True}}, False, True),
        ({"message": "x", "dry_run": True}, False, True),
        ({"message": "x", "meta": {"dry_run": False}, "dry_run": False}, True, True),
    ],
)
def test_dry_run_flags(payload: dict[str, Any], setting: bool, expected: bool) -> None:
    assert prepare(context("sms"), payload, dry_run=setting).dry_run is expected


def test_literal_text_and_language() -> None:
    payload = {"message": "Hi {first_name}", "delivery": {"language": "en"}}
    m = prepare(context("voice"), payload).message
    assert (m.body, m.language) == ("Hi Ana", "en")


def test_first_name_falls_back_to_full_name() -> None:
    assert prepare(context("sms", first_name=None), {"message": "Hola {first_name}"}).message.body == "Hola Ana"


def test_delivery_variables_override_the_lead() -> None:
    payload = {"message": "Hola {first_name}", "delivery": {"variables": {"first_name": "Anita"}}}
    assert prepare(context("sms"), payload).message.body == "Hola Anita"


def test_missing_variable_and_template_fail() -> None:
    with pytest.raises(TouchFailure) as info:
        prepare(context("sms", company_name=None))
    assert info.value.error_code == "missing_variable"
    with pytest.raises(TouchFailure) as info:
        prepare(context("sms"), {"delivery": {"template_key": "intro", "language": "en"}})
    assert info.value.error_code == "template_not_found"
    with pytest.raises(TouchFailure) as info:
        prepare(context("sms"), {})
    assert info.value.error_code == "no_message"
