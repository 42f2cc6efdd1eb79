"""The enrichment engine (SPEC §15, was the `run_enrichment_5m` cron): each lead filed in lead_enrichment_inbox
(by the leads trigger: insert, or a change of name / phone / email / timezone) gets its lead_enriched row
upserted — phone in E.164, email normalised and syntax-checked (no network), first_name from full_name, time zone
in the §13 order without the default — and one `lead_enriched` event naming what changed and the `problems`.
Re-enriching unchanged data writes nothing.

The engine owns only the lead_enriched values it wrote: a value another system put there (an enrichment
provider) is kept, field by field (lead_enrichment_state.derived remembers what the engine last derived).

The pure part (``enrich``) is a function of one lead; the loop takes the inbox in batches, does the pure part in a
worker thread (so a 50,000-lead burst does not starve dispatch on the event loop), and writes each batch in the
transaction that took it. A lead whose rows another session holds is put back in the inbox for the next run while
the rest of its batch is written (SPEC §20, listener/engine/isolate.py)."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import sys
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool as BrokenExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
import phonenumbers
from email_validator import EmailNotValidError, validate_email
from phonenumbers import timezone as phone_timezone

from listener.engine.isolate import batch_then_one_by_one
from listener.engine.service import run_service
from listener.rules.contacts import _PHONE_PREFIXES
from listener.rules.vocabulary import LEAD_ENRICHED
from listener.settings import Settings
from listener.store.queries import Q

log = logging.getLogger(__name__)

JOB = "enrichment"
BATCH = 500
BURST_DRAINERS = 2
FIELDS = ("phone", "email", "first_name", "timezone")
INVALID_PHONE, INVALID_EMAIL, INVALID_TIMEZONE = "invalid_phone", "invalid_email", "invalid_timezone"
RETRY_AFTER_DB_ERROR_S = 0.5

# Honorifics and titles dropped before the first name (compared without dots, case-insensitively).
_TITLES = frozenset({
    "dr", "dra", "doctor", "doctora", "sr", "sra", "srta", "señor", "señora", "senor", "senora", "señorita", "don",
    "doña", "dona", "lic", "licda", "licdo", "ing", "arq", "abog", "mtro", "mtra", "prof", "profa", "profesor",
    "profesora", "mr", "mrs", "ms", "miss", "mx", "sir", "dame", "rev", "fr", "hon",
})
_EDGE_PUNCTUATION = ".,;:!?\"'()[]{}«»“”"


@dataclass(frozen=True, slots=True)
class Enrichment:
    """What the engine derives from one leads row."""

    phone: str | None
    email: str | None
    first_name: str | None
    timezone: str | None
    problems: tuple[str, ...] = ()
    details: Mapping[str, str] = field(default_factory=dict)

    def values(self) -> dict[str, str | None]:
        return {"phone": self.phone, "email": self.email, "first_name": self.first_name, "timezone": self.timezone}


def _capitalise(word: str) -> str:
    return "-".join(part[:1].upper() + part[1:].lower() for part in word.split("-"))


def first_name_from(full_name: str | None) -> str | None:
    """The given name: "Dra. Ana María Pérez" → "Ana", "PÉREZ, Ana" → "Ana", "madonna" → "Madonna", "" → None."""
    text = " ".join(unicodedata.normalize("NFC", full_name or "").split())
    if "," in text:  # "Surname, Given names"
        surname, _, given = text.partition(",")
        text = given.strip() or surname.strip()
    tokens = text.split(" ") if text else []
    while tokens and tokens[0].strip(_EDGE_PUNCTUATION).replace(".", "").casefold() in _TITLES:
        tokens.pop(0)
    for token in tokens:
        word = token.strip(_EDGE_PUNCTUATION)
        if not any(ch.isalpha() for ch in word):
            continue  # "123", "-", initials' dots
        # ALL CAPS or all lower case is how a form was typed, not how the name is written
        return _capitalise(word) if word.isupper() or word.islower() else word
    return None


@lru_cache(maxsize=1024)
def valid_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def _phone(raw: str | None, region: str) -> tuple[str | None, str | None, tuple[str, ...]]:
    """(E.164 or None, why it is invalid or None, the number's time zones). A blank phone is no phone, not a
    problem. Accepts exactly what listener.rules.contacts.normalise_phone accepts (the dispatcher's rule), parsing once:
    a number is valid when its type is known, which is what is_valid_number checks."""
    value = (raw or "").strip()
    if not value:
        return None, None, ()
    for prefix in _PHONE_PREFIXES:
        if value.lower().startswith(prefix):
            value = value[len(prefix):].strip()
    if value.startswith("00"):
        value = "+" + value[2:]
    try:
        parsed = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        return None, f"cannot read {raw!r} as a phone number: {exc}", ()
    kind = phonenumbers.number_type(parsed)
    if kind == phonenumbers.PhoneNumberType.UNKNOWN:
        return None, f"{raw!r} is not a valid phone number (read with default region {region})", ()
    if phonenumbers.is_number_type_geographical(kind, parsed.country_code or 0):
        zones = phone_timezone.time_zones_for_geographical_number(parsed)
    else:
        zones = phone_timezone.time_zones_for_number(parsed)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), None, tuple(zones)


def _email(raw: str | None) -> tuple[str | None, str | None]:
    value = (raw or "").strip()
    if not value:
        return None, None
    try:
        return validate_email(value, check_deliverability=False).normalized, None
    except EmailNotValidError as exc:
        return None, str(exc)


def _timezone(raw: str | None, phone_zones: tuple[str, ...]) -> tuple[str | None, str | None]:
    """SPEC §13 without the default: leads.timezone when it is a zone name, else the phone number's zone when it
    names exactly one. Returns (zone or None, why leads.timezone was ignored or None)."""
    problem = None
    given = (raw or "").strip()
    if given:
        if valid_zone(given):
            return given, None
        problem = f"{given!r} is not a time zone name (IANA, e.g. America/Mexico_City)"
    if len(phone_zones) == 1 and phone_zones[0] != phone_timezone.UNKNOWN_TIMEZONE and valid_zone(phone_zones[0]):
        return phone_zones[0], problem
    return None, problem


def enrich(full_name: str | None, phone: str | None, email: str | None, timezone: str | None,
           region: str) -> Enrichment:
    """Derive a lead's enriched values; never raises for bad input (a problem says what was wrong)."""
    e164, phone_problem, phone_zones = _phone(phone, region)
    normal_email, email_problem = _email(email)
    zone, zone_problem = _timezone(timezone, phone_zones)
    details = {name: why for name, why in ((INVALID_PHONE, phone_problem), (INVALID_EMAIL, email_problem),
                                           (INVALID_TIMEZONE, zone_problem)) if why}
    return Enrichment(e164, normal_email, first_name_from(full_name), zone, tuple(details), details)


def plan_row(row: Mapping[str, Any], region: str) -> dict[str, Any] | None:
    """What to write for one taken lead: the lead_enriched values (a value another system wrote is kept), and
    whether anything changed; None when nothing did (re-enriching unchanged data writes nothing)."""
    result = enrich(row["full_name"], row["phone"], row["email"], row["timezone"], region)
    derived = result.values()
    has_row = row["has_enriched"]
    last = row["last_derived"] if isinstance(row["last_derived"], dict) else {}
    current = {name: row[f"enriched_{name}"] for name in FIELDS}
    new: dict[str, str | None] = {}
    for name in FIELDS:
        theirs = current[name] is not None and current[name] != last.get(name)
        new[name] = current[name] if has_row and theirs else derived[name]
    changed = {name: new[name] for name in FIELDS if new[name] != current[name]}
    problems = list(result.problems)
    known = row["known_problems"]
    first_time = known is None  # the engine never looked at this lead
    write_row = not has_row or bool(changed)
    write_event = first_time or bool(changed) or known != problems
    write_state = write_event or last != derived
    if not (write_row or write_event or write_state):
        return None
    return {"lead_id": str(row["lead_id"]), **new, "seen": current, "derived": derived,
            "write_row": write_row, "write_event": write_event, "changed": changed, "problems": problems,
            "details": dict(result.details)}


@dataclass
class EnrichmentStats:
    taken: int = 0
    rows_written: int = 0
    events: int = 0
    problems: dict[str, int] = field(default_factory=dict)
    set_aside: int = 0  # locked by another session: back in the inbox for the next run (SPEC §20)

    def add(self, plans: Sequence[dict[str, Any]], taken: int, set_aside: int = 0) -> None:
        self.taken += taken
        self.set_aside += set_aside
        self.rows_written += sum(1 for p in plans if p["write_row"])
        self.events += sum(1 for p in plans if p["write_event"])
        for plan in plans:
            if plan["write_event"]:
                for problem in plan["problems"]:
                    self.problems[problem] = self.problems.get(problem, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {"leads": self.taken, "rows_written": self.rows_written, "events": self.events,
                "problems": dict(sorted(self.problems.items())), "set_aside": self.set_aside}


def _plan_batch(rows: Sequence[Mapping[str, Any]], region: str) -> list[dict[str, Any]]:
    plans = []
    for row in rows:
        try:
            plan = plan_row(row, region)
        except Exception:  # one odd row never stalls the rest (SPEC §11)
            log.exception("enrichment of lead %s failed; skipped", row["lead_id"])
            continue
        if plan is not None:
            plans.append(plan)
    return plans


async def enrich_batch(pool: asyncpg.Pool, settings: Settings, limit: int = BATCH,
                       stats: EnrichmentStats | None = None, executor: Executor | None = None) -> int:
    """Take up to `limit` leads from the inbox and enrich them, in one transaction. Returns how many were taken.
    The pure part runs in `executor` (the daemon passes a process during a burst), else in a worker thread."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(Q.enrichment_take, limit)
        if not rows:
            return 0
        if executor is not None:
            plans = await asyncio.get_running_loop().run_in_executor(
                executor, _plan_batch, [dict(r) for r in rows], settings.default_region)
        else:
            plans = await asyncio.to_thread(_plan_batch, rows, settings.default_region)
        busy: set[str] = set()
        if plans:
            # SPEC §20: a lead whose rows another session holds (its leads or lead_enriched row) goes back to the
            # inbox, at its end, for the next run; every other lead of the batch is written now
            failed = await batch_then_one_by_one(
                conn, plans, lambda batch: conn.execute(Q.enrichment_apply, list(batch), LEAD_ENRICHED))
            busy = {plan["lead_id"] for plan, _ in failed}
            if busy:
                await conn.execute(Q.enrichment_refile, list(busy))
                log.info("enrichment: %d lead(s) locked by another session, left for the next run", len(busy))
    if stats is not None:
        stats.add([p for p in plans if p["lead_id"] not in busy], len(rows) - len(busy), len(busy))
    return len(rows)


async def run_enrichment_service(pool: asyncpg.Pool, settings: Settings, wake: asyncio.Event,
                                 stop: asyncio.Event) -> None:
    """The daemon's enrichment service: drain the inbox whenever `leads` notifies (and every sweep interval, for a
    missed notification), in the daemon's one loop-and-backoff helper. A burst (a full batch taken) moves the CPU
    work to one worker process, so the event loop's dispatch does not compete with it for the interpreter; the
    process ends with the service."""
    executor: ProcessPoolExecutor | None = None

    async def step() -> float:
        nonlocal executor
        stats = EnrichmentStats()
        try:
            if await enrich_batch(pool, settings, BATCH, stats, executor) == BATCH:
                # a burst: a worker process, and BURST_DRAINERS batches in flight so the database's part of one
                # overlaps the computing of the next
                if executor is None:
                    executor = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))

                async def drainer(ex: Executor) -> None:
                    while not stop.is_set() and await enrich_batch(pool, settings, BATCH, stats, ex) == BATCH:
                        pass

                await asyncio.gather(*(drainer(executor) for _ in range(BURST_DRAINERS)))
        except BrokenExecutor:
            log.warning("enrichment: worker process died; continuing in a thread")
            executor = None
            return RETRY_AFTER_DB_ERROR_S
        if stats.events:
            log.info("enrichment: %d lead(s), %d event(s)", stats.taken, stats.events)
        return settings.sweep_interval_s

    try:
        await run_service("enrichment", step, stop=stop, wake=wake, idle_s=settings.sweep_interval_s)
    finally:
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


# --- `revenue-asi tick enrichment [--limit N]` ---------------------------------------------------------------

def _progress(total: int) -> tuple[Callable[[int], None], Callable[[], None]]:
    """A progress bar on a terminal (stderr), nothing otherwise."""
    if total == 0 or not sys.stderr.isatty():
        return (lambda _n: None), (lambda: None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    progress = Progress("enrichment", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=Console(stderr=True), transient=True)
    task = progress.add_task("enrichment", total=total)
    progress.start()
    return (lambda n: progress.advance(task, n)), progress.stop


async def enrichment_job(pool: asyncpg.Pool, settings: Settings, dry_run: bool, limit: int | None) -> dict[str, Any]:
    """Backfill: file every lead the engine never enriched (inserted before the engine existed), then drain the
    inbox (leads inserted or changed while no daemon ran) in batches. --dry-run only counts."""
    async with pool.acquire() as conn:
        if dry_run:
            pending = await conn.fetchval(Q.enrichment_pending_count)
            return {"pending": pending, "dry_run": True}
        filed = await conn.fetchval(Q.enrichment_file_never_enriched)
        pending = await conn.fetchval(Q.enrichment_inbox_count)
    total = pending if limit is None else min(pending, limit)
    advance, done = _progress(total)
    stats = EnrichmentStats()
    try:
        remaining = total
        while remaining > 0:
            taken = await enrich_batch(pool, settings, min(BATCH, remaining), stats)
            if taken == 0:
                break
            remaining -= taken
            advance(taken)
    finally:
        done()
    return {"filed_never_enriched": filed, **stats.as_dict(), "left_in_inbox": max(0, pending - stats.taken)}


# --- lead inspect ---------------------------------------------------------------------------------------------

async def enrichment_report(conn: asyncpg.Connection, lead_id: Any) -> dict[str, Any] | None:
    """The engine's view of a lead for `lead inspect`: problems found, when, and whether it waits in the inbox."""
    row = await conn.fetchrow(Q.enrichment_state_of_lead, lead_id)
    if row is None or (row["problems"] is None and not row["pending"]):
        return None
    return {"problems": row["problems"], "details": row["details"],
            "checked_at": row["checked_at"].isoformat() if row["checked_at"] else None,
            "pending": row["pending"]}

