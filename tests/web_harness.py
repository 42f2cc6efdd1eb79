"""The web application in tests: `create_app` served by aiohttp's TestServer on loopback (real HTTP)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from listener.settings import load_settings
from listener.web.app import create_app
from tests.harness import with_unsubscribe_secret


@contextlib.asynccontextmanager
async def web_client(url: str, *, extra: Callable[[web.Application], None] | None = None,
                     **overrides: Any) -> AsyncIterator[TestClient]:
    app = create_app(load_settings(**with_unsubscribe_secret(overrides)), url)
    if extra is not None:
        extra(app)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
