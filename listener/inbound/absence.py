"""Out-of-office replies (SPEC §19): is an inbound message an automatic absence notice, and when is the lead back?

Where the line is drawn (the table in tests/test_out_of_office.py shows each case):

* **An explicit automatic marker** is enough: "Automatic reply", "auto-reply", "Out of Office", "Respuesta
  automática", "mensaje automático", "fuera de la oficina" …
* **A business's away message** is enough (WhatsApp Business and help-desk away messages speak for a "we"): "we're
  currently away", "outside our business hours", "en este momento no estamos disponibles", "nuestro horario de
  atención es …", "estamos cerrados" …
* **A personal absence** ("I'm on vacation", "estoy de vacaciones", "estoy fuera", "me encuentro de viaje" …) counts
  only together with the shape of a notice — a return ("until", "back on", "hasta", "regreso el", "a mi vuelta"),
  thanks for the message, a promise to answer later or an "urgent" redirection — and only when the message does not
  talk to us like a person: asking to be called or written to ("call me", "llámame", "escríbeme"), showing interest
  ("me interesa"), or asking a question, unless it names an urgent alternative ("para urgencias llámame al …", which
  notices do). So "estoy fuera, llámame el lunes" is a person's reply (positive: a call is asked for) and "Estoy de
  vacaciones hasta el 15 de enero" is a notice, typed by hand or not: both say when to come back, and the next
  message the person writes ends the pause anyway.

The return date is read with ``dateparser`` from the few words after a return phrase ("hasta el 15 de enero", "back on
Monday", "until 12/15", "regreso el 3/1", "del 20 de diciembre al 6 de enero"), relative to the lead's local today,
with the day/month order of the lead's locale (the message's language and the lead's phone country: "3/1" is 3
January for es-MX and es-US alike, 1 March for en-US). A date in the past, or more than MAX_PAUSE_DAYS ahead (a
stale notice someone forgot to switch off), is not a return date; none found → the caller pauses 7 days.

Pure: no I/O and no clock of its own (today is passed in)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any, Final, Literal

import phonenumbers

from listener.rules.sendrules import resolve_zone

Language = Literal["en", "es"]
MAX_PAUSE_DAYS: Final = 180
DEFAULT_PAUSE_DAYS: Final = 7

# Phrases are matched on whole words of the normalised text (lower case ASCII, punctuation as spaces).
AUTOMATIC_MARKERS: Final[dict[str, Language]] = {
    "out of office": "en", "out of the office": "en", "automatic reply": "en", "auto reply": "en", "autoreply": "en",
    "auto response": "en", "automatic response": "en", "automated response": "en", "automated reply": "en",
    "this is an automated message": "en", "this is an automatic message": "en", "away message": "en",
    "respuesta automatica": "es", "mensaje automatico": "es", "respuesta automatizada": "es",
    "fuera de la oficina": "es", "fuera de oficina": "es", "ausente de la oficina": "es", "aviso de ausencia": "es",
    "mensaje de ausencia": "es", "respuesta de ausencia": "es",
}
BUSINESS_AWAY: Final[dict[str, Language]] = {
    "we are currently away": "en", "were currently away": "en", "we are away": "en", "were away": "en",
    "we are currently unavailable": "en", "were currently unavailable": "en", "we are unavailable": "en",
    "we are currently closed": "en", "were currently closed": "en", "we are closed": "en", "were closed": "en",
    "our office is closed": "en", "our offices are closed": "en", "outside business hours": "en",
    "outside of business hours": "en", "outside our business hours": "en", "outside of our business hours": "en",
    "outside our office hours": "en", "outside office hours": "en", "outside our working hours": "en",
    "no estamos disponibles": "es", "no nos encontramos disponibles": "es", "no estamos disponible": "es",
    "fuera de horario": "es", "fuera del horario": "es", "fuera de nuestro horario": "es",
    "nuestro horario de atencion": "es", "estamos cerrados": "es", "nos encontramos cerrados": "es",
    "no podemos atenderte": "es", "no podemos atenderle": "es", "no podemos atenderlos": "es",
    "no podemos atender tu": "es", "no podemos atender su": "es",
}
PERSONAL_ABSENCE: Final[dict[str, Language]] = {
    "i am away": "en", "im away": "en", "i will be away": "en", "ill be away": "en", "i am out": "en",
    "im out": "en", "i will be out": "en", "ill be out": "en", "currently away": "en", "currently out": "en",
    "currently unavailable": "en", "i am unavailable": "en", "im unavailable": "en", "on vacation": "en",
    "on holiday": "en", "on holidays": "en", "on leave": "en", "on annual leave": "en", "on parental leave": "en",
    "on maternity leave": "en", "on paternity leave": "en", "on sick leave": "en", "on a business trip": "en",
    "travelling": "en", "traveling": "en", "away from the office": "en", "away from my desk": "en",
    "away from email": "en", "limited access to email": "en", "limited access to my email": "en",
    "no access to email": "en", "without access to email": "en", "out of town": "en", "out of the country": "en",
    "ooo": "en",
    "estoy de vacaciones": "es", "estare de vacaciones": "es", "me encuentro de vacaciones": "es",
    "de vacaciones": "es", "estoy fuera": "es", "estare fuera": "es", "me encuentro fuera": "es",
    "estoy ausente": "es", "estare ausente": "es", "me encuentro ausente": "es", "estoy de viaje": "es",
    "estare de viaje": "es", "me encuentro de viaje": "es", "viaje de negocios": "es", "estoy de baja": "es",
    "de permiso": "es", "de licencia": "es", "no estoy disponible": "es", "no estare disponible": "es",
    "no me encuentro disponible": "es", "sin acceso al correo": "es", "sin acceso a mi correo": "es",
    "acceso limitado al correo": "es", "acceso limitado a mi correo": "es", "fuera de la ciudad": "es",
    "fuera del pais": "es",
}
NOTICE_CUES: Final[dict[str, Language]] = {
    "until": "en", "till": "en", "through": "en", "back on": "en", "back in the office": "en",
    "back in office": "en", "back at the office": "en", "back tomorrow": "en", "back next": "en",
    "i will be back": "en", "ill be back": "en", "will return": "en", "i return": "en", "returning on": "en",
    "return on": "en", "when i return": "en", "when i get back": "en", "upon my return": "en",
    "on my return": "en", "get back to you": "en", "respond": "en", "reply to your": "en",
    "thank you for your email": "en", "thank you for your message": "en", "thanks for your email": "en",
    "thanks for your message": "en", "urgent": "en", "limited access": "en", "in my absence": "en",
    "during my absence": "en",
    "hasta": "es", "regreso": "es", "regresare": "es", "vuelvo el": "es", "volvere": "es", "de vuelta": "es",
    "a mi regreso": "es", "a mi vuelta": "es", "a la vuelta": "es", "cuando regrese": "es", "cuando vuelva": "es",
    "respondere": "es", "contestare": "es", "le respondere": "es", "gracias por tu mensaje": "es",
    "gracias por su mensaje": "es", "gracias por tu correo": "es", "gracias por su correo": "es",
    "urgente": "es", "urgencia": "es", "urgencias": "es", "en mi ausencia": "es", "durante mi ausencia": "es",
    "me reincorporo": "es", "me incorporo": "es",
}
# A person talking to us: asks to be called or written to, shows interest. (A question mark counts too.)
HUMAN_CUES: Final[dict[str, Language]] = {
    "call me": "en", "text me": "en", "email me": "en", "write me": "en", "message me": "en", "lets talk": "en",
    "lets chat": "en", "interested": "en", "send me": "en", "ill call you": "en", "i will call you": "en",
    "llamame": "es", "llamenme": "es", "escribeme": "es", "escribanme": "es", "mandame": "es", "enviame": "es",
    "hablemos": "es", "te llamo": "es", "le llamo": "es", "me interesa": "es", "nos interesa": "es",
}
URGENT_REDIRECTION: Final = ("urgent", "urgente", "urgencia", "urgencias", "emergencia", "emergency")

_NOT_WORD = re.compile(r"[^a-z0-9]+")


def normalise(text: str) -> str:
    """Lower case ASCII words separated by single spaces (the classifier's normalisation)."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    ascii_only = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).replace("'", "").replace("’", "")
    return _NOT_WORD.sub(" ", ascii_only.encode("ascii", "ignore").decode()).strip()


def _hits(padded: str, phrases: dict[str, Language]) -> list[Language]:
    return [lang for phrase, lang in phrases.items() if f" {phrase} " in padded]


@dataclass(frozen=True)
class AbsenceSignals:
    automatic: list[Language]
    business: list[Language]
    personal: list[Language]
    notice: list[Language]
    human: list[Language]
    question: bool
    urgent: bool

    @property
    def is_out_of_office(self) -> bool:
        if self.automatic or self.business:
            return True
        talks_to_us = bool(self.human) or self.question
        return bool(self.personal and self.notice and (self.urgent or not talks_to_us))

    @property
    def language(self) -> Language:
        """The message's language, by which of the two the matched phrases belong to (a tie: Spanish, the
        default language of the touches)."""
        found = self.automatic + self.business + self.personal + self.notice + self.human
        return "en" if found.count("en") > found.count("es") else "es"


def signals(body: str | None) -> AbsenceSignals:
    text = normalise(body or "")
    padded = f" {text} "
    return AbsenceSignals(automatic=_hits(padded, AUTOMATIC_MARKERS), business=_hits(padded, BUSINESS_AWAY),
                          personal=_hits(padded, PERSONAL_ABSENCE), notice=_hits(padded, NOTICE_CUES),
                          human=_hits(padded, HUMAN_CUES), question="?" in (body or ""),
                          urgent=any(f" {w} " in padded for w in URGENT_REDIRECTION))


def is_out_of_office(body: str | None) -> bool:
    """An automatic absence notice (see the module docstring for where the line is drawn)."""
    return signals(body).is_out_of_office


# --- the return date ------------------------------------------------------------------------------------------

# After one of these words come the words of the return date ("hasta el 15 de enero", "back on Monday").
RETURN_WORDS: Final = frozenset({
    "until", "till", "til", "through", "thru", "back", "return", "returning", "returns",
    "hasta", "regreso", "regresare", "regresamos", "regresaremos", "vuelvo", "volvere", "volvemos", "volveremos",
    "vuelta", "reincorporo", "reincorporare", "incorporo", "retorno", "partir",
    "reopen", "reopening", "reopens", "reabrimos", "reabriremos", "reabre",
})
# A range ("del 20 de diciembre al 6 de enero", "from Dec 20 to Jan 3"): its start is no return date, but once one was
# read, the word after it opens the end of the range.
RANGE_START_WORDS: Final = frozenset({"del", "desde", "from", "entre", "between"})
RANGE_END_WORDS: Final = frozenset({"al", "to", "y", "and", "hasta"})
# Words between a return word and its date ("hasta el día 15", "back in the office on Monday").
FILLER_WORDS: Final = frozenset({
    "el", "la", "los", "las", "dia", "del", "de", "a", "en", "mi", "the", "on", "in", "at", "to", "my", "office",
    "oficina", "desk", "proximo", "proxima", "this", "este", "esta", "work", "trabajo", "be", "will",
    "estare", "estaremos", "por", "around", "approximately", "aproximadamente",
})
FRAGMENT_WORDS: Final = 5
_EDGE_PUNCTUATION = ".,;:!?¡¿()[]{}\"'«»“”*_"
_DOTTED_DATE = re.compile(r"(\d{1,2})\.(\d{1,2})(?:\.(\d{2,4}))?\.?")
_DAY_ONLY = re.compile(r"\d{1,2}")
_NUMERIC_DATE = re.compile(r"\d{1,4}[/-]\d{1,2}")


@dataclass(frozen=True)
class ReturnDate:
    until: date
    text: str  # the words the date was read from


@dataclass(frozen=True)
class _Token:
    raw: str  # as written, edge punctuation removed
    key: str  # lower case ASCII, for matching
    ends_sentence: bool


def _tokens(body: str) -> list[_Token]:
    tokens = []
    for piece in body.split():
        raw = piece.strip(_EDGE_PUNCTUATION)
        if not raw:
            continue
        trailing = piece[len(piece.rstrip(_EDGE_PUNCTUATION)):]
        abbreviation = trailing.startswith(".") and raw.isalpha() and len(raw) <= 4  # "Jan." "dic." "sept."
        ends = any(ch in trailing for ch in ",;!?") or (("." in trailing or ":" in trailing) and not abbreviation)
        dotted = _DOTTED_DATE.fullmatch(piece.strip("()[]{}\"'«»“”"))
        if dotted:  # 15.01. / 15.01.2027: a date, not a time of day (dateparser reads 15.01 as 15:01)
            raw = "/".join(part for part in dotted.groups() if part)
        key = "".join(ch for ch in unicodedata.normalize("NFKD", raw.casefold()) if not unicodedata.combining(ch))
        tokens.append(_Token(raw, key, ends))
    return tokens


@lru_cache(maxsize=256)
def date_order(language: str, country: str | None) -> str:
    """DMY or MDY as the locale writes dates (CLDR, through dateparser's locale data): the language and the lead's
    phone country (es-MX, es-US: DMY; en-US: MDY; en-GB: DMY); the language alone when dateparser does not know the
    pair (es: DMY, en: MDY)."""
    from dateparser.languages.loader import default_loader

    for name in ([f"{language}-{country.upper()}"] if country else []) + [language]:
        try:
            locale = next(iter(default_loader.get_locale_map(locales=[name]).values()))
        except (ValueError, StopIteration):
            continue
        order = str(locale.info.get("date_order", ""))
        if order in ("DMY", "MDY"):
            return order
    return "MDY" if language == "en" else "DMY"


def _parse(fragment: str, language: Language, order: str, now_local: datetime) -> date | None:
    """The date `fragment` names, read with dateparser relative to the lead's now, within MAX_PAUSE_DAYS of today
    (either side: the start of a range may be past), or None."""
    import dateparser

    other: Language = "en" if language == "es" else "es"
    settings = {"RELATIVE_BASE": now_local.replace(tzinfo=None), "PREFER_DATES_FROM": "future"}
    today = now_local.date()
    window = timedelta(days=MAX_PAUSE_DAYS)
    # the locale's order first; a numeric date that does not read so ("12/15" in a day-first locale, which dateparser
    # takes for 12 December 2115) the other way
    orders = (order, "MDY" if order == "DMY" else "DMY") if _NUMERIC_DATE.search(fragment) else (order,)
    for each in orders:
        try:
            parsed = dateparser.parse(fragment, languages=[language, other],
                                      settings={**settings, "DATE_ORDER": each})  # type: ignore[arg-type]
        except (ValueError, OverflowError, TypeError):
            parsed = None
        if parsed is None:
            continue
        found = parsed.date()
        if found < today and _DAY_ONLY.fullmatch(fragment):  # "hasta el 15" on the 20th: the 15th of next month
            month, year = (today.month % 12) + 1, today.year + (today.month == 12)
            try:
                found = found.replace(year=year, month=month)
            except ValueError:
                continue
        if today - window <= found <= today + window:
            return found
    return None


def read_return_date(body: str | None, now_local: datetime, *, language: Language = "es",
                     country: str | None = None) -> ReturnDate | None:
    """The latest return date the message names (the end of a range, the later of "until" and "back on"), read in
    the lead's zone (``now_local`` is the lead's wall clock) and locale; None when it names none within
    [today, today + MAX_PAUSE_DAYS]."""
    tokens = _tokens(body or "")
    today = now_local.date()
    horizon = today + timedelta(days=MAX_PAUSE_DAYS)
    order = date_order(language, country)
    best: ReturnDate | None = None
    range_open = False
    for i, token in enumerate(tokens):
        returns = token.key in RETURN_WORDS or (range_open and token.key in RANGE_END_WORDS)
        starts = token.key in RANGE_START_WORDS
        if not (returns or starts) or token.ends_sentence:
            continue
        j = i + 1
        while j < len(tokens) and tokens[j].key in FILLER_WORDS and not tokens[j].ends_sentence:
            j += 1
        found = _read_after(tokens, j, i + 1, language, order, now_local)
        if found is None or not today - timedelta(days=MAX_PAUSE_DAYS) <= found[0] <= horizon:
            continue
        range_open = True
        if returns and found[0] >= today and (best is None or found[0] > best.until):
            best = ReturnDate(found[0], " ".join(t.raw for t in tokens[i:found[1]]))
    return best


def _read_after(tokens: list[_Token], start: int, first: int, language: Language, order: str,
                now_local: datetime) -> tuple[date, int] | None:
    """The date read from the longest run of at most FRAGMENT_WORDS words (not across a sentence's end) from
    `start` (after the filler words), else from `first` (right after the return word: "la próxima semana"), and
    where the run ends."""
    for begin in dict.fromkeys((start, first)):
        end = begin
        while end < len(tokens) and end - begin < FRAGMENT_WORDS:
            end += 1
            if tokens[end - 1].ends_sentence:
                break
        for stop in range(end, begin, -1):
            found = _parse(" ".join(t.raw for t in tokens[begin:stop]), language, order, now_local)
            if found is not None:
                return found, stop
    return None


def default_return(now_local: datetime) -> date:
    """No return date in the message: 7 days after the lead's local today (SPEC §19)."""
    return now_local.date() + timedelta(days=DEFAULT_PAUSE_DAYS)


RESUME_AT: Final = time(9, 0)  # SPEC §19: outreach resumes at 09:00 lead-local on the day after `until`


def phone_country(phone: str | None, default_region: str | None = None) -> str | None:
    """The region of the lead's phone number (US, MX, ES …), or None."""
    if not phone:
        return None
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(phone, default_region))
    except phonenumbers.NumberParseException:
        return None
    return region if region and region != "ZZ" else None


