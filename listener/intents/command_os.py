"""Command OS (SPEC §14, the seed's /api/command-os): the known intents, their arguments, and a deterministic
English/Spanish text resolver. No model, no guessing: a small ordered rule set over accent-free lower-case words;
text it cannot place is refused with the intents it knows."""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from listener.intents.lead import enroll_lead, inspect_lead
from listener.intents.status import system_status

SYSTEM_STATUS, LEAD_INSPECT, LEAD_ENROLL = "system.status", "lead.inspect", "lead.enroll"
KNOWN_INTENTS: tuple[str, ...] = (SYSTEM_STATUS, LEAD_INSPECT, LEAD_ENROLL)
EXAMPLES: dict[str, tuple[str, ...]] = {
    SYSTEM_STATUS: ("system status", "estado del sistema"),
    LEAD_INSPECT: ("inspect lead <lead id>", "inspecciona el lead <lead id>"),
    LEAD_ENROLL: ("enroll lead <lead id> in campaign <campaign id>",
                  "inscribe al lead <lead id> en la campaña <campaign id>"),
}


class CommandError(ValueError):
    """A command that cannot be run as given (the API answers 422 with `known_intents`)."""


@dataclass(frozen=True)
class Resolved:
    intent: str
    args: dict[str, str]


@dataclass(frozen=True)
class Intent:
    name: str
    writes: bool
    required: tuple[str, ...]
    run: Callable[[asyncpg.Connection, dict[str, uuid.UUID], str], Awaitable[dict[str, Any]]]


async def _status(conn: asyncpg.Connection, _args: dict[str, uuid.UUID], _region: str) -> dict[str, Any]:
    return await system_status(conn)


async def _inspect(conn: asyncpg.Connection, args: dict[str, uuid.UUID], region: str) -> dict[str, Any]:
    return await inspect_lead(conn, args["lead_id"], default_region=region)


async def _enroll(conn: asyncpg.Connection, args: dict[str, uuid.UUID], _region: str) -> dict[str, Any]:
    return await enroll_lead(conn, args["lead_id"], args["campaign_id"])


INTENTS: dict[str, Intent] = {
    SYSTEM_STATUS: Intent(SYSTEM_STATUS, False, (), _status),
    LEAD_INSPECT: Intent(LEAD_INSPECT, False, ("lead_id",), _inspect),
    LEAD_ENROLL: Intent(LEAD_ENROLL, True, ("lead_id", "campaign_id"), _enroll),
}


def check_args(name: str, args: Any) -> dict[str, uuid.UUID]:
    """The intent's arguments as uuids; a missing, malformed or unexpected one is a CommandError."""
    intent = INTENTS.get(name) if isinstance(name, str) else None
    if intent is None:
        raise CommandError(f"unknown intent {name!r}")
    if args is None:
        args = {}
    if not isinstance(args, Mapping):
        raise CommandError("args must be an object")
    extra = sorted(set(args) - set(intent.required))
    if extra:
        raise CommandError(f"{name} takes no argument {', '.join(map(repr, extra))}")
    out: dict[str, uuid.UUID] = {}
    for key in intent.required:
        value = args.get(key)
        if value is None:
            raise CommandError(f"{name} needs {key}")
        try:
            out[key] = uuid.UUID(str(value))
        except ValueError:
            raise CommandError(f"{key} must be a uuid, got {str(value)[:60]!r}") from None
    return out


# --- the text resolver ---------------------------------------------------------------------------------------

_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
_WORD = re.compile(r"[a-z0-9]+")
LEAD_NOUNS = {"lead", "leads", "cliente", "prospecto", "contacto", "contact", "prospect", "customer"}
CAMPAIGN_NOUNS = {"campaign", "campaigns", "campana", "campanas", "cadence", "cadencia", "secuencia", "sequence"}
ENROLL_VERBS = {"enroll", "enrol", "enrolls", "subscribe", "inscribe", "inscribir", "inscribelo", "inscribela",
                "inscribeme", "matricula", "matricular", "agrega", "agregar", "anade", "anadir", "add", "put", "mete",
                "meter", "suma", "sumar", "incluye", "incluir", "registra", "registrar", "alta"}
