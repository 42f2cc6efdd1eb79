"""Hostile input (SPEC §11, issue 10): a table of malformed payloads, plans, contacts, templates and provider
answers, each with the outcome it must get, and neighbours that must be unaffected.

The tables run the pure functions (what a row becomes); the integration tests below run the real daemon, CLI and
sandbox providers on loopback and check that the bad row gets its reason while its neighbours are sent (with
their provider ids), decided, canceled and orchestrated on time."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from typing import Any
from uuid import uuid4

import asyncpg
import pytest

from listener.engine.outbound import TouchContext, prepare_outbound
from listener.providers.base import OutboundMessage
from listener.providers.elasticemail import ElasticEmailProvider
from listener.providers.sandbox import SandboxProviders
from listener.providers.twilio import TwilioProvider, twiml_say
from listener.rules import safejson
from listener.rules.decision import parse_plan, payload_for_decision
from listener.rules.errors import ProviderError, TouchFailure
from listener.rules.messages import Template
from listener.rules.moments import seconds_until
from listener.rules.payload import parse_payload
from listener.settings import load_settings
from tests import factories
from tests.cli_runner import cli, cli_env
from tests.harness import daemon_settings, running_daemon, wait_terminal, wait_until

DEEP = "[" * 2000 + "]" * 2000
HUGE_INT = "9" * 5000

# --- 1. payloads: what the dispatcher's parse makes of a touch payload (as the jsonb decoder hands it over) ------

PAYLOADS: list[tuple[str, str, str | None]] = [
    # (id, JSON text as stored, expected invalid_payload reason fragment or None = parses)
    ("null", "null", "got null"),
    ("array", "[1, 2]", "got an array"),
    ("empty array", "[]", "got an array"),
    ("string", '"hola"', "got a string"),
    ("number", "42", "got a number"),
    ("boolean", "true", "got a boolean"),
    ("deep array", DEEP, "nested more than 64 deep"),
    ("deep object", '{"a":' * 2000 + "1" + "}" * 2000, "nested more than 64 deep"),
    ("deep inside delivery", '{"delivery": {"variables": {"x": ' + "[" * 70 + "]" * 70 + "}}}", "nested more than 64"),
    ("5000-digit number", '{"step": ' + HUGE_INT + "}", "5000 digits"),
    ("1e5000 (stored as 5001 digits)", '{"x": 1' + "0" * 5000 + "}", "5001 digits"),
    ("negative huge", '{"x": -' + HUGE_INT + "}", "5000 digits"),
    ("float overflow", '{"x": 1e400}', "out of range"),
    ("wrong type routing", '{"routing": "voice"}', "payload.routing"),
    ("wrong type delivery.variables", '{"delivery": {"variables": [1]}}', "payload.delivery.variables"),
    ("brackets inside strings only", '{"message": "' + "[" * 500 + '"}', None),
    ("64 levels exactly", '{"a":' * 63 + "{}" + "}" * 63, None),
    ("valid v2", json.dumps(factories.payload("sms")), None),
]


@pytest.mark.parametrize(("text", "expected"), [(t, e) for _, t, e in PAYLOADS], ids=[i for i, _, _ in PAYLOADS])
def test_payload_table(text: str, expected: str | None) -> None:
    value = safejson.decode_jsonb(text)  # what asyncpg hands over with the proposed decoder: never raises
    if expected is None:
        parse_payload(value)
        return
    with pytest.raises(TouchFailure) as failure:
        parse_payload(value)
    assert failure.value.error_code == "invalid_payload" and failure.value.failure_class == "permanent"
    assert expected in failure.value.error


@pytest.mark.parametrize("text", [DEEP, '{"a": ' + HUGE_INT + "}"], ids=["deep", "huge"])
def test_plain_json_loads_would_raise_what_decode_jsonb_turns_into_a_reason(text: str) -> None:
    with pytest.raises((RecursionError, ValueError)):
        json.loads(text)  # today's decoder (listener/store/database.py): fails every row of the fetch
    assert isinstance(safejson.decode_jsonb(text), safejson.InvalidJson)


# --- 2. plans: SPEC §11 bounds (the SQL form agrees: tests/test_decision_property.py) -------------------------


def _plan(**fallback: Any) -> str:
    return json.dumps({"routing": {"current_channel": "sms", "fallback": {"order": ["sms", "email"], **fallback}}})


PLANS: list[tuple[str, str, str | None]] = [
    ("max_attempts 1e5000", _plan().replace('"order"', '"max_attempts": {"sms": 1e5000}, "order"'), "invalid_plan"),
    ("max_attempts 1e9", _plan(max_attempts={"sms": 10**9}), "invalid_plan"),
    ("max_attempts 21", _plan(max_attempts={"sms": 21}), "invalid_plan"),
    ("max_attempts 20", _plan(max_attempts={"sms": 20}), None),
    ("max_attempts 0", _plan(max_attempts={"sms": 0}), None),
    ("max_attempts 2.5", _plan(max_attempts={"sms": 2.5}), "invalid_plan"),
    ("max_attempts -1", _plan(max_attempts={"sms": -1}), "invalid_plan"),
    ("max_attempts '3'", _plan(max_attempts={"sms": "3"}), "invalid_plan"),
    ("max_attempts 5000 digits", _plan().replace('"order"', '"max_attempts": {"sms": ' + HUGE_INT + '}, "order"'),
     "invalid_plan"),
    ("cooldown 525600", _plan(cooldown_minutes={"sms": 525600}), None),
    ("cooldown 525600.5", _plan(cooldown_minutes={"sms": 525600.5}), "invalid_plan"),
    ("cooldown 1e20", _plan(cooldown_minutes={"sms": 1e20}), "invalid_plan"),
    ("cooldown -0.1", _plan(cooldown_minutes={"sms": -0.1}), "invalid_plan"),
    ("cooldown 1e-5000", _plan().replace('"order"', '"cooldown_minutes": {"sms": 1e-5000}, "order"'), None),
    ("routing array", json.dumps({"routing": ["sms"]}), "invalid_plan"),
    ("payload deep", '{"routing": ' + DEEP + "}", "invalid_plan"),
    ("payload null", "null", "no_fallback_plan"),
    ("payload array", "[]", "no_fallback_plan"),
]


@pytest.mark.parametrize(("text", "expected"), [(t, e) for _, t, e in PLANS], ids=[i for i, _, _ in PLANS])
def test_plan_table(text: str, expected: str | None) -> None:
    assert parse_plan(payload_for_decision(text), "sms").problem == expected


async def test_plan_table_sql_form_agrees(db):
    """The same table through the SQL form (decide_next_channel_for_lead) and the Python mirror on real rows."""
    from datetime import UTC, datetime

    from listener.rules.decision import decide
    from listener.store.decisions import decide_sql, load_decision_inputs

    account_id = await factories.account(db)
    now = datetime.now(UTC)
    for name, text, expected in PLANS:
        lead_id = await factories.lead(db, account_id, full_name=name)
        await db.execute("insert into touch_runs (account_id, lead_id, channel, status, payload)"
                         " values ($1, $2, 'sms', 'sent', $3::text::jsonb)", account_id, lead_id, text)
        sql = await decide_sql(db, lead_id, None, 1, now)
        inputs = await load_decision_inputs(db, lead_id, None, 1)
        assert sql is not None and inputs is not None
        assert decide(inputs, now) == sql, name
        assert sql.stop_reason == expected or (expected is None and sql.decision != "stop"), (name, sql)


# --- 3. contacts, templates, headers: what prepare_outbound refuses before any request -------------------------

TEMPLATES = {("intro", "es"): Template("intro", "es", None, "Oferta para {company_name}", "Hola {first_name}")}


def _context(channel: str, **fields: Any) -> TouchContext:
    base: dict[str, Any] = {
        "id": uuid4(), "account_id": uuid4(), "lead_id": uuid4(), "channel": channel, "payload": {},
        "lead_phone": "+14155552671", "lead_email": "ana@example.com", "first_name": "Ana", "company_name": "Acme",
        "provider_name": "elasticemail" if channel == "email" else "twilio",
        "provider_config": {"from_email": "ventas@acme.test", "from_name": "Acme"} if channel == "email"
        else {"from": "+14155550199"},
    }
    return TouchContext(**{**base, **fields})


def _prepare(channel: str, payload: dict[str, Any] | None = None, **fields: Any) -> Any:
    settings = load_settings(dry_run=False, qa_sink_phone=None, qa_sink_email=None)
    return prepare_outbound(_context(channel, **fields), parse_payload(payload or {"delivery": {"template_key": "intro"}}),
                            TEMPLATES, settings)


OUTBOUND: list[tuple[str, str, dict[str, Any] | None, dict[str, Any], str | None]] = [
    # (id, channel, payload, context fields, expected error_code or None)
    ("subject CRLF from company_name", "email", None, {"company_name": "ACME\r\nBcc: spy@x.test"}, "invalid_email_header"),
    ("subject LF only", "email", None, {"company_name": "ACME\nX-Evil: 1"}, "invalid_email_header"),
    ("subject NUL", "email", None, {"company_name": "ACME\x00"}, "invalid_email_header"),
    ("subject U+2028", "email", None, {"company_name": "ACME\u2028Bcc: a@b.c"}, "invalid_email_header"),
    ("forced sender CRLF", "email",
     {"delivery": {"template_key": "intro"}, "provider": {"forced_sender_id": "a@b.test\r\nBcc: spy@x.test"}}, {},
     "invalid_email_header"),
    ("forced sender with name", "email",
     {"delivery": {"template_key": "intro"}, "provider": {"forced_sender_id": "Evil <a@b.test>"}}, {},
     "invalid_email_header"),
    ("from_name CRLF", "email", None,
     {"provider_config": {"from_email": "ventas@acme.test", "from_name": "Acme\r\nBcc: spy@x.test"}},
     "invalid_email_header"),
    ("recipient Evil<x@y>", "email", None, {"lead_email": "Evil<x@y.test>"}, "invalid_email"),
    ("recipient with comma list", "email", None, {"lead_email": "a@b.test,c@d.test"}, "invalid_email"),
    ("recipient quoted", "email", None, {"lead_email": '"x"@y.test'}, "invalid_email"),
    ("recipient CRLF", "email", None, {"lead_email": "a@b.test\r\nBcc: c@d.test"}, "invalid_email"),
    ("recipient semicolon", "email", None, {"lead_email": "a@b.test;c@d.test"}, "invalid_email"),
    ("phone letters", "sms", None, {"lead_phone": "call me maybe"}, "invalid_phone"),
    ("phone NUL", "sms", None, {"lead_phone": "+1415555\x002671"}, "invalid_phone"),
    ("template variable missing", "sms", {"delivery": {"body": "Hola {nickname}"}}, {}, "missing_variable"),
    ("template attribute access is text", "sms", {"delivery": {"body": "{x.__class__}"}}, {}, None),
    ("subject with tab is fine", "email", None, {"company_name": "ACME\tInc"}, None),
    ("clean email", "email", None, {}, None),
]


@pytest.mark.parametrize(("channel", "payload", "fields", "expected"), [o[1:] for o in OUTBOUND],
                         ids=[o[0] for o in OUTBOUND])
def test_outbound_table(channel: str, payload: dict[str, Any] | None, fields: dict[str, Any],
                        expected: str | None) -> None:
    if expected is None:
        _prepare(channel, payload, **fields)
        return
    with pytest.raises(TouchFailure) as failure:
        _prepare(channel, payload, **fields)
    assert failure.value.error_code == expected and failure.value.failure_class == "permanent"


# --- 4. requests Twilio accepts: lengths, TwiML, voices ------------------------------------------------------


def _message(channel: str, body: str, language: str = "es", voice: str | None = None) -> OutboundMessage:
    return OutboundMessage.model_validate({"touch_run_id": uuid4(), "channel": channel, "to": "+14155552671",
                                           "sender": "+14155550199", "body": body, "language": language,
                                           "voice": voice})


TWILIO_REQUESTS: list[tuple[str, str, str, str | None]] = [
    ("sms 1600 chars", "sms", "x" * 1600, None),
    ("sms 1601 chars", "sms", "x" * 1601, "message_too_long"),
    ("whatsapp 5000 chars", "whatsapp", "x" * 5000, "message_too_long"),
    ("voice TwiML over 4000", "voice", "x" * 3950, "message_too_long"),
    ("voice escaping grows past 4000", "voice", "&" * 900, "message_too_long"),  # &amp; is 5 characters
    ("voice short", "voice", "Hola", None),
]


@pytest.mark.parametrize(("channel", "body", "expected"), [r[1:] for r in TWILIO_REQUESTS],
                         ids=[r[0] for r in TWILIO_REQUESTS])
def test_twilio_request_table(channel: str, body: str, expected: str | None) -> None:
    provider = TwilioProvider(account_sid="AC" + "0" * 32, auth_token="t", base_url="http://127.0.0.1:9")
    if expected is None:
        provider.request_for(_message(channel, body))
        return
    with pytest.raises(ProviderError) as failure:
        provider.request_for(_message(channel, body))
    assert failure.value.error_code == expected and failure.value.failure_class == "permanent"


@pytest.mark.parametrize("text", ["línea\u000bsiguiente", "a\x00b", "bell\x07", "\x1b[31mred", "c1\x85x",
                                  "lone \ud800 surrogate", "\ufffe", "ok & <b> 'quoted' \"x\""])
def test_twiml_is_well_formed_xml_whatever_the_text(text: str) -> None:
    from xml.etree import ElementTree

    root = ElementTree.fromstring(twiml_say(text, "es"))
    say = root.find("Say")
    assert say is not None and say.get("voice") == "Polly.Lucia" and say.get("language") == "es-ES"


# Amazon Polly's published voice list (docs.aws.amazon.com/polly/latest/dg/available-voices.html), which Twilio
# serves as Polly.<Name> (twilio.com/docs/voice/twiml/say/text-speech): the locale each voice speaks.
POLLY_VOICES = {
    "Lucia": "es-ES", "Conchita": "es-ES", "Enrique": "es-ES", "Sergio": "es-ES", "Mia": "es-MX", "Andres": "es-MX",
    "Lupe": "es-US", "Penelope": "es-US", "Miguel": "es-US", "Joanna": "en-US", "Matthew": "en-US", "Salli": "en-US",
    "Kendra": "en-US", "Joey": "en-US", "Amy": "en-GB", "Brian": "en-GB", "Emma": "en-GB", "Nicole": "en-AU",
    "Russell": "en-AU", "Raveena": "en-IN", "Camila": "pt-BR", "Vitoria": "pt-BR", "Ricardo": "pt-BR",
    "Ines": "pt-PT", "Cristiano": "pt-PT", "Celine": "fr-FR", "Lea": "fr-FR", "Mathieu": "fr-FR", "Chantal": "fr-CA",
    "Marlene": "de-DE", "Vicki": "de-DE", "Hans": "de-DE", "Carla": "it-IT", "Bianca": "it-IT", "Giorgio": "it-IT",
}


@pytest.mark.parametrize("language", ["es", "en", "pt", "fr", "de", "it", "es-MX", "en_gb", "pt-PT", "fr-CA",
                                      "es-AR", "ES"])
def test_say_names_a_voice_that_speaks_its_language(language: str) -> None:
    from xml.etree import ElementTree

    say = ElementTree.fromstring(twiml_say("hola", language)).find("Say")
    assert say is not None
    voice, locale = say.get("voice"), say.get("language")
    assert voice is not None and voice.startswith("Polly.")
    assert POLLY_VOICES[voice.removeprefix("Polly.")] == locale
    assert locale.split("-")[0] == language.lower().replace("_", "-").split("-")[0]


@pytest.mark.parametrize(("override", "voice", "locale"), [
    ("Polly.Conchita", "Polly.Conchita", "es-ES"),
    ("Google.es-US-Standard-A", "Google.es-US-Standard-A", "es-US"),
    ("Polly.Lucia-Neural", "Polly.Lucia-Neural", "es-ES"),
    ('x" onload="', "Polly.Lucia", "es-ES"),  # not a voice name: ignored, the default speaks
])
def test_config_voice_overrides_the_default(override: str, voice: str, locale: str) -> None:
    from xml.etree import ElementTree

    say = ElementTree.fromstring(twiml_say("hola", "es", override)).find("Say")
    assert say is not None and (say.get("voice"), say.get("language")) == (voice, locale)


# --- 5. provider answers: cleaned before anything is stored, secrets scrubbed before any cut ------------------

SID = "AC" + "0" * 31 + "1"
TOKEN = "tok-9f8e7d6c5b4a39281706f5e4d3c2b1a0"
API_KEY = "key-0123456789abcdef0123456789abcdef"
BASIC = base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()

ANSWERS: list[tuple[str, int, bytes, str, str | None]] = [
    # (id, HTTP status, body, expected: "sid:<value>" or an error_code, a substring the stored text must not hold)
    ("sid with NUL", 201, b'{"sid": "SM\\u0000abc"}', "sid:SMabc", "\x00"),
    ("sid lone surrogate", 201, b'{"sid": "SM\\ud800abc"}', "sid:SM abc", "\ud800"),
    ("sid only controls", 201, b'{"sid": "\\u0000\\u0007"}', "outcome_unknown", None),
    ("sid not a string", 201, b'{"sid": 12345}', "outcome_unknown", None),
    ("201 body deep", 201, DEEP.encode(), "outcome_unknown", None),
    ("201 body huge number", 201, b'{"sid": "SMx", "n": ' + HUGE_INT.encode() + b"}", "outcome_unknown", None),
    ("error text NUL", 400, b'{"code": 21211, "message": "bad\\u0000number"}', "21211", "\x00"),
    ("error text surrogate", 400, b'{"code": 21211, "message": "bad\\udc00number"}', "21211", "\udc00"),
    ("error text controls", 400, b'{"code": 21211, "message": "a\\u001b[31mb\\u0085c"}', "21211", "\x1b"),
    ("error not JSON, binary", 400, b"\x00\xff\xfe garbage \x00", "http_400", "\x00"),
    ("error 1 MiB", 400, b"x" * 1_048_576, "http_400", None),
    ("error echoes token", 401, f'{{"message": "bad token {TOKEN}"}}'.encode(), "http_401", TOKEN),
    ("error echoes Basic auth", 401, f'{{"message": "Authorization: Basic {BASIC}"}}'.encode(), "http_401", BASIC),
    ("error echoes URL-encoded token", 400, f"token={TOKEN}".encode(), "http_400", TOKEN),
]


@pytest.mark.parametrize(("status", "body", "expected", "absent"), [a[1:] for a in ANSWERS], ids=[a[0] for a in ANSWERS])
def test_twilio_answer_table(status: int, body: bytes, expected: str, absent: str | None) -> None:
    provider = TwilioProvider(account_sid=SID, auth_token=TOKEN, base_url="http://127.0.0.1:9")
    try:
        result = provider._result(status, body[:65536], None)
    except ProviderError as error:
        assert not expected.startswith("sid:"), error.error
        assert error.error_code == expected
        text = error.error
        text.encode("utf-8")  # storable: no lone surrogate
        assert "\x00" not in text and len(text) <= 300
    else:
        assert expected.startswith("sid:")
        text = result.provider_message_id
        assert text == expected.removeprefix("sid:")
    if absent is not None:
        assert absent not in text


@pytest.mark.parametrize("which", ["twilio", "elasticemail", "twilio-basic"])
def test_secret_at_every_offset_of_an_echoed_error_body(which: str) -> None:
    """The provider echoes the secret somewhere in a long error body: wherever it sits, relative to the 300-char
    cut, not one character of it survives (before: the body was cut at 200, then scrubbed)."""
    if which == "elasticemail":
        provider: Any = ElasticEmailProvider(api_key=API_KEY, base_url="http://127.0.0.1:9")
        secret = API_KEY
    else:
        provider = TwilioProvider(account_sid=SID, auth_token=TOKEN, base_url="http://127.0.0.1:9")
        secret = BASIC if which == "twilio-basic" else TOKEN
    filler = "e" * 420
    for offset in range(len(filler) + 1):
        body = (filler[:offset] + secret + filler[offset:]).encode()
        with pytest.raises(ProviderError) as failure:
            provider._result(400, body, None)
        text = failure.value.error
        for size in range(8, len(secret) + 1):  # no fragment of 8+ characters of the secret anywhere
            for start in range(0, len(secret) - size + 1, max(1, size // 2)):
                assert secret[start:start + size] not in text, (offset, text)


def test_moments_never_raise() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert seconds_until(None, 5.0, now) == 5.0
    assert seconds_until(datetime(9999, 12, 31, 23, 59, 59, 999999), 5.0, now) == 5.0  # asyncpg's naive 'infinity'
    assert seconds_until(datetime(1, 1, 1), 5.0, now) == 0.0  # '-infinity'
    assert seconds_until(datetime(1, 1, 1, tzinfo=UTC), 5.0, now) == 0.0
    assert seconds_until(datetime(9999, 12, 31, tzinfo=UTC), 5.0, now) == 5.0
    assert seconds_until(datetime(2026, 1, 1, 0, 0, 2, tzinfo=UTC), 5.0, now) == 2.0


# --- integration: the bad row gets its reason, the neighbours go on ------------------------------------------


async def _sent_with_id(db: asyncpg.Connection, touch_id: uuid.UUID) -> str:
    row = await db.fetchrow("select status, provider_message_id from touch_runs where id = $1", touch_id)
    assert row["status"] == "sent", dict(row)
    assert row["provider_message_id"]
    return str(row["provider_message_id"])


async def test_bad_payloads_and_hostile_contacts_fail_alone_neighbours_keep_provider_ids(db, db_url):
    account_id = await factories.account(db)
    neighbours: list[uuid.UUID] = []
    bad: dict[str, tuple[uuid.UUID, str]] = {}
    ok_lead = await factories.lead(db, account_id, full_name="Ok Lead")
    for i in range(4):
        neighbours.append(await factories.touch(db, account_id, ok_lead, channel="sms",
                                                payload_=factories.payload("sms", body=f"vecino {i}")))
    neighbours.append(await factories.touch(db, account_id, ok_lead, channel="email",
                                            payload_=factories.payload("email", body="correo vecino")))
    neighbours.append(await factories.touch(db, account_id, ok_lead, channel="voice",
                                            payload_=factories.payload("voice", body="línea\u000bsiguiente")))
    for name, raw in (("null", "null"), ("array", "[1]"), ("string", '"x"')):
        touch_id = await db.fetchval(
            "insert into touch_runs (account_id, lead_id, channel, payload) values ($1, $2, 'sms', $3::text::jsonb)"
            " returning id", account_id, ok_lead, raw)
        bad[name] = (touch_id, "invalid_payload")
    evil = await factories.lead(db, account_id, full_name="Evil", email="Evil<x@y.test>")
    bad["recipient"] = (await factories.touch(db, account_id, evil, channel="email",
                                              payload_=factories.payload("email", body="x")), "invalid_email")
    crlf = await db.fetchval("insert into leads (account_id, full_name, email) values ($1, 'C', 'c@d.test') returning id",
                             account_id)
    await db.execute("insert into lead_enriched (lead_id, company_name) values ($1, $2)", crlf, "ACME\r\nBcc: spy@x.test")
    subject = factories.payload("email", body="x")
    subject["delivery"]["channel_overrides"] = {"email": {"subject": "Oferta {company_name}"}}
    bad["subject"] = (await factories.touch(db, account_id, crlf, channel="email", payload_=subject),
                      "invalid_email_header")
    bad["too long"] = (await factories.touch(db, account_id, ok_lead, channel="sms",
                                             payload_=factories.payload("sms", body="x" * 1601)), "message_too_long")
    nul_lead = await factories.lead(db, account_id, full_name="Nul", phone="+14155550177")
    bad["nul answer"] = (await factories.touch(db, account_id, nul_lead, channel="sms",
                                               payload_=factories.payload("sms", body="x")), "21211")
    sur_lead = await factories.lead(db, account_id, full_name="Sur", phone="+14155550178")
    surrogate_sid = await factories.touch(db, account_id, sur_lead, channel="sms", payload_=factories.payload("sms", body="y"))
    async with SandboxProviders() as fake:
        fake.raw_rule(to="+14155550177", status=400,
                      body=b'{"code": 21211, "message": "The number\\u0000 is \\ud800 invalid", "status": 400}')
        fake.raw_rule(to="+14155550178", status=201, body=b'{"sid": "SM\\u0000\\udfff0123"}')
        async with running_daemon(db_url, daemon_settings(fake)):
            for touch_id in [*neighbours, *(t for t, _ in bad.values()), surrogate_sid]:
                await wait_terminal(db_url, touch_id)
        twiml = [r.body["Twiml"] for r in fake.requests if r.kind == "voice"]
    for touch_id in neighbours:
        await _sent_with_id(db, touch_id)
    assert await _sent_with_id(db, surrogate_sid) == "SM 0123"
    for name, (touch_id, code) in bad.items():
        row = await db.fetchrow("select status, error from touch_runs where id = $1", touch_id)
        event = await db.fetchrow("select payload from core_memory_events where event_type = 'touch_failed'"
                                  " and payload->>'touch_run_id' = $1", str(touch_id))
        assert row["status"] == "failed" and event["payload"]["error_code"] == code, (name, dict(row))
        assert "\x00" not in row["error"]
    assert twiml == ['<Response><Say language="es-ES" voice="Polly.Lucia">línea siguiente</Say></Response>']
    assert not [r for r in fake.requests if r.to and ("Evil" in r.to or "c@d.test" in r.to)]


async def test_a_poison_reaction_is_set_aside_and_a_neighbours_unsubscribe_is_acted_on(db, db_url):
    """A reaction the database refuses: a legacy touch whose follow-up a constraint added later (NOT VALID) forbids.
    Before issue 10: the whole reaction batch rolled back every 0.5 s, forever, and another lead's unsubscribe was
    never acted on. Now: that one reaction is set aside with its error (status shows it). A touch created in year
    20000 (asyncpg cannot decode it) was the poison while decisions ran in Python; decided in SQL (SPEC §17), it is
    plain data now and is reacted to like any other."""
    account_id = await factories.account(db)
    poison_lead = await factories.lead(db, account_id, full_name="Poison")
    neighbour = await factories.lead(db, account_id, full_name="Neighbour", phone="+14155550111")
    await db.execute("alter table touch_runs drop constraint touch_runs_times_in_range")
    poison_touch = await db.fetchval(
        "insert into touch_runs (account_id, lead_id, channel, status, payload, created_at)"
        " values ($1, $2, 'sms', 'failed', $3, '20000-01-01 00:00:00+00') returning id",
        account_id, poison_lead, factories.payload("sms", plan=factories.FULL_PLAN))
    await db.execute("alter table touch_runs add constraint touch_runs_times_in_range"
                     " check (created_at < '10000-01-01 00:00:00+00') not valid")
    legacy_lead = await factories.lead(db, account_id, full_name="Legacy")
    legacy_touch = await factories.touch(db, account_id, legacy_lead, channel="sms", status="failed",
                                         payload_={**factories.payload("sms", plan=factories.FULL_PLAN), "legacy": 1})
    await db.execute("alter table touch_runs add constraint no_more_legacy check (payload ->> 'legacy' is null)"
                     " not valid")
    open_touch = await factories.touch(db, account_id, neighbour, channel="sms", status="scheduled",
                                       scheduled_in_s=3600, payload_=factories.payload("sms", plan=factories.FULL_PLAN))
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake)) as daemon:
        async with db.transaction():  # one batch: the poisons first, then the neighbour's unsubscribe
            await factories.event(db, poison_lead, "touch_failed", direction="outbound",
                                  payload_={"touch_run_id": str(poison_touch), "failure_class": "transient"})
            await factories.event(db, legacy_lead, "touch_failed", direction="outbound",
                                  payload_={"touch_run_id": str(legacy_touch), "failure_class": "transient"})
            # the other reaction stallers: now plain data (the take reads only payload->>'touch_run_id')
            for event_type, direction, text in (("touch_failed", "outbound", "[1, 2]"),
                                                ("reply_received", "inbound", "[" * 2000 + "]" * 2000),
                                                ("reply_received", "inbound", '{"n": ' + HUGE_INT + "}")):
                await db.execute("insert into core_memory_events (lead_id, event_type, direction, payload)"
                                 " values ($1, $2, $3, $4::text::jsonb)", poison_lead, event_type, direction, text)
            await factories.event(db, neighbour, "unsubscribe")
        row = await wait_terminal(db_url, open_touch)
        await wait_until(db_url, "select count(*) = 1 from event_reactions where failed_at is not null")
    assert row["status"] == "canceled" and row["error"] == "canceled: suppressed:unsubscribe"
    assert await db.fetchval("select count(*) from event_reactions") == 1  # the others were reacted to
    aside = await db.fetchrow("select * from event_reactions where failed_at is not null")
    assert aside["lead_id"] == legacy_lead and aside["event_type"] == "touch_failed"
    assert "CheckViolationError" in aside["error"] and "no_more_legacy" in aside["error"]
    assert await db.fetchval("select count(*) from core_memory_events where event_type = 'fallback_decision'"
                             " and payload ->> 'touch_run_id' = $1", str(poison_touch)) == 1
    assert daemon.reactions.touches_canceled == 1
    result = await cli("status", "--json", env=cli_env(db_url))
    assert result.rc == 0, result.err
    status = json.loads(result.out)
    assert status["reactions_set_aside"]["count"] == 1 and status["queue"]["pending_reactions"] == 0
    assert status["reactions_set_aside"]["latest"][0]["event_id"] == str(aside["event_id"])


async def test_out_of_bound_delays_skip_one_campaign_with_a_job_runs_error_others_go_on(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    step_payload = {"routing": {"primary_channel": "sms", "fallback": factories.FULL_PLAN},
                    "delivery": {"body": "hola"}}
    campaigns = {}
    for name, delay in (("bad", "1e20"), ("nan", "NaN"), ("good", "0")):
        campaigns[name] = await db.fetchval("insert into campaigns (account_id, name) values ($1, $2) returning id",
                                            account_id, name)
        await db.execute("insert into campaign_steps (campaign_id, step, delay_minutes, payload)"
                         " values ($1, 1, $2::numeric, $3)", campaigns[name], delay, step_payload)
        await db.execute("insert into campaign_leads (campaign_id, lead_id) values ($1, $2)", campaigns[name], lead_id)
    far = await db.fetchval("insert into campaigns (account_id, name) values ($1, 'far') returning id", account_id)
    await db.execute("insert into campaign_steps (campaign_id, step, delay_minutes, payload) values ($1, 1, 1440, $2)",
                     far, step_payload)
    await db.execute("insert into campaign_leads (campaign_id, lead_id, enrolled_at)"
                     " values ($1, $2, '9999-12-31 12:00:00+00')", far, lead_id)  # + 1 day: beyond year 9999
    result = await cli("tick", "touch-orchestrator", env=cli_env(db_url))
    assert result.rc == 0, result.err
    assert "row skipped" in result.err and "delay_minutes" in result.err
    created = await db.fetch("select campaign_id from touch_runs")
    assert [r["campaign_id"] for r in created] == [campaigns["good"]]
    run = await db.fetchrow("select error, stats from job_runs where job = 'touch-orchestrator'")
    assert run["error"].startswith("3 row(s) skipped")
    for name in ("bad", "nan"):
        step_id = await db.fetchval("select id from campaign_steps where campaign_id = $1", campaigns[name])
        assert f"campaign_steps {step_id}" in run["error"]
    assert "touch_runs_times_in_range" in run["error"]
    assert run["stats"]["skipped_by_reason"] == {"invalid_delay": 2}


async def test_far_dates_are_data_and_year_20000_is_refused(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    for moment in ("20000-01-01 00:00+00", "infinity", "-infinity", "0001-01-01 00:00+00 BC"):
        with pytest.raises(asyncpg.CheckViolationError):
            await db.execute("insert into touch_runs (account_id, lead_id, channel, scheduled_at, status)"
                             " values ($1, $2, 'sms', $3::text::timestamptz, 'scheduled')", account_id, lead_id, moment)
    far = await db.fetchval("insert into touch_runs (account_id, lead_id, channel, scheduled_at, status, payload)"
                            " values ($1, $2, 'sms', '9999-12-31 23:59:59+00', 'scheduled', $3) returning id",
                            account_id, lead_id, factories.payload("sms"))
    past = await db.fetchval("insert into touch_runs (account_id, lead_id, channel, scheduled_at, status, payload)"
                             " values ($1, $2, 'sms', '0001-01-01 00:00:00+00', 'scheduled', $3) returning id",
                             account_id, lead_id, factories.payload("sms", body="año uno"))
    await factories.event(db, lead_id, "reply_received", created_ago_s=0)
    await db.execute("insert into core_memory_events (lead_id, event_type, direction, created_at)"
                     " values ($1, 'note', 'internal', '0001-01-01 00:00:00+00')", lead_id)
    neighbour = await factories.touch(db, account_id, await factories.lead(db, account_id, phone="+14155550122"))
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake)):
        await wait_terminal(db_url, neighbour)
        await wait_terminal(db_url, past)  # due since year 1: sent
    await _sent_with_id(db, neighbour)
    await _sent_with_id(db, past)
    assert await db.fetchval("select status from touch_runs where id = $1", far) == "scheduled"
    for args in (("status",), ("status", "--json"), ("lead", "inspect", str(lead_id)),
                 ("lead", "inspect", str(lead_id), "--json"), ("tick", "sweep")):
        result = await cli(*args, env=cli_env(db_url))
        assert result.rc == 0, (args, result.err)
        assert "Traceback" not in result.err
    status = json.loads((await cli("status", "--json", env=cli_env(db_url))).out)
    assert status["cadences"]["next_scheduled_at"].startswith("9999-12-31")


async def test_elasticemail_requests_stay_within_20_per_key() -> None:
    async with SandboxProviders(delay_ms=100) as fake:
        provider = ElasticEmailProvider(api_key=fake.settings_overrides()["elasticemail_api_key"],
                                        base_url=fake.base_url, timeout_s=20)
        try:
            messages = [OutboundMessage(touch_run_id=uuid4(), channel="email", to=f"l{i}@example.com",
                                        sender="ventas@acme.test", subject="s", body="b") for i in range(45)]
            import time

            results = await asyncio.gather(*(provider.send(m, deadline=time.monotonic() + 60) for m in messages))
        finally:
            await provider.aclose()
    assert len({r.provider_message_id for r in results}) == 45
    # 45 at once through one key: without the semaphore the pool (32 connections) would go over and get 429s
    assert 1 < fake.email_peak_concurrency <= 20 and fake.email_refused_concurrency == 0


async def test_sandbox_refuses_what_the_real_apis_refuse() -> None:
    import aiohttp

    async with SandboxProviders() as fake:
        token = fake.settings_overrides()["twilio_auth_token"]
        auth = {"Authorization": "Basic " + base64.b64encode(f"{fake.account_sid}:{token}".encode()).decode()}
        key = fake.settings_overrides()["elasticemail_api_key"]
        async with aiohttp.ClientSession() as session:
            async def twilio(resource: str, form: dict[str, str], sid: str | None = None) -> tuple[int, Any]:
                url = f"{fake.base_url}/2010-04-01/Accounts/{sid or fake.account_sid}/{resource}.json"
                async with session.post(url, data=form, headers=auth) as response:
                    return response.status, (await response.json()).get("code")

            async def email(content: dict[str, Any], to: str = "a@b.test") -> int:
                body = {"Recipients": {"To": [to]}, "Content": {"From": "x@y.test", "Subject": "s",
                                                              "Body": [{"Content": "b"}], **content}}
                async with session.post(f"{fake.base_url}/v4/emails/transactional", json=body,
                                        headers={"X-ElasticEmail-ApiKey": key}) as response:
                    return response.status

            sms = {"To": "+14155552671", "From": "+14155550199"}
            assert await twilio("Messages", {**sms, "Body": "x" * 1601}) == (400, 21617)
            assert await twilio("Messages", {**sms, "Body": "x" * 1600}) == (201, None)
            assert await twilio("Calls", {**sms, "Twiml": "<Response><Say>a\x0bb</Say></Response>"}) == (400, 12100)
            assert await twilio("Calls", {**sms, "Twiml": "<Response><Say>" + "x" * 4000 + "</Say></Response>"}) \
                == (400, 21236)
            assert await twilio("Calls", {**sms, "Twiml": "<Response><Say>ok</Say></Response>"}) == (201, None)
            assert fake.account_sid.startswith("AC") and len(fake.account_sid) == 34
            assert await email({"Subject": "a\r\nBcc: spy@x.test"}) == 400
            assert await email({"From": "x@y.test\nBcc: spy@x.test"}) == 400
            assert await email({}, to="Evil<x@y.test>") == 400
            assert await email({}) == 200
    async with SandboxProviders(account_sid="ACtest") as bad:  # a sid Twilio would never issue: 404 20404
        provider = TwilioProvider(account_sid="ACtest", auth_token=bad.settings_overrides()["twilio_auth_token"],
                                  base_url=bad.base_url, timeout_s=2)
        import time

        with pytest.raises(ProviderError) as failure:
            await provider.send(_message("sms", "x"), deadline=time.monotonic() + 5)
        await provider.aclose()
        assert failure.value.error_code == "20404"


async def test_answers_are_read_up_to_64_kib() -> None:
    import time

    async with SandboxProviders() as fake:
        fake.raw_rule(to="+14155552671", status=500, body=b'{"message": "' + b"x" * 5_000_000 + b'"}')
        provider = TwilioProvider(account_sid=fake.account_sid, auth_token=fake.settings_overrides()["twilio_auth_token"],
                                  base_url=fake.base_url, timeout_s=5)
        try:
            with pytest.raises(ProviderError) as failure:
                await provider.send(_message("sms", "x"), deadline=time.monotonic() + 0.5)
        finally:
            await provider.aclose()
    assert failure.value.error_code == "http_500" and len(failure.value.error) <= 300
