"""SPEC §16 "Seen": every paced sender — configured and effective rate, a 429's pushback, in-flight limit and
requests, touches waiting for pace, next free moment — on the home page, in GET /api/status and `revenue-asi
status [--json]`, and as revenue_asi_sender_waiting / revenue_asi_sender_rate in /metrics. Senders are paced with
plain SQL, the way an operator would; no daemon runs, so every number stays where the test put it. Real HTTP, the
real console script, a real headless chromium."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from listener.store.queries import Q
from tests import factories
from tests.browser import chromium, ensure_chromium
from tests.cli_runner import cli, cli_env
from tests.web_harness import web_client

SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"


@dataclass
class World:
    alba_sms: uuid.UUID  # max_per_second 2, max_in_flight 3, under a 429's pushback (rate 1): 5 waiting, 2 in flight
    alba_email: uuid.UUID  # max_in_flight 1 only (no rate bound): 2 waiting
    bravo_whatsapp: uuid.UUID  # max_per_second 0.5, next free in 10 min: 3 waiting
    bravo_voice: uuid.UUID  # no config, paced by a 429's pushback alone (rate 3): nothing waiting
    unpaced: list[uuid.UUID]  # senders with due touches, or a pushback long over, that are not paced
    pushback_until: Any
    next_at: Any


async def settings_id(conn: asyncpg.Connection, account_id: uuid.UUID, channel: str) -> uuid.UUID:
    found: uuid.UUID = await conn.fetchval(
        "select id from account_provider_settings where account_id = $1 and channel = $2 and is_default",
        account_id, channel)
    return found


async def pace(conn: asyncpg.Connection, account_id: uuid.UUID, channel: str, **config: float) -> uuid.UUID:
    await conn.execute("update account_provider_settings set config = config || $3::jsonb"
                       " where account_id = $1 and channel = $2 and is_default", account_id, channel, config)
    return await settings_id(conn, account_id, channel)


async def touches(conn: asyncpg.Connection, account_id: uuid.UUID, lead_id: uuid.UUID, channel: str, n: int,
                  **kwargs: Any) -> list[uuid.UUID]:
    return [await factories.touch(conn, account_id, lead_id, channel=channel, **kwargs) for _ in range(n)]


async def in_flight(conn: asyncpg.Connection, ids: list[uuid.UUID], sender: uuid.UUID) -> None:
    """Claimed by some daemon with this sender, as the claim leaves them (SPEC §16: provider_settings_id)."""
    await conn.execute("update touch_runs set status = 'processing', locked_by = 'another-daemon',"
                       " locked_until = now() + interval '2 minutes', provider_settings_id = $2 where id = any($1)",
                       ids, sender)


async def seed(db: asyncpg.Connection) -> World:
    alba = await factories.account(db, "Alba Clinic")
    bravo = await factories.account(db, "Bravo Store")
    zeta = await factories.account(db, "Zeta Unpaced")
    alba_lead = await factories.lead(db, alba)
    bravo_lead = await factories.lead(db, bravo)
    zeta_lead = await factories.lead(db, zeta)

    alba_sms = await pace(db, alba, "sms", max_per_second=2, max_in_flight=3)
    pushback_until = await db.fetchval(
        "update sender_pacing set pushback_rate = 1, pushback_from = 2, pushback_at = now(), pushbacks = 1,"
        " pushback_until = now() + interval '10 minutes' where settings_id = $1 returning pushback_until", alba_sms)
    await touches(db, alba, alba_lead, "sms", 5, scheduled_in_s=-30)  # due: waiting for pace
    await touches(db, alba, alba_lead, "sms", 1, status="scheduled", scheduled_in_s=3600)  # not due yet
    await touches(db, alba, alba_lead, "sms", 1, status="sent")
    await in_flight(db, await touches(db, alba, alba_lead, "sms", 2, scheduled_in_s=-60), alba_sms)

    alba_email = await pace(db, alba, "email", max_in_flight=1)
    await touches(db, alba, alba_lead, "email", 2, scheduled_in_s=-5)

    bravo_whatsapp = await pace(db, bravo, "whatsapp", max_per_second=0.5)
    next_at = await db.fetchval("update sender_pacing set next_at = now() + interval '10 minutes'"
                                " where settings_id = $1 returning next_at", bravo_whatsapp)
    await touches(db, bravo, bravo_lead, "whatsapp", 3, scheduled_in_s=-1)

    bravo_voice = await settings_id(db, bravo, "voice")
    await db.execute("update sender_pacing set pushback_rate = 3, pushback_from = 6, pushback_at = now(),"
                     " pushbacks = 2, pushback_until = now() + interval '10 minutes' where settings_id = $1",
                     bravo_voice)

    # not paced: the same accounts' other senders with due and in-flight touches, a whole account, and a sender
    # whose pushback ended (and climbed back) long ago
    await touches(db, bravo, bravo_lead, "sms", 4, scheduled_in_s=-10)
    await touches(db, alba, alba_lead, "voice", 1, scheduled_in_s=-10)
    await touches(db, zeta, zeta_lead, "sms", 6, scheduled_in_s=-10)
    zeta_sms = await settings_id(db, zeta, "sms")
    await in_flight(db, await touches(db, zeta, zeta_lead, "sms", 2), zeta_sms)
    await db.execute("update sender_pacing set pushback_rate = 1, pushback_from = 2,"
                     " pushback_until = now() - interval '5 minutes' where settings_id = $1", zeta_sms)
    unpaced = [await settings_id(db, account, channel)
               for account, channels in ((alba, ("voice", "whatsapp")), (bravo, ("sms", "email")),
                                         (zeta, ("voice", "whatsapp", "sms", "email")))
               for channel in channels]
    return World(alba_sms, alba_email, bravo_whatsapp, bravo_voice, unpaced, pushback_until, next_at)


def by_id(senders: list[dict[str, Any]]) -> dict[uuid.UUID, dict[str, Any]]:
    return {uuid.UUID(s["settings_id"]): s for s in senders}


def check_document(senders: list[dict[str, Any]], w: World) -> None:
    """The paced senders of the status document: the four paced ones, in account and channel order, right numbers."""
    assert [(s["account_name"], s["channel"]) for s in senders] == [
        ("Alba Clinic", "email"), ("Alba Clinic", "sms"), ("Bravo Store", "voice"), ("Bravo Store", "whatsapp")]
    s = by_id(senders)
    assert not set(s) & set(w.unpaced)
    sms = s[w.alba_sms]
    assert sms["provider"] == "twilio" and sms["max_per_second"] == 2 and sms["effective_rate"] == 1
    assert sms["max_in_flight"] == 3 and sms["in_flight"] == 2 and sms["waiting"] == 5
    assert sms["pushback_in_force"] is True and sms["pushbacks"] == 1
    assert sms["pushback_until"] == w.pushback_until.isoformat()
    assert sms["next_at"] is None and sms["next_in_s"] == 0  # never paced yet: free now

    email = s[w.alba_email]
    assert email["provider"] == "elasticemail" and email["max_per_second"] is None and email["effective_rate"] is None
    assert email["max_in_flight"] == 1 and email["in_flight"] == 0 and email["waiting"] == 2
    assert email["pushback_in_force"] is False and email["pushback_until"] is None

    whatsapp = s[w.bravo_whatsapp]
    assert whatsapp["max_per_second"] == 0.5 and whatsapp["effective_rate"] == 0.5
    assert whatsapp["max_in_flight"] is None and whatsapp["in_flight"] == 0 and whatsapp["waiting"] == 3
    assert whatsapp["next_at"] == w.next_at.isoformat() and whatsapp["next_in_s"] > 0
    assert whatsapp["pushback_in_force"] is False

    voice = s[w.bravo_voice]  # paced by the pushback alone: its halved rate is its rate
    assert voice["max_per_second"] is None and voice["effective_rate"] == 3 and voice["max_in_flight"] is None
    assert voice["pushback_in_force"] is True and voice["waiting"] == 0 and voice["in_flight"] == 0


def samples(text: str, name: str) -> dict[str, float]:
    """settings_id -> value of one metric family in a /metrics answer (labels checked: settings_id only)."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                assert set(sample.labels) == {"settings_id"}, sample
                found[sample.labels["settings_id"]] = sample.value
    return found


