"""One loop for every background duty: run a step, wait until it wants to run again (or a wake-up, or stop), and
outlive any one failure with a growing backoff — an always-on daemon's loops never exit on an error."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from listener.store.database import DB_ERRORS

log = logging.getLogger("listener.services")

BACKOFF_INITIAL_S = 0.5
BACKOFF_CAP_S = 5.0
MAX_WAIT_S = 3600.0

Step = Callable[[], Awaitable[float | None]]


async def wait_any(events: tuple[asyncio.Event, ...], timeout: float) -> None:
    """Until one of `events` is set or `timeout` seconds have passed."""
    if any(e.is_set() for e in events) or timeout <= 0:
        return
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=min(timeout, MAX_WAIT_S), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def run_service(name: str, step: Step, *, stop: asyncio.Event, wake: asyncio.Event | None = None,
                      idle_s: float, run_first: bool = True) -> None:
    """Run `step` until `stop`: it returns the seconds until it wants to run again (None → `idle_s`); `wake`
    runs it sooner. Errors are logged and retried with backoff (0.5 s doubling to 5 s), never raised."""
    backoff = BACKOFF_INITIAL_S
    if not run_first:
        await wait_any((stop,), idle_s)
    while not stop.is_set():
        if wake is not None:
            wake.clear()
        try:
            delay = await step()
            backoff = BACKOFF_INITIAL_S
        except DB_ERRORS as exc:
            log.warning("%s: database error (%s: %s); retrying in %.1fs", name, type(exc).__name__,
                        str(exc)[:200], backoff)
            delay, backoff = backoff, min(backoff * 2, BACKOFF_CAP_S)
        except Exception:
            log.exception("%s: unexpected error; retrying in %.1fs", name, backoff)
            delay, backoff = backoff, min(backoff * 2, BACKOFF_CAP_S)
        await wait_any((stop,) if wake is None else (stop, wake), idle_s if delay is None else delay)
