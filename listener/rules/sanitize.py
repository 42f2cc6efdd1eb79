"""Text at the provider boundary (SPEC §11): what comes back is cleaned before it is stored, what goes out is
what the provider accepts, and secrets are scrubbed before any truncation.

* :func:`clean_answer` — a provider's answer (error text, ``sid``, ``MessageID``): NUL bytes, lone surrogates
  and control characters removed (PostgreSQL's text and jsonb refuse NUL, and a lone surrogate cannot be encoded
  as UTF-8: either failed the whole completion statement of a batch).
* :func:`header_problem` / :func:`address_problem` — e-mail header fields and addresses with CR/LF (header
  injection: ``"ACME\\r\\nBcc: spy@x"``) or header specials (``Evil<x@y>``).
* :func:`clean_twiml_text` — characters XML 1.0 forbids (a pasted Word line break is U+000B): Twilio answers 12100
  to TwiML that is not XML.
* :func:`scrub_secrets` — every secret, whole and in its Basic-auth base64 form, replaced before anything is cut.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MAX_ANSWER_BYTES = 65_536  # bodies are read up to 64 KiB

# C0 controls but tab/newline/carriage return, DEL, C1 controls, lone surrogates, the two XML non-characters
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_CONTROL_OR_SURROGATE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_LINE_BREAKS = re.compile("[\r\n\x0b\x0c\x85\u2028\u2029]")
_ADDRESS_SPECIALS = set('<>()[]\\,;:"')


def clean_answer(text: str) -> str:
    """A provider's text made safe to store: NUL, lone surrogates and control characters become spaces (NUL is
    dropped), whitespace collapses."""
    text = text.replace("\x00", "")
    return " ".join(_CONTROL_OR_SURROGATE.sub(" ", text).split())


def clean_id(value: object, max_length: int = 200) -> str | None:
    """A provider's id (Twilio ``sid``, ElasticEmail ``MessageID``): cleaned like :func:`clean_answer`, and None
    when nothing usable is left (the caller treats that as "no id")."""
    if not isinstance(value, str):
        return None
    cleaned = clean_answer(value)
    return cleaned[:max_length] or None


def decode_answer(raw: bytes) -> str:
    """Bytes of an answer (already capped at MAX_ANSWER_BYTES) as text; invalid UTF-8 replaced."""
    return raw[:MAX_ANSWER_BYTES].decode("utf-8", "replace")


def without_unencodable(text: str) -> str:
    """Outgoing text without NUL and lone surrogates (which UTF-8 cannot encode: the request would raise)."""
    return re.sub("[\x00\ud800-\udfff]", "", text)


def clean_twiml_text(text: str) -> str:
    """Text for a TwiML ``<Say>``: every character XML 1.0 forbids (and C1 controls) becomes a space."""
    return _NOT_XML.sub(" ", text)


def header_problem(value: str | None) -> str | None:
    """Why ``value`` cannot be an e-mail header field (a line break, NUL or other control character), or None."""
    if value is None:
        return None
    if _LINE_BREAKS.search(value):
        return "contains a line break (header injection)"
    if _CONTROL_OR_SURROGATE.search(value.replace("\t", " ")):
        return "contains a control character"
    return None


def address_problem(address: str) -> str | None:
    """Why ``address`` is not a bare e-mail address we send to (``local@domain``, no whitespace, no control
    characters, no header specials such as ``<`` ``>`` ``,`` ``;`` ``"``), or None."""
    problem = header_problem(address)
    if problem is not None:
        return problem
    if any(ch.isspace() for ch in address):
        return "contains whitespace"
    if any(ch in _ADDRESS_SPECIALS for ch in address):
        return "contains a character that is special in e-mail headers"
    local, at, domain = address.rpartition("@")
    if at != "@" or not local or "@" in local or "." not in domain or not all(domain.split(".")):
        return "is not of the form local@domain"
    return None


def secret_forms(secrets: Iterable[str | None], basic_auth_user: str | None = None) -> list[str]:
    """Every form in which a secret can appear in an answer or an exception text: the value, its URL-encodings,
    and — for the secret sent with Basic auth — base64(``user:secret``) (what an echoed Authorization header
    shows). Longest first, so a form that contains another is replaced whole."""
    forms: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        forms.update({secret, quote(secret, safe=""), quote_plus(secret)})
        if basic_auth_user is not None:
            forms.add(base64.b64encode(f"{basic_auth_user}:{secret}".encode()).decode("ascii"))
    return sorted((f for f in forms if f), key=len, reverse=True)


def scrub_secrets(text: str, forms: Iterable[str]) -> str:
    """``text`` with every secret form replaced by ``***``. Call it on the whole text, before any truncation."""
    for form in forms:
        if form:
            text = text.replace(form, "***")
    return text
