"""One-click unsubscribe links (SPEC §19, RFC 8058): the signed token that names a lead, its account and the touch
whose e-mail carried the link, and the two headers every e-mail carries when REVENUE_ASI_PUBLIC_URL is set.

A token is 87 URL-safe characters: base64url, without padding, of

    version (1 byte, 1) · lead id (16) · account id (16) · touch id (16) · MAC (16)

where MAC is HMAC-SHA256 under REVENUE_ASI_UNSUBSCRIBE_SECRET of a fixed context string and the 49 bytes before it,
cut to its first 128 bits (RFC 2104 §5 allows truncation to half the hash; 2^-128 per forgery attempt). Binary
ids instead of text keep the link short; the version byte lets a later format coexist. Verifying is strict — exact
length and alphabet, the canonical encoding (no second spelling of the same bytes), the version, then a
constant-time comparison of the MAC — so a forged, truncated, padded or re-encoded token is simply not a token.
Whether the lead, account and touch still exist and belong together is the database's question (web/unsubscribe.py).

Pure: no I/O, no clock; the secret is passed in and never stored in anything this module returns."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from uuid import UUID

VERSION = 1
_CONTEXT = b"revenue-asi one-click unsubscribe\x00"
MAC_BYTES = 16
TOKEN_BYTES = 1 + 16 * 3 + MAC_BYTES
TOKEN_CHARS = 87  # ceil(65 * 4 / 3), unpadded
_TOKEN = re.compile(rf"[A-Za-z0-9_-]{{{TOKEN_CHARS}}}")

PATH_PREFIX = "/u/"
ONE_CLICK_FIELD, ONE_CLICK_VALUE = "List-Unsubscribe", "One-Click"  # the POST body: List-Unsubscribe=One-Click
LIST_UNSUBSCRIBE = "List-Unsubscribe"
LIST_UNSUBSCRIBE_POST = "List-Unsubscribe-Post"


@dataclass(frozen=True, slots=True)
class UnsubscribeToken:
    lead_id: UUID
    account_id: UUID
    touch_run_id: UUID


def _mac(secret: str, body: bytes) -> bytes:
    return hmac.new(secret.encode("utf-8"), _CONTEXT + body, hashlib.sha256).digest()[:MAC_BYTES]


def sign(secret: str, lead_id: UUID, account_id: UUID, touch_run_id: UUID) -> str:
    """The token for this lead, account and touch."""
    body = bytes([VERSION]) + lead_id.bytes + account_id.bytes + touch_run_id.bytes
    return base64.urlsafe_b64encode(body + _mac(secret, body)).decode("ascii").rstrip("=")


def verify(secret: str, token: str) -> UnsubscribeToken | None:
    """What a token names, or None when it is not one this secret signed (forged, truncated, re-encoded, another
    secret's)."""
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=")
    except (binascii.Error, ValueError):
        return None
    if len(raw) != TOKEN_BYTES or raw[0] != VERSION:
        return None
    if base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=") != token:  # one spelling per token
        return None
    body, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
    if not hmac.compare_digest(mac, _mac(secret, body)):
        return None
    return UnsubscribeToken(UUID(bytes=body[1:17]), UUID(bytes=body[17:33]), UUID(bytes=body[33:49]))


def unsubscribe_url(public_url: str, secret: str, lead_id: UUID, account_id: UUID, touch_run_id: UUID) -> str:
    """``{PUBLIC_URL}/u/{token}``."""
    return public_url.rstrip("/") + PATH_PREFIX + sign(secret, lead_id, account_id, touch_run_id)


def list_unsubscribe_headers(url: str) -> dict[str, str]:
    """The RFC 8058 pair, as ElasticEmail's ``Content.Headers`` takes them (an object of string → string)."""
    return {LIST_UNSUBSCRIBE: f"<{url}>", LIST_UNSUBSCRIBE_POST: f"{ONE_CLICK_FIELD}={ONE_CLICK_VALUE}"}
