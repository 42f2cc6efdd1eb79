"""One provider interface for every channel, and the retry policy both drivers share (SPEC §6).

``send`` either returns a :class:`SendResult` or raises :class:`~listener.rules.errors.ProviderError`; it never
returns a failure. Retries happen inside ``send`` and all finish before ``deadline`` (a ``time.monotonic()``
value: the claim's lease), so a touch is never still being sent when another daemon could reclaim it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Literal, Protocol
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from listener.rules.errors import ProviderError
from listener.rules.sanitize import clean_answer, scrub_secrets
from listener.rules.vocabulary import CHANNELS, Channel
from listener.rules.vocabulary import PROVIDER_FOR_CHANNEL as VOCABULARY_PROVIDERS

if TYPE_CHECKING:
    from listener.settings import Settings

log = logging.getLogger("listener.providers")

ProviderName = Literal["twilio", "elasticemail"]
PROVIDER_FOR_CHANNEL: dict[str, ProviderName] = dict(VOCABULARY_PROVIDERS)  # type: ignore[arg-type]

MAX_ATTEMPTS = 6
BACKOFF_INITIAL_S = 0.1
BACKOFF_CAP_S = 5.0
MAX_ERROR_TEXT = 300
# A retry is started only with at least this long left before the deadline: one clipped to less would most
# likely time out, turning a clear refusal (a 429 or 5xx) into outcome_unknown.
MIN_RETRY_WINDOW_S = 0.2


class OutboundMessage(BaseModel):
    model_config = ConfigDict(frozen=True)

    touch_run_id: UUID
    channel: Channel
    to: str  # E.164 for voice/sms/whatsapp (no "whatsapp:" prefix), an address for email
    sender: str | None = None  # Twilio "From" ("+1…" or "whatsapp:+1…"), or from_email for email
    sender_name: str | None = None
    messaging_service_sid: str | None = None
    subject: str | None = None
    body: str
    language: str = "es"
    # WhatsApp outside the 24 h session window (SPEC §12): an approved template, sent as ContentSid /
    # ContentVariables (a JSON object as a string) instead of a free-form Body.
    content_sid: str | None = None
    content_variables: str | None = None
    voice: str | None = None  # <Say> voice for voice touches (account_provider_settings.config.voice)
    # E-mail only: extra headers (SPEC §19: List-Unsubscribe and List-Unsubscribe-Post), ElasticEmail Content.Headers
    headers: dict[str, str] = Field(default_factory=dict)


class SendResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    provider: ProviderName
    provider_message_id: str


class Provider(Protocol):
    @property
    def name(self) -> ProviderName: ...

    async def send(self, message: OutboundMessage, *, deadline: float) -> SendResult: ...

    async def aclose(self) -> None: ...


# --- helpers shared by the drivers -------------------------------------------------------------------


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Remove secret values from ``text`` (the whole text, before anything is cut: a secret straddling the cut
    would leave a fragment), strip NUL / lone surrogates / control characters, then cap its length (it ends up in
    events and logs). ``secrets`` are the forms to remove (listener.rules.sanitize.secret_forms gives them all)."""
    forms = list(secrets)
    text = scrub_secrets(clean_answer(scrub_secrets(text, forms)), forms)
    return text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 1] + "…"


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


# Set by the dispatcher for each send: awaited before every retry (never before the first attempt); it raises to
# stop the send when the touch may no longer go (a stop event or suppression committed since the claim).
BEFORE_RETRY: ContextVar[Callable[[], Awaitable[None]] | None] = ContextVar("before_retry", default=None)
# Set by the dispatcher for each send: awaited after every answer 429 (SPEC §16: provider pushback slows the
# sender); what it raises is logged, never the send's outcome.
ON_PUSHBACK: ContextVar[Callable[[ProviderError], Awaitable[None]] | None] = ContextVar("on_pushback", default=None)


def is_pushback(error: ProviderError) -> bool:
    """The provider asks us to slow down: HTTP 429 (Twilio 20429, ElasticEmail 429)."""
    return error.http_status == 429 or error.error_code == "20429"


def deadline_passed() -> ProviderError:
    return ProviderError(
        "deadline_exceeded", "the claim's lease ends before the provider could be called", "transient"
    )


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, ProviderError) and exc.retryable


