"""Reply → cancel end to end as users run it: `revenue-asi web` and `revenue-asi run` as two processes against one
database; a signed STOP reaches the web process, and the daemon cancels the lead's open touch."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp

from listener.providers.sandbox import SandboxProviders
from tests import factories
from tests.harness import UNSUBSCRIBE_SECRET, wait_until
from tests.webhook_client import free_port


def _env(db_url: str, fake: SandboxProviders, **extra: str) -> dict[str, str]:
    overrides = fake.settings_overrides()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TWILIO_", "ELASTICEMAIL_", "REVENUE_ASI_")) and k != "PORT"}
    env.update({"DATABASE_URL": db_url, "TWILIO_ACCOUNT_SID": overrides["twilio_account_sid"],
                "TWILIO_AUTH_TOKEN": overrides["twilio_auth_token"], "TWILIO_BASE_URL": fake.base_url,
                "REVENUE_ASI_SWEEP_INTERVAL_S": "0.5", "REVENUE_ASI_QUIET_HOURS": "off", **extra})
    if "REVENUE_ASI_PUBLIC_URL" in extra:  # SPEC §19: a public URL needs the unsubscribe secret, in both processes
        env.setdefault("REVENUE_ASI_UNSUBSCRIBE_SECRET", UNSUBSCRIBE_SECRET)
    return env


async def _start(command: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "revenue-asi"), command, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def _wait_for_line(process: asyncio.subprocess.Process, needle: str, timeout: float = 30) -> None:
    assert process.stderr is not None

    async def read() -> None:
        while True:
            line = await process.stderr.readline()  # type: ignore[union-attr]
            if not line:
                raise AssertionError(f"process ended before saying {needle!r}")
            if needle in line.decode(errors="replace"):
                return

    await asyncio.wait_for(read(), timeout)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.communicate(), timeout=30)
        except TimeoutError:
            process.kill()
            await process.wait()


async def test_a_stop_reply_through_the_web_process_cancels_the_open_touch_in_the_daemon_process(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    async with SandboxProviders() as fake:
        env = _env(db_url, fake, PORT=str(port), REVENUE_ASI_PUBLIC_URL=public_url)
        web = await _start("web", env)
        daemon = await _start("run", env)
        try:
            await _wait_for_line(web, "web application on")
            first = await factories.touch(db, account_id, lead_id)  # the daemon is up once it has sent this
            await wait_until(db_url, "select status = 'sent' from touch_runs where id = $1", first)
            open_touch = await factories.touch(db, account_id, lead_id, status="scheduled", scheduled_in_s=3600)
            status, answer = await fake.simulate_inbound(public_url + "/webhooks/twilio/inbound",
                                                         from_="+14155550123", to="+15005550006", body="STOP")
            assert (status, answer["outcome"]) == (200, "unsubscribe")
            await wait_until(db_url, "select status = 'canceled' from touch_runs where id = $1", open_touch)
            # the first touch's status callbacks reached the web process too, signed by the sandbox
            await wait_until(db_url, "select delivery_status = 'delivered' from touch_runs where id = $1", first)
            async with aiohttp.ClientSession() as session:  # and an unsigned request is refused
                async with session.post(public_url + "/webhooks/twilio/inbound",
                                        data={"MessageSid": "SM1", "From": "+14155550123", "To": "+15005550006",
                                              "Body": "START"}) as response:
                    assert response.status == 403
        finally:
            await _stop(daemon)
            await _stop(web)
    assert web.returncode == 0 and daemon.returncode == 0
    row = await db.fetchrow("select payload from core_memory_events where event_type = 'touch_canceled'"
                            " and payload->>'touch_run_id' = $1", str(open_touch))
    assert row["payload"]["reason"] == "suppressed:unsubscribe"
    assert await db.fetchval("select count(*) from core_memory_events where event_type = 'resubscribe'") == 0