def out_of_office_payload(body: str | None, now: datetime, *, lead_timezone: str | None,
                          enriched_timezone: str | None, phone: str | None, default_timezone: str,
                          default_region: str | None = None) -> dict[str, Any]:
    """What reply_out_of_office carries (SPEC §19): ``until`` (YYYY-MM-DD, the return date read in the lead's zone
    and locale, else 7 days after the lead's today), ``resume_at`` (09:00 lead-local the day after), the zone, and
    how the date was found. ``now`` is the moment the reply arrived (UTC)."""
    zone = resolve_zone(lead_timezone, enriched_timezone, phone, default_timezone, default_region)
    local_now = now.astimezone(zone.zone)
    found = signals(body)
    country = phone_country(phone, default_region)
    read = read_return_date(body, local_now, language=found.language, country=country)
    until = read.until if read is not None else default_return(local_now)
    resume = datetime.combine(until + timedelta(days=1), RESUME_AT).replace(tzinfo=zone.zone)
    payload: dict[str, Any] = {
        "until": until.isoformat(), "resume_at": resume.astimezone(UTC).isoformat(), "lead_timezone": zone.name,
        "until_source": "text" if read is not None else "default", "language": found.language,
        "date_order": date_order(found.language, country)}
    if read is not None:
        payload["date_text"] = read.text[:200]
    return payload
