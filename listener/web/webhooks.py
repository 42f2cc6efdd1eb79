"""Provider webhooks (SPEC §12): Twilio message status, call status and inbound messages; ElasticEmail
notifications. Each request is authenticated (Twilio: ``X-Twilio-Signature`` with the twilio package's
``RequestValidator`` over REVENUE_ASI_PUBLIC_URL + path + query; ElasticEmail: ``?token=``), parsed strictly
(UTF-8, no duplicated fields, at most 1 MiB), then recorded in one statement: the receipt (deduplicated), the
touch's delivery status and the events. Wrong auth -> 403, malformed -> 400, nothing written in either case."""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl
from uuid import UUID

from aiohttp import web
from twilio.request_validator import RequestValidator

from listener.inbound.absence import out_of_office_payload
from listener.inbound.classify import classify
from listener.inbound.status import (
    StatusEffect,
    digits,
    elasticemail_status,
    phone_candidates,
    strip_whatsapp,
    twilio_call_status,
    twilio_message_status,
)
from listener.rules.vocabulary import REPLY_NEGATIVE, REPLY_OUT_OF_OFFICE, REPLY_POSITIVE, RESUBSCRIBE, UNSUBSCRIBE
from listener.settings import Settings
from listener.store.database import CONNECTION_ERRORS
from listener.store.queries import Q
from listener.web.app import POOL, SETTINGS

log = logging.getLogger(__name__)

TWILIO_STATUS_PATH = "/webhooks/twilio/status"
TWILIO_VOICE_STATUS_PATH = "/webhooks/twilio/voice-status"
TWILIO_INBOUND_PATH = "/webhooks/twilio/inbound"
ELASTICEMAIL_PATH = "/webhooks/elasticemail"

MAX_FIELDS = 200
UNKNOWN_MESSAGE_WAITS_S = (0.02, 0.05, 0.1, 0.2, 0.4, 0.8)  # ~1.6 s in all, then 'unknown_message'
_SID = re.compile(r"^[A-Za-z0-9]{2,64}$")
_STATUS = re.compile(r"^[A-Za-z_-]{1,40}$")
_SHORT = re.compile(r"^[^\x00-\x1f]{0,100}$")
FOLLOW_UP_EVENTS = {"opt_out": UNSUBSCRIBE, "opt_in": RESUBSCRIBE, "positive": REPLY_POSITIVE,
                    "negative": REPLY_NEGATIVE, "out_of_office": REPLY_OUT_OF_OFFICE}
SECRET_PARAMS = frozenset({"token"})
VALIDATOR = web.AppKey("twilio_validator", RequestValidator)


class BadRequest(Exception):
    """A malformed request: 400 with this reason, nothing written."""


def setup(app: web.Application) -> None:
    """Add the webhook routes to `app`."""
    token = app[SETTINGS].twilio_auth_token
    if token is not None:
        app[VALIDATOR] = RequestValidator(token.get_secret_value())
    app.router.add_post(TWILIO_STATUS_PATH, _guard(twilio_status))
    app.router.add_post(TWILIO_VOICE_STATUS_PATH, _guard(twilio_voice_status))
    app.router.add_post(TWILIO_INBOUND_PATH, _guard(twilio_inbound))
    app.router.add_get(ELASTICEMAIL_PATH, _guard(elasticemail))
    app.router.add_post(ELASTICEMAIL_PATH, _guard(elasticemail))


