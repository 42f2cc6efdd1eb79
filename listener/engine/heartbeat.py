"""Each daemon's heartbeat (SPEC §14): a row in daemon_heartbeats refreshed every `interval_s`, so the dashboard
shows "daemon alive" as a fact (its last beat, and whether its LISTEN connection is up), not a guess."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable

import asyncpg

from listener.store.queries import Q

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 5.0
BEAT_TIMEOUT_S = 5.0
LISTEN_DOWN_INTERVAL_S = 0.5


async def run_heartbeat(pool: asyncpg.Pool, worker_id: str, stop: asyncio.Event, interval_s: float = DEFAULT_INTERVAL_S,
                        *, listening: Callable[[], bool] | None = None) -> None:
    """Beat until `stop` is set, then record the stop. A failed beat is logged and retried at the next interval:
    the heartbeat never takes the daemon down with it."""
    hostname, pid = socket.gethostname(), os.getpid()
    first = True
    while not stop.is_set():
        connected = None if listening is None else listening()
        try:
            async with pool.acquire(timeout=BEAT_TIMEOUT_S) as conn:
                await conn.execute(Q.heartbeat_beat, worker_id, hostname, pid, interval_s, connected,
                                   timeout=BEAT_TIMEOUT_S)
                if first:
                    await conn.execute(Q.heartbeat_forget_old, timeout=BEAT_TIMEOUT_S)
                    first = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 — a missed beat shows on the dashboard; the daemon goes on
            log.warning("heartbeat: could not write (%s); retrying in %.1fs", type(exc).__name__, interval_s)
        try:  # while LISTEN is down (at start, or reconnecting) beat sooner, so its return shows at once
            await asyncio.wait_for(stop.wait(), timeout=interval_s if connected is not False else
                                   min(interval_s, LISTEN_DOWN_INTERVAL_S))
        except TimeoutError:
            pass
    try:
        async with pool.acquire(timeout=BEAT_TIMEOUT_S) as conn:
            await conn.execute(Q.heartbeat_stopped, worker_id, timeout=BEAT_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 — shutting down; the dashboard sees the beats stop instead
        log.info("heartbeat: could not record the stop (%s)", type(exc).__name__)
