"""How the web application reads the database: each request in its own read-only transaction with a short
statement_timeout, so a slow page is cancelled by PostgreSQL instead of holding anything the daemon needs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from aiohttp import web

from listener.store.queries import Q
from listener.web.app import POOL

READ_TIMEOUT_MS = 3_000
WRITE_TIMEOUT_MS = 5_000
ACQUIRE_TIMEOUT_S = 5.0


@asynccontextmanager
async def read_only(app: web.Application, timeout_ms: int = READ_TIMEOUT_MS) -> AsyncIterator[asyncpg.Connection]:
    async with app[POOL].acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
        async with conn.transaction(readonly=True):
            await conn.execute(Q.dash_session_limits, str(timeout_ms))
            yield conn


@asynccontextmanager
async def writable(app: web.Application, timeout_ms: int = WRITE_TIMEOUT_MS) -> AsyncIterator[asyncpg.Connection]:
    """For the one write the API does (lead.enroll): still time-limited."""
    async with app[POOL].acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
        async with conn.transaction():
            await conn.execute(Q.dash_session_limits, str(timeout_ms))
            yield conn
