"""chaos: bounded fault scenarios on loopback, each on a fresh database, counting what happened to every touch.

Scenarios (`python -m bench chaos`):
* ``sigkill``: one daemon under steady load, SIGKILLed N times (10 by default), restarted at once each time;
* ``pg_restart``: two daemons under steady load while PostgreSQL is restarted (``pg_ctl restart -m fast``: every
  connection is cut); the daemons are not restarted and must reconnect by themselves;
* ``race``: three daemons racing for the same steady load;
* ``faults``: two daemons, the fake provider failing 30 % of requests (a third each: 500, 429 with Retry-After, a
  hang that never answers), provider timeout 1 s;
* ``burst``: N touches (50,000 by default) inserted in one transaction, two daemons;
* ``fault_mix``: the slow-provider case of SPEC §11, at the shipped timeouts: one daemon with
  REVENUE_ASI_CONCURRENCY=16, 2,000 touches in one transaction, 30 % of requests misbehaving once (a third each:
  500, 429 with Retry-After: 1, a 2 s hang before success). The drain must finish near its slot-time bound (the
  slot-seconds the faults cost, over 16 slots); more than twice the bound + 10 s fails the run.

Daemon settings: REVENUE_ASI_LEASE_S=3 and REVENUE_ASI_SWEEP_INTERVAL_S=0.5 (so a dead daemon's leases are settled
quickly), REVENUE_ASI_PROVIDER_TIMEOUT_S=1. The fake answers after 10 ms, so kills land mid-send.

Counts per scenario: ``offered`` (touches in the database: the load generator's inserts that committed), ``sent``,
``failed`` (by reason = error_code), ``canceled``, ``lost`` (not terminal once the load stopped and the leases and
sweep had time to settle), ``sent_twice`` (touch ids that reached the fake more than once in a way that may have
been delivered: a 2xx answer, or no answer at all; a 500 / 429 refusal followed by a retry is not a second
delivery), and ``sent_not_received`` (status sent but the fake never saw it; must be 0 too).
By design a touch whose daemon died mid-send (or whose send transaction died with the database) is failed as
``outcome_unknown`` by the sweep and never re-sent: that is a failure with a reason, not a lost touch.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from bench.drain import start_daemons
from bench.env import DaemonProcess, Env
from bench.workload import Workload, duplicates, insert_one, outcomes, touch_id_of, wait_drained
from listener.store.database import DB_ERRORS, connect

CHAOS_SETTINGS = {"REVENUE_ASI_LEASE_S": 3, "REVENUE_ASI_SWEEP_INTERVAL_S": 0.5,
                  "REVENUE_ASI_PROVIDER_TIMEOUT_S": 1, "REVENUE_ASI_SHUTDOWN_GRACE_S": 2}
FAKE_DELAY_MS = 10.0
GENERATORS = 4
SETTLE_S = 60.0


class Load:
    """Open-loop inserts at ``rate`` until stopped (or ``max_s``), over connections that reconnect on their own:
    an insert that fails (database restarting) is simply not offered."""

    def __init__(self, workload: Workload, rate: float, max_s: float) -> None:
        self.workload = workload
        self.rate = rate
        self.max_s = max_s
        self.stop = asyncio.Event()
        self.errors = 0
        self.inserted = 0
        self._next = 0
        self._leads = workload.take_leads(int(rate * max_s) + 1)

    async def _worker(self, start: float) -> None:
        assert self.workload.account_id is not None
        conn: asyncpg.Connection | None = None
        while not self.stop.is_set():
            i = self._next
            if i >= len(self._leads):
                return
            self._next += 1
            delay = start + i / self.rate - time.perf_counter()
            if delay > 0:
                try:
                    await asyncio.wait_for(self.stop.wait(), delay)
                    return
                except TimeoutError:
                    pass
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(self.workload.url, timeout=5)
                await insert_one(conn, self.workload.account_id, self._leads[i], uuid.uuid4())
                self.inserted += 1
            except DB_ERRORS:
                self.errors += 1
                if conn is not None:
                    conn.terminate()
                conn = None
                await asyncio.sleep(0.05)
        if conn is not None:
            await conn.close()

    async def run(self) -> None:
        start = time.perf_counter()
        await asyncio.gather(*(self._worker(start) for _ in range(GENERATORS)))


async def _tally(env: Env, url: str, started: float, settle_s: float) -> dict[str, Any]:
    done = await wait_drained(url, timeout=settle_s)
    requests = await env.sandbox.requests()
    conn = await connect(url)
    try:
        counts = await outcomes(conn)
        sent_ids = {str(r["id"]) for r in await conn.fetch("select id from touch_runs where status = 'sent'")}
    finally:
        await conn.close()
    received = {t for r in requests if (t := touch_id_of(r)) is not None}
    by_status = counts["by_status"]
    return {
        "offered": sum(by_status.values()),
        "sent": by_status.get("sent", 0),
        "failed": by_status.get("failed", 0),
        "failed_by_reason": counts["failed_by_reason"],
        "canceled": by_status.get("canceled", 0),
        "lost": sum(by_status.get(s, 0) for s in ("queued", "scheduled", "processing")),
        "sent_twice": len(duplicates(requests)),
        "sent_not_received": len(sent_ids - received),
        "requests": len(requests),
        "reactions_settled": done["reacted_at"] is not None,
        "elapsed_s": round(time.time() - started, 1),
    }


def _last_error(log: str) -> str:
    lines = [line.strip(" |") for line in log.splitlines() if "Error" in line or "Exception" in line]
    return lines[-1][:300] if lines else "exited"


async def _scenario(env: Env, name: str, *, daemons: int, leads: int,
                    body: Callable[[Workload, list[DaemonProcess]], Awaitable[dict[str, Any]]],
                    settings: dict[str, Any] | None = None, fake: dict[str, Any] | None = None) -> dict[str, Any]:
    assert env.pg is not None
    url = await env.pg.fresh_database(f"chaos_{name}")
    workload = await Workload(url).setup(leads)
    await env.sandbox.reset(delay_ms=FAKE_DELAY_MS)
    if fake:
        await env.sandbox.configure(**fake)
    procs = await start_daemons(env, url, daemons, {**CHAOS_SETTINGS, **(settings or {})},
                                names=[f"{name}{i + 1}" for i in range(daemons)])
    started = time.time()
    try:
        notes = await body(workload, procs)
        if fake:  # the load is over: stop injecting, so the tally is about what happened under faults
            await env.sandbox.configure(fault_rate=0.0)
        result = await _tally(env, url, started, SETTLE_S)
        died = [d for d in env.daemons if not d.alive()]
        result["daemons_died"] = len(died)
        result["daemon_errors"] = sorted({_last_error(d.log_text()) for d in died})
    finally:
        await env.stop_daemons()
        await env.pg.drop_database(url)
    return {"scenario": name, **result, **notes}


async def sigkill(env: Env, kills: int, rate: float) -> dict[str, Any]:
    rng = random.Random(10)
    max_s = kills * 3.0 + 10

    async def body(workload: Workload, procs: list[DaemonProcess]) -> dict[str, Any]:
        load = Load(workload, rate, max_s)
        loading = asyncio.create_task(load.run())
        current = procs[0]
        done = 0
        for k in range(kills):
            await asyncio.sleep(rng.uniform(0.4, 1.2))
            current.kill()
            env.daemons.remove(current)
            done += 1
            current = env.start_daemon(workload.url, CHAOS_SETTINGS, name=f"sigkill_restart{k + 1}")
            await current.wait_started()
        await asyncio.sleep(1.0)
        load.stop.set()
        await loading
        return {"kills": done, "insert_errors": load.errors}

    return await _scenario(env, "sigkill", daemons=1, leads=int(rate * max_s) + 10, body=body)


async def pg_restart(env: Env, rate: float, seconds: float) -> dict[str, Any]:
    async def body(workload: Workload, procs: list[DaemonProcess]) -> dict[str, Any]:
        assert env.pg is not None
        load = Load(workload, rate, seconds + 30)
        loading = asyncio.create_task(load.run())
        await asyncio.sleep(seconds / 3)
        restart_s = await asyncio.to_thread(env.pg.restart)
        await asyncio.sleep(seconds * 2 / 3)
        load.stop.set()
        await loading
        alive = sum(p.alive() for p in procs)
        reconnected = sum("LISTEN connection re-established" in p.log_text() for p in procs)
        return {"restart_s": round(restart_s, 2), "insert_errors": load.errors, "daemons_alive": alive,
                "daemons_reconnected": reconnected}

    return await _scenario(env, "pg_restart", daemons=2, leads=int(rate * (seconds + 30)) + 10, body=body)


async def race(env: Env, rate: float, seconds: float) -> dict[str, Any]:
    async def body(workload: Workload, procs: list[DaemonProcess]) -> dict[str, Any]:
        load = Load(workload, rate, seconds)
        await load.run()
        return {"daemons": len(procs)}

    return await _scenario(env, "race", daemons=3, leads=int(rate * seconds) + 10, body=body)


# The fake's faults are random per request, whatever the rate: SPEC §16's pushback (a 429 halves the sender's rate
# for 60 s) would answer them by slowing the one sender to a crawl — right against a provider, whose 429s stop when
# we slow down, but not what these scenarios measure (SPEC §11: a drain at the rate its slots allow).
PER_REQUEST_FAULTS = {"REVENUE_ASI_PROVIDER_PUSHBACK": "false"}


async def faults(env: Env, rate: float, seconds: float, fault_rate: float = 0.3) -> dict[str, Any]:
    async def body(workload: Workload, procs: list[DaemonProcess]) -> dict[str, Any]:
        load = Load(workload, rate, seconds)
        await load.run()
        await wait_drained(workload.url, timeout=30)  # retries finish while the faults are still on
        return {"fault_rate": fault_rate, "faults": "500 / 429 Retry-After 0.2s / hang, one third each"}

    return await _scenario(env, "faults", daemons=2, leads=int(rate * seconds) + 10, body=body,
                           settings=PER_REQUEST_FAULTS,
                           fake={"fault_rate": fault_rate, "fault_retry_after_s": 0.2, "fault_hang_forever": True,
                                 "seed": 30})


async def one_transaction_burst(env: Env, n: int) -> dict[str, Any]:
    async def body(workload: Workload, procs: list[DaemonProcess]) -> dict[str, Any]:
        _, insert_s, committed = await workload.burst(n)
        done = await wait_drained(workload.url, timeout=max(120.0, n / 200))
        drained = (done["reacted_at"] - committed) if done["reacted_at"] else None
        return {"burst": n, "insert_s": round(insert_s, 2),
                "drain_s": round(drained, 1) if drained else None}

    return await _scenario(env, "burst", daemons=2, leads=n + 10, body=body)


FAULT_MIX_CONCURRENCY = 16
FAULT_MIX_HANG_S = 2.0
FAULT_MIX_RETRY_AFTER_S = 1.0
FAULT_MIX_500_BACKOFF_S = 0.075  # the drivers' first backoff, 0.05-0.1 s (listener/providers/base.py)


def slot_time_bound(answers: dict[str, int], touches: int, concurrency: int) -> float:
    """Seconds a drain needs at least when every slot is busy all the time: each fault's own cost, over the slots
    (the fake's 10 ms service time for every request is the rest)."""
    slot_s = (answers.get(f"slow:{FAULT_MIX_HANG_S:g}", 0) * FAULT_MIX_HANG_S
              + answers.get(f"rate_limit:{FAULT_MIX_RETRY_AFTER_S:g}", 0) * FAULT_MIX_RETRY_AFTER_S
              + answers.get("server_error:500", 0) * FAULT_MIX_500_BACKOFF_S
              + sum(answers.values()) * FAKE_DELAY_MS / 1000)
    return slot_s / concurrency


async def fault_mix(env: Env, n: int = 2000) -> dict[str, Any]:
    async def body(workload: Workload, procs: list[DaemonProcess]) -> dict[str, Any]:
        _, _, committed = await workload.burst(n)
        done = await wait_drained(workload.url, timeout=300)
        drained = (done["terminal_at"] - committed) if done["terminal_at"] else None
        answers: dict[str, int] = {}
        for request in await env.sandbox.requests():
            answers[str(request.get("answer"))] = answers.get(str(request.get("answer")), 0) + 1
        bound = slot_time_bound(answers, n, FAULT_MIX_CONCURRENCY)
        limit = 2 * bound + 10
        return {"touches": n, "concurrency": FAULT_MIX_CONCURRENCY, "answers": answers,
                "drain_s": round(drained, 1) if drained else None, "slot_time_bound_s": round(bound, 1),
                "drain_over_bound": round(drained / bound, 2) if drained and bound else None,
                "time_limit_s": round(limit, 1), "within_limit": drained is not None and drained <= limit,
                "faults": "30 %: 500 / 429 Retry-After 1 s / 2 s hang then 200, one third each"}

    return await _scenario(env, "fault_mix", daemons=1, leads=n + 10, body=body,
                           settings={"REVENUE_ASI_CONCURRENCY": FAULT_MIX_CONCURRENCY, "REVENUE_ASI_LEASE_S": 120,
                                     "REVENUE_ASI_PROVIDER_TIMEOUT_S": 15, **PER_REQUEST_FAULTS},
                           fake={"fault_rate": 0.3, "fault_retry_after_s": FAULT_MIX_RETRY_AFTER_S,
                                 "fault_hang_s": FAULT_MIX_HANG_S, "seed": 9})


SCENARIOS = ("sigkill", "pg_restart", "race", "faults", "burst", "fault_mix")


async def run(env: Env, kills: int, rate: float, burst: int, scenario_s: float,
              only: tuple[str, ...] | None = None) -> dict[str, Any]:
    makers: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
        "sigkill": lambda: sigkill(env, kills, rate),
        "pg_restart": lambda: pg_restart(env, rate, scenario_s),
        "race": lambda: race(env, rate * 1.5, scenario_s),
        "faults": lambda: faults(env, rate, scenario_s),
        "burst": lambda: one_transaction_burst(env, burst),
        "fault_mix": lambda: fault_mix(env, 2000 if burst >= 10_000 else 300),
    }
    scenarios = []
    for name in only or SCENARIOS:
        started = time.perf_counter()
        result = await makers[name]()
        result["wall_s"] = round(time.perf_counter() - started, 1)
        scenarios.append(result)
    ok = all(s["lost"] == 0 and s["sent_twice"] == 0 and s["sent_not_received"] == 0
             and s.get("within_limit", True) for s in scenarios)
    return {"settings": {**CHAOS_SETTINGS, "fake_delay_ms": FAKE_DELAY_MS, "load_rate": rate}, "ok": ok,
            "daemons_died": sum(s["daemons_died"] for s in scenarios), "scenarios": scenarios}
