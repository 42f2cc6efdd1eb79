"""Statements per process, counted on the client side with asyncpg's query logger, the same way for any program.

    python -m bench.counting --out FILE.json -- -m listener.cli run
    python /path/to/bench/counting.py --out FILE.json -- -m bench.peers.pgqueuer_peer --url …

The wrapper adds a query logger (``Connection.add_query_logger``, asyncpg ≥ 0.29) to every ``asyncpg.Connection``
created in the process — ``asyncpg.connect`` and pools alike: the hook is ``Connection.__init__``, which both call —
then runs the module as ``__main__`` in this same process (runpy: no fork, so the PID the bench started is the one
its CPU meter reads). The logger sees every statement the client sends: ``execute``/``fetch*``/``executemany``, the
BEGIN / COMMIT / ROLLBACK of ``conn.transaction()``, LISTEN, asyncpg's own type introspection (statements run
through a ``PreparedStatement`` object or COPY are not logged by asyncpg; neither our daemon nor the peer uses them).
The logger costs the client CPU per statement (asyncpg times it, builds a record and schedules the callback: ~20 µs
per statement measured on a loaded 2-core machine), so it weighs more on the side that sends more statements.

The counts are written to FILE as ``{"statements": N, "by_query": {label: {"calls": n, "seconds": s}},
"transactions": {"commit": c, "rollback": r, "connections": s}, "seq": k, "final": bool, "pid": p, "origin": the
module's file}``: at exit (atexit: SystemExit from the module's ``main``, or its normal return after SIGTERM —
``final`` true), and on SIGUSR1 at any moment (``seq`` increments; the bench takes a snapshot at the start and at
the end of a measured window). ``seconds`` sums the
client-side elapsed time of each statement (``LoggedQuery.elapsed``: send → result, waiting included). ``label`` is
the name of our named query when the text is one of ``listener.store.queries.Q`` (looked up when the file is
written, tolerating its absence: the peer, an older checkout), else the first 60 characters of the normalised
SQL. ``transactions`` is the client's view of what it committed: a COMMIT / ROLLBACK, or a statement outside an
explicit block (its own implicit transaction), and ``connections`` opened (each session's start-up commits one
transaction on the server) — a cross-check of the server's ``pg_stat_database`` counts.

Run by path (``python REPO/bench/counting.py``) for another checkout: this file imports only the standard library
and asyncpg, and puts the working directory first on ``sys.path`` as ``python -m`` does, so the module run (the
daemon) is the checkout's own (its PYTHONPATH / cwd), not this repository's.

The bench side (``Window``): statements and commits of the consumer processes over one measured window."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import re
import runpy
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
LABEL_CHARS = 60
TOP = 5
_MAX_TEXTS = 5_000  # distinct SQL texts kept apart; beyond that (SQL with literals), grouped by their label
_WS = re.compile(r"\s+")
_BEGIN, _COMMIT, _ROLLBACK, _OTHER = "begin", "commit", "rollback", "other"


_GENERATED = re.compile(r"__asyncpg_([a-z]+)_[0-9a-f]+__")  # asyncpg's savepoint / cursor names, unique per use


def normalise(sql: str) -> str:
    return _WS.sub(" ", sql).strip()


def _kind(sql: str) -> str:
    words = normalise(sql).rstrip(";").lower().split(" ", 2)
    first = words[0] if words else ""
    second = words[1] if len(words) > 1 else ""
    if first == "begin" or (first == "start" and second == "transaction"):
        return _BEGIN
    if first in ("commit", "end") and second not in ("prepared",):
        return _COMMIT
    if first in ("rollback", "abort") and second not in ("to", "prepared"):
        return _ROLLBACK
    return _OTHER


def _named_queries(import_it: bool) -> dict[str, str]:
    """SQL text → name of our named queries (listener.store.queries.Q), if that module is there."""
    module = sys.modules.get("listener.store.queries")
    if module is None and import_it and "listener" in sys.modules:
        with contextlib.suppress(Exception):
            import importlib

            module = importlib.import_module("listener.store.queries")
    queries = getattr(getattr(module, "Q", None), "_queries", None)
    if not isinstance(queries, Mapping):
        return {}
    return {str(text).strip(): str(name) for name, text in queries.items()}


class Tally:
    """Statements and client-side transactions of the connections attached to it (only those to ``database``,
    when given)."""

    def __init__(self, database: str | None = None) -> None:
        self.database = database
        self.statements = 0
        self.commits = 0
        self.rollbacks = 0
        self.connections = 0  # each new session commits one transaction of its own on the server (its start-up)
        self._texts: dict[str, list[Any]] = {}  # SQL text → [calls, seconds, kind]

    def _entry(self, query: str) -> list[Any]:
        key = _GENERATED.sub(r"__asyncpg_\1_…__", query)  # one entry for all SAVEPOINT __asyncpg_savepoint_…__
        if len(self._texts) >= _MAX_TEXTS:
            key = "\0" + normalise(key)[:LABEL_CHARS]
        entry = self._texts.get(key)
        if entry is None:
            entry = self._texts[key] = [0, 0.0, _kind(query)]
        return entry

    def attach(self, conn: Any) -> None:
        if self.database is not None and getattr(getattr(conn, "_params", None), "database", None) != self.database:
            return
        self.connections += 1
        in_block = False
        texts = self._texts

        def log(record: Any) -> None:  # called (loop.call_soon) in the order the connection ran its statements
            nonlocal in_block
            query = record.query
            entry = texts.get(query)
            if entry is None:
                entry = self._entry(query)
            entry[0] += 1
            entry[1] += record.elapsed
            self.statements += 1
            kind, failed = entry[2], record.exception is not None
            if kind == _BEGIN:
                in_block = not failed
            elif kind == _COMMIT or kind == _ROLLBACK:
                in_block = False
                if kind == _COMMIT and not failed:
                    self.commits += 1
                else:
                    self.rollbacks += 1
            elif not in_block:
                if failed:
                    self.rollbacks += 1
                else:
                    self.commits += 1

        conn.add_query_logger(log)

    def snapshot(self, import_names: bool = False) -> dict[str, Any]:
        names = _named_queries(import_names)
        by_query: dict[str, dict[str, Any]] = {}
        for text, (calls, seconds, _) in list(self._texts.items()):
            label = text[1:] if text.startswith("\0") else names.get(text.strip()) or normalise(text)[:LABEL_CHARS]
            slot = by_query.setdefault(label, {"calls": 0, "seconds": 0.0})
            slot["calls"] += calls
            slot["seconds"] += seconds
        for slot in by_query.values():
            slot["seconds"] = round(slot["seconds"], 6)
        return {"statements": self.statements, "by_query": by_query,
                "transactions": {"commit": self.commits, "rollback": self.rollbacks, "connections": self.connections}}


def install(tally: Tally) -> Callable[[], None]:
    """Attach ``tally`` to every asyncpg connection created from now on (``asyncpg.connect`` and pools both
    construct ``asyncpg.connection.Connection`` or a subclass). Returns the function that removes the hook."""
    from asyncpg import connection

    cls = connection.Connection
    original = cls.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        tally.attach(self)

    cls.__init__ = __init__  # type: ignore[method-assign]

    def uninstall() -> None:
        if cls.__init__ is __init__:
            cls.__init__ = original  # type: ignore[method-assign]

    return uninstall


@contextlib.contextmanager
def counting(database: str | None = None) -> Iterator[Tally]:
    """In this process: count the statements and transactions of the connections created inside the block."""
    tally = Tally(database)
    uninstall = install(tally)
    try:
        yield tally
    finally:
        uninstall()


# --- the wrapper ------------------------------------------------------------------------------------------------

class _Writer:
    def __init__(self, out: Path, tally: Tally, module: str, origin: str | None) -> None:
        self.out = out
        self.tally = tally
        self.module = module
        self.origin = origin
        self.seq = 0

    def write(self, final: bool) -> None:
        self.seq += 1
        data = {**self.tally.snapshot(import_names=final), "seq": self.seq, "final": final, "pid": os.getpid(),
                "at": time.time(), "module": self.module, "origin": self.origin}
        tmp = self.out.with_name(self.out.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.out)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: python -m bench.counting --out FILE.json -- -m MODULE [ARGS…]"
    try:
        split = args.index("--")
        head, rest = args[:split], args[split + 1:]
        out = Path(head[head.index("--out") + 1]).resolve()
    except (ValueError, IndexError):
        raise SystemExit(usage) from None
    if len(rest) < 2 or rest[0] != "-m":
        raise SystemExit(usage)
    module, module_args = rest[1], rest[2:]
    # `python -m MODULE` puts the working directory first on the path; run by path, ours would be this folder.
    if sys.path and sys.path[0] and Path(sys.path[0]).resolve() == HERE.parent:
        sys.path[0] = os.getcwd()
    import importlib.util

    spec = importlib.util.find_spec(module)  # which file runs (another checkout's, with its PYTHONPATH / cwd)
    tally = Tally()
    install(tally)
    writer = _Writer(out, tally, module, spec.origin if spec else None)
    atexit.register(writer.write, True)
    signal.signal(signal.SIGUSR1, lambda *_: writer.write(False))
    sys.argv = [module, *module_args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


# --- the bench side ---------------------------------------------------------------------------------------------

def wrap(module_argv: Sequence[str], out: Path) -> list[str]:
    """The argv that runs ``python -m …`` (``module_argv`` = ["-m", module, args…]) under the wrapper, by path."""
    return [sys.executable, str(HERE), "--out", str(out), "--", *module_argv]


def read(out: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(out.read_text()))
    except (OSError, ValueError):
        return {}


async def snapshot(pid: int, out: Path, timeout: float = 10.0) -> dict[str, Any]:
    """The counts of the wrapped process ``pid`` now (SIGUSR1, then its file's next ``seq``)."""
    before = int(read(out).get("seq", 0))
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while True:
        data = read(out)
        if int(data.get("seq", 0)) > before and data.get("pid") == pid:
            return data
        if time.monotonic() > deadline:
            raise RuntimeError(f"no counts from pid {pid} in {out} within {timeout}s")
        await asyncio.sleep(0.01)


def combine(snaps: Sequence[Mapping[str, Any]], sign: Sequence[int] | None = None) -> dict[str, Any]:
    """Sum of snapshots (several daemons), each times its sign (+1 / -1: a window = end − start)."""
    signs = list(sign) if sign is not None else [1] * len(snaps)
    out: dict[str, Any] = {"statements": 0, "by_query": {},
                           "transactions": {"commit": 0, "rollback": 0, "connections": 0}}
    for snap, s in zip(snaps, signs, strict=True):
        out["statements"] += s * int(snap.get("statements", 0))
        for k in ("commit", "rollback", "connections"):
            out["transactions"][k] += s * int(snap.get("transactions", {}).get(k, 0))
        for label, q in snap.get("by_query", {}).items():
            slot = out["by_query"].setdefault(label, {"calls": 0, "seconds": 0.0})
            slot["calls"] += s * q["calls"]
            slot["seconds"] += s * q["seconds"]
    out["by_query"] = {k: v for k, v in out["by_query"].items() if v["calls"]}
    return out


def top_queries(by_query: Mapping[str, Mapping[str, float]], n: int, top: int = TOP) -> dict[str, list[dict[str, Any]]]:
    """The ``top`` queries by client time per touch (µs) and by calls per touch."""
    rows: list[dict[str, Any]] = [{"query": label, "us_per_touch": round(q["seconds"] / n * 1e6, 1),
                                   "calls_per_touch": round(q["calls"] / n, 3)} for label, q in by_query.items()]
    return {"by_time": sorted(rows, key=lambda r: -r["us_per_touch"])[:top],
            "by_calls": sorted(rows, key=lambda r: -r["calls_per_touch"])[:top]}


XACT_STATS = ("select xact_commit::bigint as commits, xact_rollback::bigint as rollbacks "
              "from pg_stat_database where datname = $1")
ACTIVE_BACKENDS = ("select count(*) from pg_stat_activity where datname = $1 and backend_type = 'client backend' "
                   "and pid <> pg_backend_pid()")
# A backend reports its transaction counts to the shared statistics when it goes idle, at most once a second; one
# that committed less than a second after its last report keeps them pending until its next transaction or until
# it has been idle for 10 s (PGSTAT_IDLE_INTERVAL, PostgreSQL 15+), and always at exit. Waiting 10.5 s after the
# warm-up makes every connection of the consumer report what it did before the window.
IDLE_REPORT_S = 10.5


async def server_xacts(admin_url: str, database: str) -> tuple[int, int]:
    """(xact_commit, xact_rollback) of ``database``, read over a connection to another database (``admin_url``):
    reading adds nothing to the counts read. A fresh statistics snapshot for each read."""
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute("select pg_stat_clear_snapshot()")
        row = await conn.fetchrow(XACT_STATS, database)
        return (int(row["commits"]), int(row["rollbacks"])) if row else (0, 0)
    finally:
        await conn.close()


async def wait_backends_gone(admin_url: str, database: str, timeout: float = 20.0) -> None:
    """Until no client connection to ``database`` is left (each has reported its statistics when it exited)."""
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        deadline = time.monotonic() + timeout
        while await conn.fetchval(ACTIVE_BACKENDS, database) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


class Window:
    """Statements and commits of the consumer processes (run under the wrapper) over one measured window.

    Statements: the wrappers' snapshots at the start and at the end of the window (SIGUSR1), end − start.
    Commits: ``pg_stat_database`` of the bench database, read from another database. Start: after the consumer
    sat idle for ``IDLE_REPORT_S`` (its warm-up reported), before the clock starts. End: after the consumer
    processes have exited (every backend reports at exit, so nothing is pending), minus

    * the bench's own transactions on that database from the start read to the end read (the insert, the
      completion poller, the reading of outcomes, and the start-up transaction of each of its sessions), counted
      exactly on the client side by this same logger, installed in the bench process for that time and only on
      connections to that database; and
    * what the consumer committed between the window's end and its exit (idle sweeps, shutdown, new sessions):
      the wrappers' client-side transactions, final file − end snapshot.

    Server commits are more than the client's transactions: a backend that LISTENs reads the notifications that
    arrive while it is idle in a transaction of its own (ProcessIncomingNotify: one commit per wake-up, measured:
    100 NOTIFYs to an idle listener = 200 commits), and autovacuum's transactions on that database count too (if it
    runs during the window). A consumer's transactions in the last second before the start read may be reported
    only after it (the idle sweeps: a few). Checked with a controlled consumer (N known commits and M rollbacks, a
    pool, transaction blocks, the bench polling meanwhile): exactly N and M."""

    def __init__(self, admin_url: str, url: str, procs: Sequence[tuple[Any, Path]]) -> None:
        from urllib.parse import urlsplit

        self.admin_url = admin_url
        self.database = urlsplit(url).path.lstrip("/")
        self.procs = list(procs)
        self._own: Tally | None = None
        self._uninstall: Callable[[], None] | None = None
        self._start: list[dict[str, Any]] = []
        self._end: list[dict[str, Any]] = []
        self._xacts0: tuple[int, int] = (0, 0)
        self.ended = False

    async def begin(self, settle_s: float = IDLE_REPORT_S) -> None:
        await asyncio.sleep(settle_s)
        self._own = Tally(self.database)
        self._uninstall = install(self._own)
        self._xacts0 = await server_xacts(self.admin_url, self.database)
        self._start = [await snapshot(proc.pid, out) for proc, out in self.procs]

    def close(self) -> None:
        """Remove the bench process's hook (idempotent; ``after_exit`` does it)."""
        if self._uninstall is not None:
            self._uninstall()
            self._uninstall = None

    async def end(self) -> None:
        """At the end of the measured work (the drain is complete)."""
        self._end = [await snapshot(proc.pid, out) for proc, out in self.procs]
        self.ended = True

    async def finish(self, n: int) -> dict[str, Any] | None:
        """Once the consumer processes have been stopped, whatever happened: the window's counts if it ended
        (``after_exit``), and the bench process's hook removed either way."""
        try:
            return await self.after_exit(n) if self.ended else None
        finally:
            self.close()

    async def after_exit(self, n: int) -> dict[str, Any]:
        """Once the consumer processes have been stopped: the window's counts per touch (``n`` touches)."""
        assert self._own is not None
        await wait_backends_gone(self.admin_url, self.database)
        await asyncio.sleep(0)  # the last query-logger callbacks of the bench's own connections
        self.close()
        commits1, rollbacks1 = await server_xacts(self.admin_url, self.database)
        finals = [read(out) for _, out in self.procs]
        if not all(f.get("final") for f in finals):  # killed, not stopped: what it did after the window is unknown
            return {"error": f"no final counts in {[str(out) for _, out in self.procs]}"}
        window = combine(self._end + self._start, [1] * len(self._end) + [-1] * len(self._start))
        tail = combine(finals + self._end, [1] * len(finals) + [-1] * len(self._end))
        own = self._own.snapshot()["transactions"]
        # A new session commits one transaction of its own (its start-up): the bench's connections and any the
        # consumer opened after the window count as such.
        commits = (commits1 - self._xacts0[0] - own["commit"] - own["connections"] - tail["transactions"]["commit"]
                   - tail["transactions"]["connections"])
        rollbacks = rollbacks1 - self._xacts0[1] - own["rollback"] - tail["transactions"]["rollback"]
        return {
            "statements_per_touch": round(window["statements"] / n, 3),
            "commits_per_touch": round(commits / n, 3),
            "rollbacks_per_touch": round(rollbacks / n, 4),
            "client_commits_per_touch": round((window["transactions"]["commit"]
                                               + window["transactions"]["connections"]) / n, 3),
            "top": top_queries(window["by_query"], n),
            "raw": {"statements": window["statements"], "server_commits": commits, "server_rollbacks": rollbacks,
                    "client_transactions": window["transactions"], "bench_own_transactions": own,
                    "after_window_transactions": tail["transactions"],
                    "server_delta": [commits1 - self._xacts0[0], rollbacks1 - self._xacts0[1]],
                    "by_query": {k: {"calls": v["calls"], "seconds": round(v["seconds"], 6)}
                                 for k, v in sorted(window["by_query"].items(), key=lambda kv: -kv[1]["seconds"])}},
        }


if __name__ == "__main__":
    main()