async def test_api_status_and_cli_json_list_the_paced_senders(db, db_url):
    w = await seed(db)
    async with web_client(db_url) as client:
        response = await client.get("/api/status")
        api = await response.json()
    assert response.status == 200
    check_document(api["paced_senders"], w)

    result = await cli("status", "--json", env=cli_env(db_url))
    assert result.rc == 0, result.err
    document = json.loads(result.out)
    check_document(document["paced_senders"], w)
    for doc in (api, document):  # the same document, but for the seconds that pass between the two calls
        for sender in doc["paced_senders"]:
            sender.pop("next_in_s")
    assert api["paced_senders"] == document["paced_senders"]


async def test_metrics_export_waiting_and_rate_per_paced_sender(db, db_url):
    w = await seed(db)
    async with web_client(db_url) as client:
        response = await client.get("/metrics")
        text = await response.text()
    assert response.status == 200
    assert samples(text, "revenue_asi_sender_waiting") == {
        str(w.alba_sms): 5, str(w.alba_email): 2, str(w.bravo_whatsapp): 3, str(w.bravo_voice): 0}
    # requests/s now; a sender bounded only by max_in_flight has no rate to export
    assert samples(text, "revenue_asi_sender_rate") == {
        str(w.alba_sms): 1, str(w.bravo_whatsapp): 0.5, str(w.bravo_voice): 3}
    assert f'revenue_asi_sender_waiting{{settings_id="{w.alba_sms}"}} 5.0' in text
    assert f'revenue_asi_sender_rate{{settings_id="{w.bravo_whatsapp}"}} 0.5' in text