def _backoff(attempt_number: int) -> float:
    # "Equal jitter": half fixed, half random, so waits grow but never collapse to zero.
    ceiling = min(BACKOFF_CAP_S, BACKOFF_INITIAL_S * 2.0 ** (attempt_number - 1))
    return ceiling * random.uniform(0.5, 1.0)


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome is not None else None
    retry_after = exc.retry_after if isinstance(exc, ProviderError) and exc.retry_after else 0.0
    return max(retry_after, _backoff(state.attempt_number + 1))


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome is not None else None
    code = exc.error_code if isinstance(exc, ProviderError) else type(exc).__name__
    log.info("provider attempt %d failed (%s); retrying in %.2fs", state.attempt_number + 1, code,
             state.upcoming_sleep)


async def send_with_retries(
    attempt: Callable[[float], Awaitable[SendResult]],
    *,
    deadline: float,
    timeout_s: float,
    max_attempts: int = MAX_ATTEMPTS,
) -> SendResult:
    """Run ``attempt(request_timeout_s)`` until it succeeds, raises a non-retryable ProviderError, has run
    ``max_attempts`` times, or the next wait would pass ``deadline``; then the last error is raised as is.

    Each request's timeout is ``timeout_s`` clipped to what is left before ``deadline``.
    """

    def stop(state: RetryCallState) -> bool:  # attempt_number counts the tenacity attempts, after the first
        return (state.attempt_number + 1 >= max_attempts
                or time.monotonic() + state.upcoming_sleep + MIN_RETRY_WINDOW_S >= deadline)

    attempts = 0

    async def one_attempt() -> SendResult:
        nonlocal attempts
        attempts += 1
        if attempts > 1 and (before_retry := BEFORE_RETRY.get()) is not None:
            await before_retry()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise deadline_passed()
        try:
            return await attempt(min(timeout_s, remaining))
        except ProviderError as error:
            if is_pushback(error) and (on_pushback := ON_PUSHBACK.get()) is not None:
                try:
                    await on_pushback(error)
                except Exception:  # slowing the sender is best effort; the touch's own retry goes on
                    log.warning("recording a provider's pushback failed", exc_info=True)
            raise

    try:  # the common case, a first attempt that succeeds, without the retry machinery's cost per send
        return await one_attempt()
    except ProviderError as error:
        if not error.retryable or max_attempts <= 1:
            raise
        first_wait = max(error.retry_after or 0.0, _backoff(1))
        if time.monotonic() + first_wait + MIN_RETRY_WINDOW_S >= deadline:
            raise
        log.info("provider attempt 1 failed (%s); retrying in %.2fs", error.error_code, first_wait)
        await asyncio.sleep(first_wait)

    retrying = AsyncRetrying(
        retry=retry_if_exception(_is_retryable),
        wait=_wait,
        stop=stop,
        before_sleep=_log_retry,
        reraise=True,
    )
    result: SendResult = await retrying(one_attempt)
    return result


# --- wiring ------------------------------------------------------------------------------------------


def build_providers(settings: Settings) -> dict[str, Provider | None]:
    """A provider per channel (one shared Twilio driver for voice, whatsapp and sms); None where the
    provider has no credentials."""
    from listener.providers.elasticemail import ElasticEmailProvider
    from listener.providers.twilio import TwilioProvider

    twilio: Provider | None = None
    if settings.twilio_account_sid and settings.twilio_auth_token:
        twilio = TwilioProvider(
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token.get_secret_value(),
            base_url=settings.twilio_base_url,
            timeout_s=settings.provider_timeout_s,
            connection_limit=settings.concurrency,
            status_callback_base=settings.public_url,
        )
    email: Provider | None = None
    if settings.elasticemail_api_key:
        email = ElasticEmailProvider(
            api_key=settings.elasticemail_api_key.get_secret_value(),
            base_url=settings.elasticemail_base_url,
            timeout_s=settings.provider_timeout_s,
            connection_limit=settings.concurrency,
        )
    by_name: dict[ProviderName, Provider | None] = {"twilio": twilio, "elasticemail": email}
    return {channel: by_name[PROVIDER_FOR_CHANNEL[channel]] for channel in CHANNELS}


def unconfigured_channels(settings: Settings) -> list[str]:
    """Channels whose provider has no credentials, in CHANNELS order."""
    configured = {"twilio": settings.twilio_configured, "elasticemail": settings.elasticemail_configured}
    return [channel for channel in CHANNELS if not configured[PROVIDER_FOR_CHANNEL[channel]]]


async def close_providers(providers: dict[str, Provider | None]) -> None:
    """Close each distinct provider once."""
    seen: set[int] = set()
    for provider in providers.values():
        if provider is not None and id(provider) not in seen:
            seen.add(id(provider))
            await provider.aclose()
