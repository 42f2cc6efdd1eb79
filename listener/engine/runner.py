"""Runs the daemon in the foreground with signal handling (SIGTERM / SIGINT → graceful stop)."""

from __future__ import annotations

import asyncio
import logging
import signal

from listener.engine.daemon import Daemon
from listener.settings import Settings

log = logging.getLogger(__name__)


async def run_daemon(settings: Settings, url: str) -> None:
    from listener.engine.jobs import periodic_jobs

    daemon = Daemon(settings, url, periodic_jobs=periodic_jobs(settings))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stopper(daemon, sig))
    await daemon.run()


def _stopper(daemon: Daemon, sig: signal.Signals):  # type: ignore[no-untyped-def]
    def stop() -> None:
        log.info("%s received: stop claiming, finish in-flight sends and write their outcomes", sig.name)
        daemon.request_stop()

    return stop
