"""The Twilio and ElasticEmail drivers against the SANDBOX fakes over loopback (never the internet)."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import sys
import time
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import aiohttp
import pytest

from listener.providers import OutboundMessage, build_providers, close_providers, unconfigured_channels
from listener.providers.base import parse_retry_after, scrub
from listener.providers.elasticemail import ElasticEmailProvider, from_header
from listener.providers.sandbox import ModeError, SandboxProviders, parse_mode
from listener.providers.twilio import TwilioProvider, twiml_say
from listener.providers.voices import say_locale
from listener.rules.errors import ProviderError
from listener.settings import Settings, load_settings

SID = "AC00000000000000000000000000000001"  # ^AC[0-9a-f]{32}$, as the sandbox (and Twilio) checks
TOKEN = "tw-secret-token-5f2b9c"
API_KEY = "ee-secret-key-81d7aa"
SECRETS = (TOKEN, API_KEY)
LEAD = "+14155552671"
SENDER = "+14155550199"


@pytest.fixture
async def fake() -> AsyncIterator[SandboxProviders]:
    async with SandboxProviders(account_sid=SID, auth_token=TOKEN, api_key=API_KEY) as sandbox:
        yield sandbox


def settings_for(fake: SandboxProviders, **overrides: Any) -> Settings:
    return load_settings(**{**fake.settings_overrides(), "provider_timeout_s": 2.0, **overrides})


@pytest.fixture
async def twilio(fake: SandboxProviders) -> AsyncIterator[TwilioProvider]:
    provider = TwilioProvider(account_sid=SID, auth_token=TOKEN, base_url=fake.base_url, timeout_s=2.0)
    yield provider
    await provider.aclose()


@pytest.fixture
async def email(fake: SandboxProviders) -> AsyncIterator[ElasticEmailProvider]:
    provider = ElasticEmailProvider(api_key=API_KEY, base_url=fake.base_url, timeout_s=2.0)
    yield provider
    await provider.aclose()


def msg(channel: str = "sms", **fields: Any) -> OutboundMessage:
    defaults: dict[str, Any] = {
        "touch_run_id": uuid4(),
        "channel": channel,
        "to": "ana@example.com" if channel == "email" else LEAD,
        "sender": "sales@acme.test" if channel == "email" else SENDER,
        "body": "Hola Ana",
    }
    return OutboundMessage(**{**defaults, **fields})


def soon(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


def assert_no_secret(exc: BaseException) -> None:
    texts = [str(exc), repr(exc), getattr(exc, "error", ""), getattr(exc, "error_code", "")]
    for secret in SECRETS:
        assert all(secret not in t for t in texts)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- happy paths -------------------------------------------------------------------------------------


async def test_sms_posts_twilio_messages_form(fake: SandboxProviders, twilio: TwilioProvider) -> None:
    result = await twilio.send(msg("sms"), deadline=soon())

    assert result.provider == "twilio"
    assert result.provider_message_id.startswith("SM") and len(result.provider_message_id) == 34
    (req,) = fake.requests
    assert req.path == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert req.kind == "sms" and req.authorized and req.status == 201
    assert req.body == {"To": LEAD, "From": SENDER, "Body": "Hola Ana"}
    assert req.headers["Authorization"] == "***"  # recorded, but redacted


async def test_sms_uses_messaging_service_when_there_is_no_sender(fake: SandboxProviders, twilio: TwilioProvider) -> None:
    await twilio.send(msg("sms", sender=None, messaging_service_sid="MG123"), deadline=soon())
    assert fake.requests[0].body == {"To": LEAD, "Body": "Hola Ana", "MessagingServiceSid": "MG123"}


async def test_sender_wins_over_messaging_service(fake: SandboxProviders, twilio: TwilioProvider) -> None:
    await twilio.send(msg("sms", messaging_service_sid="MG123"), deadline=soon())
    assert fake.requests[0].body["From"] == SENDER
    assert "MessagingServiceSid" not in fake.requests[0].body


@pytest.mark.parametrize("sender", [SENDER, f"whatsapp:{SENDER}"])
async def test_whatsapp_prefixes_to_and_from_once(fake: SandboxProviders, twilio: TwilioProvider, sender: str) -> None:
    result = await twilio.send(msg("whatsapp", sender=sender), deadline=soon())

    assert result.provider_message_id.startswith("SM")
    (req,) = fake.requests
    assert req.kind == "whatsapp"
    assert req.body["To"] == f"whatsapp:{LEAD}"
    assert req.body["From"] == f"whatsapp:{SENDER}"


async def test_sms_strips_a_whatsapp_sender_prefix(fake: SandboxProviders, twilio: TwilioProvider) -> None:
    await twilio.send(msg("sms", sender=f"whatsapp:{SENDER}"), deadline=soon())
    assert fake.requests[0].body["From"] == SENDER


async def test_voice_posts_calls_with_say_twiml(fake: SandboxProviders, twilio: TwilioProvider) -> None:
    result = await twilio.send(msg("voice", body="Hola Ana & co <b>", language="es"), deadline=soon())

    assert result.provider_message_id.startswith("CA") and len(result.provider_message_id) == 34
    (req,) = fake.requests
    assert req.path == f"/2010-04-01/Accounts/{SID}/Calls.json"
    assert req.kind == "voice"
    assert req.body["To"] == LEAD and req.body["From"] == SENDER
    assert req.body["Twiml"] == '<Response><Say language="es-ES" voice="Polly.Lucia">Hola Ana &amp; co &lt;b&gt;</Say></Response>'


@pytest.mark.parametrize(
    ("language", "locale"),
    [("es", "es-ES"), ("en", "en-US"), ("pt", "pt-BR"), ("fr", "fr-FR"), ("de", "de-DE"), ("it", "it-IT"),
     ("es-MX", "es-MX"), ("en_gb", "en-GB"), ("", "es-ES")],
)
def test_say_locale(language: str, locale: str) -> None:
    assert say_locale(language) == locale
    assert f'<Say language="{locale}" voice="Polly.' in twiml_say("x", language)


async def test_email_posts_elasticemail_v4_transactional(fake: SandboxProviders, email: ElasticEmailProvider) -> None:
    touch_id = uuid4()
    message = msg("email", touch_run_id=touch_id, sender_name="Acme Sales", subject="Hola", body="Hola Ana")

    result = await email.send(message, deadline=soon())

    assert result.provider == "elasticemail" and result.provider_message_id.startswith("sbx")
    (req,) = fake.requests
    assert req.path == "/v4/emails/transactional" and req.kind == "email" and req.authorized
    assert req.headers["X-ElasticEmail-ApiKey"] == "***"
    assert req.headers["Content-Type"] == "application/json"
    assert req.body == {
        "Recipients": {"To": ["ana@example.com"]},
        "Content": {
            "From": "Acme Sales <sales@acme.test>",
            "Subject": "Hola",
            "Body": [{"ContentType": "PlainText", "Charset": "utf-8", "Content": "Hola Ana"}],
            "Postback": str(touch_id),
        },
    }
    assert req.to == "ana@example.com" and req.touch_run_id == str(touch_id)


async def test_email_without_subject_or_name(fake: SandboxProviders, email: ElasticEmailProvider) -> None:
    await email.send(msg("email", subject=None), deadline=soon())
    content = fake.requests[0].body["Content"]
    assert content["From"] == "sales@acme.test" and content["Subject"] == ""


def test_from_header_quotes_special_names() -> None:
    assert from_header("a@b.co", None) == "a@b.co"
    assert from_header("a@b.co", "Ana Díaz") == "Ana Díaz <a@b.co>"
    assert from_header("a@b.co", 'Díaz, "Ana"') == '"Díaz, \\"Ana\\"" <a@b.co>'


async def test_one_session_is_reused_across_sends(fake: SandboxProviders, twilio: TwilioProvider) -> None:
    await asyncio.gather(*(twilio.send(msg("sms"), deadline=soon()) for _ in range(20)))
    assert len(fake.requests) == 20
    assert len({r.body["Body"] for r in fake.requests}) == 1


# --- permanent errors --------------------------------------------------------------------------------


async def test_twilio_400_is_permanent_with_twilio_code_and_not_retried(
    fake: SandboxProviders, twilio: TwilioProvider
) -> None:
    fake.rule(to=LEAD, mode="error:400:21211")

    with pytest.raises(ProviderError) as info:
        await twilio.send(msg("sms"), deadline=soon())

    exc = info.value
    assert (exc.error_code, exc.failure_class, exc.retryable, exc.http_status) == ("21211", "permanent", False, 400)
    assert "not a valid phone number" in exc.error
    assert len(fake.requests) == 1


@pytest.mark.parametrize("code", ["21610", "21614"])
async def test_other_twilio_4xx_codes_are_kept(fake: SandboxProviders, twilio: TwilioProvider, code: str) -> None:
    fake.set_mode(f"error:400:{code}")
    with pytest.raises(ProviderError) as info:
        await twilio.send(msg("sms"), deadline=soon())
    assert info.value.error_code == code and info.value.failure_class == "permanent"
    assert len(fake.requests) == 1


async def test_4xx_without_twilio_code_is_http_status(fake: SandboxProviders, twilio: TwilioProvider) -> None:
    fake.set_mode("error:404")
    with pytest.raises(ProviderError) as info:
        await twilio.send(msg("sms"), deadline=soon())
    assert info.value.error_code == "http_404" and info.value.failure_class == "permanent"


async def test_sandbox_validates_the_to_number(fake: SandboxProviders, twilio: TwilioProvider) -> None:
    with pytest.raises(ProviderError) as info:
        await twilio.send(msg("sms", to="12345"), deadline=soon())
    assert info.value.error_code == "21211" and len(fake.requests) == 1


async def test_twilio_wrong_credentials_are_permanent_20003(fake: SandboxProviders) -> None:
    provider = TwilioProvider(account_sid=SID, auth_token="wrong-" + TOKEN, base_url=fake.base_url, timeout_s=2.0)
    try:
        with pytest.raises(ProviderError) as info:
            await provider.send(msg("sms"), deadline=soon())
    finally:
        await provider.aclose()
    assert (info.value.error_code, info.value.failure_class, info.value.http_status) == ("20003", "permanent", 401)
    assert len(fake.requests) == 1 and not fake.requests[0].authorized
    assert "wrong-" not in str(info.value)


async def test_email_wrong_key_is_permanent_http_401(fake: SandboxProviders) -> None:
    provider = ElasticEmailProvider(api_key="nope-" + API_KEY, base_url=fake.base_url, timeout_s=2.0)
    try:
        with pytest.raises(ProviderError) as info:
            await provider.send(msg("email"), deadline=soon())
    finally:
        await provider.aclose()
    assert (info.value.error_code, info.value.failure_class) == ("http_401", "permanent")
    assert "invalid API key" in info.value.error and len(fake.requests) == 1


async def test_email_4xx_is_permanent(fake: SandboxProviders, email: ElasticEmailProvider) -> None:
    fake.set_mode("error:400")
    with pytest.raises(ProviderError) as info:
        await email.send(msg("email"), deadline=soon())
    assert (info.value.error_code, info.value.failure_class) == ("http_400", "permanent")
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    ("channel", "fields"),
    [("sms", {"sender": None}), ("whatsapp", {"sender": None}), ("voice", {"sender": None, "messaging_service_sid": "MG1"}),
     ("email", {"sender": None})],
)
async def test_missing_sender_fails_before_any_request(
    fake: SandboxProviders, twilio: TwilioProvider, email: ElasticEmailProvider, channel: str, fields: dict[str, Any]
) -> None:
    provider = email if channel == "email" else twilio
    with pytest.raises(ProviderError) as info:
        await provider.send(msg(channel, **fields), deadline=soon())
    assert (info.value.error_code, info.value.failure_class) == ("no_sender", "permanent")
    assert fake.requests == []


async def test_deadline_already_passed_makes_no_request(fake: SandboxProviders, twilio: TwilioProvider) -> None:
    with pytest.raises(ProviderError) as info:
        await twilio.send(msg("sms"), deadline=time.monotonic() - 1)
    assert (info.value.error_code, info.value.failure_class) == ("deadline_exceeded", "transient")
    assert fake.requests == []


# --- retries -----------------------------------------------------------------------------------------


async def test_429_retry_after_is_honoured_then_success(fake: SandboxProviders, twilio: TwilioProvider) -> None:
    fake.script("rate_limit:0.3", "ok")

    result = await twilio.send(msg("sms"), deadline=soon())

    assert result.provider_message_id.startswith("SM")
    first, second = fake.requests
    assert (first.status, second.status) == (429, 201)
    # Causal, not a timing threshold: the retry cannot have been sent before Retry-After elapsed.
    assert second.received_at_mono - first.received_at_mono >= 0.3 - 0.005


async def test_email_429_retry_after_then_success(fake: SandboxProviders, email: ElasticEmailProvider) -> None:
    fake.script("rate_limit:0.2", "ok")
    result = await email.send(msg("email"), deadline=soon())
    assert result.provider == "elasticemail"
    first, second = fake.requests
    assert second.received_at_mono - first.received_at_mono >= 0.2 - 0.005


async def test_429_until_deadline_is_transient_20429(fake: SandboxProviders, twilio: TwilioProvider) -> None:
    fake.set_mode("rate_limit:0.1")
    with pytest.raises(ProviderError) as info:
        await twilio.send(msg("sms"), deadline=soon(1.0))
    assert (info.value.error_code, info.value.failure_class, info.value.http_status) == ("20429", "transient", 429)
    assert len(fake.requests) > 1


async def test_retry_after_beyond_the_deadline_gives_up_at_once(fake: SandboxProviders, twilio: TwilioProvider) -> None:
    fake.set_mode("rate_limit:60")
    with pytest.raises(ProviderError) as info:
        await twilio.send(msg("sms"), deadline=soon(5))
    assert info.value.error_code == "20429" and len(fake.requests) == 1


async def test_email_429_until_deadline_is_rate_limited(fake: SandboxProviders, email: ElasticEmailProvider) -> None:
    fake.set_mode("rate_limit:0.1")
    with pytest.raises(ProviderError) as info:
        await email.send(msg("email"), deadline=soon(0.4))
    assert (info.value.error_code, info.value.failure_class) == ("rate_limited", "transient")


async def test_5xx_until_deadline_is_transient_and_retried(fake: SandboxProviders, twilio: TwilioProvider) -> None:
    fake.set_mode("server_error")
    with pytest.raises(ProviderError) as info:
        await twilio.send(msg("sms"), deadline=soon(1.0))
    assert (info.value.error_code, info.value.failure_class, info.value.http_status) == ("http_500", "transient", 500)
    assert 1 < len(fake.requests) <= 6


async def test_5xx_stops_after_six_attempts(fake: SandboxProviders, twilio: TwilioProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("listener.providers.base.BACKOFF_INITIAL_S", 0.001)
    fake.set_mode("server_error:503")
    with pytest.raises(ProviderError) as info:
        await twilio.send(msg("sms"), deadline=soon(30))
    assert info.value.error_code == "http_503"
    assert len(fake.requests) == 6


async def test_email_5xx_then_success(fake: SandboxProviders, email: ElasticEmailProvider) -> None:
    fake.script("server_error", "server_error:502", "ok")
    result = await email.send(msg("email"), deadline=soon())
    assert result.provider == "elasticemail"
    assert [r.status for r in fake.requests] == [500, 502, 200]


async def test_email_5xx_until_deadline(fake: SandboxProviders, email: ElasticEmailProvider) -> None:
    fake.set_mode("server_error")
    with pytest.raises(ProviderError) as info:
        await email.send(msg("email"), deadline=soon(1.0))
    assert (info.value.error_code, info.value.failure_class) == ("http_500", "transient")
    assert len(fake.requests) > 1


async def test_twilio_hang_is_outcome_unknown_and_not_retried(fake: SandboxProviders) -> None:
    fake.set_mode("hang")
    provider = TwilioProvider(account_sid=SID, auth_token=TOKEN, base_url=fake.base_url, timeout_s=0.2)
    try:
        with pytest.raises(ProviderError) as info:
            await provider.send(msg("sms"), deadline=soon())
    finally:
        await provider.aclose()
    assert (info.value.error_code, info.value.failure_class, info.value.retryable) == ("outcome_unknown", "transient", False)
    assert len(fake.requests) == 1


async def test_email_hang_is_outcome_unknown_and_not_retried(fake: SandboxProviders) -> None:
    fake.set_mode("hang")
    provider = ElasticEmailProvider(api_key=API_KEY, base_url=fake.base_url, timeout_s=0.2)
    try:
        with pytest.raises(ProviderError) as info:
            await provider.send(msg("email"), deadline=soon())
    finally:
        await provider.aclose()
    assert (info.value.error_code, info.value.failure_class, info.value.retryable) == ("outcome_unknown", "transient", False)
    assert len(fake.requests) == 1


async def test_request_timeout_is_clipped_to_the_deadline(fake: SandboxProviders) -> None:
    fake.set_mode("hang")
    provider = TwilioProvider(account_sid=SID, auth_token=TOKEN, base_url=fake.base_url, timeout_s=60)
    try:
        with pytest.raises(ProviderError) as info:
            await provider.send(msg("sms"), deadline=soon(0.2))
    finally:
        await provider.aclose()
    assert info.value.error_code == "outcome_unknown" and len(fake.requests) == 1


@pytest.mark.parametrize("kind", ["twilio", "email"])
async def test_connection_refused_is_transient_provider_unreachable(kind: str) -> None:
    base_url = f"http://127.0.0.1:{closed_port()}"
    provider: TwilioProvider | ElasticEmailProvider
    if kind == "twilio":
        provider = TwilioProvider(account_sid=SID, auth_token=TOKEN, base_url=base_url, timeout_s=1)
    else:
        provider = ElasticEmailProvider(api_key=API_KEY, base_url=base_url, timeout_s=1)
    try:
        with pytest.raises(ProviderError) as info:
            await provider.send(msg("email" if kind == "email" else "sms"), deadline=soon(0.4))
    finally:
        await provider.aclose()
    assert (info.value.error_code, info.value.failure_class) == ("provider_unreachable", "transient")
    assert_no_secret(info.value)


# --- secrets -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode", ["error:400:21211", "error:401:20003", "error:403", "rate_limit:0.05", "server_error", "hang"]
)
@pytest.mark.parametrize("channel", ["sms", "whatsapp", "voice", "email"])
async def test_secrets_never_appear_in_errors_or_logs(
    fake: SandboxProviders, caplog: pytest.LogCaptureFixture, mode: str, channel: str
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.set_mode(mode)
    providers = build_providers(settings_for(fake, provider_timeout_s=0.15))
    provider = providers[channel]
    assert provider is not None
    try:
        with pytest.raises(ProviderError) as info:
            await provider.send(msg(channel), deadline=soon(0.3))
    finally:
        await close_providers(providers)
    assert_no_secret(info.value)
    assert info.value.__cause__ is None or all(s not in str(info.value.__cause__) for s in SECRETS)
    for record in caplog.records:
        assert all(secret not in record.getMessage() for secret in SECRETS)
    assert all(secret not in repr(p) for p in providers.values() for secret in SECRETS)


def test_scrub_removes_secrets_and_truncates() -> None:
    assert scrub(f"token {TOKEN} here", SECRETS) == "token *** here"
    assert len(scrub("x" * 1000, SECRETS)) == 300


def test_parse_retry_after() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a past date: retry now
    assert parse_retry_after("soon") is None


# --- wiring ------------------------------------------------------------------------------------------


def test_build_providers_none_for_unconfigured() -> None:
    settings = load_settings(twilio_account_sid=None, twilio_auth_token=None, elasticemail_api_key=None)
    assert build_providers(settings) == {"voice": None, "whatsapp": None, "sms": None, "email": None}
    assert unconfigured_channels(settings) == ["voice", "whatsapp", "sms", "email"]


def test_build_providers_needs_both_twilio_credentials() -> None:
    settings = load_settings(twilio_account_sid=SID, twilio_auth_token=None, elasticemail_api_key=API_KEY)
    providers = build_providers(settings)
    assert providers["sms"] is None and isinstance(providers["email"], ElasticEmailProvider)
    assert unconfigured_channels(settings) == ["voice", "whatsapp", "sms"]


async def test_build_providers_shares_one_twilio(fake: SandboxProviders) -> None:
    settings = settings_for(fake, elasticemail_api_key=None)
    providers = build_providers(settings)
    assert isinstance(providers["voice"], TwilioProvider)
    assert providers["voice"] is providers["whatsapp"] is providers["sms"]
    assert providers["email"] is None
    assert unconfigured_channels(settings) == ["email"]
    await close_providers(providers)


async def test_built_providers_send_through_the_sandbox(fake: SandboxProviders) -> None:
    providers = build_providers(settings_for(fake))
    try:
        for channel in ("voice", "whatsapp", "sms", "email"):
            provider = providers[channel]
            assert provider is not None
            await provider.send(msg(channel), deadline=soon())
    finally:
        await close_providers(providers)
    assert [r.kind for r in fake.requests] == ["voice", "whatsapp", "sms", "email"]
    assert all(r.authorized for r in fake.requests)


# --- the sandbox itself ------------------------------------------------------------------------------


def test_parse_mode() -> None:
    assert str(parse_mode("ok")) == "ok"
    assert parse_mode("error:400:21211").code == 21211
    assert parse_mode("error:503").status == 503
    assert parse_mode("rate_limit:2").retry_after == 2.0
    assert parse_mode("rate_limit").retry_after == 1.0
    assert parse_mode("server_error").status == 500
    for bad in ("nope", "error", "error:200", "rate_limit:x", "hang:1", "rate_limit:-1"):
        with pytest.raises(ModeError):
            parse_mode(bad)


async def test_sandbox_rules_script_and_reset(fake: SandboxProviders, twilio: TwilioProvider) -> None:
    other = "+14155552672"
    fake.rule(to=LEAD, mode="error:400:21610")
    fake.script("error:400:21614")

    outcomes = []
    for to in (other, LEAD, other):
        try:
            await twilio.send(msg("sms", to=to), deadline=soon())
            outcomes.append("ok")
        except ProviderError as exc:
            outcomes.append(exc.error_code)
    assert outcomes == ["21614", "21610", "ok"]

    fake.reset()
    assert fake.requests == [] and fake.mode == "ok"
    await twilio.send(msg("sms"), deadline=soon())
    assert fake.requests[0].index == 0


async def test_sandbox_fault_injection_is_seeded(fake: SandboxProviders) -> None:
    def picks(seed: int) -> list[str]:
        fake.set_mode("ok", fault_rate=0.5, seed=seed)
        return [str(fake._choose(LEAD)) for _ in range(40)]

    first, again = picks(7), picks(7)
    assert first == again
    assert {"ok", "server_error:500", "rate_limit:1", "hang"} == set(first)
    fake.set_mode(fault_rate=1.0)
    assert all(str(fake._choose(LEAD)) != "ok" for _ in range(20))


async def test_sandbox_wait_for_requests(fake: SandboxProviders, twilio: TwilioProvider) -> None:
    waiting = asyncio.ensure_future(fake.wait_for_requests(3))
    await asyncio.gather(*(twilio.send(msg("sms"), deadline=soon()) for _ in range(3)))
    assert len(await waiting) == 3
    with pytest.raises(TimeoutError):
        await fake.wait_for_requests(4, timeout=0.01)


async def test_sandbox_validates_required_fields(fake: SandboxProviders) -> None:
    url = f"{fake.base_url}/2010-04-01/Accounts/{SID}"
    basic = "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    async with aiohttp.ClientSession(headers={"Authorization": basic}) as session:
        cases = [
            ("Messages", {"Body": "x", "From": SENDER}, 21604),
            ("Messages", {"To": LEAD, "From": SENDER}, 21602),
            ("Messages", {"To": LEAD, "Body": "x"}, 21603),
            ("Calls", {"From": SENDER, "Twiml": "<Response/>"}, 21201),
            ("Calls", {"To": LEAD, "Twiml": "<Response/>"}, 21213),
            ("Calls", {"To": LEAD, "From": SENDER}, 21205),
            ("Calls", {"To": "whatsapp:123", "From": SENDER, "Twiml": "<Response/>"}, 21211),
        ]
        for resource, form, code in cases:
            async with session.post(f"{url}/{resource}.json", data=form) as response:
                body = await response.json()
                assert (response.status, body["code"], body["status"]) == (400, code, 400)
                assert body["more_info"].endswith(str(code))
                assert response.headers["X-Sandbox"] == "revenue-asi"
        async with session.post(f"{fake.base_url}/2010-04-01/Accounts/ACother/Messages.json", data=cases[0][1]) as r:
            assert r.status == 404
    async with aiohttp.ClientSession(headers={"X-ElasticEmail-ApiKey": API_KEY}) as session:
        for document in ({}, {"Recipients": {"To": ["a@b.co"]}, "Content": {"Body": [{}]}},
                         {"Recipients": {"To": ["a@b.co"]}, "Content": {"From": "x@y.co"}}):
            async with session.post(f"{fake.base_url}/v4/emails/transactional", json=document) as response:
                assert response.status == 400 and "Error" in await response.json()


async def test_sandbox_control_api(fake: SandboxProviders, twilio: TwilioProvider) -> None:
    async with aiohttp.ClientSession(base_url=fake.base_url) as session:
        async with session.get("/_sandbox/health") as response:
            assert (await response.json())["status"] == "ok"
        control = {"mode": "ok", "rules": {LEAD: "error:400:21211"}, "delay_ms": 1, "script": ["server_error"]}
        async with session.post("/_sandbox/mode", json=control) as response:
            described = await response.json()
            assert described["rules"] == {LEAD: "error:400:21211"} and described["script"] == ["server_error:500"]
        async with session.post("/_sandbox/mode", json={"mode": "bogus"}) as response:
            assert response.status == 400

        with pytest.raises(ProviderError):
            await twilio.send(msg("sms"), deadline=soon())  # 500, then 21211 from the rule
        async with session.get("/_sandbox/requests") as response:
            listing = await response.json()
            assert listing["next"] == 2 and [r["status"] for r in listing["requests"]] == [500, 400]
        async with session.get("/_sandbox/requests", params={"since": "1"}) as response:
            listing = await response.json()
            assert [r["index"] for r in listing["requests"]] == [1]
            assert listing["requests"][0]["headers"]["Authorization"] == "***"

        async with session.post("/_sandbox/mode", json={"rules": [{"to": LEAD, "mode": None}], "delay_ms": 0}) as response:
            assert (await response.json())["rules"] == {}
        async with session.post("/_sandbox/reset") as response:
            assert (await response.json())["requests"] == 0


async def test_sandbox_runs_standalone() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "listener.providers.sandbox", "--port", "0",
        "--account-sid", SID, "--auth-token", TOKEN, "--api-key", API_KEY,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert "SANDBOX" in line
        base_url = line.split()[-1]
        provider = ElasticEmailProvider(api_key=API_KEY, base_url=base_url, timeout_s=2)
        try:
            result = await provider.send(msg("email"), deadline=soon())
        finally:
            await provider.aclose()
        assert result.provider_message_id
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 20) == 0


async def test_touch_run_id_is_a_uuid_string_in_the_postback(fake: SandboxProviders, email: ElasticEmailProvider) -> None:
    message = msg("email")
    await email.send(message, deadline=soon())
    assert UUID(fake.requests[0].touch_run_id or "") == message.touch_run_id
