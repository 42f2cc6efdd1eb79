"""SPEC §20 (issue 17): `revenue-asi db status|stop` manage the embedded server of REVENUE_ASI_HOME, and
`revenue-asi demo` stops the embedded server it started when it ends — not one that was running before it, not with
--keep-db. The real console script on a fresh home per test; every server a test starts is stopped by its fixture,
even when the test fails."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from listener.store.database import connect
from listener.store.embedded import ROOT_RUNS_AS, bin_path
from tests.cli_runner import SCRIPT, clean_env, cli

DEMO_TIMEOUT = 90.0


def servers_of(pgdata: Path) -> list[int]:
    """The pids of live postmasters started on `pgdata` (from the process table, not from postmaster.pid)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if (proc.info["name"] == "postgres" and proc.info["status"] != psutil.STATUS_ZOMBIE
                and "-D" in cmdline and Path(cmdline[cmdline.index("-D") + 1]) == pgdata):
            found.append(proc.pid)
    return found


def postmaster_pid(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().splitlines()[0])


def stop_for_good(pgdata: Path) -> None:
    """Whatever the test did, no server of its home survives it: pg_ctl stop (independent of the code under test),
    then SIGKILL for one that would not stop."""
    if (pgdata / "postmaster.pid").exists():
        user = ROOT_RUNS_AS if os.geteuid() == 0 else None
        subprocess.run([str(bin_path(pgdata) / "pg_ctl"), "stop", "-D", str(pgdata), "-m", "fast", "-w", "-t", "60"],
                       capture_output=True, stdin=subprocess.DEVNULL, cwd=str(pgdata), user=user, timeout=90)
    for pid in servers_of(pgdata):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = (tmp_path / "home").resolve()
    try:
        yield home
    finally:
        stop_for_good(home / "pgdata")
        assert servers_of(home / "pgdata") == []


def home_env(home: Path, **extra: str) -> dict[str, str]:
    """DATABASE_URL unset (clean_env drops it): the embedded server of `home`; plain, wide output."""
    return clean_env(REVENUE_ASI_HOME=str(home), COLUMNS="200", NO_COLOR="1", TERM="dumb", **extra)


async def test_db_status_and_stop_manage_the_embedded_server_of_the_home(home, db_url):
    pgdata = home / "pgdata"
    env = home_env(home)

    # never initialised: not running (3, as pg_ctl status), and neither command creates or starts anything
    status = await cli("db", "status", env=env)
    assert status.rc == 3, status.err
    assert "not initialised" in status.out and str(pgdata) in status.out
    doc = json.loads((await cli("db", "status", "--json", env=env)).out)
    assert doc["state"] == "not_initialised" and doc["running"] is False and doc["pid"] is None
    stop = await cli("db", "stop", env=env)
    assert stop.rc == 0, stop.err
    assert "nothing to stop" in stop.out
    assert not (pgdata / "PG_VERSION").exists() and servers_of(pgdata) == []

    # a command that needs the database starts it, and it keeps running for the next one
    url = await cli("db-url", env=env)
    assert url.rc == 0, url.err
    pid = postmaster_pid(pgdata)
    assert servers_of(pgdata) == [pid]

    status = await cli("db", "status", env=env)
    assert status.rc == 0, status.err
    assert re.search(rf"embedded PostgreSQL running · pid {pid} · PostgreSQL \d+", status.out), status.out
    assert f"data directory: {pgdata}" in status.out and f"url: {url.out.strip()}" in status.out
    assert "revenue-asi db stop" in status.out
    running = await cli("db", "status", "--json", env=env)
    assert running.rc == 0, running.err
    doc = json.loads(running.out)
    assert doc["state"] == "running" and doc["running"] is True and doc["initialised"] is True
    assert doc["pid"] == pid and doc["data_directory"] == str(pgdata) and doc["url"] == url.out.strip()
    assert doc["postgres_version"].split(".")[0] == (pgdata / "PG_VERSION").read_text().strip()
    conn = await connect(doc["url"])
    try:
        assert await conn.fetchval("show data_directory") == str(pgdata)
    finally:
        await conn.close()

    # DATABASE_URL set: an external server `revenue-asi db` does not manage — a clear refusal (2), touching neither
    for command in (("db", "status"), ("db", "status", "--json"), ("db", "stop")):
        refused = await cli(*command, env=clean_env(REVENUE_ASI_HOME=str(home), DATABASE_URL=db_url))
        assert refused.rc == 2, (command, refused.out, refused.err)
        assert refused.out == "" and "Traceback" not in refused.err
        lines = [line for line in refused.err.splitlines() if line.strip()]
        assert len(lines) == 1 and "DATABASE_URL" in lines[0] and "external" in lines[0], refused.err
        assert db_url not in refused.err
    assert servers_of(pgdata) == [pid] and postmaster_pid(pgdata) == pid
    external = await connect(db_url)
    try:
        assert await external.fetchval("select 1") == 1
    finally:
        await external.close()

    # stop: waits until it has stopped
    stop = await cli("db", "stop", env=env)
    assert stop.rc == 0, stop.err
    assert f"embedded PostgreSQL stopped (pid {pid})" in stop.out
    assert not (pgdata / "postmaster.pid").exists() and servers_of(pgdata) == []

    status = await cli("db", "status", env=env)
    assert status.rc == 3 and "not running" in status.out, (status.out, status.err)
    doc = json.loads((await cli("db", "status", "--json", env=env)).out)
    assert doc["state"] == "stopped" and doc["running"] is False and doc["initialised"] is True

    # idempotent, and still nothing started
    again = await cli("db", "stop", env=env)
    assert again.rc == 0, again.err
    assert "not running: nothing to stop" in again.out
    assert servers_of(pgdata) == []