async def test_cli_status_shows_the_paced_senders(db, db_url):
    w = await seed(db)
    result = await cli("status", env=cli_env(db_url))
    assert result.rc == 0, result.err
    rows = {}
    for line in result.out.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 10 and cells[0] in ("Alba Clinic", "Bravo Store", "Zeta Unpaced"):
            rows[(cells[0], cells[1])] = cells
    assert "paced senders (4)" in result.out
    assert set(rows) == {("Alba Clinic", "sms"), ("Alba Clinic", "email"), ("Bravo Store", "whatsapp"),
                         ("Bravo Store", "voice")}, result.out
    until = w.pushback_until.isoformat().replace("T", " ")[:19]
    assert rows[("Alba Clinic", "sms")] == ["Alba Clinic", "sms", "twilio", str(w.alba_sms)[:8], "2/s",
                                            f"1/s (429 pushback until {until})", "3", "2", "5", "now"]
    assert rows[("Alba Clinic", "email")] == ["Alba Clinic", "email", "elasticemail", str(w.alba_email)[:8], "—",
                                              "—", "1", "0", "2", "now"]
    assert rows[("Bravo Store", "whatsapp")] == ["Bravo Store", "whatsapp", "twilio", str(w.bravo_whatsapp)[:8],
                                                 "0.5/s", "0.5/s", "—", "0", "3",
                                                 w.next_at.isoformat().replace("T", " ")[:19]]
    voice = rows[("Bravo Store", "voice")]
    assert voice[4] == "—" and voice[5].startswith("3/s (429 pushback until ") and voice[6:] == ["—", "0", "0", "now"]


