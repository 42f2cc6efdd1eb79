"""Twilio driver: Messages API for sms and whatsapp, Calls API (TwiML ``<Say>``) for voice (SPEC §6).

Why not the ``twilio`` package's own async client: it is built on aiohttp too, but it hides the response
headers (we need Retry-After) and builds several objects per call on the hot path. So we speak the same
REST API shape directly over one keep-alive aiohttp session per driver, and use the ``twilio`` package for
what it is best at here: TwiML generation (``VoiceResponse``).
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any, Literal
from urllib.parse import quote, urlencode

import aiohttp
from twilio.twiml.voice_response import VoiceResponse

from listener.errors import ProviderError
from listener.providers.base import OutboundMessage, SendResult, parse_retry_after, scrub, send_with_retries

WHATSAPP_PREFIX = "whatsapp:"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
TWILIO_RATE_LIMIT_CODE = 20429
# Status callbacks (SPEC §12): where Twilio reports what happened after it accepted a message or a call.
MESSAGE_STATUS_PATH = "/webhooks/twilio/status"
CALL_STATUS_PATH = "/webhooks/twilio/voice-status"
CALL_STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")

# <Say> wants a locale; a bare language gets its most common one. Values with a region pass through.
SAY_LOCALES = {
    "es": "es-ES",
    "en": "en-US",
    "pt": "pt-BR",
    "fr": "fr-FR",
    "de": "de-DE",
    "it": "it-IT",
}


def say_locale(language: str) -> str:
    value = (language or "es").strip().replace("_", "-")
    lang, _, region = value.partition("-")
    if region:
        return f"{lang.lower()}-{region.upper()}"
    return SAY_LOCALES.get(lang.lower(), lang.lower())


def twiml_say(text: str, language: str) -> str:
    """``<Response><Say language="es-ES">text</Say></Response>`` (escaped by the twilio package)."""
    response = VoiceResponse()
    response.say(text, language=say_locale(language))
    return str(response.to_xml(xml_declaration=False))


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
            call: dict[str, str | list[str]] = {
                "To": _without_whatsapp(message.to),
                "From": _without_whatsapp(message.sender),
                "Twiml": twiml_say(message.body, message.language),
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
            form["Body"] = message.body
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
                raw = await response.read()
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except (aiohttp.ConnectionTimeoutError, aiohttp.ClientConnectorError) as exc:
            # Nothing was written yet: safe to retry.
            raise ProviderError(
                "provider_unreachable", self._clean(f"cannot connect to Twilio: {exc}"), "transient", retryable=True
            ) from None
        except asyncio.TimeoutError:
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
        return scrub(text, (self._auth_token,))

    def _result(self, status: int, raw: bytes, retry_after: str | None) -> SendResult:
        body = _json_object(raw)
        if 200 <= status < 300:
            sid = body.get("sid")
            if not isinstance(sid, str) or not sid:
                raise ProviderError(
                    "outcome_unknown", f"Twilio answered {status} without a sid; the request may have been accepted", "transient"
                )
            return SendResult(provider="twilio", provider_message_id=sid)

        code = body.get("code")
        text = body.get("message")
        reason = self._clean(f"Twilio {status}: {text if isinstance(text, str) and text else raw[:200].decode('utf-8', 'replace')}")
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
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
