"""The `revenue-asi` command (SPEC §10). Typer (on click) for the commands, rich for tables and progress."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from listener.intents.status import system_status
from listener.rules.vocabulary import CHANNELS
from listener.settings import Settings, SettingsError, get_settings
from listener.store.database import DatabaseError, connect, database_url, migrate
from listener.store.embedded import (
    EmbeddedServer,
    EmbeddedServerError,
    embedded_pgdata,
    embedded_server_status,
    stop_embedded_server,
)
from listener.store.queries import Q

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Revenue ASI outbox daemon: touch_runs → LISTEN/NOTIFY → providers → core_memory_events.")
console = Console(soft_wrap=not sys.stdout.isatty())  # no mid-word wrapping when piped
err_console = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")


def fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def print_json(value: Any) -> None:
    """What every --json option prints: one indented document on stdout, keys sorted."""
    typer.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def settings_or_exit() -> Settings:
    try:
        return get_settings()
    except SettingsError as exc:
        fail(str(exc))
        raise  # unreachable, for type checkers


def run_async(make: Callable[[], Awaitable[T]], event_loop: str = "asyncio") -> T:
    """Run a command's coroutine; the long-running ones (`run`, `web`) pass REVENUE_ASI_EVENT_LOOP (uvloop)."""
    try:
        if event_loop == "uvloop":
            import uvloop

            return uvloop.run(make())  # type: ignore[arg-type]
        return asyncio.run(make())  # type: ignore[arg-type]
    except (DatabaseError, SettingsError) as exc:
        fail(str(exc))
        raise


def url_or_exit(settings: Settings) -> str:
    try:
        return database_url(settings)
    except DatabaseError as exc:
        fail(str(exc))
        raise


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command("db-url")
def db_url_command() -> None:
    """Print the database URL in use (embedded server when DATABASE_URL is unset): psql "$(revenue-asi db-url)"."""
    settings = settings_or_exit()
    typer.echo(url_or_exit(settings))


@app.command("migrate")
def migrate_command() -> None:
    """Create or update the schema, triggers and views (safe to run twice, and concurrently)."""
    settings = settings_or_exit()
    url = url_or_exit(settings)

    async def go() -> Any:
        conn = await connect(url)
        try:
            started = time.perf_counter()
            report = await migrate(conn)
            return report, time.perf_counter() - started
        finally:
            await conn.close()

    report, elapsed = run_async(go)
    if report.applied:
        console.print(f"applied {len(report.applied)} migration(s): {', '.join(report.applied)}")
    if report.repeatable_applied:
        console.print("applied triggers and views")
    if not report.applied and not report.repeatable_applied:
        console.print("schema already up to date")
    console.print(f"schema version {report.version} ({elapsed * 1000:.0f} ms)")


@app.command("status")
def status_command(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """The seed's system.status: queue, touch counts, recent events and failures, last job runs."""
    settings = settings_or_exit()
    url = url_or_exit(settings)

    async def go() -> dict[str, Any]:
        conn = await connect(url)
        try:
            return await system_status(conn)
        finally:
            await conn.close()

    status = run_async(go)
    if as_json:
        print_json(status)
        return
    render_status(status)


def render_status(status: dict[str, Any]) -> None:
    db = status["database"]
    console.print(f"[bold]database[/] reachable · PostgreSQL {db['server_version']} · schema {db['schema_version']}")
    q = status["queue"]
    age = q["oldest_due_age_s"]
    console.print(f"[bold]queue[/] due {q['due']} · scheduled later {q['scheduled_later']} · processing "
                  f"{q['processing']} · oldest due {'-' if age is None else f'{age:.1f}s'} · "
                  f"pending reactions {q['pending_reactions']}")
    table = Table(title=f"touch_runs ({status['touch_runs_total']})")
    channels = list(CHANNELS)
    table.add_column("status")
    for channel in channels:
        table.add_column(channel, justify="right")
    for state, by_channel in sorted(status["touch_runs"].items()):
        table.add_row(state, *(str(by_channel.get(c, 0)) for c in channels))
    console.print(table)
    events = ", ".join(f"{k} {v}" for k, v in status["events_last_hour"].items()) or "none"
    console.print(f"[bold]events, last hour[/] ({status['events_last_hour_total']}): {events}")
    failures = ", ".join(f"{k} {v}" for k, v in status["failures_last_hour"].items()) or "none"
    console.print(f"[bold]failures, last hour[/]: {failures}")
    aside = status.get("reactions_set_aside") or {}
    if aside.get("count") or aside.get("retrying"):
        console.print(f"[bold]reactions set aside[/] {aside.get('count', 0)} (could not be processed; retrying "
                      f"{aside.get('retrying', 0)})", highlight=False)
        for item in aside.get("latest", []):
            console.print(f"  {item.get('event_type')} event {item.get('event_id')} lead {item.get('lead_id')}: "
                          f"{item.get('error')}", highlight=False, markup=False)
    deferred = ", ".join(f"{reason} {d['touches']} (next {_when(d['next_at'])}, last {_when(d['last_at'])})"
                         for reason, d in status.get("deferred", {}).items()) or "none"
    console.print(f"[bold]deferred by sending rules[/]: {deferred}", highlight=False)
    away = status.get("out_of_office") or {}
    console.print(f"[bold]leads paused out of office[/]: {away.get('leads_paused', 0)}"
                  + (f" (first resumes {_when(away['next_resume_at'])})" if away.get("next_resume_at") else ""),
                  highlight=False)
    cad = status["cadences"]
    by_status = ", ".join(f"{k} {v}" for k, v in sorted(cad["campaign_leads"].items())) or "none"
    console.print(f"[bold]cadences[/] campaign leads: {by_status} · cooldown timers {cad['cooldown_timers']}"
                  f" (next {_when(cad['next_cooldown_at'])}) · next scheduled touch {_when(cad['next_scheduled_at'])}",
                  highlight=False)
    _render_paced_senders(status.get("paced_senders") or [])
    table = Table(title="jobs: last run")
    for col in ("job", "started", "took", "dry run", "result"):
        table.add_column(col)
    for job, run in status["jobs"].items():
        if run is None:
            table.add_row(job, "never", "", "", "")
            continue
        took = ""
        if run.get("finished_at") and run.get("started_at"):
            from datetime import datetime

            took = f"{(datetime.fromisoformat(run['finished_at']) - datetime.fromisoformat(run['started_at'])).total_seconds() * 1000:.0f} ms"
        table.add_row(job, _when(run["started_at"]), took, "yes" if run["dry_run"] else "",
                      f"error: {run['error']}" if run["error"] else _job_summary(run["stats"]))
    console.print(table)


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:g}/s"


