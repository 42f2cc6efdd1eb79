"""Where the database is (DATABASE_URL, or the embedded server of listener/store/embedded.py), connections, and
migrations."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from listener.rules.safejson import decode_jsonb
from listener.settings import Settings
from listener.store.embedded import EmbeddedServerError, embedded_pgdata, start_embedded_server
from listener.store.queries import Q

log = logging.getLogger(__name__)



def _sql_dir() -> Path:
    """The top-level sql/ of the repository (SPEC §2) is the one source. A wheel carries it as the package
    listener.store.sql (pyproject maps the folder there at build time); a checkout or an editable install reads
    the folder itself."""
    packaged = resources.files("listener.store") / "sql"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "sql"


SQL_DIR = _sql_dir()
REPEATABLE_DIRS = ("triggers", "views")
REPEATABLE_KEY = "repeatable:triggers+views"


# Errors of the connection, not of the data: the statement may be retried on a new connection, nothing is wrong
# with the row. asyncpg.InternalClientError: a connection cut mid-query (database restart) can fail this way.
CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    OSError, ConnectionError, asyncio.TimeoutError, asyncpg.InterfaceError, asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError, asyncpg.exceptions.AdminShutdownError, asyncpg.exceptions.CannotConnectNowError)
# Any error a database call can raise, of the connection or of the statement.
DB_ERRORS: tuple[type[Exception], ...] = (*CONNECTION_ERRORS, asyncpg.PostgresError)


# SPEC §20: a row locked by another session delays only the work on that row. Transactions that work on rows an
# operator may hold call `wait_briefly_for_row_locks` first: a lock still held after ROW_LOCK_WAIT_MS raises one of
# ROW_BUSY_ERRORS, and the caller sets that one item aside to retry it later while the rest goes on. The session's
# own lock_timeout (REVENUE_ASI_LOCK_TIMEOUT_MS) stays the backstop everywhere else.
ROW_LOCK_WAIT_MS = 200
ROW_BUSY_ERRORS: tuple[type[Exception], ...] = (asyncpg.exceptions.LockNotAvailableError,)


async def wait_briefly_for_row_locks(conn: asyncpg.Connection, wait_ms: int = ROW_LOCK_WAIT_MS) -> None:
    """In a transaction: wait at most `wait_ms` for any lock until it ends (SET LOCAL lock_timeout)."""
    await conn.execute(Q.set_row_lock_wait, str(wait_ms))


class DatabaseError(RuntimeError):
    """The database cannot be reached or prepared; the message says what to do."""


def database_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    try:
        return start_embedded_server(embedded_pgdata(settings))
    except EmbeddedServerError as exc:
        raise DatabaseError(str(exc)) from exc


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Encoded with orjson (outcomes and events out, at a fraction of json's cost); decoded within bounds, so one
    # hostile value is that row's reason, never an exception that fails a whole fetch (listener/rules/safejson.py).
    await conn.set_type_codec("jsonb", encoder=_dumps, decoder=decode_jsonb, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=_dumps, decoder=decode_jsonb, schema="pg_catalog")


async def light_reset(conn: asyncpg.Connection) -> None:
    """The daemon pool's reset on release: asyncpg's default runs `RESET ALL; UNLISTEN *; CLOSE ALL;
    pg_advisory_unlock_all()` — a round trip per release — although the daemon's pooled sessions never change
    any of that (LISTEN has its own connection, advisory locks are transaction-scoped, settings are SET LOCAL).
    Only a transaction left open is ended."""
    if conn.is_in_transaction():
        await conn.execute(Q.end_open_transaction)


async def connect(url: str, **kwargs: Any) -> asyncpg.Connection:
    try:
        conn = await asyncpg.connect(url, **kwargs)
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseError(f"cannot connect to the database: {exc}") from exc
    await _init_connection(conn)
    return conn


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 8, **kwargs: Any) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, init=_init_connection, **kwargs)
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseError(f"cannot connect to the database: {exc}") from exc
    assert pool is not None
    return pool


def _checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def numbered_migrations(sql_dir: Path = SQL_DIR) -> list[Path]:
    return sorted(p for p in sql_dir.glob("[0-9]*.sql"))


def repeatable_files(sql_dir: Path = SQL_DIR) -> list[Path]:
    return [p for d in REPEATABLE_DIRS for p in sorted((sql_dir / d).glob("*.sql"))]


@dataclass
class MigrationReport:
    applied: list[str] = field(default_factory=list)
    repeatable_applied: bool = False
    version: str = "none"


async def migrate(conn: asyncpg.Connection, sql_dir: Path = SQL_DIR) -> MigrationReport:
    """Apply numbered schema files once each, in order, then (re)apply triggers and views as one set whenever
    any of them changed. An advisory lock makes concurrent runs wait for each other; each step is one
    transaction, so a failure leaves the previous state."""
    if not sql_dir.is_dir():
        raise DatabaseError(f"SQL folder not found: {sql_dir} (the revenue-asi package is incomplete; reinstall it)")
    report = MigrationReport()
    await conn.execute(Q.migrations_lock)
    try:
        await conn.execute(Q.migrations_table)
        applied = {r["name"]: r["checksum"] for r in await conn.fetch(Q.migrations_applied)}
        for path in numbered_migrations(sql_dir):
            text = path.read_text()
            if path.name in applied:
                if applied[path.name] != _checksum(text):
                    log.warning("migration %s changed after it was applied; add a new numbered file instead", path.name)
                continue
            try:
                async with conn.transaction():
                    await conn.execute(text)
                    await conn.execute(Q.migration_record, path.name, _checksum(text))
            except asyncpg.PostgresError as exc:
                raise DatabaseError(f"{path.name}: {exc}") from exc
            report.applied.append(path.name)
        files = repeatable_files(sql_dir)
        combined = "\n".join(f"-- {p.relative_to(sql_dir)}\n{p.read_text()}" for p in files)
        if applied.get(REPEATABLE_KEY) != _checksum(combined) or report.applied:
            async with conn.transaction():
                for path in files:
                    try:
                        await conn.execute(path.read_text())
                    except asyncpg.PostgresError as exc:
                        raise DatabaseError(f"{path.relative_to(sql_dir)}: {exc}") from exc
                await conn.execute(Q.migration_record, REPEATABLE_KEY, _checksum(combined))
            report.repeatable_applied = True
        report.version = (await conn.fetchrow(Q.schema_version))["version"]
    finally:
        await conn.execute(Q.migrations_unlock)
    return report
