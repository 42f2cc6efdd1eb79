"""Text from outside (provider answers, webhook fields) made safe to store: PostgreSQL's text and jsonb refuse NUL,
and lone surrogates cannot be encoded; other control characters are noise in events and logs."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def clean_text(text: str) -> str:
    """`text` without NUL, other C0 controls but tab/newline/carriage return, DEL, and lone surrogates."""
    return _UNSAFE.sub("", text)
