"""SANDBOX providers: loopback fakes of Twilio and ElasticEmail that speak the real API shapes.

Nothing here ever reaches a real provider. One aiohttp server answers, on one port:

* Twilio ``POST /2010-04-01/Accounts/{sid}/Messages.json`` and ``.../Calls.json`` (Basic auth, form fields,
  Twilio-shaped JSON answers and error bodies: ``{"code", "message", "more_info", "status"}``);
* ElasticEmail ``POST /v4/emails/transactional`` (``X-ElasticEmail-ApiKey``, JSON in, ``{"TransactionID",
  "MessageID"}`` out, errors as ``{"Error": ...}``; ``Content.Headers`` checked as ElasticEmail's definition has it —
  an object of string values, each name a header field name, no CR/LF — and recorded as ``email_headers``, so the
  one-click ``List-Unsubscribe`` pair of SPEC §19 can be seen);
* a control API under ``/_sandbox/`` for out-of-process use (the demo, the benchmark).

Every request is recorded (:class:`RecordedRequest`). Answers are programmable: a default mode, rules by
recipient, one-shot scripted answers, a service time, and seeded random fault injection. Modes:
``ok``, ``error:<http_status>[:<twilio_code>]``, ``rate_limit[:<retry_after_s>]``, ``server_error[:<status>]``,
``hang`` (never answers until the server stops).

Tests use it in-process::

    async with SandboxProviders(account_sid="AC" + "0" * 32, auth_token="tok", api_key="key") as fake:
        settings = load_settings(**fake.settings_overrides())

and it runs standalone: ``python -m listener.providers.sandbox --port 8765 --account-sid ACtest ...``.
Every answer carries the header ``X-Sandbox: revenue-asi``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hmac
import json
import random
import re
import signal
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit
from xml.etree import ElementTree

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

SANDBOX_HEADER = {"X-Sandbox": "revenue-asi"}
TWILIO_PREFIX = "/2010-04-01/Accounts/{sid}"
EMAIL_PATH = "/v4/emails/transactional"
_E164_TO = re.compile(r"^(whatsapp:)?\+[1-9][0-9]{6,14}$")
_REDACTED_HEADERS = frozenset({"authorization", "x-elasticemail-apikey"})

# What the real APIs check (/work/shared/provider-api): Twilio's AccountSid pattern (the OpenAPI's, lower-case
# hex as the issue states), Body and Twiml lengths, TwiML that parses as XML; ElasticEmail's 20 concurrent
# connections per API key; and no CR/LF in any e-mail header.
DEFAULT_ACCOUNT_SID = "AC" + "0" * 32
ACCOUNT_SID_PATTERN = re.compile(r"^AC[0-9a-f]{32}$")
TWILIO_MAX_BODY = 1_600
TWILIO_MAX_TWIML = 4_000
EMAIL_MAX_CONCURRENT = 20
_HEADER_BREAK = re.compile("[\r\n\x00]")

RequestKind = Literal["sms", "whatsapp", "voice", "email"]
ModeKind = Literal["ok", "error", "rate_limit", "server_error", "hang", "slow", "hold"]

_TWILIO_MESSAGES = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "Internal Server Error",
    21211: "The 'To' number {to} is not a valid phone number.",
    21408: "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: {to}.",
    21610: "Attempt to send to unsubscribed recipient",
    21614: "'To' number {to} is not a valid mobile number",
}


class ModeError(ValueError):
    """A mode string that the sandbox does not understand."""


@dataclass(frozen=True, slots=True)
class Mode:
    kind: ModeKind
    status: int = 200
    code: int | None = None
    retry_after: float | None = None

    def __str__(self) -> str:
        if self.kind == "error":
            return f"error:{self.status}" + (f":{self.code}" if self.code is not None else "")
        if self.kind == "rate_limit":
            return f"rate_limit:{self.retry_after:g}"
        if self.kind == "server_error":
            return f"server_error:{self.status}"
        if self.kind == "slow":
            return f"slow:{self.retry_after:g}"
        return self.kind


def parse_mode(text: str | Mode) -> Mode:
    """``ok`` · ``error:400:21211`` · ``error:503`` · ``rate_limit:2`` · ``server_error`` · ``hang`` ·
    ``slow:2`` (answers ok after 2 s) · ``hold`` (answers ok once :meth:`SandboxProviders.release` is called)."""
    if isinstance(text, Mode):
        return text
    name, _, rest = str(text).strip().partition(":")
    args = rest.split(":") if rest else []
    try:
        if name == "ok" and not args:
            return Mode("ok")
        if name in ("hang", "hold") and not args:
            return Mode(name)  # type: ignore[arg-type]
        if name == "slow" and len(args) == 1:
            seconds = float(args[0])
            if seconds < 0:
                raise ModeError("slow seconds must be >= 0")
            return Mode("slow", retry_after=seconds)
        if name == "error" and 1 <= len(args) <= 2:
            status = int(args[0])
            if not 400 <= status <= 599:
                raise ModeError(f"error status must be 4xx or 5xx, got {status}")
            return Mode("error", status, int(args[1]) if len(args) == 2 else None)
        if name == "rate_limit" and len(args) <= 1:
            retry_after = float(args[0]) if args else 1.0
            if retry_after < 0:
                raise ModeError("rate_limit retry_after must be >= 0")
            return Mode("rate_limit", 429, 20429, retry_after)
        if name == "server_error" and len(args) <= 1:
            return Mode("server_error", int(args[0]) if args else 500, 20500)
    except ValueError as exc:
        if isinstance(exc, ModeError):
            raise
        raise ModeError(f"bad sandbox mode {text!r}: {exc}") from None
    raise ModeError(
        f"bad sandbox mode {text!r} (ok | error:<status>[:<code>] | rate_limit[:<s>] | server_error[:<status>] | hang"
        " | slow:<s> | hold)"
    )


@dataclass(slots=True)
class RecordedRequest:
    """One request as the sandbox received it (secret header values redacted)."""

    index: int
    received_at_wall: float
    received_at_mono: float
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]  # form fields (Twilio) or the JSON document (ElasticEmail)
    kind: RequestKind
    to: str | None
    touch_run_id: str | None = None  # ElasticEmail Content.Postback
    email_headers: dict[str, str] | None = None  # ElasticEmail Content.Headers (SPEC §19: List-Unsubscribe …)
    authorized: bool = False
    status: int | None = None  # what the sandbox answered; None while pending or for a hang
    answer: str | None = None  # the mode that produced the answer

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _recipient_key(to: str | None) -> str:
    value = (to or "").strip().lower()
    return value[len("whatsapp:"):] if value.startswith("whatsapp:") else value


def _json(status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/json",
        headers={**SANDBOX_HEADER, **(headers or {})},
    )


def _twilio_date() -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())


def _retry_after_header(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def _twilio_error(status: int, code: int | None, to: str | None = None, message: str | None = None) -> web.Response:
    code = code if code is not None else (20500 if status >= 500 else None)
    text = message or _TWILIO_MESSAGES.get(code or 0, f"SANDBOX scripted error {status}").format(to=to)
    body = {
        "code": code,
        "message": text,
        "more_info": f"https://www.twilio.com/docs/errors/{code}" if code else None,
        "status": status,
    }
    return _json(status, body)


class SandboxProviders:
    """The SANDBOX Twilio + ElasticEmail fake; an async context manager listening on loopback."""

    def __init__(
        self,
        *,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = "sandbox-auth-token",
        api_key: str = "sandbox-api-key",
        host: str = "127.0.0.1",
        port: int = 0,
        mode: str = "ok",
        delay_ms: float = 0.0,
        fault_rate: float = 0.0,
        seed: int | None = 0,
        fault_retry_after_s: float = 1.0,
        fault_hang_s: float | None = None,
    ) -> None:
        self.account_sid = account_sid
        self._auth_token = auth_token
        self._api_key = api_key
        self._twilio_auth = "Basic " + base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
        self.host = host
        self._port = port
        self.requests: list[RecordedRequest] = []
        self._mode = parse_mode(mode)
        self._rules: dict[str, Mode] = {}
        self._raw_rules: dict[str, tuple[int, bytes, str]] = {}
        self._script: deque[Mode] = deque()
        self.delay_ms = 0.0
        self.fault_rate = 0.0
        self.fault_retry_after_s = fault_retry_after_s
        self.fault_hang_s = fault_hang_s  # None: a fault "hang" never answers; else it answers ok after this long
        self._released = asyncio.Event()
        self.created: dict[str, dict[str, Any]] = {}  # what the fake "accepted", by sid / TransactionID / MessageID
        self._rng = random.Random(seed)
        self.set_mode(delay_ms=delay_ms, fault_rate=fault_rate)
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._email_in_flight = 0
        self.email_peak_concurrency = 0  # the most ElasticEmail requests in flight at once
        self.email_refused_concurrency = 0  # answered 429 for going over EMAIL_MAX_CONCURRENT
        self._stopping: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        # status callbacks and simulated inbound messages (SPEC §12)
        self.callbacks: list[CallbackRecord] = []
        self._delivery_rules: dict[str, str] = {}
        self._inbound_at: dict[str, float] = {}
        self._callback_tasks: set[asyncio.Task[None]] = set()
        self._client: aiohttp.ClientSession | None = None
        self._callback_waiters: list[tuple[int, asyncio.Future[None]]] = []

    # --- lifecycle -----------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(TWILIO_PREFIX + "/Messages.json", self._messages)
        app.router.add_post(TWILIO_PREFIX + "/Calls.json", self._calls)
        app.router.add_post(EMAIL_PATH, self._email)
        app.router.add_get(TWILIO_PREFIX + "/{resource:Messages|Calls}.json", self._twilio_list)
        app.router.add_get(TWILIO_PREFIX + "/{resource:Messages|Calls}/{resource_sid}.json", self._twilio_fetch)
        app.router.add_get("/v4/events/{transaction}", self._email_events)
        app.router.add_get("/_sandbox/health", self._ctl_health)
        app.router.add_get("/_sandbox/requests", self._ctl_requests)
        app.router.add_post("/_sandbox/mode", self._ctl_mode)
        app.router.add_post("/_sandbox/reset", self._ctl_reset)
        app.router.add_post("/_sandbox/inbound", self._ctl_inbound)
        app.router.add_post("/_sandbox/delivery", self._ctl_delivery)
        return app

    async def start(self) -> str:
        self._stopping = asyncio.Event()
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port, reuse_address=True)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self._port = port
        self.base_url = f"http://{host}:{port}"
        return self.base_url

    async def close(self) -> None:
        for task in list(self._callback_tasks):
            task.cancel()
        if self._callback_tasks:
            await asyncio.gather(*self._callback_tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._stopping is not None:
            self._stopping.set()  # wakes `hang` handlers so shutdown never waits on them
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(RuntimeError("the sandbox was closed"))
        self._waiters.clear()

    async def __aenter__(self) -> SandboxProviders:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def port(self) -> int:
        return self._port

    def settings_overrides(self) -> dict[str, Any]:
        """``load_settings(**fake.settings_overrides())`` points both drivers at this sandbox."""
        return {
            "twilio_account_sid": self.account_sid,
            "twilio_auth_token": self._auth_token,
            "twilio_base_url": self.base_url,
            "elasticemail_api_key": self._api_key,
            "elasticemail_base_url": self.base_url,
        }

    # --- behaviour -----------------------------------------------------------------------------------

    def set_mode(
        self,
        mode: str | None = None,
        *,
        delay_ms: float | None = None,
        fault_rate: float | None = None,
        seed: int | None = None,
        fault_retry_after_s: float | None = None,
        fault_hang_s: float | None = None,
        fault_hang_forever: bool = False,
    ) -> None:
        """Change the default answer and/or the service time and fault injection (a fault "hang" answers ok after
        ``fault_hang_s``, or never with ``fault_hang_forever``)."""
        if mode is not None:
            self._mode = parse_mode(mode)
        if delay_ms is not None:
            if delay_ms < 0:
                raise ModeError("delay_ms must be >= 0")
            self.delay_ms = float(delay_ms)
        if fault_rate is not None:
            if not 0.0 <= fault_rate <= 1.0:
                raise ModeError("fault_rate must be within [0, 1]")
            self.fault_rate = float(fault_rate)
        if seed is not None:
            self._rng = random.Random(seed)
        if fault_retry_after_s is not None:
            if fault_retry_after_s < 0:
                raise ModeError("fault_retry_after_s must be >= 0")
            self.fault_retry_after_s = float(fault_retry_after_s)
        if fault_hang_forever:
            self.fault_hang_s = None
        elif fault_hang_s is not None:
            if fault_hang_s < 0:
                raise ModeError("fault_hang_s must be >= 0")
            self.fault_hang_s = float(fault_hang_s)

    @property
    def mode(self) -> str:
        return str(self._mode)

    def rule(self, *, to: str, mode: str | None) -> None:
        """Answer requests for recipient ``to`` with ``mode`` (None removes the rule)."""
        key = _recipient_key(to)
        if mode is None:
            self._rules.pop(key, None)
        else:
            self._rules[key] = parse_mode(mode)

    def raw_rule(self, *, to: str, status: int | None, body: bytes | str = b"",
                 content_type: str = "application/json") -> None:
        """Answer requests for recipient ``to`` with exactly these bytes (hostile answers: NUL bytes, lone
        surrogates, megabytes, deep JSON); ``status=None`` removes the rule. Checked after auth and validation."""
        key = _recipient_key(to)
        if status is None:
            self._raw_rules.pop(key, None)
        else:
            self._raw_rules[key] = (status, body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body,
                                    content_type)

    def _raw_answer(self, rec: RecordedRequest, to: str | None) -> web.Response | None:
        rule = self._raw_rules.get(_recipient_key(to)) if self._raw_rules else None
        if rule is None:
            return None
        status, body, content_type = rule
        rec.answer = f"raw:{status}"
        return self._finish(rec, web.Response(status=status, body=body, content_type=content_type,
                                              headers=SANDBOX_HEADER))

    def script(self, *modes: str) -> None:
        """The next ``len(modes)`` answers, in order, whoever they are for (before rules and the default)."""
        self._script.extend(parse_mode(m) for m in modes)

    def release(self) -> None:
        """Answer every request held by the ``hold`` mode (and any that arrive in that mode later)."""
        self._released.set()

    def reset(self) -> None:
        """Forget requests, rules, scripted answers and fault injection; answer ``ok`` again."""
        self.requests.clear()
        self.created.clear()
        self._rules.clear()
        self._raw_rules.clear()
        self._script.clear()
        self._mode = Mode("ok")
        self.delay_ms = 0.0
        self.fault_rate = 0.0

    async def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[RecordedRequest]:
        """Wait until at least ``n`` requests were recorded; TimeoutError after ``timeout`` seconds."""
        if len(self.requests) < n:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = (n, waiter)
            self._waiters.append(entry)
            try:
                await asyncio.wait_for(waiter, timeout)
            finally:
                if entry in self._waiters:
                    self._waiters.remove(entry)
        return self.requests[:]

    def _choose(self, to: str | None) -> Mode:
        if self._script:
            return self._script.popleft()
        if self._rules:
            ruled = self._rules.get(_recipient_key(to))
            if ruled is not None:
                return ruled
        mode = self._mode
        if mode.kind == "ok" and self.fault_rate > 0 and self._rng.random() < self.fault_rate:
            pick = self._rng.randrange(3)
            if pick == 0:
                return Mode("server_error", 500, 20500)
            if pick == 1:
                return Mode("rate_limit", 429, 20429, self.fault_retry_after_s)
            return Mode("hang") if self.fault_hang_s is None else Mode("slow", retry_after=self.fault_hang_s)
        return mode

    # --- request handling ----------------------------------------------------------------------------

    def _record(
        self,
        request: web.Request,
        body: dict[str, Any],
        kind: RequestKind,
        to: str | None,
        authorized: bool,
        touch_run_id: str | None = None,
    ) -> RecordedRequest:
        headers = {
            k: ("***" if k.lower() in _REDACTED_HEADERS else v) for k, v in request.headers.items()
        }
        rec = RecordedRequest(
            index=len(self.requests),
            received_at_wall=time.time(),
            received_at_mono=time.monotonic(),
            method=request.method,
            path=request.path,
            headers=headers,
            body=body,
            kind=kind,
            to=to,
            touch_run_id=touch_run_id,
            authorized=authorized,
        )
        self.requests.append(rec)
        if self._waiters:
            count = len(self.requests)
            for n, waiter in self._waiters:
                if count >= n and not waiter.done():
                    waiter.set_result(None)
        return rec

    async def _answer(
        self,
        request: web.Request,
        rec: RecordedRequest,
        mode: Mode,
        ok: Callable[[], web.Response],
        error: Callable[[Mode], web.Response],
    ) -> web.StreamResponse:
        if self.delay_ms > 0:
            await asyncio.sleep(self.delay_ms / 1000)
        rec.answer = str(mode)
        if mode.kind == "hang":
            assert self._stopping is not None
            await self._stopping.wait()
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=503, headers=SANDBOX_HEADER)
        accepted = mode.kind in ("ok", "slow", "hold")
        response = ok() if accepted else error(mode)  # a slow or held answer: accepted first, answered later
        if mode.kind == "slow":
            await asyncio.sleep(mode.retry_after or 0)
        elif mode.kind == "hold":
            await self._released.wait()
        rec.status = response.status
        return response

    def _finish(self, rec: RecordedRequest, response: web.Response) -> web.Response:
        rec.status = response.status
        return response

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        return await self._twilio(request, "Messages")

    async def _calls(self, request: web.Request) -> web.StreamResponse:
        return await self._twilio(request, "Calls")

    async def _twilio(self, request: web.Request, resource: Literal["Messages", "Calls"]) -> web.StreamResponse:
        posted = await request.post()
        form = {k: str(v) for k, v in posted.items()}
        events = [str(v) for v in posted.getall("StatusCallbackEvent", [])]
        if events:  # a repeated field: recorded space-separated
            form["StatusCallbackEvent"] = " ".join(events)
        to = form.get("To")
        kind: RequestKind = "voice" if resource == "Calls" else (
            "whatsapp" if (to or "").startswith("whatsapp:") else "sms"
        )
        authorized = hmac.compare_digest(request.headers.get("Authorization", ""), self._twilio_auth)
        rec = self._record(request, form, kind, to, authorized)
        if not authorized:
            return self._finish(rec, _twilio_error(401, 20003))
        if request.match_info["sid"] != self.account_sid or not ACCOUNT_SID_PATTERN.match(request.match_info["sid"]):
            return self._finish(rec, _twilio_error(404, 20404))
        problem = self._twilio_problem(resource, form)
        if problem is not None:
            return self._finish(rec, _twilio_error(400, problem[0], to, problem[1]))
        raw = self._raw_answer(rec, to)
        if raw is not None:
            return raw

        created: dict[str, Any] = {}

        def ok() -> web.Response:
            created.update(self._twilio_resource(resource, form))
            return _json(201, created)

        def error(mode: Mode) -> web.Response:
            headers = {"Retry-After": _retry_after_header(mode.retry_after)} if mode.retry_after is not None else None
            response = _twilio_error(mode.status, mode.code, to)
            if headers:
                response.headers.update(headers)
            return response

        answer = await self._answer(request, rec, self._choose(to), ok, error)
        if created and form.get("StatusCallback"):
            self._schedule_callbacks(resource, form, created["sid"])
        return answer

    def _twilio_problem(self, resource: str, form: Mapping[str, str]) -> tuple[int, str] | None:
        problem = _callback_problem(resource, form)
        if problem is not None:
            return problem
        to = form.get("To")
        if resource == "Messages":
            if not to:
                return 21604, "A 'To' phone number is required."
            if not form.get("Body") and not form.get("MediaUrl") and not form.get("ContentSid"):
                return 21602, "Message body is required."
            if not form.get("From") and not form.get("MessagingServiceSid"):
                return 21603, "A 'From' phone number is required."
        else:
            if not to:
                return 21201, "No 'To' number is specified"
            if not form.get("From"):
                return 21213, "No 'From' number is specified"
            if not form.get("Twiml") and not form.get("Url"):
                return 21205, "Url parameter is required."
        if not _E164_TO.match(to):
            return 21211, f"The 'To' number {to} is not a valid phone number."
        body, twiml = form.get("Body"), form.get("Twiml")
        if body is not None and len(body) > TWILIO_MAX_BODY:
            return 21617, "The concatenated message body exceeds the 1600 character limit."
        if twiml is not None:
            if len(twiml) > TWILIO_MAX_TWIML:
                return 21236, "Twiml exceeds the maximum of 4000 characters."  # SANDBOX wording; the OpenAPI: "Max 4000"
            try:
                ElementTree.fromstring(twiml)
            except ElementTree.ParseError as exc:
                return 12100, f"Document parse failure: {exc}"
        return None

    def _twilio_resource(self, resource: str, form: Mapping[str, str]) -> dict[str, Any]:
        now = _twilio_date()
        prefix = "SM" if resource == "Messages" else "CA"
        sid = prefix + uuid.uuid4().hex
        base = {
            "sid": sid,
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "date_created": now,
            "date_updated": now,
            "direction": "outbound-api",
            "status": "queued",
            "to": form.get("To"),
            "from": form.get("From"),
            "price": None,
            "price_unit": "USD",
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/{resource}/{sid}.json",
            "sandbox": True,
        }
        if resource == "Messages":
            base.update(
                body=form.get("Body"),
                messaging_service_sid=form.get("MessagingServiceSid"),
                num_segments="1",
                num_media="0",
                date_sent=None,
                error_code=None,
                error_message=None,
            )
        else:
            base.update(start_time=None, end_time=None, duration=None, answered_by=None)
        self.created[sid] = {**base, "resource": resource}
        return base

    async def _email(self, request: web.Request) -> web.StreamResponse:
        try:
            document = await request.json()
        except ValueError:
            document = None
        body: dict[str, Any] = document if isinstance(document, dict) else {}
        recipients = body.get("Recipients") if isinstance(body.get("Recipients"), dict) else {}
        content = body.get("Content") if isinstance(body.get("Content"), dict) else {}
        to_list = recipients.get("To") if isinstance(recipients, dict) else None
        to = to_list[0] if isinstance(to_list, list) and to_list and isinstance(to_list[0], str) else None
        postback = content.get("Postback") if isinstance(content, dict) else None
        authorized = hmac.compare_digest(request.headers.get("X-ElasticEmail-ApiKey", ""), self._api_key)
        rec = self._record(
            request, body, "email", to, authorized, postback if isinstance(postback, str) else None
        )
        headers = content.get("Headers") if isinstance(content, dict) else None
        if isinstance(headers, dict):
            rec.email_headers = {str(k): v if isinstance(v, str) else repr(v) for k, v in headers.items()}
        if not authorized:
            return self._finish(rec, _json(401, {"Error": "Access denied: invalid API key (SANDBOX)"}))
        problem = self._email_problem(document, to_list, content)
        if problem is not None:
            return self._finish(rec, _json(400, {"Error": problem}))
        if self._email_in_flight >= EMAIL_MAX_CONCURRENT:
            self.email_refused_concurrency += 1
            return self._finish(rec, _json(429, {"Error": "Too many concurrent connections (at most 20 per API key)"},
                                           {"Retry-After": "1"}))
        self._email_in_flight += 1
        self.email_peak_concurrency = max(self.email_peak_concurrency, self._email_in_flight)
        try:
            raw = self._raw_answer(rec, to)
            if raw is not None:
                if self.delay_ms > 0:
                    await asyncio.sleep(self.delay_ms / 1000)
                return raw
            return await self._email_answer(request, rec, to)
        finally:
            self._email_in_flight -= 1

    async def _email_answer(self, request: web.Request, rec: RecordedRequest, to: str | None) -> web.StreamResponse:

        def ok() -> web.Response:
            transaction_id, message_id = str(uuid.uuid4()), "sbx" + uuid.uuid4().hex[:20]
            sent = {"TransactionID": transaction_id, "MessageID": message_id, "Sandbox": True}
            event = {"TransactionID": transaction_id, "MsgID": message_id, "EventType": "Submission",
                     "EventDate": datetime.now(UTC).isoformat(), "To": rec.to}
            self.created[transaction_id] = self.created[message_id] = event
            return _json(200, sent)

        def error(mode: Mode) -> web.Response:
            headers = {"Retry-After": _retry_after_header(mode.retry_after)} if mode.retry_after is not None else None
            text = {
                "rate_limit": "Too many requests (SANDBOX)",
                "server_error": "Internal server error (SANDBOX)",
            }.get(mode.kind, f"SANDBOX scripted error {mode.status}" + (f" ({mode.code})" if mode.code else ""))
            return _json(mode.status, {"Error": text}, headers)

        return await self._answer(request, rec, self._choose(to), ok, error)

    @staticmethod
    def _email_problem(document: Any, to_list: Any, content: Any) -> str | None:
        if not isinstance(document, dict):
            return "Request body must be a JSON object"
        if not isinstance(to_list, list) or not to_list or not all(isinstance(t, str) and "@" in t for t in to_list):
            return "Recipients.To must list at least one email address"
        if not isinstance(content, dict) or not content.get("From"):
            return "Content.From is required"
        parts = content.get("Body")
        if not content.get("TemplateName") and (not isinstance(parts, list) or not parts):
            return "Content.Body or Content.TemplateName is required"
        headers = [("Recipients.To", t) for t in to_list] + [
            (f"Content.{k}", content.get(k)) for k in ("From", "Subject", "ReplyTo", "EnvelopeFrom")]
        for where, value in headers:
            if isinstance(value, str) and _HEADER_BREAK.search(value):
                return f"{where} must not contain CR, LF or NUL (header injection)"
        for t in to_list:
            if any(ch in t for ch in '<>,;"') or any(ch.isspace() for ch in t):
                return f"Recipients.To {t!r} is not a bare e-mail address"
        return _email_headers_problem(content.get("Headers"))

    # --- control API -----------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            "sandbox": True,
            "mode": str(self._mode),
            "rules": {to: str(mode) for to, mode in self._rules.items()},
            "script": [str(m) for m in self._script],
            "delay_ms": self.delay_ms,
            "fault_rate": self.fault_rate,
            "fault_retry_after_s": self.fault_retry_after_s,
            "requests": len(self.requests),
        }

    def configure(self, config: Mapping[str, Any]) -> None:
        """Apply a control document: mode, rules ({to: mode} or [{to, mode}]), script, delay_ms,
        fault_rate, seed, fault_retry_after_s, fault_hang_s, fault_hang_forever, clear_rules."""
        if config.get("clear_rules"):
            self._rules.clear()
        self.set_mode(
            config.get("mode"),
            delay_ms=config.get("delay_ms"),
            fault_rate=config.get("fault_rate"),
            seed=config.get("seed"),
            fault_retry_after_s=config.get("fault_retry_after_s"),
            fault_hang_s=config.get("fault_hang_s"),
            fault_hang_forever=bool(config.get("fault_hang_forever")),
        )
        rules = config.get("rules") or {}
        items: Iterable[tuple[str, Any]] = (
            rules.items() if isinstance(rules, dict) else ((r["to"], r.get("mode")) for r in rules)
        )
        for to, mode in items:
            self.rule(to=to, mode=mode)
        self.script(*(config.get("script") or []))

    # --- look-ups (outcome_unknown reconciliation reads what the fake accepted) ------------------------------

    def _lookup_allowed(self, request: web.Request) -> web.Response | None:
        if not hmac.compare_digest(request.headers.get("Authorization", ""), self._twilio_auth):
            return _twilio_error(401, 20003)
        if request.match_info["sid"] != self.account_sid:
            return _twilio_error(404, 20404)
        return None

    async def _twilio_fetch(self, request: web.Request) -> web.Response:
        refused = self._lookup_allowed(request)
        if refused is not None:
            return refused
        found = self.created.get(request.match_info["resource_sid"])
        if found is None or found.get("resource") != request.match_info["resource"]:
            return _twilio_error(404, 20404)
        return _json(200, {k: v for k, v in found.items() if k != "resource"})

    async def _twilio_list(self, request: web.Request) -> web.Response:
        """`Messages.json` / `Calls.json` with To, From and DateSent> / StartTime> (a date; `>=` accepted too)."""
        refused = self._lookup_allowed(request)
        if refused is not None:
            return refused
        resource = request.match_info["resource"]
        query = request.query
        since_key = "StartTime" if resource == "Calls" else "DateSent"
        since = next((query[k] for k in (since_key + ">", since_key + ">=") if k in query), None)
        items = []
        for item in self.created.values():
            if item.get("resource") != resource:
                continue
            if "To" in query and item.get("to") != query["To"]:
                continue
            if "From" in query and item.get("from") != query["From"]:
                continue
            created = parsedate_to_datetime(str(item["date_created"]))
            if since is not None and created.date().isoformat() < since[:10]:
                continue
            items.append({k: v for k, v in item.items() if k != "resource"})
        return _json(200, {resource.lower(): items, "page": 0, "page_size": len(items), "next_page_uri": None,
                           "uri": request.path_qs})

    async def _email_events(self, request: web.Request) -> web.Response:
        if not hmac.compare_digest(request.headers.get("X-ElasticEmail-ApiKey", ""), self._api_key):
            return _json(401, {"Error": "Access denied"})
        found = self.created.get(request.match_info["transaction"])
        if found is None:
            return _json(404, {"Error": "Not found"})
        return web.json_response([found])

    async def _ctl_health(self, request: web.Request) -> web.Response:
        return _json(200, {"status": "ok", **self.describe()})

    async def _ctl_requests(self, request: web.Request) -> web.Response:
        try:
            since = max(0, int(request.query.get("since", "0")))
        except ValueError:
            return _json(400, {"error": "since must be an integer"})
        chosen = self.requests[since:]
        return _json(200, {"sandbox": True, "next": since + len(chosen), "requests": [r.to_json() for r in chosen]})

    async def _ctl_mode(self, request: web.Request) -> web.Response:
        try:
            config = await request.json()
            if not isinstance(config, dict):
                raise ModeError("body must be a JSON object")
            self.configure(config)
        except (ValueError, KeyError, TypeError) as exc:
            return _json(400, {"error": str(exc)})
        return _json(200, self.describe())

    async def _ctl_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return _json(200, self.describe())


    # --- status callbacks and inbound messages (SPEC §12) ---------------------------------------------------

    def delivery_rule(self, *, to: str, outcome: str | None) -> None:
        """What the status callbacks for messages / calls to ``to`` say: ``delivered`` (default), ``read``,
        ``undelivered:<code>``, ``failed:<code>``; calls: ``completed`` (default), ``busy``, ``no-answer``,
        ``failed:<code>``, ``machine`` (completed, AnsweredBy machine_start). None removes the rule."""
        key = _recipient_key(to)
        if outcome is None:
            self._delivery_rules.pop(key, None)
        else:
            self._delivery_rules[key] = outcome

    def _http(self) -> aiohttp.ClientSession:
        if self._client is None or self._client.closed:
            self._client = aiohttp.ClientSession()
        return self._client

    def sign(self, url: str, params: Mapping[str, str]) -> str:
        """X-Twilio-Signature for a POST of ``params`` to ``url``, as Twilio computes it."""
        return str(RequestValidator(self._auth_token).compute_signature(url, dict(params)))

    async def _post_signed(self, url: str, params: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        headers = {"X-Twilio-Signature": self.sign(url, params), "User-Agent": "TwilioProxy/1.1 (SANDBOX)"}
        async with self._http().post(url, data=dict(params), headers=headers) as response:
            try:
                body = await response.json(content_type=None)
            except ValueError:
                body = {}
            return response.status, body if isinstance(body, dict) else {}

    def _callback_plan(self, resource: str, form: Mapping[str, str]) -> list[dict[str, str]]:
        to = form.get("To", "")
        rule = self._delivery_rules.get(_recipient_key(to))
        if resource == "Calls":
            outcome = rule or "completed"
            name, _, code = outcome.partition(":")
            statuses = ["initiated", "ringing"]
            if name in ("completed", "machine"):
                statuses += ["in-progress", "completed"]
            else:
                statuses.append(name)
            wanted = set(form.get("StatusCallbackEvent", "").split()) | {"completed"}
            steps = []
            for seq, status in enumerate(statuses):
                event = "answered" if status == "in-progress" else status
                if event not in wanted and status not in ("busy", "no-answer", "failed", "canceled"):
                    continue
                step = {"CallStatus": status, "SequenceNumber": str(seq)}
                if status == "completed":
                    step["AnsweredBy"] = "machine_start" if name == "machine" else "human"
                    step["CallDuration"] = "7"
                if code:
                    step["ErrorCode"] = code
                steps.append(step)
            return steps
        whatsapp = to.startswith("whatsapp:")
        if rule is None and whatsapp and not form.get("ContentSid"):
            # What Twilio does since 2025-04: free-form WhatsApp outside the 24 h window is accepted, then fails.
            last = self._inbound_at.get(_recipient_key(to))
            if last is None or time.time() - last >= 24 * 3600:
                rule = "failed:63016"
        outcome = rule or "delivered"
        name, _, code = outcome.partition(":")
        steps = [{"MessageStatus": "sent"}]
        if name == "read":
            steps += [{"MessageStatus": "delivered"}, {"MessageStatus": "read"}]
        else:
            steps.append({"MessageStatus": name, **({"ErrorCode": code} if code else {})})
        return steps

    def _schedule_callbacks(self, resource: str, form: Mapping[str, str], sid: str) -> None:
        steps = self._callback_plan(resource, form)
        base = {"AccountSid": self.account_sid, "From": form.get("From", ""), "To": form.get("To", ""),
                "ApiVersion": "2010-04-01"}
        key = "CallSid" if resource == "Calls" else "MessageSid"
        if resource == "Messages":
            base["SmsSid"] = sid
        task = asyncio.get_running_loop().create_task(
            self._send_callbacks(form["StatusCallback"], [{**base, key: sid, **step} for step in steps]))
        self._callback_tasks.add(task)
        task.add_done_callback(self._callback_tasks.discard)

    async def _send_callbacks(self, url: str, posts: list[dict[str, str]]) -> None:
        for params in posts:  # in order, one after the other, as Twilio mostly does
            try:
                status, _ = await self._post_signed(url, params)
            except (aiohttp.ClientError, OSError) as exc:
                status = -1
                params = {**params, "_error": type(exc).__name__}
            self.callbacks.append(CallbackRecord(url=url, params=params, status=status))
            for n, waiter in self._callback_waiters:
                if len(self.callbacks) >= n and not waiter.done():
                    waiter.set_result(None)

    async def wait_for_callbacks(self, n: int, timeout: float = 10.0) -> list[CallbackRecord]:
        """Wait until at least ``n`` status callbacks were delivered (answered or not)."""
        if len(self.callbacks) < n:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = (n, waiter)
            self._callback_waiters.append(entry)
            try:
                await asyncio.wait_for(waiter, timeout)
            finally:
                self._callback_waiters.remove(entry)
        return self.callbacks[:]

    async def simulate_inbound(self, url: str, *, from_: str, to: str, body: str,
                               **extra: str) -> tuple[int, dict[str, Any]]:
        """POST a signed incoming SMS / WhatsApp (as Twilio's messaging webhook) to ``url``; a WhatsApp one opens
        the sender's 24 h session window here too. Returns the answer's status and JSON."""
        whatsapp = from_.startswith("whatsapp:")
        params = {"MessageSid": "SM" + uuid.uuid4().hex, "AccountSid": self.account_sid, "From": from_, "To": to,
                  "Body": body, "NumMedia": "0", "NumSegments": "1", "ApiVersion": "2010-04-01", **extra}
        params["SmsMessageSid"] = params["MessageSid"]
        if whatsapp:
            params.setdefault("WaId", from_.removeprefix("whatsapp:").lstrip("+"))
            params.setdefault("ProfileName", "Sandbox Lead")
        status, answer = await self._post_signed(url, params)
        if whatsapp and status == 200:
            self._inbound_at[_recipient_key(from_)] = time.time()
        return status, answer

    async def _ctl_inbound(self, request: web.Request) -> web.Response:
        try:
            doc = await request.json()
            if not isinstance(doc, dict):
                raise ValueError("body must be a JSON object")
            status, answer = await self.simulate_inbound(str(doc["url"]), from_=str(doc["from"]), to=str(doc["to"]),
                                                         body=str(doc.get("body", "")))
        except (ValueError, KeyError, TypeError, aiohttp.ClientError, OSError) as exc:
            return _json(400, {"error": f"{type(exc).__name__}: {exc}"})
        return _json(200, {"status": status, "answer": answer})

    async def _ctl_delivery(self, request: web.Request) -> web.Response:
        try:
            doc = await request.json()
            if not isinstance(doc, dict):
                raise ValueError("body must be a JSON object")
            self.delivery_rule(to=str(doc["to"]), outcome=doc.get("outcome"))
        except (ValueError, KeyError, TypeError) as exc:
            return _json(400, {"error": str(exc)})
        return _json(200, {"rules": dict(self._delivery_rules)})


_HEADER_NAME = re.compile(r"[!-9;-~]{1,76}")  # RFC 5322 §3.6.8: printable US-ASCII but the colon


def _email_headers_problem(headers: Any) -> str | None:
    """EmailContent.Headers as ElasticEmail's definition has it (/work/shared/provider-api: an object whose values
    are strings — ``additionalProperties: {type: string}``), each name a header field name and each value free of
    CR, LF and NUL (a header that would inject another one is refused, like Subject's)."""
    if headers is None:
        return None
    if not isinstance(headers, dict):
        return f"Content.Headers must be an object of string values, not {type(headers).__name__}"
    for name, value in headers.items():
        if not isinstance(value, str):
            return f"Content.Headers.{name} must be a string, not {type(value).__name__}"
        if not _HEADER_NAME.fullmatch(name):
            return f"Content.Headers: {name!r} is not a header field name"
        if _HEADER_BREAK.search(value):
            return f"Content.Headers.{name} must not contain CR, LF or NUL (header injection)"
    return None


@dataclass(slots=True)
class CallbackRecord:
    """A status callback the sandbox sent, and what the web application answered (-1: not reachable)."""

    url: str
    params: dict[str, str]
    status: int


_CONTENT_SID = re.compile(r"^HX[0-9a-fA-F]{32}$")
_CALL_EVENTS = frozenset({"initiated", "ringing", "answered", "completed"})


def _callback_problem(resource: str, form: Mapping[str, str]) -> tuple[int, str] | None:
    """What Twilio checks of the Part-two fields: StatusCallback a URL with a hostname (no underscores),
    StatusCallbackEvent among initiated/ringing/answered/completed, ContentSid HX + 32 hex, ContentVariables a
    JSON object (and only with a ContentSid)."""
    callback = form.get("StatusCallback")
    if callback is not None:
        parsed = urlsplit(callback)
        if parsed.scheme not in ("http", "https") or not parsed.hostname or "_" in parsed.hostname:
            return 21609, f"Invalid StatusCallback url: {callback}"
    if resource == "Calls":
        bad = [e for e in form.get("StatusCallbackEvent", "").split() if e not in _CALL_EVENTS]
        if bad:
            return 21626, f"Invalid StatusCallbackEvent: {', '.join(bad)}"
        return None
    content_sid = form.get("ContentSid")
    if content_sid is not None and not _CONTENT_SID.match(content_sid):
        return 21655, "The ContentSid is Invalid."
    variables = form.get("ContentVariables")
    if variables is not None:
        if content_sid is None:
            return 21656, "ContentVariables requires a ContentSid."
        try:
            decoded = json.loads(variables)
        except ValueError:
            decoded = None
        if not isinstance(decoded, dict):
            return 21656, "The ContentVariables Parameter is invalid."
    return None


# --- standalone --------------------------------------------------------------------------------------


async def _serve(args: argparse.Namespace) -> None:
    sandbox = SandboxProviders(
        account_sid=args.account_sid,
        auth_token=args.auth_token,
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        mode=args.mode,
        delay_ms=args.delay_ms,
        fault_rate=args.fault_rate,
        seed=args.seed,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with sandbox:
        print(f"revenue-asi SANDBOX providers (fake Twilio + ElasticEmail) listening on {sandbox.base_url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m listener.providers.sandbox",
        description="SANDBOX fakes of Twilio and ElasticEmail on one loopback port (never reaches a real provider).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--account-sid", default=DEFAULT_ACCOUNT_SID)
    parser.add_argument("--auth-token", default="sandbox-auth-token")
    parser.add_argument("--api-key", default="sandbox-api-key")
    parser.add_argument("--mode", default="ok")
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except ModeError as exc:
        parser.error(str(exc))


if __name__ == "__main__":
    main()
