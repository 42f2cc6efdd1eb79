"""Command OS (SPEC §14, §18; the seed's /api/command-os): text → intent, and the one way every intent is run —
previewed, confirmed, recorded.

The resolver is deterministic: a small ordered rule set over accent-free lower-case English and Spanish words, no
model and no guessing. Campaigns are named by id or by name ("pausa la campaña Revisión gratuita"); a lead, a touch
or an event only by id. Text it cannot place raises NoMatch — the only case in which the optional model
(listener/intents/llm.py, REVENUE_ASI_LLM_URL) is asked; text it recognises but refuses ("borra todo", "cancel
everything", "pausa" without a campaign) raises CommandError and never reaches the model.

`run_command` runs an intent the same way for the API, the console and the CLI: a read answers `result`; a write
without confirmation answers what it would change (`preview`, `confirm_required`) and changes nothing; a confirmed
write runs in one transaction with its `command_runs` row (0014), and a refused one leaves a row with its error."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg

from listener.intents.errors import CommandError, IntentError, NoMatch
from listener.intents.lead import jsonable
from listener.intents.registry import (
    CAMPAIGN_LIST,
    CAMPAIGN_PAUSE,
    CAMPAIGN_RESUME,
    DEFAULT_STOP_REASON,
    EXAMPLES,
    INTENTS,
    KNOWN_INTENTS,
    LEAD_ENROLL,
    LEAD_INSPECT,
    LEAD_STOP,
    LEAD_SUPPRESS,
    REACTIONS_RETRY,
    REPORT_FUNNEL,
    SYSTEM_STATUS,
    TOUCH_CANCEL,
    WRITE_INTENTS,
    Context,
    Intent,
    Resolved,
    check_args,
)
from listener.intents.words import as_written, normalise, normalise_with_positions
from listener.settings import Settings
from listener.store.queries import Q

__all__ = ["EXAMPLES", "INTENTS", "KNOWN_INTENTS", "WRITE_INTENTS", "CommandError", "Context", "Intent", "NoMatch",
           "Resolved", "check_args", "normalise", "resolve", "resolve_text", "run_command"]

MAX_TEXT = 1000

# --- the text resolver ---------------------------------------------------------------------------------------

_UUID_PATTERN = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_UUID = re.compile(rf"\b{_UUID_PATTERN}\b")
_UUID_ANY_CASE = re.compile(rf"\b{_UUID_PATTERN}\b", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9]+")
LEAD_NOUNS = {"lead", "leads", "cliente", "prospecto", "contacto", "contact", "prospect", "customer"}
CAMPAIGN_NOUNS = {"campaign", "campaigns", "campana", "campanas", "cadence", "cadences", "cadencia", "cadencias",
                  "secuencia", "secuencias", "sequence", "sequences"}
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
# v2 (SPEC §18)
DESTRUCTIVE = {"delete", "deletes", "borra", "borrar", "borralo", "borrala", "borren", "elimina", "eliminar",
               "eliminalo", "eliminala", "eliminen", "drop", "truncate", "wipe", "destroy", "destruye", "destruir",
               "purge", "purga", "purgar", "erase", "remove", "quita", "quitar", "vacia", "vaciar"}
EVERYTHING = {"everything", "all", "todo", "todos", "todas", "everyone", "everybody", "every"}
CANCEL_VERBS = {"cancel", "cancels", "cancela", "cancelar", "cancelalo", "cancelala", "cancelen", "anula", "anular",
                "anulalo", "anulala", "abort", "aborta", "abortar", "descarta", "descartar", "revoke", "revoca"}
RETRY_VERBS = {"retry", "retries", "reintenta", "reintentar", "reintentalas", "reintentala", "requeue", "reencola",
               "reencolar", "rerun", "reprocess", "reprocesa", "reprocesar", "intenta", "intentar"}
REACTION_NOUNS = {"reaction", "reactions", "reaccion", "reacciones"}
PAUSE_VERBS = {"pause", "pauses", "pausa", "pausar", "pausala", "pausalo", "pausen", "suspend", "suspende",
               "suspender", "suspendela", "freeze", "congela", "congelar", "hold", "halt", "stop", "deten", "detener",
               "detenla", "frena", "frenar"}
RESUME_VERBS = {"resume", "resumes", "reanuda", "reanudar", "reanudala", "reanuden", "unpause", "despausa",
                "despausar", "reactiva", "reactivar", "reactivala", "reactivate", "continue", "continua", "continuar",
                "activate", "activa", "activar", "reenable", "retoma", "retomar", "unfreeze", "descongela",
                "descongelar", "relaunch", "relanza", "relanzar"}
FUNNEL_WORDS = {"funnel", "funnels", "embudo", "embudos", "conversion", "conversions", "conversiones", "report",
                "reporte", "informe", "metrics", "metricas", "stats", "estadisticas", "rendimiento", "performance",
                "results", "resultados"}
LIST_WORDS = {"list", "lista", "listar", "listado", "enumera", "enumerar", "all", "todas", "which", "cuales", "hay",
              "there", "have", "tenemos", "tengo", "my", "mis", "our", "nuestras", "active", "activas", "paused",
              "pausadas", "every", "existing", "existen", "do", "we", "i"}
_SUPPRESS = re.compile(
    r"\b(?:suppress|suppresses|suprime|suprimir|suprimelo|suprimela|blacklist|blocklist|bloquea|bloquear|bloquealo|"
    r"bloqueala|block|unsubscribe|desuscribe|desuscribir|desuscribelo|opt\s*-?\s*out|do\s*not\s*contact|"
    r"do_not_contact|don\W?t\s+contact|dont\s+contact|never\s+(?:again\s+)?contact|"
    r"no\s+(?:lo\s+|la\s+|le\s+|les\s+)?(?:contactar|contactes|contacten|contactemos|contacte|"
    r"(?:vuelvas|vuelvan|volver)\s+a\s+contactar)|nunca\s+(?:mas\s+)?contactar|"
    r"da(?:r|le|lo|la)?\s+de\s+baja|lista\s+negra)\b")
_LEAD_STOP = re.compile(
    r"\b(?:stop|stops|halt|deten|detener|detenlo|detenla|frena|frenar|paren|"
    r"(?:deja|dejar|dejen|dejemos)\s+de\s+(?:contactar|escribir|llamar|enviar|mandar)(?:le|les|lo|la)?|"
    r"stop\s+(?:contacting|messaging|calling|emailing|texting))\b")
_PARA_FIRST = re.compile(r"^\W*para\b")  # "para al lead …" (stop!), not "para" (for) inside a sentence
# a reason given after the lead id: "stop lead <id> because …", "… porque …", "… motivo: …"
_REASON = re.compile(r"\b(?:because|porque|reason|motivo|raz[oó]n|due\s+to|debido\s+a|ya\s+que)\b\s*[:,\-]?\s*",
                     re.IGNORECASE)
_REASON_PLAIN = re.compile(r"\b(?:because|porque|reason|motivo|razon|due\s+to|debido\s+a|ya\s+que)\b")
_DAYS = re.compile(r"\b(\d{1,4})\s*(?:d|dias?|days?)\b")
_WEEK = re.compile(r"\b(?:last|past|this|ultima|esta)\s+(?:week|semana)\b|\bsemana\s+pasada\b")
_MONTH = re.compile(r"\b(?:last|past|this|ultimo|este)\s+(?:month|mes)\b|\bmes\s+pasado\b")
# the campaign noun, and what may stand between it and the name
_CAMPAIGN_NOUN = re.compile(r"\b(?:campaign|campana|cadence|cadencia|secuencia|sequence)(s?)\b")
_NAME_LEAD_IN = re.compile(r"\s*[:\-]?\s*(?:(?:named|called|llamad[ao]|de\s+nombre|con\s+nombre|titulad[ao])\s+)?")
_QUOTES = {'"': '"', "'": "'", "“": "”", "«": "»", "‘": "’", "”": "”"}
# where a name written after the noun ends
_NAME_END = re.compile(
    r"[,;?!¿¡]|\.(?:\s|$)|\b" + _UUID_PATTERN + r"\b"
    r"|\b(?:last|past|ultimos?|ultimas?|pasad[oa]s?|previous|anteriores)\b"
    r"|\b\d{1,4}\s*(?:d|dias?|days?)\b"
    r"|\b(?:please|por\s+favor|pls|porfa|right\s+now|ahora\s+mismo|because|porque)\b")
_TRAILING_FILLER = {"for", "the", "of", "in", "over", "during", "de", "del", "los", "las", "en", "durante", "la", "el",
                    "y", "and", "a", "con", "with", "from", "desde", "this", "esta", "este"}
_NAME_BEFORE = re.compile(r"^(?P<before>.*\b(?:the|la|el)\s+)(?P<name>\S.*?)\s*$")


def _check_text(text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise CommandError("text must be a non-empty string")
    if len(text) > MAX_TEXT:
        raise CommandError(f"text is too long ({MAX_TEXT} characters at most)")
    if any((ord(c) < 32 and c not in "\t\n\r") or 0xD800 <= ord(c) <= 0xDFFF or ord(c) == 0x7F for c in text):
        raise CommandError("text has control characters")
    return text


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    for piece in re.split(r"(" + _UUID.pattern + r")", text):
        tokens.extend([piece] if _UUID.fullmatch(piece) else _WORD.findall(piece))
    return tokens


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


def _reason(text: str, plain: str) -> tuple[str, str | None]:
    """The text before a reason given after the first id, and that reason as written (accents and case kept)."""
    first_id = _UUID.search(plain)
    marker = _REASON_PLAIN.search(plain, first_id.end()) if first_id else None
    if marker is None:
        return plain, None
    head = plain[:marker.start()]
    written_id = _UUID_ANY_CASE.search(text)
    found = _REASON.search(text, written_id.end()) if written_id else None
    reason = text[found.end():].strip(" \t\r\n:,.;-\"'") if found else ""
    return head, reason[:200] or None


def _days(plain: str) -> int | None:
    found = _DAYS.search(plain)
    if found:
        return int(found.group(1))
    if _WEEK.search(plain):
        return 7
    if _MONTH.search(plain):
        return 30
    return None


def _trim(name: str) -> str:
    """A name without the filler words a sentence leaves after it ('X for the' of 'X for the last 7 days')."""
    trimmed = name.strip(" \t\r\n-:")
    while trimmed:
        parts = trimmed.rsplit(None, 1)
        if parts[-1] not in _TRAILING_FILLER:
            break
        trimmed = parts[0].rstrip() if len(parts) == 2 else ""
    return trimmed.strip(" .-:")


def _campaign(head: str) -> tuple[str | None, str, bool]:
    """(the campaign named in `head`: an id or a name, or None; `head` without the name; whether the noun was plural).
    'pausa la campaña Revisión gratuita' → 'revision gratuita'; 'pause the Free check-up campaign' → 'free check-up';
    'campaign "Last chance"' → 'last chance'. An id is left where it is (the v1 rules read ids in place)."""
    noun = _CAMPAIGN_NOUN.search(head)
    if noun is None:
        return None, head, False
    plural = noun.group(1) == "s"
    after = head[noun.end():]
    rest = after[_NAME_LEAD_IN.match(after).end():]  # type: ignore[union-attr]
    found_id = _UUID.match(rest)
    if found_id:
        return found_id.group(0), head, plural
    quoted = rest[:1] in _QUOTES
    if quoted:
        close = rest.find(_QUOTES[rest[0]], 1)
        name, remainder = (rest[1:close], rest[close + 1:]) if close > 0 else (rest[1:], "")
        name = name.strip()
    else:
        end = _NAME_END.search(rest)
        name, remainder = (rest[:end.start()], rest[end.start():]) if end else (rest, "")
        name = _trim(name)
    if plural and not quoted:
        return None, head, True  # "lista las campañas activas": a list, not a name
    if name:
        return name, head[:noun.end()] + " " + remainder, plural
    before = _NAME_BEFORE.match(head[:noun.start()])  # "pause the Free check-up campaign"
    if before and not plural and not _UUID.search(before.group("name")):
        name = _trim(before.group("name"))
        if name:
            return name, before.group("before") + head[noun.start():], plural
    return None, head, plural


def resolve(text: Any) -> Resolved:
    """English or Spanish text → one known intent with its arguments (not yet checked: check_args does that), or
    CommandError: NoMatch when no rule places the text, another CommandError when a rule recognises it but cannot
    or must not run it (a destructive verb, a missing id or campaign, "cancel everything")."""
    text = _check_text(text)
    plain, positions = normalise_with_positions(text)
    head, reason = _reason(text, plain)
    campaign, head, plural = _campaign(head)
    if campaign is not None and not _UUID.fullmatch(campaign):
        campaign = as_written(text, plain, positions, campaign)  # 'Revisión gratuita', as typed
    tokens = _tokens(head)
    ids = [t for t in tokens if _UUID.fullmatch(t)]
    words = [t for t in tokens if not _UUID.fullmatch(t)]
    vocabulary = set(words)

    if vocabulary & DESTRUCTIVE:
        raise CommandError("Command OS deletes nothing: it pauses and resumes campaigns, stops and suppresses leads, "
                           "cancels one touch at a time")

    if vocabulary & ENROLL_VERBS and (vocabulary & CAMPAIGN_NOUNS or len(ids) == 2):
        named = campaign is not None and not _UUID.fullmatch(campaign)
        if named and len(set(ids)) == 1:
            assert campaign is not None
            return Resolved(LEAD_ENROLL, {"lead_id": ids[0], "campaign_id": campaign})
        if len(set(ids)) != 2:
            raise CommandError("lead.enroll needs a lead id and a campaign id, e.g. "
                               "'enroll lead <lead id> in campaign <campaign id>'")
        campaign_id = _id_after(tokens, CAMPAIGN_NOUNS)
        lead = _id_after(tokens, LEAD_NOUNS)
        if campaign_id is None and lead is None:
            lead, campaign_id = ids[0], ids[1]
        elif campaign_id is None:
            campaign_id = next(i for i in ids if i != lead)
        elif lead is None or lead == campaign_id:
            lead = next(i for i in ids if i != campaign_id)
        assert lead is not None and campaign_id is not None
        return Resolved(LEAD_ENROLL, {"lead_id": lead, "campaign_id": campaign_id})

    if vocabulary & CANCEL_VERBS:
        if campaign is not None or vocabulary & CAMPAIGN_NOUNS:
            raise CommandError("a campaign is paused, not canceled: 'pause campaign <name or id>'")
        if vocabulary & LEAD_NOUNS:
            raise CommandError("a lead's cadences are stopped, not canceled: 'stop lead <lead id> because <reason>'")
        if len(set(ids)) == 1:
            return Resolved(TOUCH_CANCEL, {"touch_id": ids[0]})
        raise CommandError("touch.cancel cancels one touch, named by its id: 'cancel touch <touch id>'")

    if vocabulary & REACTION_NOUNS and vocabulary & RETRY_VERBS:
        if ids:
            return Resolved(REACTIONS_RETRY, {"event_ids": list(dict.fromkeys(ids))})
        return Resolved(REACTIONS_RETRY, {"all": True})

    if _SUPPRESS.search(head):
        if len(set(ids)) == 1:
            return Resolved(LEAD_SUPPRESS, {"lead_id": ids[0]})
        raise CommandError("lead.suppress takes one lead, by its id: 'do not contact lead <lead id>'")

    if campaign is not None or vocabulary & CAMPAIGN_NOUNS:
        found = _campaign_intent(vocabulary, campaign, plural, ids, head)
        if found is not None:
            return found

    if _LEAD_STOP.search(head) or _PARA_FIRST.search(head):
        if vocabulary & EVERYTHING:
            raise CommandError("nothing stops everything at once: 'stop lead <lead id> because <reason>', "
                               "'pause campaign <name or id>'")
        if len(set(ids)) == 1:
            return Resolved(LEAD_STOP, {"lead_id": ids[0], "reason": reason or DEFAULT_STOP_REASON})
        raise CommandError("lead.stop takes one lead, by its id: 'stop lead <lead id> because <reason>'; "
                           "a campaign is paused: 'pause campaign <name or id>'")

    if not ids and vocabulary & (PAUSE_VERBS | RESUME_VERBS | FUNNEL_WORDS):
        _campaign_intent(vocabulary, None, plural, ids, head)  # raises: which campaign?

    meaningful = vocabulary - FILLER - LEAD_NOUNS
    if len(ids) == 1 and (vocabulary & INSPECT_VERBS or vocabulary & LEAD_NOUNS) \
            and meaningful <= (INSPECT_VERBS | STATUS_WORDS):
        return Resolved(LEAD_INSPECT, {"lead_id": ids[0]})

    if not ids and vocabulary & STATUS_WORDS and meaningful <= STATUS_WORDS | {"check", "doing", "going"}:
        return Resolved(SYSTEM_STATUS, {})
    raise NoMatch("no known intent matches this text")


def _campaign_intent(vocabulary: set[str], campaign: str | None, plural: bool, ids: list[str],
                     head: str) -> Resolved | None:
    """A campaign intent, from the words around the campaign (`head` holds no name: 'Last 7 days promo' is no
    period); CommandError when it is one without a campaign."""
    def needs(what: str) -> CommandError:
        many = "one campaign at a time: " if plural else ""
        return CommandError(f"{many}{what} needs a campaign: its name or id, e.g. "
                            f"'{EXAMPLES[what][0]}', '{EXAMPLES[what][1]}'")

    if vocabulary & FUNNEL_WORDS:
        if campaign is None:
            raise needs(REPORT_FUNNEL)
        days = _days(head)
        return Resolved(REPORT_FUNNEL, {"campaign_id": campaign, **({"days": days} if days is not None else {})})
    if vocabulary & RESUME_VERBS:
        if campaign is None:
            raise needs(CAMPAIGN_RESUME)
        return Resolved(CAMPAIGN_RESUME, {"campaign_id": campaign})
    if vocabulary & PAUSE_VERBS or _PARA_FIRST.search(head):
        if campaign is None:
            raise needs(CAMPAIGN_PAUSE)
        return Resolved(CAMPAIGN_PAUSE, {"campaign_id": campaign})
    meaningful = vocabulary - FILLER - CAMPAIGN_NOUNS
    if campaign is None and not ids and meaningful <= LIST_WORDS:
        return Resolved(CAMPAIGN_LIST, {})
    return None


async def resolve_text(text: Any, settings: Settings) -> Resolved:
    """The rules first; only when they find nothing (NoMatch) and REVENUE_ASI_LLM_URL is set, the model
    (listener/intents/llm.py): its answer comes back checked against the intent's schema, marked `by="model"`."""
    try:
        return resolve(text)
    except NoMatch:
        if not settings.llm_url:
            raise
    from listener.intents.llm import ask_model  # only when a model is configured

    return await ask_model(text, settings)