async def test_no_paced_sender_is_said_briefly(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    await factories.touch(db, account_id, lead_id, scheduled_in_s=-5)
    async with web_client(db_url) as client:
        api = await (await client.get("/api/status")).json()
        metrics = await (await client.get("/metrics")).text()
        home = await (await client.get("/")).text()
    assert api["paced_senders"] == []
    assert samples(metrics, "revenue_asi_sender_waiting") == {} and samples(metrics, "revenue_asi_sender_rate") == {}
    assert "No sender is paced" in home
    text = await cli("status", env=cli_env(db_url))
    assert text.rc == 0, text.err
    assert "paced senders: none" in text.out


async def test_finding_the_paced_senders_never_scans_touch_runs(db):
    """Many unpaced accounts with open and finished touches: the query finds the paced senders without touch_runs,
    then probes touch_runs_open_by_sender and touch_runs_in_flight_by_sender for those only."""
    await db.execute(
        """with a as (insert into accounts (name) select 'Busy ' || i from generate_series(1, 2000) i returning id),
                s as (insert into account_provider_settings (account_id, channel, provider, is_default, config)
                      select a.id, c, case when c = 'email' then 'elasticemail' else 'twilio' end, true,
                             '{"from": "+15005550006"}'
                      from a, unnest(array['sms', 'email']) c returning account_id),
                l as (insert into leads (account_id, full_name, phone) select id, 'Busy', '+14155550100' from a
                      returning id, account_id)
           insert into touch_runs (account_id, lead_id, channel, status, scheduled_at, payload)
           select account_id, id, 'sms', st, now() - interval '1 minute', '{}'
           from l, unnest(array['queued', 'queued', 'sent', 'failed']) st""")
    w = await seed(db)
    await db.execute("analyze")
    plan = "\n".join(r[0] for r in await db.fetch(
        "explain (analyze, costs off, timing off, summary off) " + Q.dash_paced_senders, 500))
    for table in ("touch_runs", "accounts"):
        assert f"Seq Scan on {table} " not in plan, plan
    # touch_runs only through its per-sender probes (an index scan, or a bitmap over the same index)
    # the candidates: each sender table read once (no index on config or pushback_until yet), 4 paced senders left
    assert re.search(r"Append \(actual rows=5(\.00)? loops=1\)", plan), plan
    probes = dict(re.findall(r"Scan (?:using|on) (touch_runs_open_by_sender|touch_runs_in_flight_by_sender)"
                             r"(?: on touch_runs \w+)? \(actual rows=[0-9.]+ loops=(\d+)\)", plan))
    assert plan.count("on touch_runs ") == 2, plan
    assert probes == {"touch_runs_open_by_sender": "4", "touch_runs_in_flight_by_sender": "4"}, plan  # per sender
    senders = await db.fetch(Q.dash_paced_senders, 500)
    assert {r["settings_id"] for r in senders} == {w.alba_sms, w.alba_email, w.bravo_whatsapp, w.bravo_voice}


@pytest.fixture(scope="session")
def chromium_binary() -> str:
    return ensure_chromium()


async def test_the_home_page_shows_the_paced_senders_in_a_real_browser(db, db_url, chromium_binary):
    w = await seed(db)
    async with web_client(db_url) as client, chromium(chromium_binary) as browser:
        base = str(client.make_url("/")).rstrip("/")
        page = await browser.new_page()
        await page.goto(f"{base}/")
        assert await page.evaluate("!!document.getElementById('paced-senders')")

        def cell(sender: uuid.UUID, key: str) -> str:
            return (f"document.querySelector('#paced-senders tr[data-settings=\"{sender}\"] td[data-k=\"{key}\"]')"
                    ".innerText.trim()")

        rows = await page.evaluate("[...document.querySelectorAll('#paced-senders tbody tr')]"
                                   ".map(r => r.dataset.settings)")
        assert rows == [str(w.alba_email), str(w.alba_sms), str(w.bravo_voice), str(w.bravo_whatsapp)]
        until = w.pushback_until.isoformat().replace("T", " ")[:19]
        assert await page.evaluate(cell(w.alba_sms, "configured")) == "2/s"
        assert await page.evaluate(cell(w.alba_sms, "effective")) == f"1/s\n429 pushback until {until}"
        assert await page.evaluate(cell(w.alba_sms, "max-in-flight")) == "3"
        assert await page.evaluate(cell(w.alba_sms, "in-flight")) == "2"
        assert await page.evaluate(cell(w.alba_sms, "waiting")) == "5"
        assert await page.evaluate(cell(w.alba_sms, "next")) == "now"
        assert await page.evaluate(cell(w.alba_email, "configured")) == "—"
        assert await page.evaluate(cell(w.alba_email, "effective")) == "—"
        assert await page.evaluate(cell(w.alba_email, "max-in-flight")) == "1"
        assert await page.evaluate(cell(w.alba_email, "waiting")) == "2"
        assert await page.evaluate(cell(w.bravo_whatsapp, "effective")) == "0.5/s"
        assert await page.evaluate(cell(w.bravo_whatsapp, "waiting")) == "3"
        assert (await page.evaluate(cell(w.bravo_whatsapp, "next"))).startswith(
            w.next_at.isoformat().replace("T", " ")[:19] + " (in ")
        assert (await page.evaluate(cell(w.bravo_voice, "effective"))).startswith("3/s\n429 pushback until ")
        section = await page.evaluate("document.getElementById('paced-senders').innerText")
        assert "Alba Clinic" in section and "Bravo Store" in section and "Zeta Unpaced" not in section
        await page.screenshot(SCREENSHOTS / "paced-senders.png")
        assert page.errors == []

        # the section is live like the rest of the page: one more due touch, and its count moves without a reload
        alba = await db.fetchval("select account_id from account_provider_settings where id = $1", w.alba_sms)
        lead_id = await factories.lead(db, alba)
        await factories.touch(db, alba, lead_id, channel="sms", scheduled_in_s=-1)
        await page.wait_for(cell(w.alba_sms, "waiting") + " === '6'")
        assert page.errors == []
    assert (SCREENSHOTS / "paced-senders.png").stat().st_size > 10_000
