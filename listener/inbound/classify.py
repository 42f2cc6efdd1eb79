"""What an inbound reply means (SPEC §12): a small deterministic English + Spanish rule set.

The text is normalised first (accents and emoji dropped, case folded, punctuation to spaces), then the first rule
that matches wins:

1. Twilio's ``OptOutType`` (STOP / START / HELP), when Twilio already recognised a keyword;
2. the whole message is an opt-out keyword (STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, BAJA, ALTO, PARAR) or
   contains an opt-out phrase ("dame de baja", "stop texting", "remove me") -> ``opt_out``;
3. the whole message is START, UNSTOP or ALTA -> ``opt_in``;  HELP, INFO, AYUDA -> ``help``;
3b. an automatic absence notice (out-of-office auto-replies, WhatsApp Business away messages: SPEC §19,
   listener/inbound/absence.py says where the line is drawn) -> ``out_of_office`` — before the negative and positive
   rules, since notices say "no estamos disponibles" or "for urgent matters call me";
4. a negative phrase ("not interested", "no gracias", "no me interesa", a bare "no") -> ``negative`` — before the
   positive rules, since "no me interesa" contains "me interesa";
5. a positive phrase ("yes", "sí, me interesa", "call me", "interested") -> ``positive``;
6. anything else -> ``neutral``.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final, Literal

from listener.inbound.absence import is_out_of_office

Classification = Literal["opt_out", "opt_in", "help", "out_of_office", "positive", "negative", "neutral"]

OPT_OUT_KEYWORDS: Final = frozenset({"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "baja", "alto",
                                     "parar"})
OPT_IN_KEYWORDS: Final = frozenset({"start", "unstop", "alta"})
HELP_KEYWORDS: Final = frozenset({"help", "info", "ayuda"})

# Phrases are matched on whole words of the normalised text.
OPT_OUT_PHRASES: Final = (
    "stop texting", "stop messaging", "stop sending", "stop calling", "stop contacting", "remove me",
    "take me off", "unsubscribe me", "do not contact", "dont contact", "do not text", "dont text",
    "dame de baja", "darme de baja", "denme de baja", "no me escribas", "no me escriban", "no me llames",
    "no me llamen", "no quiero recibir", "no me contactes", "no me contacten", "borrame", "eliminame",
)
NEGATIVE_PHRASES: Final = (
    "not interested", "no interest", "no thanks", "no thank you", "not now", "not for me", "no need",
    "we are good", "were good", "im good", "wrong number", "leave me alone", "not looking",
    "no gracias", "no me interesa", "no nos interesa", "no estoy interesad", "no estamos interesad", "no quiero",
    "no necesito", "no necesitamos", "ahora no", "por ahora no", "numero equivocado", "dejame en paz",
    "no es para mi",
)
NEGATIVE_WORDS: Final = frozenset({"no", "nope", "nah", "nunca", "never"})  # as the whole message
POSITIVE_PHRASES: Final = (
    "yes", "yeah", "yep", "yup", "sure", "interested", "call me", "lets talk", "let s talk", "sounds good",
    "tell me more", "more info", "more information", "send me", "book", "schedule", "i want", "of course",
    "me interesa", "nos interesa", "interesad", "llamame", "llamenme", "hablemos", "claro", "por supuesto",
    "de acuerdo", "me gustaria", "quiero mas", "mas informacion", "cuando podemos", "agendar", "agenda",
    "perfecto", "genial",
)
POSITIVE_FIRST_WORDS: Final = frozenset({"si", "sii", "siii", "dale"})  # "si" only first: it is also "if"

_NOT_WORD = re.compile(r"[^a-z0-9]+")


def normalise(text: str) -> str:
    """Lower case ASCII words separated by single spaces: accents and emoji dropped, apostrophes removed."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    ascii_only = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).replace("'", "").replace("’", "")
    return _NOT_WORD.sub(" ", ascii_only.encode("ascii", "ignore").decode()).strip()


STEM_PHRASES: Final = frozenset({"interesad", "no estoy interesad", "no estamos interesad"})  # -o, -a, -os, -as


def _has_phrase(padded: str, phrases: tuple[str, ...]) -> bool:
    """A phrase on word boundaries of `padded` (" text "); a stem may end inside a word."""
    return any((f" {p}" in padded) if p in STEM_PHRASES else (f" {p} " in padded) for p in phrases)


def classify(body: str | None, opt_out_type: str | None = None) -> Classification:
    """The class of an inbound message (see the module docstring for the rules, in order)."""
    kind = (opt_out_type or "").strip().upper()
    if kind == "STOP":
        return "opt_out"
    if kind == "START":
        return "opt_in"
    if kind == "HELP":
        return "help"
    text = normalise(body or "")
    if not text:
        return "neutral"
    words = text.split()
    padded = f" {text} "
    if text in OPT_OUT_KEYWORDS or _has_phrase(padded, OPT_OUT_PHRASES):
        return "opt_out"
    if text in OPT_IN_KEYWORDS:
        return "opt_in"
    if text in HELP_KEYWORDS:
        return "help"
    if is_out_of_office(body):
        return "out_of_office"
    if text in NEGATIVE_WORDS or _has_phrase(padded, NEGATIVE_PHRASES):
        return "negative"
    if words[0] in POSITIVE_FIRST_WORDS or _has_phrase(padded, POSITIVE_PHRASES):
        return "positive"
    return "neutral"
