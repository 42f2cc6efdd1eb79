"""The WhatsApp session window (SPEC §12): free-form only within 24 h of the lead's last inbound WhatsApp message,
else an approved template (ContentSid + ContentVariables), else whatsapp_template_required with no provider call."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from listener.engine.outbound import TouchContext, prepare_outbound
from listener.providers.base import OutboundMessage
from listener.providers.sandbox import SandboxProviders
from listener.providers.twilio import TwilioProvider
from listener.rules.errors import TouchFailure
from listener.rules.payload import parse_payload
from listener.settings import load_settings
from tests import factories
from tests.harness import daemon_settings, running_daemon, wait_terminal, wait_until
from tests.webhook_client import loopback_web_app

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
CONTENT_SID = "HX" + "0123456789abcdef" * 2


def ctx(last_reply: datetime | None) -> TouchContext:
    return TouchContext(id=uuid4(), account_id=uuid4(), lead_id=uuid4(), channel="whatsapp", payload={},
                        lead_phone="+14155550123", first_name="Ana", provider_name="twilio",
                        provider_config={"from": "whatsapp:+14155238886"}, last_whatsapp_reply_at=last_reply)


def payload(**override: Any) -> dict[str, Any]:
    delivery: dict[str, Any] = {"body": "Hola {first_name}", "language": "es"}
    if override:
        delivery["channel_overrides"] = {"whatsapp": override}
    return {"delivery": delivery}


def prepare(last_reply: datetime | None, raw: dict[str, Any]):
    return prepare_outbound(ctx(last_reply), parse_payload(raw), {}, load_settings(dry_run=False), now=NOW)


@pytest.mark.parametrize("last_reply", [None, NOW - timedelta(hours=24), NOW - timedelta(days=3)])
def test_outside_the_window_without_a_template_fails_permanent(last_reply):
    with pytest.raises(TouchFailure) as caught:
        prepare(last_reply, payload())
    assert caught.value.error_code == "whatsapp_template_required" and caught.value.failure_class == "permanent"


@pytest.mark.parametrize("last_reply", [NOW - timedelta(hours=24) + timedelta(microseconds=1), NOW - timedelta(minutes=1)])
def test_inside_the_window_free_form_is_sent(last_reply):
    message = prepare(last_reply, payload(content_sid=CONTENT_SID)).message
    assert message.body == "Hola Ana" and message.content_sid is None


def test_outside_the_window_the_template_is_used():
    message = prepare(None, payload(content_sid=CONTENT_SID, content_variables={"1": "Ana", "2": 3})).message
    assert message.content_sid == CONTENT_SID
    assert json.loads(message.content_variables or "") == {"1": "Ana", "2": "3"}
    # a template alone, without any body, is enough
    message = prepare(None, {"delivery": {"channel_overrides": {"whatsapp": {"content_sid": CONTENT_SID}}}}).message
    assert message.content_sid == CONTENT_SID and message.content_variables is None


@pytest.mark.parametrize("bad", ["HX123", "MG" + "0" * 32, "HX" + "g" * 32])
def test_a_malformed_content_sid_is_invalid_payload(bad):
    with pytest.raises(TouchFailure) as caught:
        prepare(None, payload(content_sid=bad))
    assert caught.value.error_code == "invalid_payload"


def test_sms_is_not_affected():
    context = ctx(None).model_copy(update={"channel": "sms", "provider_config": {"from": "+15005550006"}})
    prepared = prepare_outbound(context, parse_payload(payload()), {}, load_settings(dry_run=False), now=NOW)
    assert prepared.message.body == "Hola Ana"


# --- the Twilio driver and what the sandbox checks ---------------------------------------------------------------


def message(channel: str, **fields: Any) -> OutboundMessage:
    base: dict[str, Any] = {"touch_run_id": uuid4(), "channel": channel, "to": "+14155550123",
                            "sender": "+15005550006", "body": "Hola"}
    return OutboundMessage(**{**base, **fields})


def test_requests_carry_status_callbacks_only_with_a_public_url():
    plain = TwilioProvider(account_sid="AC1", auth_token="t")
    hooked = TwilioProvider(account_sid="AC1", auth_token="t", status_callback_base="https://out.example.com/")
    assert "StatusCallback" not in plain.request_for(message("sms"))[1]
    assert hooked.request_for(message("sms"))[1]["StatusCallback"] == "https://out.example.com/webhooks/twilio/status"
    call = hooked.request_for(message("voice"))[1]
    assert call["StatusCallback"] == "https://out.example.com/webhooks/twilio/voice-status"
    assert call["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    template = hooked.request_for(message("whatsapp", content_sid=CONTENT_SID, content_variables='{"1": "Ana"}'))[1]
    assert template["ContentSid"] == CONTENT_SID and template["ContentVariables"] == '{"1": "Ana"}'
    assert "Body" not in template and template["To"] == "whatsapp:+14155550123"


async def test_the_sandbox_accepts_what_twilio_accepts_and_refuses_the_rest():
    async with SandboxProviders() as fake:
        provider = TwilioProvider(account_sid=fake.account_sid, auth_token="sandbox-auth-token",
                                  base_url=fake.base_url, status_callback_base="https://out.example.com")
        try:
            deadline = 1e12
            await provider.send(message("voice"), deadline=deadline)
            await provider.send(message("whatsapp", content_sid=CONTENT_SID, content_variables='{"1": "x"}'),
                                deadline=deadline)
            assert fake.requests[0].body["StatusCallbackEvent"] == "initiated ringing answered completed"
            for bad, code in ((dict(content_sid="HX1"), "21655"), (dict(content_sid=CONTENT_SID,
                                                                         content_variables="[1]"), "21656")):
                with pytest.raises(TouchFailure) as caught:
                    await provider.send(message("whatsapp", **bad), deadline=deadline)
                assert caught.value.error_code == code
        finally:
            await provider.aclose()
        bad_hook = TwilioProvider(account_sid=fake.account_sid, auth_token="sandbox-auth-token",
                                  base_url=fake.base_url, status_callback_base="https://bad_host.example.com")
        try:
            with pytest.raises(TouchFailure) as caught:
                await bad_hook.send(message("sms"), deadline=1e12)
            assert caught.value.error_code == "21609"
        finally:
            await bad_hook.aclose()


# --- through the daemon, the web application and the sandbox -----------------------------------------------------


async def test_a_cold_whatsapp_touch_fails_without_a_provider_call_and_a_reply_opens_the_window(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    async with SandboxProviders() as fake, loopback_web_app(db_url) as web, \
            running_daemon(db_url, daemon_settings(fake, public_url=web.public_url)):
        cold = await factories.touch(db, account_id, lead_id, channel="whatsapp",
                                     payload_=factories.payload("whatsapp", whatsapp_template=False))
        row = await wait_terminal(db_url, cold)
        assert row["status"] == "failed" and row["error"].startswith("whatsapp_template_required")
        assert fake.requests == []
        status, answer = await fake.simulate_inbound(web.public_url + "/webhooks/twilio/inbound",
                                                     from_="whatsapp:+14155550123", to="whatsapp:+14155238886",
                                                     body="Hola, ¿quién es?")
        assert (status, answer["outcome"]) == (200, "reply_received")
        warm = await factories.touch(db, account_id, lead_id, channel="whatsapp",
                                     payload_=factories.payload("whatsapp", whatsapp_template=False))
        assert (await wait_terminal(db_url, warm))["status"] == "sent"
        await wait_until(db_url, "select delivery_status = 'delivered' from touch_runs where id = $1", warm)
    sent = fake.requests[-1]
    assert sent.kind == "whatsapp" and sent.body["Body"] == "Hola John" and "ContentSid" not in sent.body
    assert sent.body["StatusCallback"] == web.public_url + "/webhooks/twilio/status"
    assert [c.status for c in fake.callbacks] == [200, 200]


async def test_sandbox_callbacks_flow_in_and_a_permanent_undelivery_switches_channel(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    plan = {"order": ["sms", "email"], "max_attempts": {"sms": 2, "email": 1},
            "cooldown_minutes": {"sms": 600, "email": 0}}
    async with SandboxProviders() as fake, loopback_web_app(db_url) as web, \
            running_daemon(db_url, daemon_settings(fake, public_url=web.public_url)):
        fake.delivery_rule(to="+14155550123", outcome="undelivered:21211")
        touch_id = await factories.touch(db, account_id, lead_id, payload_=factories.payload("sms", plan=plan))
        await wait_until(db_url, "select count(*) = 1 from touch_runs where lead_id = $1 and channel = 'email'"
                         " and status = 'sent'", lead_id)
        await wait_until(db_url, "select delivery_status = 'undelivered' from touch_runs where id = $1", touch_id)
    events = [r["event_type"] for r in await db.fetch(
        "select event_type from core_memory_events where event_source = 'webhook:twilio' order by created_at")]
    assert events == ["touch_undelivered"]
    receipts = await db.fetch("select dedupe_key, outcome from webhook_receipts order by received_at")
    assert [r["outcome"] for r in receipts] == ["recorded", "touch_undelivered"]
    assert [r.kind for r in fake.requests] == ["sms", "email"]