def _render_paced_senders(senders: list[dict[str, Any]]) -> None:
    """SPEC §16: each paced sender's configured and effective rate, in-flight limit and requests, touches waiting."""
    if not senders:
        console.print("[bold]paced senders[/]: none (no max_per_second or max_in_flight set, no 429 pushback)")
        return
    table = Table(title=f"paced senders ({len(senders)})")
    for col in ("account", "channel", "provider", "settings", "configured rate", "effective rate", "max in flight",
                "in flight", "waiting for pace", "next free"):
        table.add_column(col, justify="right" if col in ("in flight", "waiting for pace", "max in flight") else "left")
    for s in senders:
        effective = _rate(s["effective_rate"])
        if s.get("pushback_in_force"):
            effective += f" (429 pushback until {_when(s['pushback_until'])})"
        elif s.get("pushback_until"):
            effective += f" (climbing back until {_when(s['climbs_back_until'])})"
        table.add_row(escape(s["account_name"]), s["channel"], s["provider"], _short(s["settings_id"]),
                      _rate(s["max_per_second"]), effective,
                      "—" if s["max_in_flight"] is None else str(s["max_in_flight"]), str(s["in_flight"]),
                      str(s["waiting"]), _when(s["next_at"]) if s.get("next_in_s") else "now")
    console.print(table)


def _job_summary(stats: dict[str, Any]) -> str:
    if not isinstance(stats, dict):
        return str(stats)
    if isinstance(stats.get("skipped"), str):
        return f"skipped: {stats['skipped']}"
    keys = ("candidates", "created", "queued", "scheduled", "skipped", "already_existed", "leases_expired",
            "due_touches")
    parts = [f"{k} {stats[k]}" for k in keys if k in stats]
    if isinstance(stats.get("dispatched"), dict):
        parts.append("dispatched " + ", ".join(f"{k} {v}" for k, v in stats["dispatched"].items()))
    return ", ".join(parts) or json.dumps(stats, default=str)[:100]


@app.command("run")
def run_command() -> None:
    """Run the daemon: dispatch touches the moment they are due, react to events, sweep, orchestrate."""
    settings = settings_or_exit()
    configure_logging(settings)
    url = url_or_exit(settings)
    from listener.engine.runner import run_daemon

    run_async(lambda: run_daemon(settings, url), settings.event_loop)


@app.command("web")
def web_command() -> None:
    """Serve the HTTP application: provider webhooks, the dashboard, the JSON API and Command OS, health."""
    settings = settings_or_exit()
    configure_logging(settings)
    from listener.web.app import UnsafeBindError, check_bind

    try:
        check_bind(settings, settings.http_host)
    except UnsafeBindError as exc:
        fail(str(exc))
    url = url_or_exit(settings)
    from listener.web.app import run_web

    run_async(lambda: run_web(settings, url), settings.event_loop)


@app.command("tick")
def tick_command(
    job: str = typer.Argument(..., help="sweep | touch-orchestrator | reactivation | reconcile | enrichment"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Write nothing; print what would be done."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="At most N items."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """One run of a job, on demand (the seed's curl … -d '{"limit":20,"dry_run":true}' checks)."""
    settings = settings_or_exit()
    configure_logging(settings)
    url = url_or_exit(settings)
    from listener.engine.jobs import JOBS, run_job

    if job not in JOBS:
        fail(f"unknown job {job!r}; choose one of: {', '.join(JOBS)}")
    result = run_async(lambda: run_job(settings, url, job, dry_run=dry_run, limit=limit))
    if as_json:
        print_json(result)
    else:
        render_tick(job, dry_run, result)


def render_tick(job: str, dry_run: bool, result: dict[str, Any]) -> None:
    label = f"[bold]{job}[/]" + (" (dry run: nothing written)" if dry_run else "")
    if isinstance(result.get("skipped"), str):
        console.print(f"{label}: skipped — {result['skipped']}", highlight=False)
        return
    if "touches" not in result:
        console.print(f"{label}: {json.dumps(result, default=str)}", highlight=False)
        return
    verb = "would create" if dry_run else "created"
    line = (f"{label}: {result['candidates']} candidate(s) · {verb} {result['created']} "
            f"(queued {result['queued']}, scheduled {result['scheduled']})")
    if "skipped" in result:
        line += f" · skipped {result['skipped']}"
    if result.get("already_existed"):
        line += f" · already existed {result['already_existed']}"
    console.print(line, highlight=False)
    for t in result["touches"]:
        where = f"campaign {t['campaign_id']} step {t['step']}" if t["campaign_id"] else f"reactivation step {t['step']}"
        console.print(f"  {verb} {t['channel']:<8} {t['status']:<9} due {_when(t['scheduled_at'])} lead {t['lead_id']}"
                      f" {where}", highlight=False)
    for sk in result.get("skips", []):
        console.print(f"  skipped  lead {sk['lead_id']} campaign {sk['campaign_id']} step {sk['step']}: {sk['reason']}",
                      highlight=False)
    if result["created"] > len(result["touches"]):
        console.print(f"  … and {result['created'] - len(result['touches'])} more", highlight=False)
    for error in result.get("errors", []):  # rows skipped for bad data: the run itself succeeded (exit 0)
        err_console.print(f"[bold yellow]row skipped:[/] {escape(error)}", highlight=False)


def _uuid_or_exit(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        fail(f"{what} must be a uuid, got {value!r}")
        raise


async def _with_pool(url: str, work: Callable[[Any], Awaitable[T]], *, max_size: int = 4) -> T:
    from listener.store.database import create_pool

    conn = await connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    pool = await create_pool(url, min_size=1, max_size=max_size)
    try:
        return await work(pool)
    finally:
        await pool.close()


@app.command("replay")
def replay_command(
    since: str = typer.Option(..., "--since", help="From this time: ISO timestamp, or a duration ago (30m, 2h, 3d)."),
    until: str | None = typer.Option(None, "--until", help="Up to this time (default: now)."),
    lead: str | None = typer.Option(None, "--lead", help="Only this lead's events."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Change nothing; report exactly what would be done."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Re-run the daemon's reactions (decisions after touch_sent/touch_failed, cancellations after stop events)
    for the events in a time range, as of now, creating only what is missing. Safe to run twice."""
    from listener.engine.replay import TimeFormatError, parse_time, replay

    settings = settings_or_exit()
    url = url_or_exit(settings)
    try:
        since_at = parse_time(since)
        until_at = parse_time(until) if until is not None else None
    except TimeFormatError as exc:
        fail(str(exc))
        raise
    if until_at is not None and until_at <= since_at:
        fail("--until must be after --since")
    lead_id = _uuid_or_exit(lead, "--lead") if lead is not None else None
    progress = ProgressReporter("replaying events")

    async def work(pool: Any) -> Any:
        with progress:
            return await replay(pool, since_at, until_at, lead_id, dry_run=dry_run, on_total=progress.total,
                                on_progress=progress.advance, settings=settings)

    summary = run_async(lambda: _with_pool(url, work)).as_dict()
    if as_json:
        print_json(summary)
        return
    render_replay(summary)


class ProgressReporter:
    """A rich progress bar on a terminal (stderr); a few plain lines otherwise."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.done = 0
        self.count = 0
        self.next_report = 0
        self.progress: Any = None
        self.task: Any = None

    def __enter__(self) -> ProgressReporter:
        if err_console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), console=err_console, transient=True)
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def total(self, n: int) -> None:
        self.count = n
        if self.progress is not None:
            self.task = self.progress.add_task(self.label, total=n)
        else:
            err_console.print(f"{self.label}: {n} to read", highlight=False)
            self.next_report = max(1, n // 10)

    def advance(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress.update(self.task, advance=n)
        elif self.done >= self.next_report or self.done == self.count:
            err_console.print(f"{self.label}: {self.done}/{self.count}", highlight=False)
            self.next_report = self.done + max(1, self.count // 10)


def render_replay(summary: dict[str, Any]) -> None:
    title = "replay (dry run: nothing was changed; this is what it would do)" if summary["dry_run"] else "replay"
    console.print(f"[bold]{title}[/] · events from {summary['since']} to {summary['until']}"
                  + (f" · lead {summary['lead_id']}" if summary["lead_id"] else ""), highlight=False)
    verb = "would be " if summary["dry_run"] else ""
    for item in summary["created"]:
        console.print(f"  {verb}created  {item['channel']:<8} touch {item['touch_run_id']} lead {item['lead_id']} "
                      f"step {item['step']} ({item['status']}) after {item['because_of']}", highlight=False)
    for item in summary["canceled"]:
        console.print(f"  {verb}canceled {item['channel']:<8} touch {item['touch_run_id']} lead {item['lead_id']} "
                      f"after {item['because_of']}", highlight=False)
    for item in summary.get("reminders_created", []):
        console.print(f"  {verb}created  {item['channel']:<8} touch {item['touch_run_id']} lead {item['lead_id']} "
                      f"appointment reminder due {item['scheduled_at']} ({item['appointment_id']})", highlight=False)
    table = Table(title="summary", show_header=False)
    table.add_column("what")
    table.add_column("n")
    by_type = ", ".join(f"{k} {v}" for k, v in summary["by_event_type"].items()) or "-"
    decisions = ", ".join(f"{k} {v}" for k, v in summary["decisions"].items()) or "-"
    rows = [("events read", f"{summary['events_read']} ({by_type})"),
            (f"touches {verb}created", summary["touches_created"]),
            (f"touches {verb}canceled", summary["touches_canceled"]),
            ("unchanged (nothing missing)", summary["unchanged"]),
            ("superseded by a newer touch", summary["superseded"]),
            ("stale stop events skipped", summary["stale_stop_events"]),
            ("reactions the daemon had not done yet", summary["pending_taken"]),
            (f"cadences {verb}completed / stopped / advanced",
             f"{summary['cadences_completed']} / {summary['cadences_stopped']} / {summary['steps_advanced']}"),
            (f"cooldown timers {verb}set", summary["cooldowns_scheduled"]),
            ("decisions", decisions)]
    for what, n in rows:
        table.add_row(what, str(n))
    console.print(table)


lead_app = typer.Typer(no_args_is_help=True, help="Command OS lead intents: inspect, enroll, stop, suppress.")
app.add_typer(lead_app, name="lead")
reactions_app = typer.Typer(no_args_is_help=True, help="Reactions set aside after they raised (see `status`).")
app.add_typer(reactions_app, name="reactions")


async def _on_conn(url: str, work: Callable[[Any], Awaitable[T]]) -> T:
    import asyncpg

    conn = await connect(url)
    try:
        return await work(conn)
    except asyncpg.UndefinedTableError:
        raise DatabaseError("the database has no schema yet: run `revenue-asi migrate`") from None
    finally:
        await conn.close()


@reactions_app.command("retry")
def reactions_retry_command(
    event_ids: list[str] = typer.Argument(None, metavar="[EVENT_ID]...", help="Events whose reaction to retry."),
    retry_all: bool = typer.Option(False, "--all", help="Every reaction set aside."),
) -> None:
    """Queue reactions that were set aside (`status` lists them with their errors) again, once what made them raise
    is fixed; the daemons are woken and take them at once."""
    if bool(event_ids) == retry_all:
        fail("name the events whose reaction to retry, or --all", 2)
    ids = None if retry_all else [_uuid_or_exit(e, "EVENT_ID") for e in event_ids]
    url = url_or_exit(settings_or_exit())
    row = run_async(lambda: _on_conn(url, lambda conn: conn.fetchrow(Q.requeue_set_aside_reactions, ids)))
    requeued = {str(e) for e in (row["event_ids"] or [])}
    console.print(f"requeued {len(requeued)} reaction(s)" if requeued else "no reaction set aside to requeue")
    missing = [str(e) for e in ids or [] if str(e) not in requeued]
    if missing:
        fail(f"not set aside (already processed, or no such event): {', '.join(missing)}", 1)


@lead_app.command("inspect")
def lead_inspect_command(
    lead_id: str = typer.Argument(..., metavar="ID", help="The lead's id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """The lead, its contacts, suppression, next action, campaigns, open and recent touches, last events, and the
    current fallback decision for each active step (decide_next_channel_for_lead)."""
    from listener.intents.lead import LeadError, inspect_lead

    settings = settings_or_exit()
    url = url_or_exit(settings)
    lead_uuid = _uuid_or_exit(lead_id, "ID")
    try:
        report = run_async(lambda: _on_conn(url, lambda conn: inspect_lead(conn, lead_uuid,
                                                                           default_region=settings.default_region)))
    except LeadError as exc:
        fail(str(exc), 1)
        raise
    if as_json:
        print_json(report)
        return
    render_lead(report)


def _short(value: Any) -> str:
    return "-" if value is None else str(value)[:8]


def _when(value: str | None) -> str:
    return "-" if value is None else value.replace("T", " ")[:19]


def _render_enrichment_and_appointments(report: dict[str, Any]) -> None:
    """SPEC §15 lines of `lead inspect`: enrichment problems, appointments and their reminders."""
    enrichment = report.get("enrichment") or {}
    problems = enrichment.get("problems") or []
    details = enrichment.get("details") or {}
    state = ("pending" if enrichment.get("pending") else "not enriched yet") if not enrichment.get("checked_at") \
        else f"checked {_when(enrichment.get('checked_at'))}"
    console.print(f"  enrichment: {state} · problems: "
                  + (", ".join(f"{p} ({details.get(p, '')})" for p in problems) or "none"), highlight=False)
    for appt in report.get("appointments") or []:
        reminders = ", ".join(f"{r['channel']} {r['status']} {_when(r['scheduled_at'])}" for r in appt["reminders"])
        console.print(f"[bold]appointment[/] {_when(appt['starts_at'])} · {appt['status']}"
                      f"{' (upcoming)' if appt['upcoming'] else ''} · {appt['location'] or '-'} · reminders: "
                      f"{reminders or 'none'}", highlight=False)


def render_lead(report: dict[str, Any]) -> None:
    lead, contacts = report["lead"], report["contacts"]
    console.print(f"[bold]lead[/] {lead['full_name'] or '(no name)'} · {lead['id']} · account "
                  f"{lead['account_name']} · created {_when(lead['created_at'])}", highlight=False)
    for kind in ("phone", "email"):
        c = contacts[kind]
        state = f"ok {c['normalised']}" if c["valid"] else f"unusable ({c['problem']})"
        console.print(f"  {kind}: {c['raw'] or '-'} → {state}", highlight=False)
    console.print(f"  first_name: {contacts['first_name'] or '-'} · company: {contacts['company_name'] or '-'} · "
                  f"timezone: {contacts['timezone'] or '-'}", highlight=False)
    _render_enrichment_and_appointments(report)
    sup = report["suppression"] or {}
    suppressed = sup.get("is_unsubscribed") or sup.get("in_negative_cooldown")
    console.print(f"[bold]suppression[/] {'SUPPRESSED (' + str(sup.get('reason')) + ')' if suppressed else 'none'}"
                  f" · reactivation eligible at {_when(sup.get('reactivation_eligible_at'))}", highlight=False)
    nxt = report["next_action"] or {}
    console.print(f"[bold]next action[/] {nxt.get('recommended_action')} on {nxt.get('recommended_channel') or '-'}"
                  f" in {nxt.get('recommended_delay_minutes')} min · priority {nxt.get('priority_score')}",
                  highlight=False)
    if report["campaigns"]:
        table = Table(title="campaigns")
        for col in ("campaign", "campaign status", "lead status", "step", "stop reason", "enrolled"):
            table.add_column(col)
        for c in report["campaigns"]:
            table.add_row(f"{c['campaign_name']} ({_short(c['campaign_id'])})", c["campaign_status"], c["status"],
                          f"{c['current_step']}/{c['steps']}", c["stop_reason"] or "", _when(c["enrolled_at"]))
        console.print(table)
    else:
        console.print("[bold]campaigns[/] none")
    for title, rows in (("open touches", report["open_touches"]), ("recent touches", report["recent_touches"])):
        if not rows:
            console.print(f"[bold]{title}[/] none")
            continue
        table = Table(title=title)
        for col in ("touch", "campaign", "step", "channel", "status", "scheduled", "error"):
            table.add_column(col)
        for t in rows:
            table.add_row(_short(t["id"]), _short(t["campaign_id"]), str(t["step"]), t["channel"], t["status"],
                          _when(t["scheduled_at"]), (t.get("error") or "")[:60])
        console.print(table)
    for d in report.get("deferred_touches", []):
        console.print(f"[bold]deferred[/] {d['channel']} touch {_short(d['id'])} (step {d['step']}): {d['reason']}"
                      f" · goes at {_when(d['next_at'])} · lead time zone {d['lead_timezone']}", highlight=False)
    if report["decisions"]:
        table = Table(title="current fallback decision per active step")
        for col in ("campaign", "step", "decision", "current", "next", "cooldown until", "stop reason", "skipped"):
            table.add_column(col)
        for d in report["decisions"]:
            table.add_row(_short(d["campaign_id"]), str(d["step"]), d["decision"] or d.get("note", "-"),
                          d["current_channel"] or "-", d["next_channel"] or "-", _when(d["cooldown_until"]),
                          d["stop_reason"] or "", ",".join(d["skipped_channels"] or []))
        console.print(table)
    else:
        console.print("[bold]current fallback decision per active step[/] no active step")
    table = Table(title=f"last {len(report['events'])} events")
    for col in ("at", "event", "channel", "direction", "source", "details"):
        table.add_column(col)
    for e in report["events"]:
        p = e["payload"] or {}
        details = " ".join(f"{k}={p[k]}" for k in ("decision", "next_channel", "error_code", "reason", "stop_reason")
                           if p.get(k))
        table.add_row(_when(e["created_at"]), e["event_type"], e["channel"] or "", e["direction"] or "",
                      e["event_source"] or "", details)
    console.print(table)


@lead_app.command("enroll")
def lead_enroll_command(
    lead_id: str = typer.Argument(..., metavar="LEAD", help="The lead's id."),
    campaign_id: str = typer.Argument(..., metavar="CAMPAIGN", help="The campaign's id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Enroll a lead in a campaign (a campaign_leads row at the first step); the touch orchestrator creates its
    first touch. An unknown id, a suppressed lead, an archived campaign or a lead already enrolled is an error."""
    from listener.intents.lead import LeadError, enroll_lead

    settings = settings_or_exit()
    url = url_or_exit(settings)
    lead_uuid = _uuid_or_exit(lead_id, "LEAD")
    campaign_uuid = _uuid_or_exit(campaign_id, "CAMPAIGN")
    try:
        result = run_async(lambda: _on_conn(url, lambda conn: enroll_lead(conn, lead_uuid, campaign_uuid)))
    except LeadError as exc:
        fail(str(exc), 1)
        raise
    if as_json:
        print_json(result)
        return
    step = result["first_step"] or {}
    console.print(f"enrolled lead {result['lead_name'] or ''} ({result['lead_id']}) in campaign "
                  f"{result['campaign_name']!r} ({result['campaign_id']}) at step {result['current_step']} · "
                  f"campaign lead {result['campaign_lead_id']}", highlight=False)
    paused = " (the campaign is paused: nothing is scheduled until it is active)" \
        if result["campaign_status"] == "paused" else ""
    console.print(f"the touch orchestrator creates its first touch on {step.get('primary_channel') or '?'}, due "
                  f"{step.get('delay_minutes', 0):g} min after enrolment{paused}; "
                  "`revenue-asi tick touch-orchestrator` does it now", highlight=False)


@app.command("demo")
def demo_command(
    seconds: float = typer.Option(40.0, "--seconds", min=1, help="Stop after this long (sooner if every cadence ends)."),
    leads: int = typer.Option(8, "--leads", min=1, max=200, help="How many leads the demo campaign has."),
    as_json: bool = typer.Option(False, "--json", help="Print the final summary as JSON on stdout (the view goes "
                                                      "to stderr)."),
    keep_db: bool = typer.Option(False, "--keep-db", help="Leave the embedded PostgreSQL running when the demo ends "
                                                          "(stop it later: revenue-asi db stop)."),
) -> None:
    """The whole system live: embedded PostgreSQL (or DATABASE_URL), migrations, a fresh demo account on SANDBOX
    providers (loopback fakes; some answers fail on purpose), a voice → whatsapp → sms → email campaign with
    cooldowns of seconds and simulated replies, and the daemon running in this process. When it ends (or on Ctrl-C,
    SIGTERM or an error) it stops the embedded server it started; one that was already running is left running."""
    from listener.demo import DemoInterrupted, demo_database, interruptible, run_demo, sigterm_interrupts

    settings = settings_or_exit()
    view_console = err_console if as_json else console
    interrupted: str | None = None
    summary: dict[str, Any] = {}
    try:
        with sigterm_interrupts(), demo_database(settings, keep_db=keep_db, console=view_console) as server:
            try:
                summary = run_async(lambda: interruptible(run_demo(server.url, seconds=seconds, n_leads=leads,
                                                                   console=view_console)))
            except KeyboardInterrupt:
                interrupted = "Ctrl-C"
            except DemoInterrupted as exc:
                interrupted = str(exc)
            if interrupted:  # said before what became of the server (demo_database says that last)
                view_console.print(f"demo interrupted ({interrupted})", highlight=False)
    except (KeyboardInterrupt, DemoInterrupted) as exc:  # while the embedded server started or stopped
        interrupted = "Ctrl-C" if isinstance(exc, KeyboardInterrupt) else str(exc)
        view_console.print(f"demo interrupted ({interrupted})", highlight=False)
    except EmbeddedServerError as exc:
        fail(str(exc))
    if interrupted:
        raise typer.Exit(130 if interrupted == "Ctrl-C" else 143)
    if as_json:
        print_json({**summary, "embedded_server": server.outcome})


# ---------------------------------------------------------------- revenue-asi db (SPEC §20)

db_app = typer.Typer(no_args_is_help=True, help="The embedded PostgreSQL of REVENUE_ASI_HOME (used when DATABASE_URL "
                                                "is unset): status, stop. Neither starts it.")
app.add_typer(db_app, name="db")
DB_NOT_RUNNING = 3  # as `pg_ctl status`
DB_EXTERNAL = 2


def embedded_pgdata_or_exit() -> Path:
    settings = settings_or_exit()
    if settings.database_url:
        fail("DATABASE_URL is set: it points at an external PostgreSQL server, which `revenue-asi db` does not manage "
             "(unset DATABASE_URL to manage the embedded server of REVENUE_ASI_HOME)", DB_EXTERNAL)
    return embedded_pgdata(settings)


def embedded_status_or_exit(pgdata: Path) -> EmbeddedServer:
    try:
        return embedded_server_status(pgdata)
    except EmbeddedServerError as exc:
        fail(str(exc), 1)
        raise


@db_app.command("status")
def db_status_command(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """Whether the embedded server of REVENUE_ASI_HOME runs: pid, data directory, URL, PostgreSQL version. Exit 0
    when it runs, 3 when it does not (or was never initialised), 2 when DATABASE_URL is set."""
    pgdata = embedded_pgdata_or_exit()
    state = embedded_status_or_exit(pgdata)
    if as_json:
        print_json(state.as_dict())
    elif state.running:
        console.print(f"embedded PostgreSQL running · pid {state.pid} · PostgreSQL {state.postgres_version or '?'} · "
                      f"{state.server_status} since {_when(state.started_at)} UTC", highlight=False)
        console.print(f"data directory: {state.data_directory}", highlight=False, markup=False)
        console.print(f"url: {state.url or '-'}", highlight=False, markup=False)
        console.print("stop it: revenue-asi db stop", highlight=False)
    elif state.initialised:
        stale = " (a postmaster.pid was left by a server that did not shut down cleanly; the next start recovers)" \
            if state.stale_pid_file else ""
        console.print(f"embedded PostgreSQL not running{stale} · data directory {state.data_directory}",
                      highlight=False, markup=False)
        console.print("any command that needs the database starts it (revenue-asi migrate, db-url, run, web, demo)",
                      highlight=False)
    else:
        console.print(f"embedded PostgreSQL not initialised: no data directory at {state.data_directory}; the first "
                      "command that needs the database creates and starts it", highlight=False, markup=False)
    if not state.running:
        raise typer.Exit(DB_NOT_RUNNING)


@db_app.command("stop")
def db_stop_command() -> None:
    """Stop the embedded server of REVENUE_ASI_HOME (pg_ctl stop -m fast: sessions are disconnected, open
    transactions roll back) and wait until it has stopped. Not running is fine: exit 0 either way."""
    pgdata = embedded_pgdata_or_exit()
    try:
        before = stop_embedded_server(pgdata)
    except EmbeddedServerError as exc:
        fail(str(exc), 1)
        raise
    if before.running:
        console.print(f"embedded PostgreSQL stopped (pid {before.pid}) · data directory {before.data_directory}",
                      highlight=False, markup=False)
    else:
        what = "not running" if before.initialised else "not initialised"
        console.print(f"embedded PostgreSQL {what}: nothing to stop · data directory {before.data_directory}",
                      highlight=False, markup=False)


# ---------------------------------------------------------------- Command OS v2 (SPEC §18)
# Each command runs its intent through listener/intents/command_os.py `run_command`, as POST /api/command-os does
# (actor `cli`): a write shows its preview and asks (on stderr) before it runs, unless --yes. Exit codes: 0 done;
# 1 refused (unknown campaign, lead or touch; ambiguous name; not cancelable; the model did not answer); 2 not
# understood (a malformed id, text no rule places); 3 not confirmed (nothing changed).

campaign_app = typer.Typer(no_args_is_help=True, help="Command OS campaign intents: list, pause, resume.")
app.add_typer(campaign_app, name="campaign")
touch_app = typer.Typer(no_args_is_help=True, help="Command OS touch intents: cancel.")
app.add_typer(touch_app, name="touch")
report_app = typer.Typer(no_args_is_help=True, help="Command OS reports: funnel.")
app.add_typer(report_app, name="report")
NOT_CONFIRMED = 3
CLI_ACTOR = "cli"
YES_HELP = "Run it without asking (the preview is not shown)."
JSON_HELP = "Print JSON for scripts (the same documents as POST /api/command-os)."


def _begin_on(conn: Any) -> Callable[[bool], Any]:
    """run_command's transactions on the CLI's one connection."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def begin(readonly: bool) -> Any:
        async with conn.transaction(readonly=readonly):
            yield conn

    return begin


def _confirmed() -> bool:
    try:
        return bool(typer.confirm("run it?", default=False, err=True))
    except typer.Abort:  # no answer (stdin closed)
        return False


def _run_intent_command(name: str, raw_args: dict[str, Any], *, yes: bool, as_json: bool, text: str | None = None,
                        chosen_by_model: bool = False) -> None:
    from listener.intents.command_os import INTENTS, check_args, run_command
    from listener.intents.errors import CommandError, IntentError

    settings = settings_or_exit()
    url = url_or_exit(settings)
    try:
        args = check_args(name, raw_args)
    except CommandError as exc:
        fail(str(exc), 2)
        raise

    def run(confirm: bool, checked: dict[str, Any]) -> dict[str, Any]:
        return run_async(lambda: _on_conn(url, lambda conn: run_command(
            _begin_on(conn), name, checked, confirm=confirm, actor=CLI_ACTOR, text=text,
            region=settings.default_region)))

    try:
        if INTENTS[name].writes and (not yes or chosen_by_model):
            preview = run(False, args)
            if text is not None:
                preview["resolved_by"] = "model" if chosen_by_model else "rules"
            _show_answer(preview, as_json, chosen_by_model)
            if not _confirmed():
                if not sys.stdin.isatty():
                    err_console.print()
                err_console.print("not confirmed: nothing changed" + ("" if chosen_by_model else
                                  " (--yes runs it without asking)"), highlight=False)
                raise typer.Exit(NOT_CONFIRMED)
            args = check_args(name, preview["args"])  # exactly what was previewed (a name is now its id)
        answer = run(True, args)
    except IntentError as exc:
        if as_json:
            print_json({"error": str(exc), **exc.details})
        for candidate in exc.details.get("candidates", []):
            err_console.print(f"  {candidate['id']}  {candidate['name']} ({candidate['status']}) · account "
                              f"{candidate['account_name']}", highlight=False, markup=False)
        fail(str(exc), 1)
        raise
    if text is not None:  # as POST /api/command-os answers {"text": …}
        answer["resolved_by"] = "model" if chosen_by_model else "rules"
    _show_answer(answer, as_json)


def _show_answer(answer: dict[str, Any], as_json: bool, chosen_by_model: bool = False) -> None:
    if as_json:
        print_json(answer)
        return
    name = answer["intent"]
    if "preview" in answer:
        by = " (chosen by the model)" if chosen_by_model else ""
        console.print(f"[bold]{name}[/]{by} {_args_line(answer['args'])} · preview, nothing changed yet:",
                      highlight=False)
        _render_tree(answer["preview"])
        return
    result = answer["result"]
    if name == "system.status":
        render_status(result)
    elif name == "lead.inspect":
        render_lead(result)
    elif name == "campaign.list":
        _render_campaigns(result)
    elif name == "report.funnel":
        _render_funnel(result)
    else:
        console.print(f"[bold]{name}[/] {_args_line(answer['args'])} · done (command run "
                      f"{answer.get('command_run_id', '-')})", highlight=False)
        _render_tree(result)


def _args_line(args: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in args.items())


def _render_tree(doc: Any, indent: int = 1) -> None:
    """A preview or result document as indented lines; a list of objects as a table."""
    pad = "  " * indent
    for key, value in (doc.items() if isinstance(doc, dict) else []):
        if isinstance(value, dict):
            if not value:
                console.print(f"{pad}{key}: -", highlight=False, markup=False)
                continue
            console.print(f"{pad}{key}:", highlight=False, markup=False)
            _render_tree(value, indent + 1)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            columns = list(dict.fromkeys(k for row in value for k, v in row.items()
                                         if not isinstance(v, (dict, list))))
            table = Table(title=key)
            for column in columns:
                table.add_column(column)
            for row in value:
                table.add_row(*(escape(str(row.get(c, ""))) for c in columns))
            console.print(table)
        elif isinstance(value, list):
            console.print(f"{pad}{key}: {', '.join(map(str, value)) or '-'}", highlight=False, markup=False)
        else:
            console.print(f"{pad}{key}: {'-' if value is None else value}", highlight=False, markup=False)


def _render_campaigns(result: dict[str, Any]) -> None:
    table = Table(title=f"campaigns ({result['count']}{', more not shown' if result['truncated'] else ''})")
    for column in ("campaign", "account", "status", "steps", "active", "paused", "completed", "stopped", "per step"):
        table.add_column(column, justify="right" if column in ("steps", "active", "paused", "completed", "stopped")
                         else "left")
    for c in result["campaigns"]:
        leads = c["campaign_leads"]
        per_step = "; ".join(f"{s['step']} {s['primary_channel'] or '?'}: {s['active']} active"
                             + (f", {s['stopped']} stopped" if s["stopped"] else "")
                             + (f", {s['completed']} completed" if s["completed"] else "") for s in c["per_step"])
        table.add_row(escape(f"{c['name']} ({_short(c['id'])})"), escape(c["account_name"]), c["status"],
                      str(c["steps"]), str(leads["active"]), str(leads["paused"]), str(leads["completed"]),
                      str(leads["stopped"]), escape(per_step))
    console.print(table)


def _render_funnel(result: dict[str, Any]) -> None:
    stages = ("sent", "delivered", "replied", "positive", "unsubscribed", "booked")
    console.print(f"[bold]funnel[/] {escape(str(result.get('campaign_name')))} ({result.get('campaign_id')}) · last "
                  f"{result.get('days')} days", highlight=False)
    table = Table()
    for column in ("step", "channel", *stages):
        table.add_column(column, justify="left" if column == "channel" else "right")

    def rate(row: dict[str, Any], stage: str) -> str:
        value = (row.get("rates") or {}).get(stage)
        return str(row.get(stage, 0)) + ("" if value is None or stage == "sent" else f" ({value:.0%})")

    for row in result.get("rows") or []:
        table.add_row(str(row.get("step")), str(row.get("channel")), *(rate(row, s) for s in stages))
    totals = result.get("totals") or {}
    if totals:
        table.add_row("all", "", *(rate(totals, s) for s in stages))
    console.print(table)


@campaign_app.command("list")
def campaign_list_command(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """campaign.list: every campaign with its status, its campaign leads by status, and per step."""
    _run_intent_command("campaign.list", {}, yes=True, as_json=as_json)


@campaign_app.command("pause")
def campaign_pause_command(
    campaign: list[str] = typer.Argument(..., metavar="CAMPAIGN", help="The campaign's id or name (accents and case "
                                                                         "do not matter)."),
    yes: bool = typer.Option(False, "--yes", "-y", help=YES_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """campaign.pause: status paused (the orchestrator creates nothing for it) and its queued and scheduled touches
    canceled (reason campaign_paused). Shows what it would change and asks first."""
    _run_intent_command("campaign.pause", {"campaign_id": " ".join(campaign)}, yes=yes, as_json=as_json)


@campaign_app.command("resume")
def campaign_resume_command(
    campaign: list[str] = typer.Argument(..., metavar="CAMPAIGN", help="The campaign's id or name."),
    yes: bool = typer.Option(False, "--yes", "-y", help=YES_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """campaign.resume: status active, and every touch the pause canceled created again at once (due when it was
    due, or now). Campaign leads enrolled while paused get their first touch from the touch orchestrator."""
    _run_intent_command("campaign.resume", {"campaign_id": " ".join(campaign)}, yes=yes, as_json=as_json)


@lead_app.command("stop")
def lead_stop_command(
    lead_id: str = typer.Argument(..., metavar="LEAD", help="The lead's id."),
    reason: str = typer.Option(..., "--reason", help="Why (the campaign leads' stop_reason)."),
    yes: bool = typer.Option(False, "--yes", "-y", help=YES_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """lead.stop: the lead's active campaign leads stopped (stop_reason = --reason, one cadence_stopped each), its
    queued and scheduled touches canceled, its cooldown timers ended. Not a suppression: see `lead suppress`."""
    _run_intent_command("lead.stop", {"lead_id": lead_id, "reason": reason}, yes=yes, as_json=as_json)


@lead_app.command("suppress")
def lead_suppress_command(
    lead_id: str = typer.Argument(..., metavar="LEAD", help="The lead's id."),
    yes: bool = typer.Option(False, "--yes", "-y", help=YES_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """lead.suppress: a do_not_contact event (event_source command_os) — never contacted again — and at once every
    open touch canceled and every cadence stopped."""
    _run_intent_command("lead.suppress", {"lead_id": lead_id}, yes=yes, as_json=as_json)


@touch_app.command("cancel")
def touch_cancel_command(
    touch_id: str = typer.Argument(..., metavar="TOUCH", help="The touch's id."),
    yes: bool = typer.Option(False, "--yes", "-y", help=YES_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """touch.cancel: a queued or scheduled touch → canceled (reason command_os); any other status is refused."""
    _run_intent_command("touch.cancel", {"touch_id": touch_id}, yes=yes, as_json=as_json)


@report_app.command("funnel")
def report_funnel_command(
    campaign: list[str] = typer.Argument(..., metavar="CAMPAIGN", help="The campaign's id or name."),
    days: int = typer.Option(30, "--days", help="Over the last N days (1-366)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """report.funnel: per step and channel, touches sent, delivered, replied, positive, unsubscribed, booked, and the
    rates."""
    _run_intent_command("report.funnel", {"campaign_id": " ".join(campaign), "days": days}, yes=True,
                        as_json=as_json)


@app.command("command")
def command_command(
    text: list[str] = typer.Argument(..., metavar="TEXT...", help='What to do, in English or Spanish, e.g. "pausa la '
                                                                   'campaña Revisión gratuita".'),
    yes: bool = typer.Option(False, "--yes", "-y", help="Run a write without asking (not one the model chose)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Command OS: the text resolved to an intent by the deterministic English/Spanish rules (then, when
    REVENUE_ASI_LLM_URL is set and they find nothing, by the model), and run as its own command is. A write the
    model chose always shows its preview and asks."""
    from listener.intents.command_os import EXAMPLES, resolve_text
    from listener.intents.errors import CommandError, ModelUnavailable

    settings = settings_or_exit()
    typed = " ".join(text)
    try:
        resolved = run_async(lambda: resolve_text(typed, settings))
    except (CommandError, ModelUnavailable) as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        err_console.print("try one of: " + " · ".join(f'"{e}"' for pair in EXAMPLES.values() for e in pair),
                          highlight=False, markup=False)
        raise typer.Exit(2 if isinstance(exc, CommandError) else 1) from None
    _run_intent_command(resolved.intent, resolved.args, yes=yes, as_json=as_json, text=typed,
                        chosen_by_model=resolved.by == "model")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
