"""ElasticEmail driver: v4 transactional API for email (SPEC §6), over one keep-alive httpx client."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from typing import Any, Literal

import httpx

from listener.providers.base import OutboundMessage, SendResult, parse_retry_after, scrub, send_with_retries
from listener.rules import safejson
from listener.rules.errors import ProviderError
from listener.rules.sanitize import (
    MAX_ANSWER_BYTES,
    address_problem,
    clean_id,
    decode_answer,
    header_problem,
    secret_forms,
    without_unencodable,
)

_ADDRESS_SPECIALS = set('()<>[]:;@\\,."')
# RFC 5322 §3.6.8: a header field name is printable US-ASCII except the colon (RFC 7230's token is stricter; both
# forms of List-Unsubscribe pass either way)
HEADER_NAME = re.compile(r"[!-9;-~]{1,76}")
MAX_CONCURRENT_PER_KEY = 20  # ElasticEmail's documented limit: 20 concurrent connections per API key
_key_semaphores: dict[tuple[str, int], asyncio.Semaphore] = {}


def key_semaphore(api_key: str) -> asyncio.Semaphore:
    """One semaphore of MAX_CONCURRENT_PER_KEY per API key (and event loop), shared by every driver instance of the
    process and independent of REVENUE_ASI_CONCURRENCY."""
    digest = hashlib.sha256(api_key.encode()).hexdigest()
    key = (digest, id(asyncio.get_running_loop()))
    semaphore = _key_semaphores.get(key)
    if semaphore is None:
        semaphore = _key_semaphores[key] = asyncio.Semaphore(MAX_CONCURRENT_PER_KEY)
    return semaphore


def email_header_problem(message: OutboundMessage) -> ProviderError | None:
    """A permanent failure when a header would carry CR/LF or specials: ``invalid_email`` for the recipient,
    ``invalid_email_header`` for From (address and name) and Subject. None when every header is clean."""
    problem = address_problem(message.to)
    if problem is not None:
        return ProviderError("invalid_email", f"recipient {message.to!r} {problem}", "permanent")
    checks = (("From address", message.sender, True), ("From name", message.sender_name, False),
              ("Subject", message.subject, False))
    for what, value, is_address in checks:
        if value is None:
            continue
        problem = address_problem(value) if is_address else header_problem(value)
        if problem is not None:
            return ProviderError("invalid_email_header", f"{what} {value[:80]!r} {problem}", "permanent")
    for name, value in message.headers.items():
        if not HEADER_NAME.fullmatch(name):
            return ProviderError("invalid_email_header", f"header name {name[:80]!r} is not a header field name",
                                 "permanent")
        problem = header_problem(value)
        if problem is not None:
            return ProviderError("invalid_email_header", f"{name} {value[:80]!r} {problem}", "permanent")
    return None


def from_header(address: str, name: str | None) -> str:
    """``Name <from@x>`` (the name quoted when it needs to be), or the bare address."""
    if not name or not name.strip():
        return address
    name = " ".join(name.split())
    if any(ch in _ADDRESS_SPECIALS for ch in name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address}>"


class ElasticEmailProvider:
    """Sends email touches through ElasticEmail's ``POST /v4/emails/transactional``."""

    name: Literal["elasticemail"] = "elasticemail"

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = "https://api.elasticemail.com",
        timeout_s: float = 15.0,
        connection_limit: int = 32,
    ) -> None:
        self._api_key = api_key
        self._base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._connection_limit = connection_limit
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"ElasticEmailProvider(base_url={self._base_url!r})"

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None or self._client.is_closed:
            self._client = httpx.AsyncClient(
                base_url=self._base_url,
                headers={"X-ElasticEmail-ApiKey": self._api_key, "User-Agent": "revenue-asi"},
                limits=httpx.Limits(
                    max_connections=self._connection_limit, max_keepalive_connections=self._connection_limit
                ),
                timeout=httpx.Timeout(self._timeout_s),
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and not self._client.is_closed:
            await self._client.aclose()
        self._client = None

    def request_body(self, message: OutboundMessage) -> dict[str, Any]:
        if message.channel != "email":
            raise ProviderError("unsupported_channel", f"ElasticEmail does not send {message.channel}", "permanent")
        if not message.sender:
            raise ProviderError("no_sender", "no from_email for email (account config or forced_sender_id)", "permanent")
        problem = email_header_problem(message)
        if problem is not None:
            raise problem
        content: dict[str, Any] = {
            "From": from_header(message.sender, message.sender_name),
            "Subject": message.subject or "",
            "Body": [{"ContentType": "PlainText", "Charset": "utf-8", "Content": without_unencodable(message.body)}],
            "Postback": str(message.touch_run_id),
        }
        if message.headers:  # EmailContent.Headers: an object of string -> string (SPEC §19: List-Unsubscribe)
            content["Headers"] = dict(message.headers)
        return {"Recipients": {"To": [message.to]}, "Content": content}

    async def send(self, message: OutboundMessage, *, deadline: float) -> SendResult:
        body = json.dumps(self.request_body(message), ensure_ascii=False).encode()

        async def attempt(timeout: float) -> SendResult:
            return await self._post(body, timeout)

        return await send_with_retries(attempt, deadline=deadline, timeout_s=self._timeout_s)

    async def _post(self, body: bytes, timeout: float) -> SendResult:
        client = self._get_client()
        # httpx has no total timeout: bound the whole request with asyncio, and watch httpcore's trace to
        # know whether the request had started going out when time ran out.
        sending = False

        async def trace(event: str, info: dict[str, Any]) -> None:
            nonlocal sending
            if event.endswith("send_request_headers.started"):
                sending = True

        try:
            async with asyncio.timeout(timeout), key_semaphore(self._api_key):
                async with client.stream(
                    "POST",
                    "/v4/emails/transactional",
                    content=body,
                    headers={"Content-Type": "application/json"},
                    timeout=httpx.Timeout(timeout),
                    extensions={"trace": trace},
                ) as response:
                    raw = b""
                    async for chunk in response.aiter_bytes():
                        raw += chunk[: MAX_ANSWER_BYTES - len(raw)]
                        if len(raw) >= MAX_ANSWER_BYTES:
                            break  # answers are read up to 64 KiB (SPEC §11)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise self._unreachable(exc) from None
        except (TimeoutError, httpx.TimeoutException) as exc:
            if not sending:
                raise self._unreachable(exc) from None
            raise ProviderError(
                "outcome_unknown",
                f"ElasticEmail did not answer within {timeout:.2f}s; the email may have been accepted",
                "transient",
            ) from None
        except httpx.TransportError as exc:
            raise ProviderError(
                "outcome_unknown",
                self._clean(f"connection to ElasticEmail failed mid-request ({type(exc).__name__}: {exc}); the email may have been accepted"),
                "transient",
            ) from None
        return self._result(response.status_code, raw, response.headers.get("Retry-After"))

    def _unreachable(self, exc: BaseException) -> ProviderError:
        detail = str(exc) or type(exc).__name__
        return ProviderError(
            "provider_unreachable", self._clean(f"cannot connect to ElasticEmail: {detail}"), "transient", retryable=True
        )

    def _clean(self, text: str) -> str:
        return scrub(text, secret_forms([self._api_key]))

    def _result(self, status: int, raw: bytes, retry_after_header: str | None) -> SendResult:
        try:
            payload = safejson.loads(raw) if raw else None
        except ValueError:  # UnsafeJson too
            payload = None
        data: dict[str, Any] = payload if isinstance(payload, dict) else {}
        if 200 <= status < 300:
            message_id = clean_id(data.get("MessageID")) or clean_id(data.get("TransactionID"))
            if message_id is None:
                raise ProviderError(
                    "outcome_unknown", f"ElasticEmail answered {status} without a MessageID; the email may have been accepted", "transient"
                )
            return SendResult(provider="elasticemail", provider_message_id=message_id)

        text = data.get("Error")
        # the whole answer is scrubbed, then cut (scrub): a key straddling a cut would leave a fragment
        reason = self._clean(f"ElasticEmail {status}: {text if isinstance(text, str) and text else decode_answer(raw)}")
        retry_after = parse_retry_after(retry_after_header)
        if status == 429:
            raise ProviderError("rate_limited", reason, "transient", retryable=True, retry_after=retry_after, http_status=status)
        if status >= 500:
            raise ProviderError(f"http_{status}", reason, "transient", retryable=True, retry_after=retry_after, http_status=status)
        raise ProviderError(f"http_{status}", reason, "permanent", http_status=status)