async def test_demo_stops_the_embedded_server_it_started(home):
    pgdata = home / "pgdata"
    result = await cli("demo", "--seconds", "2", "--leads", "2", "--json", env=home_env(home), timeout=DEMO_TIMEOUT)
    assert result.rc == 0, result.err
    summary = json.loads(result.out)
    assert summary["embedded_server"] == "stopped" and summary["leads"] == 2
    assert "embedded PostgreSQL stopped (the demo started it" in result.err  # the view (--json: on stderr)
    assert (pgdata / "PG_VERSION").exists()  # it did run on this home …
    assert not (pgdata / "postmaster.pid").exists() and servers_of(pgdata) == []  # … and nothing of it is left
    status = await cli("db", "status", env=home_env(home))
    assert status.rc == 3 and "not running" in status.out, (status.out, status.err)


@pytest.mark.parametrize(("sig", "rc", "said"), [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")],
                         ids=["sigterm", "ctrl-c"])
async def test_an_interrupted_demo_stops_the_embedded_server_it_started(home, sig, rc, said):
    pgdata = home / "pgdata"
    process = await asyncio.create_subprocess_exec(
        str(SCRIPT), "demo", "--seconds", "60", env=home_env(home), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    seen: list[str] = []
    try:
        assert process.stdout is not None
        while not any("enrolled in the campaign" in line for line in seen):  # the daemon runs: mid-demo
            line = (await asyncio.wait_for(process.stdout.readline(), DEMO_TIMEOUT)).decode()
            assert line, "".join(seen)
            seen.append(line)
        assert servers_of(pgdata) == [postmaster_pid(pgdata)]
        process.send_signal(sig)
        rest, _ = await asyncio.wait_for(process.communicate(), DEMO_TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    out = "".join(seen) + rest.decode()
    assert process.returncode == rc, out
    assert f"demo interrupted ({said})" in out and "embedded PostgreSQL stopped (the demo started it" in out
    assert "Traceback" not in out
    assert not (pgdata / "postmaster.pid").exists() and servers_of(pgdata) == []


async def test_demo_keep_db_leaves_it_running_and_a_server_running_before_is_left_running(home):
    pgdata = home / "pgdata"
    env = home_env(home)
    kept = await cli("demo", "--seconds", "2", "--leads", "1", "--keep-db", env=env, timeout=DEMO_TIMEOUT)
    assert kept.rc == 0, kept.err
    assert "embedded PostgreSQL left running (--keep-db)" in kept.out and "revenue-asi db stop" in kept.out
    pid = postmaster_pid(pgdata)
    assert servers_of(pgdata) == [pid]

    # now it runs before the demo starts: the demo uses it and leaves it running, saying so
    again = await cli("demo", "--seconds", "2", "--leads", "1", "--json", env=env, timeout=DEMO_TIMEOUT)
    assert again.rc == 0, again.err
    assert json.loads(again.out)["embedded_server"] == "already_running"
    assert "embedded PostgreSQL left running: it was running before the demo" in again.err
    assert "revenue-asi db stop" in again.err
    assert servers_of(pgdata) == [pid] and postmaster_pid(pgdata) == pid
    status = await cli("db", "status", env=env)
    assert status.rc == 0 and f"pid {pid}" in status.out, (status.out, status.err)
    # the fixture stops it