# --- running an intent: preview, confirm, record ----------------------------------------------------------------


def _recordable(text: str) -> str:
    """The typed text as command_runs keeps it: at most MAX_TEXT characters, without what PostgreSQL refuses (NUL)
    or cannot encode (lone surrogates) — it is a record, never resolved again."""
    return "".join(c for c in text[:MAX_TEXT] if c != "\x00" and not 0xD800 <= ord(c) <= 0xDFFF)

# How a caller gives `run_command` a connection in a transaction: begin(True) read-only, begin(False) read-write.
# The API's read_only / writable (with their statement timeouts), the CLI's plain transaction.
Begin = Callable[[bool], AbstractAsyncContextManager[asyncpg.Connection]]


async def run_command(begin: Begin, name: str, args: dict[str, Any], *, confirm: bool, actor: str,
                      text: str | None = None, region: str = "US") -> dict[str, Any]:
    """Run intent `name` with checked `args` (check_args). A read answers {intent, args, result}. A write without
    `confirm` answers {intent, args, preview, confirm_required: true} and writes nothing, not even a command_runs
    row. A confirmed write runs — preview, execution and its command_runs row — in one transaction and answers
    {intent, args, result, command_run_id}; when it is refused (IntentError: 404, 409) nothing it did stays, a
    command_runs row keeps the error, and the error is raised. `args` in the answers are exact: a campaign named by
    name is its id, so confirming a preview runs what was previewed."""
    intent = INTENTS[name]
    ctx = Context(region=region, actor=actor, text=None if text is None else _recordable(text))
    if not intent.writes or not confirm:
        async with begin(True) as conn:
            args = await intent.canonical(conn, args)
            if not intent.writes:
                return {"intent": name, "args": jsonable(args), "result": await intent.run(conn, args, ctx)}
            assert intent.preview is not None
            would = await intent.preview(conn, args, ctx)
        return {"intent": name, "args": jsonable(args), "preview": would, "confirm_required": True}
    assert intent.preview is not None
    preview: dict[str, Any] | None = None
    try:
        async with begin(False) as conn:
            args = await intent.canonical(conn, args)
            preview = await intent.preview(conn, args, ctx)
            result = await intent.run(conn, args, ctx)
            await conn.execute(Q.intent_record_command_run, ctx.command_run_id, actor, ctx.text, name,
                               jsonable(args), preview, result, None)
    except IntentError as exc:
        async with begin(False) as conn:
            await conn.execute(Q.intent_record_command_run, ctx.command_run_id, actor, ctx.text, name,
                               jsonable(args), preview, None, str(exc))
        raise
    return {"intent": name, "args": jsonable(args), "result": result, "command_run_id": str(ctx.command_run_id)}
