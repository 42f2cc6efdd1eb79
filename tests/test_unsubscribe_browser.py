"""The one-click unsubscribe page (SPEC §19) in a real browser (Debian's chromium, tests/browser.py): opening the link
changes nothing; pressing its button posts List-Unsubscribe=One-Click, and the lead is unsubscribed once. With a
dashboard token set, as in production: the page needs none."""

from __future__ import annotations

from pathlib import Path

import pytest

from listener.rules.unsubscribe import sign
from tests import factories
from tests.browser import chromium, ensure_chromium
from tests.harness import UNSUBSCRIBE_SECRET
from tests.web_harness import web_client

SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"


@pytest.fixture(scope="session")
def chromium_binary() -> str:
    return ensure_chromium()


async def test_the_button_of_the_page_unsubscribes(db, db_url, chromium_binary):
    account_id = await factories.account(db, "Sonrisa Dental")
    lead_id = await factories.lead(db, account_id, email="ana@example.com")
    touch_id = await factories.touch(db, account_id, lead_id, channel="email", status="sent")
    token = sign(UNSUBSCRIBE_SECRET, lead_id, account_id, touch_id)
    async with web_client(db_url, public_url="https://outreach.example.com", dashboard_token="dash-token-456") as client, \
            chromium(chromium_binary) as browser:
        page = await browser.new_page(width=900, height=600)
        await page.goto(str(client.make_url(f"/u/{token}")))
        assert await page.evaluate("document.getElementById('unsubscribe').dataset.state") == "confirm"
        assert "Sonrisa Dental" in await page.evaluate("document.body.innerText")
        await page.screenshot(SCREENSHOTS / "unsubscribe.png")
        assert await db.fetchval("select count(*) from core_memory_events where event_type = 'unsubscribe'") == 0

        page.loaded.clear()
        await page.evaluate("document.getElementById('unsubscribe-button').click()")
        await page.loaded.wait()
        await page.wait_for("document.getElementById('unsubscribe').dataset.state === 'done'")
        assert "You are unsubscribed" in await page.evaluate("document.body.innerText")
        assert page.errors == []
    event = await db.fetchrow("select * from core_memory_events where event_type = 'unsubscribe'")
    assert event["event_source"] == "one_click" and event["payload"]["touch_run_id"] == str(touch_id)
    assert await db.fetchval("select count(*) from core_memory_events where event_type = 'unsubscribe'") == 1
    assert (SCREENSHOTS / "unsubscribe.png").stat().st_size > 5_000
