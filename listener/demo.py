"""`revenue-asi demo`: the whole system on one machine, live (SPEC §10, the README's main job).

Embedded PostgreSQL (or DATABASE_URL), migrations, a fresh demo account whose providers are the SANDBOX fakes of
Twilio and ElasticEmail (loopback, in this process; some answers fail on purpose), one campaign of several leads
with a voice → whatsapp → sms → email plan and cooldowns of seconds, simulated replies for some leads — then the
real daemon (dispatch, reactions, sweep, touch orchestrator) runs in-process while a live view shows touches being
sent, failing, switching channel and stopping. The demo serves its own webhooks on a loopback public URL, so it signs
its own one-click unsubscribe links (a secret of its own, SPEC §19): the sandbox shows an e-mail's List-Unsubscribe
headers and the demo clicks one (POST List-Unsubscribe=One-Click) for the lead without a phone. Ends after ``--seconds`` or when every cadence has ended, with a
summary table. Without a terminal it prints a plain event log instead of the live table.

On the embedded server (DATABASE_URL unset) the demo stops, when it ends — normally, by Ctrl-C or SIGTERM, or on an
error — the server it started (SPEC §20); one that was running before it, or `--keep-db`, is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import socket
import sys
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncpg
from aiohttp import web
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from listener.engine.daemon import Daemon
from listener.engine.jobs import periodic_jobs
from listener.providers.sandbox import SandboxProviders
from listener.rules.sendrules import QuietHours, Rules, parse_quiet_hours, zone_named
from listener.settings import Settings, load_settings
from listener.store.database import DatabaseError, connect, migrate
from listener.store.embedded import (
    EmbeddedServerError,
    embedded_pgdata,
    embedded_server_status,
    start_embedded_server,
    stop_embedded_server,
)
from listener.web.app import create_app

ACCOUNT_PREFIX = "Revenue ASI demo"
CHANNELS = ("voice", "whatsapp", "sms", "email")
SYMBOL = {"sent": "✓", "failed": "✗", "canceled": "⊘", "queued": "…", "scheduled": "…", "processing": "→"}
STOP_TYPES = ("reply_positive", "reply_negative", "appointment_booked", "do_not_contact", "unsubscribe")
SHOWN_EVENTS = ("touch_sent", "touch_failed", "touch_canceled", "touch_deferred", "fallback_decision", "cadence_completed",
                "cadence_stopped", "orchestrator_skipped", "touch_delivered", "touch_undelivered",
                "reply_received") + STOP_TYPES
POLL_S = 0.4

STEP1_PLAN = {"order": ["voice", "whatsapp", "sms", "email"],
              "max_attempts": {"voice": 1, "whatsapp": 2, "sms": 1, "email": 1},
              "cooldown_minutes": {"voice": 0, "whatsapp": 0.04, "sms": 0, "email": 0}}  # 0.04 min = 2.4 s
STEP2_PLAN = {"order": ["email"], "max_attempts": {"email": 1}, "cooldown_minutes": {"email": 0}}
DEMO_CONTENT_SID = "HX" + "d" * 32  # a WhatsApp template: cold WhatsApp goes out only as one (SPEC §12)
# Replies sent by SMS through the web application's POST /webhooks/twilio/inbound (signed by the sandbox).
INBOUND_TEXT = {"unsubscribe": "STOP", "reply_positive": "Sí, me interesa, llámame", "reply_negative": "No, gracias"}


@dataclass(frozen=True)
class Persona:
    full_name: str
    scenario: str
    phone: str | None
    email: str | None
    provider_rule: str | None = None  # a SANDBOX answer for this lead's phone / email
    rule_on: str = "phone"
    reply: str | None = None  # an inbound event the demo simulates …
    reply_after_sent: int = 0  # … once this many of the lead's touches were sent
    night: bool = False  # lives where it is night now (chosen at run time): quiet hours defer the phone touches
    timezone: str = "Europe/Madrid"


def personas(n: int) -> list[Persona]:
    base = [
        Persona("Ana Perez", "replies positive after 2 touches", "+14155550101", "ana@demo.example",
                reply="reply_positive", reply_after_sent=2),
        Persona("Bruno Diaz", "unsubscribes after the first touch", "+14155550102", "bruno@demo.example",
                reply="unsubscribe", reply_after_sent=1),
        Persona("Carla Gomez", "invalid number at Twilio (21211): switches to email", "+14155550103",
                "carla@demo.example", provider_rule="error:400:21211"),
        Persona("Diego Ruiz", "no phone on file: phone channels skipped; unsubscribes with the e-mail's one-click link",
                None, "diego@demo.example", reply="one_click", reply_after_sent=1),
        Persona("Elena Soto", "books an appointment after 3 touches", "+14155550105", "elena@demo.example",
                reply="appointment_booked", reply_after_sent=3),
        Persona("Fer Lopez", "never answers: full cadence, both steps", "+14155550106", "fer@demo.example"),
        Persona("Gabi Torres", "asleep: it is night where she lives, quiet hours defer the call", "+14155550107",
                "gabi@demo.example", night=True),
        Persona("Hugo Vega", "email bounces at ElasticEmail (400)", "+14155550108", "hugo@demo.example",
                provider_rule="error:400", rule_on="email"),
    ]
    out = base[:n]
    for i in range(len(base), n):
        out.append(Persona(f"Lead {i + 1:02d}", "never answers: full cadence", f"+1415555{1000 + i:04d}",
                           f"lead{i + 1:02d}@demo.example"))
    return out


def step_payload(step: int) -> dict[str, Any]:
    if step == 1:
        body = "Hola {first_name}, soy Marta de Sonrisa Dental. ¿Te viene bien una revisión gratuita esta semana?"
        plan, primary, subject = STEP1_PLAN, "voice", "Tu revisión gratuita"
    else:
        body = "Hola {first_name}, te dejo el enlace para reservar cuando quieras: https://demo.invalid/reservar"
        plan, primary, subject = STEP2_PLAN, "email", "Reserva tu cita"
    return {"message_class": "cold_outreach",
            "routing": {"primary_channel": primary, "current_channel": primary, "fallback": plan,
                        "stop_on_events": ["reply_positive", "appointment_booked", "do_not_contact"]},
            "delivery": {"language": "es", "body": body, "variables": {},
                         "channel_overrides": {"email": {"subject": subject},
                                               "whatsapp": {"content_sid": DEMO_CONTENT_SID,
                                                            "content_variables": {"1": "Sonrisa Dental"}}}},
            "provider": {"forced_provider": None, "forced_sender_id": None},
            "meta": {"dry_run": False, "debug_tag": "demo", "created_by": "revenue-asi demo"}}


@dataclass
class DemoWorld:
    account_id: uuid.UUID
    account_name: str
    campaign_id: uuid.UUID
    leads: dict[uuid.UUID, Persona]
    replied: set[uuid.UUID] = field(default_factory=set)
    inbound: Callable[[str, str], Awaitable[str]] | None = None  # (phone, text) -> the webhook's outcome
    one_click: Callable[[str], Awaitable[str | None]] | None = None  # (email) -> what the click did (SPEC §19)


def _fixed_zones() -> list[str]:
    return [f"Etc/GMT{-h:+d}" if h else "Etc/GMT" for h in range(-12, 15)]  # Etc/GMT-3 is UTC+3


def _quiet_throughout(zone: str, quiet: QuietHours, now: datetime, span: timedelta) -> bool | None:
    """True if quiet hours hold in `zone` from now for `span`, False if they never do, None if mixed."""
    rules = Rules(quiet=quiet)
    states = {rules.blocked((now + span * k / 12).astimezone(zone_named(zone))) is not None for k in range(13)}
    return states.pop() if len(states) == 1 else None


def demo_zones(quiet_hours: str, now: datetime, span: timedelta = timedelta(hours=2)) -> tuple[str, str | None]:
    """Time zones chosen at run time so the demo works at any hour: a daytime zone (outside quiet hours for the
    whole demo, local time nearest noon) for most leads, and a night zone (inside them, nearest 03:00) for the
    one whose call quiet hours defer — None when quiet hours are off or cover no whole span."""
    quiet = parse_quiet_hours(quiet_hours)
    if quiet is None:
        return "Europe/Madrid", None

    def distance(zone: str, hour: int) -> float:
        local = now.astimezone(zone_named(zone))
        return abs(((local.hour + local.minute / 60) - hour + 12) % 24 - 12)

    day = [z for z in _fixed_zones() if _quiet_throughout(z, quiet, now, span) is False]
    night = [z for z in _fixed_zones() if _quiet_throughout(z, quiet, now, span) is True]
    return (min(day, key=lambda z: distance(z, 12)) if day else "UTC",
            min(night, key=lambda z: distance(z, 3)) if night else None)


def placed(people: list[Persona], quiet_hours: str, now: datetime) -> list[Persona]:
    day, night = demo_zones(quiet_hours, now)
    return [replace(p, timezone=night) if p.night and night else
            replace(p, timezone=day, night=False,
                    scenario="never answers (quiet hours are off: nobody is asleep)" if p.night else p.scenario)
            for p in people]


async def seed(conn: asyncpg.Connection, people: list[Persona]) -> DemoWorld:
    name = f"{ACCOUNT_PREFIX} {datetime.now(UTC):%Y-%m-%d %H:%M:%S} {uuid.uuid4().hex[:6]}"
    async with conn.transaction():
        account_id = await conn.fetchval("insert into accounts (name) values ($1) returning id", name)
        for channel, provider, config in (
                ("voice", "twilio", {"from": "+15005550006"}), ("sms", "twilio", {"from": "+15005550006"}),
                ("whatsapp", "twilio", {"from": "whatsapp:+14155238886"}),
                ("email", "elasticemail", {"from_email": "marta@sonrisa-dental.demo", "from_name": "Sonrisa Dental"})):
            await conn.execute("insert into account_provider_settings (account_id, channel, provider, is_default, config)"
                               " values ($1, $2, $3, true, $4)", account_id, channel, provider, config)
        campaign_id = await conn.fetchval(
            "insert into campaigns (account_id, name, status, message_class) values ($1, $2, 'active', 'cold_outreach')"
            " returning id", account_id, "Revisión gratuita (demo)")
        await conn.execute("insert into campaign_steps (campaign_id, step, delay_minutes, payload) values"
                           " ($1, 1, 0, $2), ($1, 2, 0.08, $3)", campaign_id, step_payload(1), step_payload(2))
        leads = {}
        for p in people:
            lead_id = await conn.fetchval(
                "insert into leads (account_id, full_name, phone, email, timezone) values ($1, $2, $3, $4,"
                " $5) returning id", account_id, p.full_name, p.phone, p.email, p.timezone)
            leads[lead_id] = p
    return DemoWorld(account_id, name, campaign_id, leads)


async def foreign_open_work(conn: asyncpg.Connection) -> int:
    """Open touches or active cadences of accounts that are not demo accounts: the demo's daemon would hand
    them to the SANDBOX providers, so the demo refuses to run on such a database."""
    return await conn.fetchval(
        """select (select count(*) from touch_runs t join accounts a on a.id = t.account_id
                   where t.status in ('queued', 'scheduled', 'processing') and a.name not like $1)
                + (select count(*) from campaign_leads cl join campaigns c on c.id = cl.campaign_id
                   join accounts a on a.id = c.account_id
                   where cl.status = 'active' and c.status = 'active' and a.name not like $1)""",
        ACCOUNT_PREFIX + "%")


# --- what the view shows ------------------------------------------------------------------------------------


@dataclass
class Snapshot:
    touches: dict[uuid.UUID, list[asyncpg.Record]]
    cadences: dict[uuid.UUID, asyncpg.Record]
    last_event: dict[uuid.UUID, asyncpg.Record]
    totals: dict[str, int]
    decisions: dict[str, int]

    def ended(self, world: DemoWorld) -> bool:
        """Every cadence ended — or, for a lead asleep, waits for her morning (its touches deferred, scheduled)."""
        def asleep(lead: uuid.UUID) -> bool:
            rows = self.touches.get(lead, [])
            return world.leads[lead].night and bool(rows) and all(t["status"] == "scheduled" for t in rows)

        return (len(self.cadences) == len(world.leads)
                and all(c["status"] in ("completed", "stopped") or asleep(lead) for lead, c in self.cadences.items())
                and not any(t["status"] in ("queued", "scheduled", "processing")
                            for lead, rows in self.touches.items() if not asleep(lead) for t in rows))


async def snapshot(conn: asyncpg.Connection, world: DemoWorld) -> Snapshot:
    touches: dict[uuid.UUID, list[asyncpg.Record]] = {lead: [] for lead in world.leads}
    for row in await conn.fetch("select lead_id, step, channel, status, error from touch_runs where account_id = $1"
                                " order by created_at, id", world.account_id):
        touches[row["lead_id"]].append(row)
    cadences = {r["lead_id"]: r for r in await conn.fetch(
        "select lead_id, status, current_step, stop_reason from campaign_leads where campaign_id = $1",
        world.campaign_id)}
    last_event = {r["lead_id"]: r for r in await conn.fetch(
        "select distinct on (lead_id) lead_id, event_type, channel, payload, created_at from core_memory_events"
        " where lead_id = any($1::uuid[]) and event_type = any($2::text[]) order by lead_id, created_at desc, id desc",
        list(world.leads), list(SHOWN_EVENTS))}
    totals: dict[str, int] = {}
    for rows in touches.values():
        for t in rows:
            totals[t["status"]] = totals.get(t["status"], 0) + 1
    decisions = {r["d"]: r["n"] for r in await conn.fetch(
        "select payload->>'decision' as d, count(*)::int as n from core_memory_events where lead_id = any($1::uuid[])"
        " and event_type = 'fallback_decision' group by 1", list(world.leads))}
    return Snapshot(touches, cadences, last_event, totals, decisions)


def describe_event(e: asyncpg.Record | dict[str, Any]) -> str:
    p = e["payload"] or {}
    kind = e["event_type"]
    if kind == "touch_sent":
        return f"sent on {e['channel']}"
    if kind == "touch_failed":
        return f"{e['channel']} failed: {p.get('error_code')} ({p.get('failure_class')})"
    if kind == "touch_canceled":
        return f"{e['channel']} touch canceled: {p.get('reason')}"
    if kind == "touch_deferred":
        at = datetime.fromisoformat(p["next_at"]).astimezone(zone_named(p["lead_timezone"]))
        return f"{e['channel']} touch deferred: {p.get('reason')} until {at:%H:%M} lead time ({p['lead_timezone']})"
    if kind == "fallback_decision":
        d = p.get("decision")
        if d == "switch_channel":
            skipped = f" (skipping {', '.join(p['skipped_channels'])})" if p.get("skipped_channels") else ""
            return f"decision: switch {p.get('current_channel')} → {p.get('next_channel')}{skipped}"
        if d == "retry_same_channel":
            return f"decision: retry {p.get('current_channel')}"
        if d == "wait_cooldown":
            return f"decision: wait cooldown on {p.get('current_channel')}"
        return f"decision: stop ({p.get('stop_reason')})"
    if kind == "cadence_completed":
        return f"cadence completed (step {p.get('step')})"
    if kind == "cadence_stopped":
        return f"cadence stopped: {p.get('reason')}"
    if kind == "orchestrator_skipped":
        return f"orchestrator skipped: {p.get('reason')}"
    if kind in ("touch_delivered", "touch_undelivered"):
        return f"<- webhook: {e['channel']} {p.get('provider_status')}" + (
            f" ({p.get('error_code')})" if p.get("error_code") else "")
    if kind == "reply_received":
        return f"<- webhook: reply {p.get('body')!r} ({p.get('classification')})"
    return f"inbound {kind} (simulated)"


def attempts_cell(rows: list[asyncpg.Record]) -> Text:
    text = Text()
    for channel in CHANNELS:
        marks = "".join(SYMBOL.get(t["status"], "?") for t in rows if t["channel"] == channel)
        if not marks:
            continue
        if text:
            text.append("  ")
        style = "red" if "✗" in marks else "green" if "✓" in marks else "yellow"
        text.append(f"{channel} ", style="bold")
        text.append(marks, style=style)
    return text


def live_table(world: DemoWorld, snap: Snapshot, elapsed: float, sandbox_url: str, requests: int) -> Group:
    header = Text.assemble(
        ("SANDBOX", "bold black on yellow"), f" providers (fake Twilio + ElasticEmail) at {sandbox_url} · ",
        (f"{elapsed:4.1f}s", "bold"), f" · sandbox requests {requests} · touches ",
        (f"sent {snap.totals.get('sent', 0)}", "green"), " · ", (f"failed {snap.totals.get('failed', 0)}", "red"),
        " · ", (f"canceled {snap.totals.get('canceled', 0)}", "yellow"), " · decisions ",
        ", ".join(f"{k} {v}" for k, v in sorted(snap.decisions.items())) or "-")
    table = Table(expand=True)
    for col in ("lead", "scenario", "step", "now on", "attempts (✓ sent ✗ failed ⊘ canceled … pending)",
                "last event", "cadence"):
        table.add_column(col, overflow="fold")
    for lead_id, person in world.leads.items():
        rows = snap.touches.get(lead_id, [])
        cadence = snap.cadences.get(lead_id)
        latest = rows[-1] if rows else None
        event = snap.last_event.get(lead_id)
        state = "-" if cadence is None else cadence["status"] + (f" ({cadence['stop_reason']})"
                                                                  if cadence["stop_reason"] else "")
        style = {"completed": "green", "stopped": "red", "active": "cyan"}.get(cadence["status"] if cadence else "", "")
        table.add_row(person.full_name, person.scenario, str(cadence["current_step"]) if cadence else "-",
                      f"{latest['channel']} {latest['status']}" if latest else "-", attempts_cell(rows),
                      describe_event(event) if event else "-", Text(state, style=style))
    return Group(header, table)


def summary_tables(snap: Snapshot, by_channel: dict[str, dict[str, int]]) -> Group:
    channels = Table(title="touches by channel")
    channels.add_column("channel")
    for status in ("sent", "failed", "canceled", "open"):
        channels.add_column(status, justify="right")
    for channel in CHANNELS:
        counts = by_channel.get(channel, {})
        channels.add_row(channel, *(str(counts.get(s, 0)) for s in ("sent", "failed", "canceled", "open")))
    totals = {s: sum(c.get(s, 0) for c in by_channel.values()) for s in ("sent", "failed", "canceled", "open")}
    channels.add_row("total", *(str(totals[s]) for s in ("sent", "failed", "canceled", "open")), style="bold")
    decisions = Table(title="fallback decisions")
    decisions.add_column("decision")
    decisions.add_column("n", justify="right")
    for d, n in sorted(snap.decisions.items()):
        decisions.add_row(d, str(n))
    cadences = Table(title="cadences")
    cadences.add_column("outcome")
    cadences.add_column("n", justify="right")
    done: dict[str, int] = {}
    for c in snap.cadences.values():
        key = c["status"] + (f" ({c['stop_reason']})" if c["status"] == "stopped" and c["stop_reason"] else "")
        done[key] = done.get(key, 0) + 1
    for key, n in sorted(done.items()):
        cadences.add_row(key, str(n))
    return Group(channels, decisions, cadences)


async def wind_down(conn: asyncpg.Connection, world: DemoWorld) -> int:
    """Time is up: pause the demo campaign (the orchestrator leaves it alone) and cancel the demo account's open
    touches with their touch_canceled events, so a later daemon never sends them. Returns how many were canceled."""
    async with conn.transaction():
        await conn.execute("update campaigns set status = 'paused' where id = $1 and exists (select 1 from"
                           " campaign_leads where campaign_id = $1 and status = 'active')", world.campaign_id)
        return len(await conn.fetch(
            """with canceled as (
                 update touch_runs set status = 'canceled', error = 'canceled: demo_ended', locked_by = null,
                        locked_until = null, updated_at = now()
                 where account_id = $1 and status in ('queued', 'scheduled', 'processing')
                 returning id, lead_id, channel, campaign_id, step)
               insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload)
               select lead_id, 'touch_canceled', 'demo', channel, 'internal',
                      jsonb_build_object('touch_run_id', id, 'campaign_id', campaign_id, 'step', step,
                                         'reason', 'demo_ended')
               from canceled returning id""", world.account_id))


async def channel_counts(conn: asyncpg.Connection, world: DemoWorld) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in await conn.fetch("select channel, case when status in ('queued', 'scheduled', 'processing') then 'open'"
                              " else status end as s, count(*)::int as n from touch_runs where account_id = $1"
                              " group by 1, 2", world.account_id):
        out.setdefault(r["channel"], {})[r["s"]] = r["n"]
    return out


# --- the run ------------------------------------------------------------------------------------------------


def demo_settings(fake: SandboxProviders, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"sweep_interval_s": 1.0, "orchestrator_interval_s": 1.0,
                              "reactivation_interval_s": 3600.0, "lease_s": 15.0, "provider_timeout_s": 5.0,
                              "shutdown_grace_s": 5.0, "dry_run": False, "qa_sink_phone": None,
                              "qa_sink_email": None, "worker_id": f"demo-{uuid.uuid4().hex[:6]}",
                              # SPEC §19: the demo serves its own public URL, so it signs its own one-click links
                              "unsubscribe_secret": secrets.token_urlsafe(32)}
    values.update(fake.settings_overrides())
    values.update(overrides)
    return load_settings(**values)


async def click_one_click_link(fake: SandboxProviders, email: str, console: Console) -> str | None:
    """What a mail provider does when its user presses "Unsubscribe" (RFC 8058): read the List-Unsubscribe header of
    the e-mail the sandbox received for `email` and POST List-Unsubscribe=One-Click to it. Shows the headers as the
    sandbox recorded them. None while no such e-mail was recorded yet."""
    recorded = next((r for r in fake.requests if r.kind == "email" and r.to == email and r.email_headers), None)
    if recorded is None or recorded.email_headers is None:
        return None
    headers = recorded.email_headers
    console.print(f"e-mail to {email} as the SANDBOX ElasticEmail recorded it: Content.Headers = "
                  + json.dumps(headers, ensure_ascii=False), highlight=False, markup=False)
    link = headers.get("List-Unsubscribe", "").strip().removeprefix("<").removesuffix(">")
    async with aiohttp.ClientSession() as session, session.post(
            link, data={"List-Unsubscribe": "One-Click"}) as response:
        status = response.status
    shown = link[: link.index("/u/") + 11] + "…" if "/u/" in link else link
    return f"one-click unsubscribe: POST {shown} (List-Unsubscribe=One-Click) -> {status}"


async def simulate_replies(conn: asyncpg.Connection, world: DemoWorld, snap: Snapshot) -> list[tuple[uuid.UUID, str]]:
    """Insert the inbound events the personas send, once their touch count is reached (as another system would)."""
    done = []
    for lead_id, person in world.leads.items():
        if person.reply is None or lead_id in world.replied:
            continue
        sent = sum(1 for t in snap.touches.get(lead_id, []) if t["status"] == "sent")
        if person.reply == "one_click":
            if sent >= person.reply_after_sent and world.one_click and person.email:
                clicked = await world.one_click(person.email)
                if clicked is not None:  # None: the e-mail's request is not recorded yet; next round
                    world.replied.add(lead_id)
                    done.append((lead_id, clicked))
            continue
        if sent >= person.reply_after_sent and world.inbound and person.phone and person.reply in INBOUND_TEXT:
            text = INBOUND_TEXT[person.reply]
            outcome = await world.inbound(person.phone, text)
            world.replied.add(lead_id)
            done.append((lead_id, f"{person.reply}: SMS {text!r} via POST /webhooks/twilio/inbound -> {outcome}"))
        elif sent >= person.reply_after_sent:
            await conn.execute(
                "insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload,"
                " score_delta) values ($1, $2, 'demo_simulated_reply', $3, 'inbound', $4, $5)",
                lead_id, person.reply, "whatsapp" if person.reply != "unsubscribe" else "email",
                {"text": "(simulated by revenue-asi demo)"}, 10 if person.reply in ("reply_positive",
                                                                                      "appointment_booked") else -5)
            world.replied.add(lead_id)
            done.append((lead_id, person.reply))
    return done


async def start_dashboard(settings: Settings, url: str) -> tuple[Any, str]:
    """The web application beside the demo's daemon (SPEC §14): on REVENUE_ASI_HTTP_HOST:PORT when that is free
    (loopback unless a dashboard token is set), else on a free port."""
    from listener.web.app import UnsafeBindError, is_loopback, start

    host = settings.http_host if is_loopback(settings.http_host) or settings.dashboard_token else "127.0.0.1"
    try:
        return await start(settings, url, host, settings.http_port)
    except (OSError, UnsafeBindError):
        return await start(settings, url, "127.0.0.1", 0)


async def run_demo(url: str, *, seconds: float = 40.0, n_leads: int = 8, console: Console | None = None,
                   live: bool | None = None, settings_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    console = console or Console(soft_wrap=not sys.stdout.isatty())
    live = console.is_terminal if live is None else live
    conn = await connect(url)
    try:
        await migrate(conn)
        foreign = await foreign_open_work(conn)
        if foreign:
            raise DatabaseError(
                f"this database has {foreign} open touch(es) or active cadence(s) of non-demo accounts; the demo's "
                "daemon would hand them to the SANDBOX providers. Run the demo on the embedded database "
                "(unset DATABASE_URL) or on an empty one.")
        people = placed(personas(n_leads), load_settings(**(settings_overrides or {})).quiet_hours, datetime.now(UTC))
        world = await seed(conn, people)
    finally:
        await conn.close()

    async with SandboxProviders() as fake:
        for person in world.leads.values():
            if person.provider_rule:
                target = person.phone if person.rule_on == "phone" else person.email
                if target:
                    fake.rule(to=target, mode=person.provider_rule)
        web_port = _free_port()
        public_url = f"http://127.0.0.1:{web_port}"
        settings = demo_settings(fake, public_url=public_url, **(settings_overrides or {}))
        web_runner = await _start_web(settings, url, web_port)

        async def inbound(phone: str, text: str) -> str:
            status, answer = await fake.simulate_inbound(public_url + "/webhooks/twilio/inbound", from_=phone,
                                                         to="+15005550006", body=text)
            return str(answer.get("outcome", status))

        world.inbound = inbound
        world.one_click = lambda email: click_one_click_link(fake, email, console)
        console.print(f"web application (webhooks) on {public_url}: the sandbox posts signed status callbacks and "
                      "replies to it", highlight=False)
        console.print(Text.assemble(("SANDBOX", "bold black on yellow"),
                                    f" providers: fake Twilio + ElasticEmail on {fake.base_url} (loopback, this "
                                    "process) — nothing reaches a real provider; some answers fail on purpose"))
        console.print(f"demo account: {world.account_name} ({world.account_id}) · campaign "
                      f"{world.campaign_id} · {len(world.leads)} leads · plan voice → whatsapp → sms → email, "
                      "then an email step 5 s later", highlight=False)
        daemon = Daemon(settings, url, periodic_jobs=periodic_jobs(settings))
        task = asyncio.create_task(daemon.run())
        ready = asyncio.create_task(daemon.ready.wait())
        await asyncio.wait({task, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        console.print(f"daemon {daemon.worker_id} running (dispatch, reactions, sweep, touch orchestrator every "
                      f"{settings.orchestrator_interval_s:g}s); enrolling leads…", highlight=False)
        try:
            dashboard_runner, dashboard_url = await start_dashboard(settings, url)
        except BaseException:
            await web_runner.cleanup()
            daemon.request_stop()
            await asyncio.wait_for(task, timeout=30)
            raise
        sign_in = " (sign in with REVENUE_ASI_DASHBOARD_TOKEN)" if settings.dashboard_token else ""
        console.print(f"dashboard: {dashboard_url}{sign_in} — live while the demo runs; `revenue-asi web` serves "
                      "it for good", highlight=False)
        started = time.monotonic()
        conn = await connect(url)
        finished = False
        try:
            snap = await _drive(conn, world, daemon, fake, console, live, started, seconds)
            finished = snap.ended(world)  # before wind_down cancels a sleeping lead's deferred touch
        finally:
            daemon.request_stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, timeout=30)
            if not ready.done():
                ready.cancel()
            await dashboard_runner.cleanup()
            await web_runner.cleanup()
            try:
                left = await wind_down(conn, world)
                snap = await snapshot(conn, world)
                by_channel = await channel_counts(conn, world)
            finally:
                await conn.close()
        elapsed = time.monotonic() - started
        requests = len(fake.requests)

    ended = finished
    headline = "finished: every cadence ended (or waits for the lead's morning)" if ended else "stopped: time is up"
    console.print(f"\n[bold]demo {headline}[/] after "
                  f"{elapsed:.1f}s · {requests} SANDBOX provider request(s)", highlight=False)
    if left:
        console.print(f"the demo campaign is paused and its {left} open touch(es) canceled (reason demo_ended), so "
                      "no later daemon sends them", highlight=False)
    console.print(summary_tables(snap, by_channel))
    completed = sum(1 for c in snap.cadences.values() if c["status"] == "completed")
    stopped = sum(1 for c in snap.cadences.values() if c["status"] == "stopped")
    summary = {
        "account_id": str(world.account_id), "account_name": world.account_name, "campaign_id": str(world.campaign_id),
        "leads": len(world.leads), "elapsed_s": round(elapsed, 1), "all_ended": ended,
        "sandbox_requests": requests, "touches_by_channel": by_channel, "decisions": dict(sorted(snap.decisions.items())),
        "cadences_completed": completed, "cadences_stopped": stopped,
        "cadences_active": len(world.leads) - completed - stopped, "dashboard_url": dashboard_url,
    }
    console.print(f"cadences completed {completed} · stopped {stopped} · still active "
                  f"{summary['cadences_active']}", highlight=False)
    console.print(f"inspect a lead: revenue-asi lead inspect {next(iter(world.leads))} · "
                  "queue and jobs: revenue-asi status", highlight=False)
    return summary


async def _drive(conn: asyncpg.Connection, world: DemoWorld, daemon: Daemon, fake: SandboxProviders,
                 console: Console, live: bool, started: float, seconds: float) -> Snapshot:
    to_enroll = list(world.leads)
    next_enroll = started
    seen: set[uuid.UUID] = set()
    names = {lead: p.full_name for lead, p in world.leads.items()}
    width = max(len(n) for n in names.values())
    recent: deque[str] = deque(maxlen=10)
    view: Live | None = None

    def log(lead_id: uuid.UUID, text: str) -> None:
        line = f"{time.monotonic() - started:6.1f}s  {names[lead_id]:<{width}}  {text}"
        if view is None:
            console.print(line, highlight=False, markup=False)
        else:
            recent.append(line)

    def render(snap: Snapshot) -> Group:
        table = live_table(world, snap, time.monotonic() - started, fake.base_url, len(fake.requests))
        return Group(table, Panel("\n".join(recent) or "…", title="latest events", title_align="left"))

    snap = await snapshot(conn, world)
    try:
        if live:
            view = Live(render(snap), console=console, refresh_per_second=8, transient=False)
            view.__enter__()
        while True:
            now = time.monotonic()
            if to_enroll and now >= next_enroll:
                lead_id = to_enroll.pop(0)
                await conn.execute("insert into campaign_leads (campaign_id, lead_id) values ($1, $2)",
                                   world.campaign_id, lead_id)
                next_enroll = now + 0.6
                log(lead_id, "enrolled in the campaign (the touch orchestrator creates step 1)")
            snap = await snapshot(conn, world)
            for lead_id, reply in await simulate_replies(conn, world, snap):
                log(lead_id, f"<- simulated inbound {reply}")
            for e in await conn.fetch(
                    "select id, lead_id, event_type, channel, payload from core_memory_events"
                    " where lead_id = any($1::uuid[]) and event_type = any($2::text[])"
                    " and not (id = any($3::uuid[])) order by created_at, id",
                    list(world.leads), [t for t in SHOWN_EVENTS if t not in STOP_TYPES], list(seen)):
                seen.add(e["id"])
                log(e["lead_id"], describe_event(e))
            if view is not None:
                view.update(render(snap))
            if (not to_enroll and snap.ended(world)) or now - started >= seconds:
                return snap
            await asyncio.sleep(POLL_S)  # a display refresh, not synchronisation
    finally:
        if view is not None:
            view.__exit__(None, None, None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _start_web(settings: Settings, url: str, port: int) -> web.AppRunner:
    """The web application (webhooks) on loopback, so inbound events flow through real HTTP (SPEC §12)."""
    runner = web.AppRunner(create_app(settings, url), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


# --- the demo's database server (SPEC §20) -------------------------------------------------------------------

T = TypeVar("T")
DB_STOP_HINT = "stop it: revenue-asi db stop"


@dataclass
class DemoServer:
    """The database the demo runs on, and what became of its embedded server when the demo ended."""

    url: str
    pgdata: Path | None  # None: DATABASE_URL, a server the demo does not manage
    was_running: bool = False
    outcome: str = "external"  # else: stopped, kept (--keep-db), already_running, not_running, stop_failed


def _release(server: DemoServer, keep_db: bool, console: Console, *, failing: bool) -> None:
    """The end of the demo: stop the embedded server it started, unless it was running before or keep_db. A failed
    stop is raised only when nothing else already failed (the first error is the one to see)."""
    assert server.pgdata is not None
    if server.was_running:
        server.outcome = "already_running"
        console.print(f"embedded PostgreSQL left running: it was running before the demo ({server.pgdata}); "
                      f"{DB_STOP_HINT}", highlight=False)
        return
    if keep_db:
        server.outcome = "kept"
        console.print(f"embedded PostgreSQL left running (--keep-db): psql \"$(revenue-asi db-url)\" · {DB_STOP_HINT}",
                      highlight=False, markup=False)
        return
    try:
        before = stop_embedded_server(server.pgdata)
    except EmbeddedServerError as exc:
        server.outcome = "stop_failed"
        if not failing:
            raise
        console.print(f"{exc} · {DB_STOP_HINT}", highlight=False, markup=False)
        return
    server.outcome = "stopped" if before.running else "not_running"
    if before.running:
        console.print(f"embedded PostgreSQL stopped (the demo started it; its data stays in {server.pgdata}, the next "
                      "command starts it again; --keep-db leaves it running)", highlight=False)
    else:  # it never started, or something else stopped it meanwhile (`revenue-asi db stop`)
        console.print(f"embedded PostgreSQL not running ({server.pgdata})", highlight=False)


@contextlib.contextmanager
def demo_database(settings: Settings, *, keep_db: bool, console: Console) -> Iterator[DemoServer]:
    """The demo's database: DATABASE_URL as it is, or the embedded server of REVENUE_ASI_HOME, started if needed and
    stopped again when the demo ends however it ends (normally, Ctrl-C, SIGTERM, an error) — unless it was already
    running before the demo, or keep_db."""
    if settings.database_url:
        yield DemoServer(settings.database_url, None)
        return
    pgdata = embedded_pgdata(settings)
    server = DemoServer("", pgdata, was_running=embedded_server_status(pgdata).running)
    try:
        server.url = start_embedded_server(pgdata)
        yield server
    except BaseException:
        _release(server, keep_db, console, failing=True)
        raise
    _release(server, keep_db, console, failing=False)


class DemoInterrupted(Exception):
    """SIGTERM ended the demo early (its daemon stopped and its work wound down first, as with Ctrl-C)."""


async def interruptible(work: Awaitable[T]) -> T:
    """`work`, cancelled by SIGTERM as asyncio.run cancels it on Ctrl-C, so every `finally` runs: the daemon stops,
    the demo winds down, and then the caller stops the embedded server. Raises DemoInterrupted after a SIGTERM."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    terminated = False

    def terminate() -> None:
        nonlocal terminated
        terminated = True
        task.cancel()

    previous = signal.getsignal(signal.SIGTERM)
    loop.add_signal_handler(signal.SIGTERM, terminate)
    try:
        return await work
    except asyncio.CancelledError:
        if terminated:
            raise DemoInterrupted("SIGTERM") from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        if previous is not None:  # the caller's handler again (the loop's removal set the default)
            signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Outside the event loop (the embedded server starting, the demo ending) SIGTERM raises DemoInterrupted, as
    Ctrl-C raises KeyboardInterrupt, instead of ending the process on the spot: `demo_database` still stops the
    server."""
    def interrupt(signum: int, frame: Any) -> None:
        raise DemoInterrupted("SIGTERM")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
