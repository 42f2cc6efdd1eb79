"""Phone and email normalisation: contact values are never trusted (SPEC §3)."""

from __future__ import annotations

import pytest

from listener.rules.contacts import normalise_email, normalise_phone
from listener.rules.errors import TouchFailure


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+14155552671", "US", "+14155552671"),
        ("(415) 555-2671", "US", "+14155552671"),
        ("415.555.2671", "US", "+14155552671"),
        ("  +1 415-555-2671  ", "US", "+14155552671"),
        ("0014155552671", "ES", "+14155552671"),
        ("0034 612 34 56 78", "US", "+34612345678"),
        ("612 34 56 78", "ES", "+34612345678"),
        ("+34 (612) 34-56-78", "US", "+34612345678"),
        ("55 1234 5678", "MX", "+525512345678"),
        ("whatsapp:+14155552671", "US", "+14155552671"),
    ],
)
def test_normalise_phone_returns_e164(raw: str, region: str, expected: str) -> None:
    assert normalise_phone(raw, region) == expected


@pytest.mark.parametrize("raw", [None, "", "   ", "whatsapp:"])
def test_missing_phone_is_no_phone(raw: str | None) -> None:
    with pytest.raises(TouchFailure) as info:
        normalise_phone(raw, "US")
    assert (info.value.error_code, info.value.failure_class) == ("no_phone", "permanent")


@pytest.mark.parametrize("raw", ["abc", "123", "+1 555 0000", "+999 1234567", "12345678901234567890", "+"])
def test_invalid_phone_names_the_value(raw: str) -> None:
    with pytest.raises(TouchFailure) as info:
        normalise_phone(raw, "US")
    assert (info.value.error_code, info.value.failure_class) == ("invalid_phone", "permanent")
    assert repr(raw) in info.value.error


def test_national_number_depends_on_region() -> None:
    with pytest.raises(TouchFailure):
        normalise_phone("612 34 56 78", "US")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ana@example.com", "ana@example.com"),
        ("  Ana.Diaz@Example.COM ", "Ana.Diaz@example.com"),
        ("x+tag@sub.domain.co", "x+tag@sub.domain.co"),
    ],
)
def test_normalise_email(raw: str, expected: str) -> None:
    assert normalise_email(raw) == expected


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_missing_email_is_no_email(raw: str | None) -> None:
    with pytest.raises(TouchFailure) as info:
        normalise_email(raw)
    assert (info.value.error_code, info.value.failure_class) == ("no_email", "permanent")


@pytest.mark.parametrize(
    "raw",
    ["ana", "ana@", "@example.com", "ana@example", "ana@@example.com", "a@b@example.com", "ana maria@example.com",
     "ana@exa mple.com", "ana@.com", "ana@example.", "ana@example..com"],
)
def test_invalid_email(raw: str) -> None:
    with pytest.raises(TouchFailure) as info:
        normalise_email(raw)
    assert (info.value.error_code, info.value.failure_class) == ("invalid_email", "permanent")
    assert repr(raw) in info.value.error
