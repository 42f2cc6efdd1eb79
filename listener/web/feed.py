"""The live event feed (SPEC §14: "the latest events as they happen"). The web process opens its own LISTEN
connection (separate from the daemon's; reconnects with backoff on its own). While at least one browser or script
is subscribed, a NOTIFY — or, as a backstop for events that notify nothing (touch_canceled, fallback_decision,
touch_deferred), a one-second tick — makes one query for the newest events, shared by every subscriber, at most
every MIN_GAP_S. With nobody subscribed it queries nothing, so an idle dashboard costs the database nothing.

Served as server-sent events at GET /api/feed (each `data:` line one JSON event, safe fields only)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections import deque
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from aiohttp import web

from listener.store.queries import Q
from listener.web.app import DATABASE_URL
from listener.web.db import read_only
from listener.web.render import jsonable

log = logging.getLogger(__name__)

CHANNELS = ("touch_runs", "core_memory_events")
POLL_S = 1.0
MIN_GAP_S = 0.25
OVERLAP = timedelta(seconds=2)  # events committed a little after later ones still show (ids de-duplicate)
BATCH = 200
BACKLOG = 25
QUEUE_SIZE = 500
KEEPALIVE_S = 15.0
MAX_BACKOFF_S = 5.0
APPLICATION_NAME = "revenue-asi web: live feed"  # how its LISTEN connection shows in pg_stat_activity


class LiveFeed:
    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self.connected = False
        self.wake = asyncio.Event()
        self.stop = asyncio.Event()
        self.cursor: datetime | None = None
        self.seen: deque[str] = deque(maxlen=4 * BATCH)
        self.seen_set: set[str] = set()
        self.queries = 0

    # --- subscribers ---------------------------------------------------------------------------------------
    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self.subscribers.add(queue)
        self.wake.set()
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        self.subscribers.discard(queue)

    def _remember(self, event_id: str) -> bool:
        if event_id in self.seen_set:
            return False
        if len(self.seen) == self.seen.maxlen:
            self.seen_set.discard(self.seen[0])
        self.seen.append(event_id)
        self.seen_set.add(event_id)
        return True

    def _publish(self, events: list[dict[str, Any]]) -> None:
        for queue in list(self.subscribers):
            for event in events:
                if queue.full():  # a slow reader loses the oldest lines, never stalls the feed
                    with contextlib.suppress(asyncio.QueueEmpty):
                        queue.get_nowait()
                queue.put_nowait(event)

    async def backlog(self, limit: int = BACKLOG) -> list[dict[str, Any]]:
        """The latest events for a new subscriber (call after `subscribe`). The first subscriber also starts the
        feed's cursor here, so whatever commits after this read is published and nothing before it twice."""
        async with read_only(self.app) as conn:
            rows = await conn.fetch(Q.dash_recent_events, None, BATCH if self.cursor is None else limit)
            if self.cursor is None:
                for row in rows:
                    self._remember(str(row["id"]))
                self.cursor = rows[0]["created_at"] if rows else await conn.fetchval(Q.dash_now)
        return [jsonable(dict(r)) for r in reversed(rows[:limit])]

    # --- the loops -----------------------------------------------------------------------------------------
    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._listen())
            group.create_task(self._pump())

    def close(self) -> None:
        self.stop.set()
        self.wake.set()
        for queue in list(self.subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    def _notified(self, *_: object) -> None:
        self.wake.set()

    async def _listen(self) -> None:
        backoff = 0.1
        url = self.app[DATABASE_URL]
        while not self.stop.is_set():
            conn: asyncpg.Connection | None = None
            try:
                listening: asyncpg.Connection = await asyncio.wait_for(
                    asyncpg.connect(url, server_settings={"application_name": APPLICATION_NAME}), timeout=10)
                conn = listening
                lost = asyncio.Event()
                listening.add_termination_listener(lambda _c, event=lost: event.set())  # this connection's own event
                for channel in CHANNELS:
                    await listening.add_listener(channel, self._notified)
                self.connected, backoff = True, 0.1
                self.wake.set()  # catch up on whatever happened while not listening
                while not self.stop.is_set() and not lost.is_set():
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), timeout=5.0)
                    if not self.stop.is_set() and not lost.is_set():
                        await listening.execute(Q.dash_ping, timeout=5.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 — the feed's LISTEN comes back whatever broke it
                log.warning("live feed: LISTEN connection failed (%s); retrying in %.1fs", type(exc).__name__,
                            backoff)
            finally:
                self.connected = False
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            if self.stop.is_set():
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=POLL_S)
            self.wake.clear()
            if self.stop.is_set():
                return
            if not self.subscribers:
                self.cursor = None
                continue
            started = loop.time()
            try:
                await self._poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 — one failed poll; the next tick tries again
                log.warning("live feed: query failed (%s)", type(exc).__name__)
            await asyncio.sleep(max(0.0, MIN_GAP_S - (loop.time() - started)))  # rate limit, not synchronisation

    async def _poll(self) -> None:
        if self.cursor is None:  # no subscriber has read its backlog yet: that read starts the cursor
            return
        self.queries += 1
        async with read_only(self.app) as conn:
            rows = await conn.fetch(Q.dash_recent_events, self.cursor - OVERLAP, BATCH)
        fresh = [jsonable(dict(r)) for r in reversed(rows) if self._remember(str(r["id"]))]
        if rows:
            self.cursor = max(self.cursor, rows[0]["created_at"])
        if fresh:
            self._publish(fresh)


FEED = web.AppKey("live_feed", LiveFeed)


async def feed_ctx(app: web.Application) -> AsyncIterator[None]:
    feed = LiveFeed(app)
    app[FEED] = feed
    task = asyncio.create_task(feed.run())
    try:
        yield
    finally:
        feed.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, timeout=10)


async def on_shutdown(app: web.Application) -> None:
    """Let open event streams end now, not at the server's shutdown timeout."""
    if FEED in app:
        app[FEED].close()


async def stream(request: web.Request) -> web.StreamResponse:
    """GET /api/feed: server-sent events. First the latest BACKLOG events, then each new one as it happens."""
    feed = request.app[FEED]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    queue = feed.subscribe()
    try:
        await response.write(b"retry: 2000\n\n")
        for past in await feed.backlog():
            await response.write(_sse(past, "backlog"))
        await response.write(b"event: ready\ndata: {}\n\n")
        while not feed.stop.is_set():
            try:
                event: dict[str, Any] | None = await asyncio.wait_for(queue.get(), timeout=KEEPALIVE_S)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            if event is None:
                break
            await response.write(_sse(event, "event"))
    except (ConnectionResetError, ConnectionError):
        pass
    finally:
        feed.unsubscribe(queue)
    return response


def _sse(event: dict[str, Any], kind: str) -> bytes:
    return f"event: {kind}\nid: {event['id']}\ndata: {json.dumps(event, default=str)}\n\n".encode()


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(feed_ctx)
    app.on_shutdown.append(on_shutdown)
    app.router.add_get("/api/feed", stream)
