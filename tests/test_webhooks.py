"""The webhook routes (SPEC §12) through real HTTP against the real database; Twilio signatures computed with the
twilio package's RequestValidator over REVENUE_ASI_PUBLIC_URL (the app itself listens on loopback)."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from listener.providers.sandbox import SandboxProviders
from tests import factories
from tests.harness import daemon_settings, running_daemon, wait_until
from tests.webhook_client import AUTH_TOKEN, EE_TOKEN, web_app, web_settings

STATUS = "/webhooks/twilio/status"
VOICE = "/webhooks/twilio/voice-status"
INBOUND = "/webhooks/twilio/inbound"
SID = "SM" + "a" * 32


async def sent_touch(db, account_id, lead_id, *, channel="sms", sid=SID, payload=None):
    touch_id = await factories.touch(db, account_id, lead_id, channel=channel, status="sent", payload_=payload)
    await db.execute("update touch_runs set provider_message_id = $2, sent_at = now() where id = $1", touch_id, sid)
    return touch_id


async def counts(db):
    return await db.fetchrow(
        "select (select count(*) from webhook_receipts) as receipts,"
        " (select count(*) from core_memory_events where event_source like 'webhook:%') as events")


def status_params(status, sid=SID, **extra):
    return {"MessageSid": sid, "MessageStatus": status, "AccountSid": "ACx", "From": "+15005550006",
            "To": "+14155550123", **extra}


# --- message status -------------------------------------------------------------------------------------------


async def test_delivered_writes_event_status_and_receipt_and_a_retry_writes_nothing(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    touch_id = await sent_touch(db, account_id, lead_id)
    async with web_app(db_url) as client:
        status, body = await client.twilio(STATUS, status_params("delivered"))
        assert (status, body["outcome"]) == (200, "touch_delivered")
        again, body2 = await client.twilio(STATUS, status_params("delivered"))
        assert (again, body2["outcome"]) == (200, "duplicate")
    event = await db.fetchrow("select * from core_memory_events where event_type = 'touch_delivered'")
    assert event["lead_id"] == lead_id and event["event_source"] == "webhook:twilio"
    assert event["payload"]["touch_run_id"] == str(touch_id)
    assert event["payload"]["provider_message_id"] == SID and event["payload"]["provider_status"] == "delivered"
    assert await db.fetchval("select delivery_status from touch_runs where id = $1", touch_id) == "delivered"
    receipt = await db.fetchrow("select * from webhook_receipts")
    assert receipt["provider"] == "twilio" and receipt["kind"] == "message_status"
    assert receipt["dedupe_key"] == f"twilio:message:{SID}:delivered" and receipt["touch_run_id"] == touch_id
    assert receipt["params"]["MessageStatus"] == "delivered"
    assert tuple(await counts(db)) == (1, 1)


async def test_delivery_status_only_moves_forward(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    touch_id = await sent_touch(db, account_id, lead_id, channel="whatsapp")
    async with web_app(db_url) as client:
        for status in ("read", "delivered", "sent", "queued"):
            assert (await client.twilio(STATUS, status_params(status)))[0] == 200
    assert await db.fetchval("select delivery_status from touch_runs where id = $1", touch_id) == "read"
    types = await db.fetch("select event_type from core_memory_events where event_source = 'webhook:twilio'"
                           " order by event_type")
    assert [r["event_type"] for r in types] == ["touch_delivered", "touch_read"]
    # enforced by the database, whoever writes
    await db.execute("update touch_runs set delivery_status = 'sent' where id = $1", touch_id)
    assert await db.fetchval("select delivery_status from touch_runs where id = $1", touch_id) == "read"
    await db.execute("update touch_runs set delivery_status = 'undelivered' where id = $1", touch_id)
    assert await db.fetchval("select delivery_status from touch_runs where id = $1", touch_id) == "undelivered"


async def test_unknown_message_sid_answers_200_and_keeps_the_receipt(db, db_url):
    async with web_app(db_url) as client:
        status, body = await client.twilio(STATUS, status_params("delivered", sid="SM" + "f" * 32))
    assert (status, body["outcome"]) == (200, "unknown_message")
    receipt = await db.fetchrow("select * from webhook_receipts")
    assert receipt["outcome"] == "unknown_message" and receipt["touch_run_id"] is None
    assert (await counts(db))["events"] == 0


@pytest.mark.parametrize("how", ["missing", "wrong_token", "other_url", "tampered"])
async def test_bad_signature_is_403_and_writes_nothing(db, db_url, how):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    await sent_touch(db, account_id, lead_id)
    params = status_params("delivered")
    async with web_app(db_url) as client:
        if how == "missing":
            signature = None
        elif how == "wrong_token":
            client.auth_token = "not-the-token"
            signature = client.sign(STATUS, params)
        elif how == "other_url":  # e.g. what a proxy forwarded to, not what Twilio called
            signature = client.sign(STATUS, params, url=client.base_url + STATUS)
        else:
            signature = client.sign(STATUS, {**params, "MessageStatus": "undelivered"})
        status, _ = await client.twilio(STATUS, params, signature=signature)
    assert status == 403
    assert tuple(await counts(db)) == (0, 0)


async def test_without_public_url_nothing_is_accepted(db, db_url):
    async with web_app(db_url, web_settings(public_url=None)) as client:
        status, _ = await client.twilio(STATUS, status_params("delivered"))
    assert status == 403
    assert (await counts(db))["receipts"] == 0


@pytest.mark.parametrize("case", ["missing_status", "non_utf8", "duplicated", "bad_escape", "json", "bad_sid"])
async def test_malformed_requests_are_400_and_write_nothing(db, db_url, case):
    params = status_params("delivered")
    body = None
    sign_params = params
    if case == "missing_status":
        params = sign_params = {k: v for k, v in params.items() if k != "MessageStatus"}
    elif case == "non_utf8":
        body = urlencode(params).encode() + b"&Body=\xff\xfe"
    elif case == "duplicated":
        body = urlencode(params).encode() + b"&MessageStatus=failed"
    elif case == "bad_escape":
        body = urlencode(params).encode() + b"&Body=%ff%fe"
    elif case == "bad_sid":
        params = sign_params = {**params, "MessageSid": "SM<script>"}
    async with web_app(db_url) as client:
        if case == "json":
            async with client.session.post(client.base_url + STATUS, json=params,
                                           headers={"X-Twilio-Signature": client.sign(STATUS, params)}) as r:
                status = r.status
        else:
            status, body_json = await client.twilio(STATUS, params, signature=client.sign(STATUS, sign_params),
                                                    body=body)
            assert "error" in body_json
    assert status == 400
    assert tuple(await counts(db)) == (0, 0)


async def test_a_body_of_one_megabyte_is_refused(db, db_url):
    params = status_params("delivered", Body="x" * (1024 * 1024))
    async with web_app(db_url) as client:
        status, _ = await client.twilio(STATUS, params)
    assert status == 413
    assert (await counts(db))["receipts"] == 0


async def test_permanent_undelivery_switches_channel_at_once(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    plan = {"order": ["sms", "email"], "max_attempts": {"sms": 3, "email": 1},
            "cooldown_minutes": {"sms": 600, "email": 0}}
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake)), \
            web_app(db_url) as client:
        touch_id = await factories.touch(db, account_id, lead_id, payload_=factories.payload("sms", plan=plan))
        await wait_until(db_url, "select count(*) = 1 from core_memory_events where lead_id = $1"
                         " and event_type = 'fallback_decision' and payload->>'decision' = 'wait_cooldown'", lead_id)
        sid = await db.fetchval("select provider_message_id from touch_runs where id = $1", touch_id)
        status, body = await client.twilio(STATUS, status_params("undelivered", sid=sid, ErrorCode="30003"))
        assert (status, body["outcome"]) == (200, "touch_undelivered")
        await wait_until(db_url, "select count(*) = 1 from touch_runs where lead_id = $1 and channel = 'email'"
                         " and status = 'sent'", lead_id)
    event = await db.fetchrow("select payload from core_memory_events where event_type = 'touch_undelivered'")
    assert event["payload"]["failure_class"] == "permanent" and event["payload"]["error_code"] == "30003"
    decision = await db.fetchrow("select payload from core_memory_events where lead_id = $1 and event_type ="
                                 " 'fallback_decision' order by created_at offset 1 limit 1", lead_id)
    assert decision["payload"]["decision"] == "switch_channel" and decision["payload"]["next_channel"] == "email"
    sms = next(c for c in decision["payload"]["channels"] if c["channel"] == "sms")
    assert sms["permanent_failure"] and sms["attempts_done"] == 1  # exhausted, yet not counted as an attempt
    assert await db.fetchval("select delivery_status from touch_runs where id = $1", touch_id) == "undelivered"


async def test_transient_undelivery_changes_no_decision(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    plan = {"order": ["sms", "email"], "max_attempts": {"sms": 3}, "cooldown_minutes": {"sms": 600}}
    touch_id = await sent_touch(db, account_id, lead_id, payload=factories.payload("sms", plan=plan))
    async with SandboxProviders() as fake, web_app(db_url) as client:
        status, body = await client.twilio(STATUS, status_params("undelivered", ErrorCode="30008"))
        assert body["outcome"] == "touch_undelivered"
        async with running_daemon(db_url, daemon_settings(fake)):
            await wait_until(db_url, "select count(*) = 0 from event_reactions")
    assert status == 200
    event = await db.fetchrow("select payload from core_memory_events where event_type = 'touch_undelivered'")
    assert event["payload"]["failure_class"] == "transient" and event["payload"]["touch_run_id"] == str(touch_id)
    assert await db.fetchval("select count(*) from core_memory_events where event_type = 'fallback_decision'") == 0


# --- call status ----------------------------------------------------------------------------------------------


async def test_call_status_callbacks(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    call_sid = "CA" + "b" * 32
    touch_id = await sent_touch(db, account_id, lead_id, channel="voice", sid=call_sid)
    other_sid = "CA" + "c" * 32
    other = await sent_touch(db, account_id, lead_id, channel="voice", sid=other_sid)
    async with web_app(db_url) as client:
        for seq, call_status in enumerate(["initiated", "ringing", "in-progress"]):
            params = {"CallSid": call_sid, "CallStatus": call_status, "SequenceNumber": str(seq)}
            assert (await client.twilio(VOICE, params))[1]["outcome"] == "recorded"
        done = {"CallSid": call_sid, "CallStatus": "completed", "AnsweredBy": "machine_end_beep",
                "CallDuration": "12", "SequenceNumber": "3"}
        assert (await client.twilio(VOICE, done))[1]["outcome"] == "touch_delivered"
        assert (await client.twilio(VOICE, done))[1]["outcome"] == "duplicate"
        busy = {"CallSid": other_sid, "CallStatus": "busy", "SequenceNumber": "1"}
        assert (await client.twilio(VOICE, busy))[1]["outcome"] == "touch_undelivered"
    delivered = await db.fetchrow("select payload, channel from core_memory_events where event_type = 'touch_delivered'")
    assert delivered["payload"]["answered_by"] == "machine_end_beep" and delivered["channel"] == "voice"
    assert delivered["payload"]["touch_run_id"] == str(touch_id)
    undelivered = await db.fetchrow("select payload from core_memory_events where event_type = 'touch_undelivered'")
    assert undelivered["payload"]["failure_class"] == "transient" and undelivered["payload"]["touch_run_id"] == str(other)
    assert await db.fetchval("select delivery_status from touch_runs where id = $1", touch_id) == "delivered"
    assert await db.fetchval("select count(*) from webhook_receipts") == 5


# --- inbound messages -----------------------------------------------------------------------------------------


def inbound(body, sender="+14155550123", to="+15005550006", sid="SM" + "1" * 32, **extra):
    return {"MessageSid": sid, "From": sender, "To": to, "Body": body, "NumMedia": "0", **extra}


async def test_stop_reply_unsubscribes_and_cancels_open_touches(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    await sent_touch(db, account_id, lead_id)
    open_touch = await factories.touch(db, account_id, lead_id, status="scheduled", scheduled_in_s=3600)
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake)), \
            web_app(db_url) as client:
        status, body = await client.twilio(INBOUND, inbound("Stop."))
        assert (status, body["outcome"], body["classification"]) == (200, "unsubscribe", "opt_out")
        await wait_until(db_url, "select status = 'canceled' from touch_runs where id = $1", open_touch)
    rows = await db.fetch("select event_type, direction, channel, payload from core_memory_events"
                          " where event_source = 'webhook:twilio' order by event_type")
    assert [r["event_type"] for r in rows] == ["reply_received", "unsubscribe"]
    reply = rows[0]
    assert reply["direction"] == "inbound" and reply["channel"] == "sms"
    assert reply["payload"]["body"] == "Stop." and reply["payload"]["classification"] == "opt_out"
    assert await db.fetchval("select is_unsubscribed from lead_suppression_status_v1 where lead_id = $1", lead_id)


async def test_start_lifts_an_unsubscribe_but_never_a_do_not_contact(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    other = await factories.lead(db, account_id, full_name="Ana", phone="+14155550999")
    async with web_app(db_url) as client:
        await client.twilio(INBOUND, inbound("STOP", sid="SM" + "1" * 32))
        assert await db.fetchval("select is_unsubscribed from lead_suppression_status_v1 where lead_id = $1", lead_id)
        status, body = await client.twilio(INBOUND, inbound("START", sid="SM" + "2" * 32))
        assert body["outcome"] == "resubscribe"
        assert not await db.fetchval("select is_unsubscribed from lead_suppression_status_v1 where lead_id = $1",
                                     lead_id)
        await factories.event(db, other, "do_not_contact")
        await client.twilio(INBOUND, inbound("START", sender="+14155550999", sid="SM" + "3" * 32))
    row = await db.fetchrow("select is_unsubscribed, reason from lead_suppression_status_v1 where lead_id = $1", other)
    assert row["is_unsubscribed"] and row["reason"] == "do_not_contact"
    assert await db.fetchval("select count(*) from core_memory_events where event_type = 'resubscribe'") == 2


async def test_opt_out_type_from_twilio_wins(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    async with web_app(db_url) as client:
        _, body = await client.twilio(INBOUND, inbound("arrêtez", OptOutType="STOP"))
    assert body["outcome"] == "unsubscribe"
    assert await db.fetchval("select count(*) from core_memory_events where lead_id = $1"
                             " and event_type = 'unsubscribe'", lead_id) == 1


@pytest.mark.parametrize(("text", "event", "classification"), [
    ("Sí, me interesa 😊", "reply_positive", "positive"),
    ("no, gracias", "reply_negative", "negative"),
    ("¿quién es?", None, "neutral"),
    ("HELP", None, "help"),
])
async def test_replies_by_class(db, db_url, text, event, classification):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    async with web_app(db_url) as client:
        status, body = await client.twilio(INBOUND, inbound(text))
    assert status == 200 and body["classification"] == classification
    types = [r["event_type"] for r in await db.fetch(
        "select event_type from core_memory_events where lead_id = $1 and event_source = 'webhook:twilio'"
        " order by event_type desc", lead_id)]
    assert types == ["reply_received"] + ([event] if event else [])


async def test_whatsapp_sender_matches_and_ties_go_to_the_most_recently_touched_lead(db, db_url):
    account_id = await factories.account(db)
    older = await factories.lead(db, account_id, full_name="Old", phone="(415) 555-0123")
    newer = await factories.lead(db, account_id, full_name="New", phone="+1 415 555 0123")
    await factories.touch(db, account_id, older, status="sent")
    await factories.touch(db, account_id, newer, status="sent")
    other_account = await factories.account(db, "Other")  # same sender number, not our receiving number
    await db.execute("update account_provider_settings set config = '{\"from\": \"+15009999999\"}'"
                     " where account_id = $1 and channel <> 'email'", other_account)
    stranger = await factories.lead(db, other_account, phone="+14155550123")
    await factories.touch(db, other_account, stranger, status="sent")
    async with web_app(db_url) as client:
        _, body = await client.twilio(INBOUND, inbound("hola", sender="whatsapp:+14155550123",
                                                       to="whatsapp:+15005550006", ProfileName="John",
                                                       WaId="14155550123"))
    assert body["outcome"] == "reply_received"
    row = await db.fetchrow("select lead_id, channel from core_memory_events where event_type = 'reply_received'")
    assert row["lead_id"] == newer and row["channel"] == "whatsapp"


async def test_unmatched_sender_is_kept_as_a_receipt_only(db, db_url):
    account_id = await factories.account(db)
    await factories.lead(db, account_id)
    async with web_app(db_url) as client:
        status, body = await client.twilio(INBOUND, inbound("STOP", sender="+14155550000"))
        again = await client.twilio(INBOUND, inbound("STOP", sender="+14155550000"))
    assert (status, body["outcome"]) == (200, "unmatched")
    assert again[1]["outcome"] == "duplicate"
    receipt = await db.fetchrow("select * from webhook_receipts")
    assert receipt["outcome"] == "unmatched" and receipt["lead_id"] is None
    assert await db.fetchval("select count(*) from core_memory_events where direction = 'inbound'") == 0


# --- ElasticEmail ---------------------------------------------------------------------------------------------


def ee(status, touch_id=None, messageid="ee-msg-1", **extra):
    params = {"transaction": "t-1", "messageid": messageid, "to": "john@example.com", "from": "hola@acme.test",
              "status": status, "date": "2026-11-30T01:00:00", **extra}
    if touch_id is not None:
        params["postback"] = str(touch_id)
    return params


async def test_elasticemail_token_is_checked_and_never_stored(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    touch_id = await sent_touch(db, account_id, lead_id, channel="email", sid="ee-msg-1")
    async with web_app(db_url) as client:
        assert (await client.elasticemail(ee("Sent", touch_id), token=None))[0] == 403
        assert (await client.elasticemail(ee("Sent", touch_id), token="wrong"))[0] == 403
        assert (await counts(db))["receipts"] == 0
        status, body = await client.elasticemail(ee("Sent", touch_id))
        assert (status, body["outcome"]) == (200, "touch_delivered")
        status, body = await client.elasticemail(ee("Opened"), method="POST")  # found by messageid
        assert (status, body["outcome"]) == (200, "email_opened")
        assert (await client.elasticemail(ee("Opened")))[1]["outcome"] == "duplicate"
        assert (await client.elasticemail(ee("Clicked", touch_id, target="https://x.test")))[1]["outcome"] == \
            "email_clicked"
        assert (await client.elasticemail({"status": "Sent"}))[0] == 400
    dumped = await db.fetchval("select string_agg(params::text, ' ') from webhook_receipts")
    dumped += await db.fetchval("select string_agg(payload::text, ' ') from core_memory_events")
    assert EE_TOKEN not in dumped and AUTH_TOKEN not in dumped
    assert await db.fetchval("select count(*) from webhook_receipts") == 3
    assert await db.fetchval("select delivery_status from touch_runs where id = $1", touch_id) == "delivered"


async def test_hard_bounce_exhausts_email_and_suppression_events(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    plan = {"order": ["email", "sms"], "max_attempts": {"email": 3, "sms": 1},
            "cooldown_minutes": {"email": 600, "sms": 0}}
    touch_id = await sent_touch(db, account_id, lead_id, channel="email", sid="ee-msg-1",
                                payload=factories.payload("email", plan=plan))
    spare = await factories.lead(db, account_id, full_name="Ana", phone="+14155550999", email="ana@example.com")
    spare_touch = await sent_touch(db, account_id, spare, channel="email", sid="ee-msg-2")
    async with SandboxProviders() as fake, web_app(db_url) as client:
        _, body = await client.elasticemail(ee("Error", touch_id, category="NoMailbox"))
        assert body["outcome"] == "email_bounced"
        _, soft = await client.elasticemail(ee("Error", touch_id, category="Timeout", messageid="ee-msg-1"))
        assert soft["outcome"] == "touch_undelivered"
        _, unsub = await client.elasticemail(ee("Unsubscribed", spare_touch, messageid="ee-msg-2"))
        assert unsub["outcome"] == "unsubscribe"
        _, abuse = await client.elasticemail(ee("AbuseReport", spare_touch, messageid="ee-msg-2"))
        assert abuse["outcome"] == "do_not_contact"
        async with running_daemon(db_url, daemon_settings(fake)):
            await wait_until(db_url, "select count(*) = 1 from touch_runs where lead_id = $1 and channel = 'sms'"
                             " and status = 'sent'", lead_id)
    bounce = await db.fetchrow("select payload, channel from core_memory_events where event_type = 'email_bounced'")
    assert bounce["payload"]["failure_class"] == "permanent" and bounce["channel"] == "email"
    assert await db.fetchval("select reason from lead_suppression_status_v1 where lead_id = $1", spare) == \
        "unsubscribe"


async def test_nul_bytes_and_control_characters_in_a_reply_lose_nothing_else(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    async with web_app(db_url) as client:
        status, body = await client.twilio(INBOUND, inbound("STOP\x00\x07"))
    assert (status, body["outcome"]) == (200, "unsubscribe")
    reply = await db.fetchrow("select payload from core_memory_events where event_type = 'reply_received'"
                              " and lead_id = $1", lead_id)
    assert reply["payload"]["body"] == "STOP\x07"
    assert "\x00" not in await db.fetchval("select params->>'Body' from webhook_receipts")


async def test_a_callback_for_an_outcome_unknown_touch_reconciles_it(db, db_url):
    """SPEC §11: a later status callback says the provider had the touch we failed as outcome_unknown."""
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    touch_id = await sent_touch(db, account_id, lead_id, channel="email", sid="ee-msg-unknown")
    await db.execute("update touch_runs set status = 'failed', provider_message_id = null,"
                     " error = 'outcome_unknown: read timeout' where id = $1", touch_id)
    async with web_app(db_url) as client:
        status, body = await client.elasticemail(ee("Sent", touch_id, messageid="ee-msg-unknown"))
        assert (status, body["outcome"]) == (200, "touch_delivered")
        assert (await client.elasticemail(ee("Opened", touch_id, messageid="ee-msg-unknown")))[0] == 200
    (event,) = await db.fetch("select payload, event_source from core_memory_events where event_type ="
                              " 'touch_reconciled' and payload->>'touch_run_id' = $1", str(touch_id))
    assert event["payload"]["reached_provider"] is True and event["event_source"] == "webhook:elasticemail"
    assert event["payload"]["provider_message_id"] == "ee-msg-unknown"
    assert await db.fetchval("select provider_message_id from touch_runs where id = $1", touch_id) == \
        "ee-msg-unknown"
