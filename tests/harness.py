"""Running the real daemon in tests: in-process (a task) against the embedded PostgreSQL and the sandbox
providers on loopback, plus a way to await a database condition without sleeping (LISTEN wakes the re-check)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg

from listener.engine.daemon import Daemon
from listener.providers.sandbox import SandboxProviders
from listener.settings import Settings, load_settings
from listener.store.database import connect
from tests import factories

if TYPE_CHECKING:
    from tests.pg import TestServer

# SPEC §19: a public URL needs REVENUE_ASI_UNSUBSCRIBE_SECRET. The harness draws one per test process, shared by the
# daemon (which signs the links) and the web application (which verifies them) of a test.
UNSUBSCRIBE_SECRET = "test-unsubscribe-" + secrets.token_urlsafe(24)


def with_unsubscribe_secret(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the harness's unsubscribe secret when they name a public URL and no secret of their own."""
    if values.get("public_url") and "unsubscribe_secret" not in values:
        return {**values, "unsubscribe_secret": UNSUBSCRIBE_SECRET}
    return values


def daemon_settings(fake: SandboxProviders | None, **overrides: Any) -> Settings:
    # quiet hours off: these tests are not about the clock and must pass at any hour (tests/test_sendrules*.py
    # turn them on with an explicit zone chosen at run time)
    base: dict[str, Any] = {"sweep_interval_s": 0.5, "lease_s": 5, "provider_timeout_s": 2,
                            "shutdown_grace_s": 5, "quiet_hours": "off"}
    if fake is not None:
        base.update(fake.settings_overrides())
    base.update(overrides)
    return load_settings(**with_unsubscribe_secret(base))


@contextlib.asynccontextmanager
async def running_daemon(url: str, settings: Settings, **kwargs: Any) -> AsyncIterator[Daemon]:
    daemon = Daemon(settings, url, **kwargs)
    task = asyncio.create_task(daemon.run())
    ready = asyncio.create_task(daemon.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises the start-up error
    assert ready in done, "daemon did not become ready"
    try:
        yield daemon
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, timeout=30)


async def wait_until(url: str, query: str, *args: Any, timeout: float = 20.0) -> Any:
    """Re-run `query` whenever touch_runs or core_memory_events notify (and every 0.25 s as a backstop, since
    some changes notify nothing) until it returns a truthy first value; returns it."""
    conn: asyncpg.Connection = await connect(url)
    wake = asyncio.Event()

    def on_notify(*_: Any) -> None:
        wake.set()

    try:
        await conn.add_listener("touch_runs", on_notify)
        await conn.add_listener("core_memory_events", on_notify)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            wake.clear()
            value = await conn.fetchval(query, *args)
            if value:
                return value
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"condition not reached within {timeout}s: {query} {args}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=min(0.25, remaining))
    finally:
        await conn.close()


async def wait_terminal(url: str, touch_id: Any, timeout: float = 20.0) -> asyncpg.Record:
    await wait_until(url, "select status in ('sent','failed','canceled') from touch_runs where id = $1", touch_id,
                     timeout=timeout)
    conn = await connect(url)
    try:
        return await conn.fetchrow("select * from touch_runs where id = $1", touch_id)
    finally:
        await conn.close()


async def events_of(conn: asyncpg.Connection, touch_id: Any, event_type: str | None = None) -> list[asyncpg.Record]:
    return await conn.fetch(
        "select * from core_memory_events where payload->>'touch_run_id' = $1::text"
        " and ($2::text is null or event_type = $2) order by created_at", str(touch_id), event_type)


@dataclass
class LoopDatabase:
    """A database of its own, with one account, on an event loop of its own: for synchronous tests that drive the
    loop themselves (hypothesis runs examples without pytest-asyncio in the way)."""

    loop: asyncio.AbstractEventLoop
    conn: asyncpg.Connection
    account_id: UUID

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)


@contextlib.contextmanager
def loop_database(template: TestServer) -> Iterator[LoopDatabase]:
    loop = asyncio.new_event_loop()
    url = loop.run_until_complete(template.fresh_database())
    conn = loop.run_until_complete(connect(url))
    try:
        account_id = loop.run_until_complete(factories.account(conn, providers=False))
        yield LoopDatabase(loop, conn, account_id)
    finally:
        loop.run_until_complete(conn.close())
        loop.run_until_complete(template.drop_database(url))
        loop.close()
