"""Every dashboard page in a real browser (SPEC §14): Debian's chromium, headless, driven over the DevTools
protocol (tests/browser.py). A real daemon on the SANDBOX providers runs a campaign meanwhile; the test signs in
through the login form, checks that each page loads without console errors, that the live feed shows a touch sent
after the page was opened, and saves a screenshot of each page under tests/screenshots/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from listener.engine.jobs import periodic_jobs
from listener.providers.sandbox import SandboxProviders
from tests import factories
from tests.browser import chromium, ensure_chromium
from tests.harness import daemon_settings, running_daemon, wait_until
from tests.test_orchestrators import campaign, enroll, step_payload
from tests.web_harness import web_client

SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
TOKEN = "browser-test-token"
PLAN = {"order": ["voice", "sms", "email"], "max_attempts": {"voice": 1, "sms": 2, "email": 1},
        "cooldown_minutes": {"voice": 0, "sms": 0, "email": 0}}


@pytest.fixture(scope="session")
def chromium_binary() -> str:
    return ensure_chromium()


async def seed(db) -> dict:
    account_id = await factories.account(db, "Sonrisa Dental")
    campaign_id = await campaign(db, account_id, name="Spring check-ups",
                                 steps=[(0, step_payload("voice", plan=PLAN)), (0.01, step_payload("email", plan={
                                     "order": ["email"], "max_attempts": {"email": 1}}))])
    names = ["Ana Perez", "Bruno Diaz", "Carla Gomez", "Diego Ruiz", "Elena Soto"]
    lead_ids = []
    for i, name in enumerate(names):
        lead_id = await factories.lead(db, account_id, full_name=name, phone=f"+1415555{101 + i:04d}",
                                       email=f"{name.split()[0].lower()}@demo.example")
        await enroll(db, campaign_id, lead_id)
        lead_ids.append(lead_id)
    return {"account_id": account_id, "campaign_id": campaign_id, "lead_ids": lead_ids}


async def test_every_page_in_a_real_browser(db, db_url, chromium_binary):
    world = await seed(db)
    async with SandboxProviders() as fake:
        fake.rule(to="+14155550103", mode="error:400:21211")  # Carla's number is invalid at Twilio
        settings = daemon_settings(fake, worker_id="browser-test-daemon", orchestrator_interval_s=0.5)
        async with running_daemon(db_url, settings, periodic_jobs=periodic_jobs(settings)):
            await wait_until(db_url, "select count(*) >= 3 from campaign_leads where status = 'completed'", timeout=60)
            await wait_until(db_url, "select listen_connected from daemon_heartbeats where worker_id = $1",
                             "browser-test-daemon")
            deferred = await factories.touch(db, world["account_id"], world["lead_ids"][0], channel="sms",
                                             status="scheduled", scheduled_in_s=7200)
            await factories.event(db, world["lead_ids"][0], "touch_deferred", direction="internal", channel="sms",
                                  payload_={"touch_run_id": str(deferred), "reason": "quiet_hours",
                                            "lead_timezone": "America/New_York"})
            async with web_client(db_url, dashboard_token=TOKEN) as client, chromium(chromium_binary) as browser:
                base = str(client.make_url("/")).rstrip("/")
                page = await browser.new_page()

                await page.goto(f"{base}/")  # without the token: the login form, answered 401
                assert await page.evaluate("!!document.getElementById('token')")
                assert all("401" in e for e in page.errors), page.errors  # the browser logs the 401 itself
                await page.screenshot(SCREENSHOTS / "login.png")
                page.errors.clear()
                page.loaded.clear()
                await page.evaluate(f"document.getElementById('token').value = {json.dumps(TOKEN)};"
                                    " document.querySelector('form').submit()")
                await page.loaded.wait()
                assert await page.evaluate("location.pathname") == "/"
                await page.wait_for("document.documentElement.dataset.feed === 'open'")
                assert await page.evaluate("document.querySelectorAll('#feed tr').length") > 0  # the backlog

                # a touch created and sent after the page opened shows up in the live feed
                touch_id = await factories.touch(db, world["account_id"], world["lead_ids"][3], channel="sms")
                await page.wait_for(f"document.querySelector('#feed tr[data-touch=\"{touch_id}\"] td.ev-touch_sent')")
                assert await page.evaluate("document.getElementById('daemons-alive').textContent.trim()") == "1"
                text = await page.evaluate("document.body.innerText")
                assert "browser-test-daemon" in text and "quiet_hours" in text and "21211" in text
                assert "No sender is paced" in text  # SPEC §16: nothing here sets max_per_second or max_in_flight
                daemon_row = await page.evaluate("[...document.querySelectorAll('tr')].find(r => r.innerText.includes("
                                                 "'browser-test-daemon')).innerText")
                assert "connected" in daemon_row and "alive" in daemon_row
                # SPEC §18: the last hour per minute, drawn: the daemon's sends are bars, their latency points
                assert await page.evaluate("document.querySelectorAll('#throughput-charts svg').length") == 4
                assert await page.evaluate("[...document.querySelectorAll('#throughput-charts rect[data-kind=sent]')]"
                                           ".reduce((n, r) => n + Number(r.dataset.value), 0)") >= 3
                assert await page.evaluate("document.querySelectorAll('#latency-chart circle').length") >= 1
                await page.screenshot(SCREENSHOTS / "overview.png")
                assert page.errors == []

                pages = {
                    "touches": (f"/touches?campaign={world['campaign_id']}", "Spring check-ups"),
                    "touches-failed": ("/touches?status=failed&error_code=21211", "21211"),
                    "touch": (f"/touches/{touch_id}", "touch_sent"),
                    "lead": (f"/leads/{world['lead_ids'][2]}", "Carla Gomez"),
                    "campaigns": ("/campaigns", "Spring check-ups"),
                    "jobs": ("/jobs", "touch-orchestrator"),
                    "commands": ("/commands", "no command has run yet"),
                }
                for name, (path, expected) in pages.items():
                    await page.goto(base + path)
                    body = await page.evaluate("document.body.innerText")
                    assert expected in body, (name, body[:500])
                    await page.screenshot(SCREENSHOTS / f"{name}.png")
                    assert page.errors == [], (name, page.errors)
                # a page keeps itself live: its content is re-fetched as a fragment without console errors
                await page.goto(f"{base}/touches/{touch_id}")
                await page.evaluate("document.getElementById('content').dataset.marker = 'x';"
                                    " document.getElementById('delivery-status').remove()")
                await page.wait_for("document.getElementById('delivery-status')")
                assert page.errors == []
    for name in ("login", "overview", *pages):
        assert (SCREENSHOTS / f"{name}.png").stat().st_size > 10_000
