"""Debian's chromium in headless mode, driven over the DevTools protocol with aiohttp's websocket client (no
playwright or pyppeteer: they cannot fetch their own browsers here). Enough for the dashboard's tests: open pages,
collect console errors and uncaught exceptions, evaluate JavaScript (awaiting promises), take screenshots."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"]
LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


def ensure_chromium() -> str:
    """The chromium binary; installs Debian's package (as root) when it is missing."""
    found = shutil.which("chromium")
    if found:
        return found
    install = ["apt-get", "install", "-y", "-q", "chromium"]
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True, capture_output=True)
        subprocess.run(install, env=env, check=True, capture_output=True)
    found = shutil.which("chromium")
    assert found, "apt-get installed chromium but it is not on PATH"
    return found


class BrowserError(RuntimeError):
    pass


class Browser:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.pages: dict[str, Page] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            if "id" in data:
                future = self.pending.pop(data["id"], None)
                if future is not None and not future.done():
                    if "error" in data:
                        future.set_exception(BrowserError(f"{data['error']}"))
                    else:
                        future.set_result(data.get("result", {}))
            elif "sessionId" in data and data["sessionId"] in self.pages:
                self.pages[data["sessionId"]].on_event(data["method"], data.get("params", {}))
        for future in self.pending.values():
            if not future.done():
                future.set_exception(BrowserError("the browser connection closed"))

    async def send(self, method: str, params: dict[str, Any] | None = None, session_id: str | None = None,
                   timeout: float = 30) -> dict[str, Any]:
        message_id = next(self.ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[message_id] = future
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session_id:
            message["sessionId"] = session_id
        await self.ws.send_str(json.dumps(message))
        return await asyncio.wait_for(future, timeout)

    async def new_page(self, width: int = 1360, height: int = 900) -> Page:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        page = Page(self, attached["sessionId"])
        self.pages[page.session_id] = page
        for domain in ("Page", "Runtime", "Log"):
            await page.send(f"{domain}.enable")
        await page.send("Emulation.setDeviceMetricsOverride",
                        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        return page


class Page:
    def __init__(self, browser: Browser, session_id: str) -> None:
        self.browser = browser
        self.session_id = session_id
        self.errors: list[str] = []
        self.loaded = asyncio.Event()

    async def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
        return await self.browser.send(method, params, self.session_id, timeout)

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Page.loadEventFired":
            self.loaded.set()
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(f"exception: {details.get('exception', {}).get('description') or details['text']}")
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            self.errors.append("console." + params["type"] + ": " + " ".join(
                str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            self.errors.append(f"log ({entry['source']}): {entry['text']} {entry.get('url', '')}".strip())

    async def goto(self, url: str, timeout: float = 30) -> None:
        self.loaded.clear()
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"navigating to {url}: {result['errorText']}")
        await asyncio.wait_for(self.loaded.wait(), timeout)

    async def evaluate(self, expression: str, *, await_promise: bool = False, timeout: float = 30) -> Any:
        result = await self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": await_promise,
                                                      "returnByValue": True}, timeout=timeout)
        if "exceptionDetails" in result:
            raise BrowserError(result["exceptionDetails"].get("exception", {}).get("description")
                               or result["exceptionDetails"]["text"])
        return result["result"].get("value")

    async def wait_for(self, condition_js: str, timeout_ms: int = 20_000) -> Any:
        """Resolve when `condition_js` (an expression) becomes truthy: re-checked on every DOM change (a
        MutationObserver), so nothing sleeps; rejects after timeout_ms."""
        script = f"""new Promise((resolve, reject) => {{
            const check = () => {{ try {{ return ({condition_js}); }} catch (e) {{ return false; }} }};
            const first = check();
            if (first) {{ resolve(first); return; }}
            const observer = new MutationObserver(() => {{
                const value = check();
                if (value) {{ observer.disconnect(); clearTimeout(timer); resolve(value); }}
            }});
            observer.observe(document.documentElement, {{subtree: true, childList: true, attributes: true,
                                                         characterData: true}});
            const timer = setTimeout(() => {{ observer.disconnect();
                                             reject(new Error("timed out waiting for: " + {json.dumps(condition_js)})); }},
                                     {timeout_ms});
        }})"""
        return await self.evaluate(script, await_promise=True, timeout=timeout_ms / 1000 + 10)

    async def screenshot(self, path: Path) -> None:
        metrics = await self.send("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        shot = await self.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 4000), "scale": 1}})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))


@contextlib.asynccontextmanager
async def chromium(binary: str) -> AsyncIterator[Browser]:
    profile = tempfile.mkdtemp(prefix="revenue-asi-chromium-")
    process = await asyncio.create_subprocess_exec(binary, *FLAGS, f"--user-data-dir={profile}", "about:blank",
                                                   stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    session = aiohttp.ClientSession()
    try:
        assert process.stderr is not None
        url = None
        seen: list[str] = []
        while url is None:
            line = await asyncio.wait_for(process.stderr.readline(), 60)
            if not line:
                raise BrowserError("chromium exited before it listened: " + " | ".join(seen[-5:]))
            text = line.decode(errors="replace")
            seen.append(text.strip())
            match = LISTENING.search(text)
            url = match.group(1) if match else None
        drain = asyncio.create_task(_drain(process.stderr))
        ws = await session.ws_connect(url, max_msg_size=0)
        browser = Browser(ws)
        try:
            yield browser
        finally:
            await ws.close()
            browser.reader.cancel()
            drain.cancel()
    finally:
        await session.close()
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        shutil.rmtree(profile, ignore_errors=True)


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass
