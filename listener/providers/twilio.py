"""Twilio driver: Messages API for sms and whatsapp, Calls API (TwiML ``<Say>``) for voice (SPEC §6).

Why not the ``twilio`` package's own async client: it is built on aiohttp too, but it hides the response
headers (we need Retry-After) and builds several objects per call on the hot path. So we speak the same
REST API shape directly over one keep-alive aiohttp session per driver, and use the ``twilio`` package for
what it is best at here: TwiML generation (``VoiceResponse``).
"""

from __future__ import annotations

import base64
from typing import Any, Literal
from urllib.parse import quote, urlencode

import aiohttp
from twilio.twiml.voice_response import VoiceResponse

from listener.providers.base import OutboundMessage, SendResult, parse_retry_after, scrub, send_with_retries
from listener.providers.voices import DEFAULT_LOCALE, say_voice
from listener.rules import safejson
from listener.rules.errors import ProviderError
from listener.rules.sanitize import (
    MAX_ANSWER_BYTES,
    clean_id,
    clean_twiml_text,
    decode_answer,
    secret_forms,
    without_unencodable,
)

WHATSAPP_PREFIX = "whatsapp:"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
TWILIO_RATE_LIMIT_CODE = 20429
# Status callbacks (SPEC §12): where Twilio reports what happened after it accepted a message or a call.
MESSAGE_STATUS_PATH = "/webhooks/twilio/status"
CALL_STATUS_PATH = "/webhooks/twilio/voice-status"
CALL_STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")

# <Say> wants a locale; a bare language gets its most common one. Values with a region pass through.
SAY_LOCALES = DEFAULT_LOCALE
# Twilio's published limits (twilio_api_v2010: CreateMessage Body, CreateCall Twiml "Max 4000 characters").
MAX_BODY_CHARS = 1_600
MAX_TWIML_CHARS = 4_000


def twiml_say(text: str, language: str, voice: str | None = None) -> str:
    """``<Response><Say voice="Polly.Lucia" language="es-ES">text</Say></Response>``: escaped by the twilio
    package, with every character XML forbids removed first (U+000B from a pasted Word line break made TwiML that
    is not XML), and a voice that speaks the language (listener.providers.voices)."""
    voice_name, locale = say_voice(language, voice)
    response = VoiceResponse()
    if voice_name is None:
        response.say(clean_twiml_text(text), language=locale)
    else:
        response.say(clean_twiml_text(text), voice=voice_name, language=locale)
    return str(response.to_xml(xml_declaration=False))


def too_long(what: str, length: int, limit: int) -> ProviderError:
    return ProviderError("message_too_long", f"{what} is {length} characters; Twilio accepts at most {limit}",
                         "permanent")


def _without_whatsapp(value: str) -> str:
    return value[len(WHATSAPP_PREFIX):] if value.lower().startswith(WHATSAPP_PREFIX) else value


def _with_whatsapp(value: str) -> str:
    return value if value.lower().startswith(WHATSAPP_PREFIX) else WHATSAPP_PREFIX + value


class TwilioProvider:
    """Sends sms, whatsapp and voice touches through Twilio's REST API (2010-04-01)."""

    name: Literal["twilio"] = "twilio"

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        base_url: str = "https://api.twilio.com",
        timeout_s: float = 15.0,
        connection_limit: int = 32,
        status_callback_base: str | None = None,
    ) -> None:
        self._account_sid = account_sid
        self._callback_base = status_callback_base.rstrip("/") if status_callback_base else None
        self._auth_token = auth_token
        self._timeout_s = timeout_s
        self._connection_limit = connection_limit
        account_url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{quote(account_sid, safe='')}"
        self._messages_url = f"{account_url}/Messages.json"
        self._calls_url = f"{account_url}/Calls.json"
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"TwilioProvider(account_sid={self._account_sid!r})"

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily so it binds to the loop that actually sends.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connection_limit, keepalive_timeout=30),
                headers={"Authorization": self._basic_auth(), "User-Agent": "revenue-asi", "Accept": "application/json"},
            )
        return self._session

    def _basic_auth(self) -> str:
        credentials = f"{self._account_sid}:{self._auth_token}".encode()
        return "Basic " + base64.b64encode(credentials).decode("ascii")

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    def request_for(self, message: OutboundMessage) -> tuple[str, dict[str, str | list[str]]]:
        """The URL and form fields for ``message``; a message without a sender fails permanently."""
        if message.channel == "voice":
            if not message.sender:
                raise ProviderError("no_sender", "no 'from' number for voice (account config or forced_sender_id)", "permanent")
            twiml = twiml_say(message.body, message.language, message.voice)
            if len(twiml) > MAX_TWIML_CHARS:
                raise too_long("the call's TwiML", len(twiml), MAX_TWIML_CHARS)
            call: dict[str, str | list[str]] = {
                "To": _without_whatsapp(message.to),
                "From": _without_whatsapp(message.sender),
                "Twiml": twiml,
            }
            if self._callback_base:
                call["StatusCallback"] = self._callback_base + CALL_STATUS_PATH
                call["StatusCallbackEvent"] = list(CALL_STATUS_EVENTS)
            return self._calls_url, call
        if message.channel not in ("sms", "whatsapp"):
            raise ProviderError("unsupported_channel", f"Twilio does not send {message.channel}", "permanent")
        whatsapp = message.channel == "whatsapp"
        form: dict[str, str | list[str]] = {"To": _with_whatsapp(message.to) if whatsapp else _without_whatsapp(message.to)}
        if whatsapp and message.content_sid:
            form["ContentSid"] = message.content_sid
            if message.content_variables:
                form["ContentVariables"] = message.content_variables
        else:
            body = without_unencodable(message.body)
            if len(body) > MAX_BODY_CHARS:
                raise too_long("the message body", len(body), MAX_BODY_CHARS)
            form["Body"] = body
        if self._callback_base:
            form["StatusCallback"] = self._callback_base + MESSAGE_STATUS_PATH
        if message.sender:
            form["From"] = _with_whatsapp(message.sender) if whatsapp else _without_whatsapp(message.sender)
        elif message.messaging_service_sid:
            form["MessagingServiceSid"] = message.messaging_service_sid
        else:
            raise ProviderError(
                "no_sender",
                f"no 'from' number or messaging_service_sid for {message.channel} (account config or forced_sender_id)",
                "permanent",
            )
        return self._messages_url, form

    async def send(self, message: OutboundMessage, *, deadline: float) -> SendResult:
        url, form = self.request_for(message)
        # The bytes aiohttp's FormData would send (urlencoded UTF-8), built once here instead of by FormData on
        # every request: the same request on the wire, less CPU on the hot path (docs/performance.md).
        body = urlencode(form, doseq=True).encode()

        async def attempt(timeout: float) -> SendResult:
            return await self._post(url, body, timeout)

        return await send_with_retries(attempt, deadline=deadline, timeout_s=self._timeout_s)

    async def _post(self, url: str, body: bytes, timeout: float) -> SendResult:
        session = self._get_session()
        payload = aiohttp.BytesPayload(body, content_type=FORM_CONTENT_TYPE)
        try:
            async with session.post(url, data=payload, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                raw = await _read_capped(response.content, MAX_ANSWER_BYTES)
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except (aiohttp.ConnectionTimeoutError, aiohttp.ClientConnectorError) as exc:
            # Nothing was written yet: safe to retry.
            raise ProviderError(
                "provider_unreachable", self._clean(f"cannot connect to Twilio: {exc}"), "transient", retryable=True
            ) from None
        except TimeoutError:
            raise ProviderError(
                "outcome_unknown",
                f"Twilio did not answer within {timeout:.2f}s; the request may have been accepted",
                "transient",
            ) from None
        except aiohttp.ClientError as exc:
            raise ProviderError(
                "outcome_unknown",
                self._clean(f"connection to Twilio failed mid-request ({type(exc).__name__}: {exc}); the request may have been accepted"),
                "transient",
            ) from None
        return self._result(status, raw, retry_after)

    def _clean(self, text: str) -> str:
        # the token whole, URL-encoded, and as base64(sid:token) — an echoed Authorization header shows that form
        return scrub(text, secret_forms([self._auth_token], basic_auth_user=self._account_sid))

    def _result(self, status: int, raw: bytes, retry_after: str | None) -> SendResult:
        body = _json_object(raw)
        if 200 <= status < 300:
            sid = clean_id(body.get("sid"))
            if sid is None:
                raise ProviderError(
                    "outcome_unknown", f"Twilio answered {status} without a sid; the request may have been accepted", "transient"
                )
            return SendResult(provider="twilio", provider_message_id=sid)

        code = body.get("code")
        text = body.get("message")
        # the whole answer is scrubbed, then cut (scrub): a secret straddling a cut would leave a fragment
        reason = self._clean(f"Twilio {status}: {text if isinstance(text, str) and text else decode_answer(raw)}")
        if status == 429 or code == TWILIO_RATE_LIMIT_CODE:
            error_code = str(TWILIO_RATE_LIMIT_CODE) if code == TWILIO_RATE_LIMIT_CODE else "rate_limited"
            raise ProviderError(
                error_code, reason, "transient", retryable=True, retry_after=parse_retry_after(retry_after), http_status=status
            )
        if status >= 500:
            raise ProviderError(
                f"http_{status}", reason, "transient", retryable=True, retry_after=parse_retry_after(retry_after), http_status=status
            )
        error_code = str(code) if isinstance(code, int | str) and str(code) else f"http_{status}"
        raise ProviderError(error_code, reason, "permanent", http_status=status)


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = safejson.loads(raw) if raw else {}
    except ValueError:  # UnsafeJson too: nested thousands deep, huge numbers, not UTF-8
        return {}
    return value if isinstance(value, dict) else {}


async def _read_capped(stream: aiohttp.StreamReader, cap: int) -> bytes:
    """At most ``cap`` bytes of a response body (SPEC §11: answers are read up to 64 KiB)."""
    chunks: list[bytes] = []
    total = 0
    while total < cap:
        chunk = await stream.read(cap - total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)
