"""Contact values are never trusted (SPEC §3): normalise them, and fail the touch clearly when invalid."""

from __future__ import annotations

from functools import lru_cache

import phonenumbers

from listener.rules.errors import TouchFailure
from listener.rules.sanitize import address_problem

_PHONE_PREFIXES = ("whatsapp:", "tel:")


def normalise_phone(raw: str | None, default_region: str) -> str:
    """Return ``raw`` as E.164 (``+14155550100``), or raise a permanent TouchFailure (cached: the same lead's
    number is read once per process, not once per touch)."""
    result = _normalised_phone(raw, default_region)
    if isinstance(result, TouchFailure):
        raise TouchFailure(result.error_code, result.error, result.failure_class)
    return result


@lru_cache(maxsize=65_536)
def _normalised_phone(raw: str | None, default_region: str) -> str | TouchFailure:
    try:
        return _parse_phone(raw, default_region)
    except TouchFailure as failure:
        return failure


def _parse_phone(raw: str | None, default_region: str) -> str:
    """Return ``raw`` as E.164 (``+14155550100``), or raise a permanent TouchFailure.

    National numbers are read in ``default_region``; ``00``-prefixed international numbers, spaces,
    dashes, dots and parentheses are accepted.
    """
    value = (raw or "").strip()
    for prefix in _PHONE_PREFIXES:
        if value.lower().startswith(prefix):
            value = value[len(prefix):].strip()
    if not value:
        raise TouchFailure("no_phone", "lead has no phone number")
    if value.startswith("00"):
        value = "+" + value[2:]
    try:
        parsed = phonenumbers.parse(value, default_region)
    except phonenumbers.NumberParseException as exc:
        raise TouchFailure("invalid_phone", f"cannot read {raw!r} as a phone number: {exc}") from None
    if not phonenumbers.is_valid_number(parsed):
        raise TouchFailure(
            "invalid_phone", f"{raw!r} is not a valid phone number (read with default region {default_region})"
        )
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def normalise_email(raw: str | None) -> str:
    """Return ``raw`` stripped, with its domain lower-cased, or raise a permanent TouchFailure.

    Only plausibility is checked (one ``@``, a local part, a dotted domain, no whitespace); the provider
    is the judge of deliverability.
    """
    value = (raw or "").strip()
    if not value:
        raise TouchFailure("no_email", "lead has no email address")
    local, at, domain = value.rpartition("@")
    labels = domain.split(".")
    plausible = (
        at == "@"
        and "@" not in local
        and bool(local)
        and len(labels) >= 2
        and all(labels)
        and not any(ch.isspace() for ch in value)
    )
    if not plausible:
        raise TouchFailure("invalid_email", f"{raw!r} is not an email address")
    problem = address_problem(value)  # CR/LF, control characters, header specials: `Evil<x@y.com>`
    if problem is not None:
        raise TouchFailure("invalid_email", f"{raw!r} {problem}")
    return f"{local}@{domain.lower()}"
