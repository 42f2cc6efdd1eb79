"""The `revenue-asi` command (SPEC §10). Typer (on click) for the commands, rich for tables and progress."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from listener.database import DatabaseError, connect, database_url, migrate
from listener.settings import Settings, SettingsError, get_settings
from listener.status import system_status

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Revenue ASI outbox daemon: touch_runs → LISTEN/NOTIFY → providers → core_memory_events.")
console = Console()
err_console = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")


def fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def settings_or_exit() -> Settings:
    try:
        return get_settings()
    except SettingsError as exc:
        fail(str(exc))
        raise  # unreachable, for type checkers


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    try:
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
        typer.echo(json.dumps(status, indent=2, sort_keys=True, default=str))
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
    channels = ["voice", "whatsapp", "sms", "email"]
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
    for job, run in status["jobs"].items():
        console.print(f"[bold]job {job}[/] last started {run['started_at']} · stats {json.dumps(run['stats'])}"
                      + (f" · error {run['error']}" if run["error"] else ""))


@app.command("run")
def run_command() -> None:
    """Run the daemon: dispatch touches the moment they are due, react to events, sweep, orchestrate."""
    settings = settings_or_exit()
    configure_logging(settings)
    url = url_or_exit(settings)
    from listener.runner import run_daemon

    run_async(lambda: run_daemon(settings, url))


@app.command("tick")
def tick_command(
    job: str = typer.Argument(..., help="sweep | touch-orchestrator | reactivation"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Write nothing; print what would be done."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="At most N items."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """One run of a job, on demand (the seed's curl … -d '{"limit":20,"dry_run":true}' checks)."""
    settings = settings_or_exit()
    configure_logging(settings)
    url = url_or_exit(settings)
    from listener.jobs import JOBS, run_job

    if job not in JOBS:
        fail(f"unknown job {job!r}; choose one of: {', '.join(JOBS)}")
    result = run_async(lambda: run_job(settings, url, job, dry_run=dry_run, limit=limit))
    if as_json:
        typer.echo(json.dumps(result, indent=2, sort_keys=True, default=str))
    else:
        console.print(f"[bold]{job}[/]{' (dry run)' if dry_run else ''}: {json.dumps(result, default=str)}")


def _uuid_or_exit(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        fail(f"{what} must be a uuid, got {value!r}")
        raise


async def _with_pool(url: str, work: Callable[[Any], Awaitable[T]], *, max_size: int = 4) -> T:
    from listener.database import create_pool

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
    from listener.replay import TimeFormatError, parse_time, replay

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
                                on_progress=progress.advance)

    summary = run_async(lambda: _with_pool(url, work)).as_dict()
    if as_json:
        typer.echo(json.dumps(summary, indent=2, sort_keys=True, default=str))
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
    table = Table(title="summary", show_header=False)
    table.add_column("what")
    table.add_column("n", justify="right")
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
