"""Test helpers for the webhooks: the web application on a loopback port, and requests signed the way Twilio
signs them (the twilio package's RequestValidator over the public URL)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

from listener.settings import Settings, load_settings
from listener.web.app import create_app
from tests.harness import with_unsubscribe_secret

PUBLIC_URL = "https://outreach.example.com"
AUTH_TOKEN = "sandbox-auth-token"
ACCOUNT_SID = "ACsandbox00000000000000000000000000"
EE_TOKEN = "ee-hook-secret-123"


def web_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"public_url": PUBLIC_URL, "twilio_account_sid": ACCOUNT_SID,
                            "twilio_auth_token": AUTH_TOKEN, "elasticemail_webhook_token": EE_TOKEN}
    base.update(overrides)
    return load_settings(**with_unsubscribe_secret(base))


@dataclass
class WebClient:
    base_url: str
    session: aiohttp.ClientSession
    public_url: str = PUBLIC_URL
    auth_token: str = AUTH_TOKEN

    def sign(self, path: str, params: Mapping[str, str], url: str | None = None) -> str:
        return str(RequestValidator(self.auth_token).compute_signature(url or self.public_url + path, dict(params)))

    async def twilio(self, path: str, params: Mapping[str, str], *, signature: str | None = "auto",
                     body: bytes | None = None) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if signature == "auto":
            signature = self.sign(path, params)
        if signature is not None:
            headers["X-Twilio-Signature"] = signature
        data = body if body is not None else urlencode(dict(params)).encode()
        async with self.session.post(self.base_url + path, data=data, headers=headers) as response:
            return response.status, await _json(response)

    async def elasticemail(self, params: Mapping[str, str], *, token: str | None = EE_TOKEN,
                           method: str = "GET") -> tuple[int, dict[str, Any]]:
        query = dict(params)
        if token is not None:
            query["token"] = token
        url = f"{self.base_url}/webhooks/elasticemail?{urlencode(query)}"
        async with self.session.request(method, url) as response:
            return response.status, await _json(response)


async def _json(response: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        value = await response.json(content_type=None)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def web_app(db_url: str, settings: Settings | None = None, port: int = 0) -> AsyncIterator[WebClient]:
    settings = settings or web_settings()
    runner = web.AppRunner(create_app(settings, db_url), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    host, bound = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as session:
            yield WebClient(f"http://{host}:{bound}", session, public_url=settings.public_url or PUBLIC_URL)
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def loopback_web_app(db_url: str, **overrides: Any) -> AsyncIterator[WebClient]:
    """The web application whose public URL is its own loopback address, so the sandbox's status callbacks
    (signed over REVENUE_ASI_PUBLIC_URL + path) reach it: ``client.public_url`` is what the daemon is given."""
    port = free_port()
    async with web_app(db_url, web_settings(public_url=f"http://127.0.0.1:{port}", **overrides), port=port) as client:
        yield client
