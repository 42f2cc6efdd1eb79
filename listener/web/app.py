"""The one aiohttp application: `create_app` builds it (webhooks, dashboard, API, health); `serve` runs it.

aiohttp.web because the daemon already ships aiohttp (the Twilio driver): one event loop, no second server
stack, and its test client speaks real HTTP on loopback."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from listener.settings import Settings
from listener.store.database import create_pool

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
DATABASE_URL = web.AppKey("database_url", str)
MAX_REQUEST_BYTES = 1024 * 1024


class UnsafeBindError(ValueError):
    """A non-loopback host without REVENUE_ASI_DASHBOARD_TOKEN."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings, host: str) -> None:
    if not is_loopback(host) and settings.dashboard_token is None:
        raise UnsafeBindError(f"refusing to bind {host}: set REVENUE_ASI_DASHBOARD_TOKEN to serve beyond loopback")


def create_app(settings: Settings, url: str) -> web.Application:
    from listener.web import dashboard, guard, unsubscribe, webhooks

    settings.check_unsubscribe_secret()  # SPEC §19: a public URL needs REVENUE_ASI_UNSUBSCRIBE_SECRET (SettingsError)
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app[SETTINGS] = settings
    app[DATABASE_URL] = url
    app.cleanup_ctx.append(_pool)
    guard.setup(app)
    webhooks.setup(app)
    dashboard.setup(app)
    unsubscribe.setup(app)  # SPEC §19: /u/{token}, public
    return app


async def _pool(app: web.Application) -> AsyncIterator[None]:
    app[POOL] = await create_pool(app[DATABASE_URL], min_size=1, max_size=6)
    try:
        yield
    finally:
        await app[POOL].close()


async def start(settings: Settings, url: str, host: str | None = None,
                port: int | None = None) -> tuple[web.AppRunner, str]:
    """Start serving in the background; returns the runner (call `cleanup()` to stop) and the base URL
    (with the port actually bound, when `port` is 0)."""
    host = host or settings.http_host
    port = settings.http_port if port is None else port
    check_bind(settings, host)
    runner = web.AppRunner(create_app(settings, url), access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1] if runner.addresses else port
    shown = f"[{host}]" if ":" in host else host
    return runner, f"http://{shown}:{bound}/"


async def serve(settings: Settings, url: str, host: str | None = None, port: int | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set (or forever); binds REVENUE_ASI_HTTP_HOST:PORT unless told otherwise."""
    runner, base = await start(settings, url, host, port)
    log.info("web application on %s", base)
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await runner.cleanup()


async def run_web(settings: Settings, url: str) -> None:
    """`revenue-asi web`: serve until SIGTERM / SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(settings, url, stop=stop)
