"""The one LISTEN connection (SPEC §1): wakes the loops on NOTIFY, reconnects with backoff on its own, and wakes
everything after each (re)connect so whatever was missed meanwhile is caught up."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

import asyncpg

from listener.engine import metrics
from listener.store.database import DB_ERRORS

log = logging.getLogger(__name__)

CHANNELS = ("touch_runs", "core_memory_events", "leads", "appointments")  # leads, appointments: SPEC §15
HEALTH_CHECK_S = 5.0
MAX_BACKOFF_S = 5.0


class Notifier:
    def __init__(self, url: str, on_wake: Callable[[str], None]) -> None:
        self.url = url
        self.on_wake = on_wake
        self.connected = asyncio.Event()
        self.reconnects = 0

    def _notified(self, _conn: object, _pid: int, channel: str, _payload: str) -> None:
        self.on_wake(channel)

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.1
        first = True
        while not stop.is_set():
            conn: asyncpg.Connection | None = None
            try:
                listening: asyncpg.Connection = await asyncio.wait_for(asyncpg.connect(self.url), timeout=10)
                conn = listening
                lost = asyncio.Event()
                listening.add_termination_listener(lambda _c, event=lost: event.set())  # this connection's own event
                for channel in CHANNELS:
                    await listening.add_listener(channel, self._notified)
                if not first:
                    self.reconnects += 1
                    metrics.RECONNECTS.inc()
                    log.info("LISTEN connection re-established; catching up")
                first = False
                backoff = 0.1
                self.connected.set()
                for channel in CHANNELS:  # catch up on whatever happened while we were not listening
                    self.on_wake(channel)
                while not stop.is_set() and not lost.is_set():
                    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(lost.wait())]
                    done, pending = await asyncio.wait(waiters, timeout=HEALTH_CHECK_S,
                                                       return_when=asyncio.FIRST_COMPLETED)
                    for waiter in pending:
                        waiter.cancel()
                    if not done:
                        await listening.execute("select 1", timeout=HEALTH_CHECK_S)
                if lost.is_set() and not stop.is_set():
                    log.warning("LISTEN connection lost; reconnecting")
            except DB_ERRORS as exc:
                log.warning("LISTEN connection failed (%s); retrying in %.1fs", type(exc).__name__, backoff)
            except Exception:  # the one LISTEN connection must come back whatever broke it
                log.exception("LISTEN connection failed unexpectedly; retrying in %.1fs", backoff)
            finally:
                self.connected.clear()
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            if stop.is_set():
                break
            try:
                await asyncio.wait_for(stop.wait(), timeout=backoff * (0.5 + random.random()))
            except TimeoutError:
                pass
            backoff = min(backoff * 2, MAX_BACKOFF_S)