def _guard(handler: Callable[[web.Request], Awaitable[web.Response]]) -> Callable[[web.Request],
                                                                                    Awaitable[web.Response]]:
    """Malformed -> 400; the database unavailable -> 503 (the provider retries); never a 500 for bad input."""

    async def guarded(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except BadRequest as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except CONNECTION_ERRORS as exc:
            log.warning("webhook %s: database unavailable (%s)", request.path, type(exc).__name__)
            return web.json_response({"error": "database unavailable; retry later"}, status=503)

    return guarded


# --- parsing and authentication -------------------------------------------------------------------------------


def _pairs(text: str, what: str) -> list[tuple[str, str]]:
    try:
        return parse_qsl(text, keep_blank_values=True, errors="strict", max_num_fields=MAX_FIELDS)
    except UnicodeDecodeError:
        raise BadRequest(f"{what} is not UTF-8") from None
    except ValueError as exc:
        raise BadRequest(f"{what}: {exc}") from None


def _unique(pairs: list[tuple[str, str]]) -> dict[str, str]:
    params: dict[str, str] = {}
    for key, value in pairs:
        if key in params:
            raise BadRequest(f"field {key!r} appears more than once")
        params[key] = value
    return params


async def _form(request: web.Request) -> dict[str, str]:
    """The urlencoded body as a dict; 400 for another content type, non-UTF-8 bytes or a duplicated field
    (aiohttp answers 413 beyond client_max_size)."""
    if request.content_type not in ("application/x-www-form-urlencoded", "application/octet-stream"):
        raise BadRequest("expected an application/x-www-form-urlencoded body")
    raw = await request.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("body is not UTF-8") from None
    return _unique(_pairs(text, "body"))


def _stored(params: Mapping[str, str]) -> dict[str, str]:
    """Params as stored in webhook_receipts: secrets removed, NUL bytes (which jsonb refuses) stripped."""
    return {k.replace("\x00", ""): v.replace("\x00", "") for k, v in params.items() if k.lower() not in SECRET_PARAMS}


def _twilio_authentic(request: web.Request, params: Mapping[str, str]) -> bool:
    settings = request.app[SETTINGS]
    signature = request.headers.get("X-Twilio-Signature")
    if not signature or not settings.public_url or settings.twilio_auth_token is None:
        return False
    validator = request.app.get(VALIDATOR)
    if validator is None:
        validator = RequestValidator(settings.twilio_auth_token.get_secret_value())
    # What Twilio called: the public URL + the path and query as received (not what a proxy made of the host).
    url = settings.public_url.rstrip("/") + request.raw_path
    return bool(validator.validate(url, dict(params), signature))


def _forbidden(reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=403)


async def _twilio_params(request: web.Request) -> dict[str, str] | web.Response:
    params = await _form(request)
    if not _twilio_authentic(request, params):
        return _forbidden("missing or invalid X-Twilio-Signature")
    return params


def _field(params: Mapping[str, str], name: str, pattern: re.Pattern[str], *, required: bool = True) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise BadRequest(f"missing {name}")
        return None
    if not pattern.fullmatch(value):
        raise BadRequest(f"malformed {name}")
    return value


def _ok(outcome: str, **extra: Any) -> web.Response:
    return web.json_response({"outcome": outcome, **extra})


# --- recording ------------------------------------------------------------------------------------------------


async def _record_status(request: web.Request, *, provider: str, kind: str, dedupe_key: str,
                         params: Mapping[str, str], provider_message_id: str | None, touch_id: UUID | None,
                         effect: StatusEffect) -> web.Response:
    payload = {**effect.payload}
    if provider_message_id:
        payload["provider_message_id"] = provider_message_id
    stored = _stored(params)
    waits = list(UNKNOWN_MESSAGE_WAITS_S)
    while True:
        last_try = not waits
        async with request.app[POOL].acquire() as conn:
            row = await conn.fetchrow(Q.record_touch_status, provider, kind, dedupe_key, stored,
                                      provider_message_id, touch_id, effect.delivery_status, effect.event_type,
                                      f"webhook:{provider}", effect.direction, payload, last_try)
        if row is None or row["outcome"] != "not_found":
            break
        # A callback can overtake the daemon's record of the provider's id (the provider answered the send a few
        # milliseconds ago): look again for a moment before keeping it as 'unknown_message'.
        await asyncio.sleep(waits.pop(0))
    if row is None:
        return _ok("duplicate")
    return _ok(row["outcome"], touch_run_id=str(row["touch_run_id"]) if row["touch_run_id"] else None)


# --- routes ---------------------------------------------------------------------------------------------------


async def twilio_status(request: web.Request) -> web.Response:
    params = await _twilio_params(request)
    if isinstance(params, web.Response):
        return params
    sid = _field(params, "MessageSid", _SID)
    status = _field(params, "MessageStatus", _STATUS)
    assert sid is not None and status is not None
    error_code = _field(params, "ErrorCode", _SHORT, required=False)
    return await _record_status(request, provider="twilio", kind="message_status",
                                dedupe_key=f"twilio:message:{sid}:{status}", params=params,
                                provider_message_id=sid, touch_id=None,
                                effect=twilio_message_status(status.lower(), error_code))


async def twilio_voice_status(request: web.Request) -> web.Response:
    params = await _twilio_params(request)
    if isinstance(params, web.Response):
        return params
    sid = _field(params, "CallSid", _SID)
    status = _field(params, "CallStatus", _STATUS)
    assert sid is not None and status is not None
    sequence = _field(params, "SequenceNumber", re.compile(r"^[0-9]{1,9}$"), required=False)
    answered_by = _field(params, "AnsweredBy", _STATUS, required=False)
    error_code = _field(params, "ErrorCode", _SHORT, required=False)
    dedupe_key = f"twilio:call:{sid}:{status}" + (f":{sequence}" if sequence is not None else "")
    return await _record_status(request, provider="twilio", kind="call_status", dedupe_key=dedupe_key,
                                params=params, provider_message_id=sid, touch_id=None,
                                effect=twilio_call_status(status.lower(), answered_by, error_code))


async def twilio_inbound(request: web.Request) -> web.Response:
    params = await _twilio_params(request)
    if isinstance(params, web.Response):
        return params
    sid = _field(params, "MessageSid", _SID)
    sender = _field(params, "From", _SHORT)
    receiver = _field(params, "To", _SHORT)
    assert sid is not None and sender is not None and receiver is not None
    body = params.get("Body", "").replace("\x00", "")
    opt_out_type = _field(params, "OptOutType", _STATUS, required=False)
    channel = "whatsapp" if sender.strip().lower().startswith("whatsapp:") else "sms"
    settings: Settings = request.app[SETTINGS]
    receiver_digits = digits(strip_whatsapp(receiver))
    candidates = phone_candidates(sender, settings.default_region)
    if not receiver_digits or not candidates:
        raise BadRequest("From and To must be phone numbers")
    classification = classify(body, opt_out_type)
    follow_up = FOLLOW_UP_EVENTS.get(classification)
    async with request.app[POOL].acquire() as conn:
        match = await conn.fetchrow(Q.match_inbound_lead, receiver_digits, candidates)
        lead_id = match["lead_id"] if match else None
        outcome = "unmatched" if lead_id is None else (follow_up or "reply_received")
        payload = {"body": body, "provider_message_id": sid, "classification": classification}
        if opt_out_type:
            payload["opt_out_type"] = opt_out_type
        pause = None
        if lead_id is not None and classification == "out_of_office":  # SPEC §19: until when, in the lead's zone
            clock = await conn.fetchrow(Q.inbound_lead_clock, lead_id)
            pause = await asyncio.to_thread(  # dateparser: CPU work (its first call loads its language data)
                out_of_office_payload, body, datetime.now(UTC), lead_timezone=clock["lead_timezone"] if clock else None,
                enriched_timezone=clock["enriched_timezone"] if clock else None,
                phone=(clock["phone"] if clock else None) or strip_whatsapp(sender),
                default_timezone=settings.default_timezone, default_region=settings.default_region)
        row = await conn.fetchrow(Q.record_inbound_message, f"twilio:inbound:{sid}", _stored(params), lead_id,
                                  channel, payload, follow_up, outcome, pause)
    if row is None:
        return _ok("duplicate")
    return _ok(row["outcome"], classification=classification)


async def elasticemail(request: web.Request) -> web.Response:
    settings: Settings = request.app[SETTINGS]
    params = _unique(_pairs(request.rel_url.raw_query_string, "query string"))
    if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
        for key, value in (await _form(request)).items():
            if key in params:
                raise BadRequest(f"field {key!r} appears more than once")
            params[key] = value
    expected = settings.elasticemail_webhook_token
    token = params.get("token", "")
    if expected is None or not token or not hmac.compare_digest(token.encode(), expected.get_secret_value().encode()):
        return _forbidden("missing or invalid token")
    message_id = _field(params, "messageid", _SHORT)
    status = _field(params, "status", _STATUS)
    assert message_id is not None and status is not None
    category = _field(params, "category", _SHORT, required=False)
    postback = params.get("postback") or None
    touch_id: UUID | None = None
    if postback:
        try:
            touch_id = UUID(postback)
        except ValueError:
            touch_id = None  # not one of ours: find the touch by messageid
    dedupe_key = f"elasticemail:{message_id}:{status}:{category or ''}"
    return await _record_status(request, provider="elasticemail", kind="email_notification", dedupe_key=dedupe_key,
                                params=params, provider_message_id=message_id, touch_id=touch_id,
                                effect=elasticemail_status(status, category))
