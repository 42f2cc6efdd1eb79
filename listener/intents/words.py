"""Text folding shared by the resolver and name lookups: lower case, accents removed, so "Revisión" and "revision"
are the same word."""

from __future__ import annotations

import re
import unicodedata

_NOT_WORD = re.compile(r"[^a-z0-9]+")


def normalise(text: str) -> str:
    """Lower case without accents (NFKD, combining marks dropped): 'Campaña' → 'campana'."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def normalise_with_positions(text: str) -> tuple[str, list[int]]:
    """normalise(text), and for each of its characters the index of the character of `text` it came from, so a span
    found in the folded text can be cut from the text as written (a campaign's name keeps its accents and case)."""
    folded: list[str] = []
    positions: list[int] = []
    for i, char in enumerate(text):
        piece = normalise(char)
        folded.append(piece)
        positions.extend([i] * len(piece))
    return "".join(folded), positions


def as_written(text: str, folded: str, positions: list[int], piece: str, start: int = 0) -> str:
    """`piece` (a span of normalise(text)) as `text` writes it; `piece` itself when it cannot be found."""
    at = folded.find(piece, start) if piece else -1
    if at < 0 or len(folded) != len(positions):
        return piece
    return text[positions[at]:positions[at + len(piece) - 1] + 1]


def name_key(text: str) -> str:
    """How a name is compared: folded, every run of punctuation and spaces one space ('Free  Check-up!' and
    'free check up' are the same name)."""
    return _NOT_WORD.sub(" ", normalise(text)).strip()