INSPECT_VERBS = {"inspect", "inspecciona", "inspeccionar", "show", "muestra", "muestrame", "mostrar", "ver", "view",
                 "details", "detail", "detalles", "detalle", "info", "informacion", "describe", "describir", "lookup",
                 "look", "consulta", "consultar", "busca", "buscar", "check", "revisa", "revisar", "status", "estado",
                 "about", "pasa", "tell"}
STATUS_WORDS = {"status", "estado", "health", "salud", "overview", "resumen", "state", "queue", "cola", "healthy",
                "sistema", "system"}
# words that carry no meaning for the rules below ("please", articles, prepositions)
FILLER = {"the", "a", "an", "of", "for", "me", "please", "pls", "el", "la", "los", "las", "al", "del", "de", "en",
          "in", "into", "to", "por", "favor", "un", "una", "this", "este", "esta", "with", "id", "que", "what",
          "whats", "is", "s", "con", "on", "give", "dame", "about", "tell", "how", "como", "va", "doing", "and", "y",
          "cual", "es", "current", "actual", "now", "ahora", "up", "check", "show", "muestra", "muestrame", "ver",
          "see", "mostrar", "get", "it", "its", "are", "things", "todo", "going", "anda", "van"}


def normalise(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _id_after(words: list[str], nouns: set[str]) -> str | None:
    """The id written right after one of `nouns` (fillers allowed between), e.g. 'campaign <id>'."""
    for i, word in enumerate(words):
        if word in nouns:
            for following in words[i + 1:]:
                if _UUID.fullmatch(following):
                    return following
                if following not in FILLER:
                    break
    return None


def resolve(text: Any) -> Resolved:
    """English or Spanish text → one known intent with its arguments, or CommandError."""
    if not isinstance(text, str) or not text.strip():
        raise CommandError("text must be a non-empty string")
    if len(text) > 1000:
        raise CommandError("text is too long (1000 characters at most)")
    plain = normalise(text)
    ids = _UUID.findall(plain)
    tokens: list[str] = []
    for piece in re.split(r"(" + _UUID.pattern + r")", plain):
        tokens.extend([piece] if _UUID.fullmatch(piece) else _WORD.findall(piece))
    words = [t for t in tokens if not _UUID.fullmatch(t)]
    vocabulary = set(words)

    if vocabulary & ENROLL_VERBS and (vocabulary & CAMPAIGN_NOUNS or len(ids) == 2):
        if len(set(ids)) != 2:
            raise CommandError("lead.enroll needs a lead id and a campaign id, e.g. "
                               "'enroll lead <lead id> in campaign <campaign id>'")
        campaign = _id_after(tokens, CAMPAIGN_NOUNS)
        lead = _id_after(tokens, LEAD_NOUNS)
        if campaign is None and lead is None:
            lead, campaign = ids[0], ids[1]
        elif campaign is None:
            campaign = next(i for i in ids if i != lead)
        elif lead is None or lead == campaign:
            lead = next(i for i in ids if i != campaign)
        assert lead is not None and campaign is not None
        return Resolved(LEAD_ENROLL, {"lead_id": lead, "campaign_id": campaign})

    meaningful = vocabulary - FILLER - LEAD_NOUNS
    if len(ids) == 1 and (vocabulary & INSPECT_VERBS or vocabulary & LEAD_NOUNS) \
            and meaningful <= (INSPECT_VERBS | STATUS_WORDS):
        return Resolved(LEAD_INSPECT, {"lead_id": ids[0]})

    if not ids and vocabulary & STATUS_WORDS and meaningful <= STATUS_WORDS | {"check", "doing", "going"}:
        return Resolved(SYSTEM_STATUS, {})
    raise CommandError("no known intent matches this text")
