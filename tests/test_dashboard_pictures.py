"""The director's pictures and console (SPEC §18, issue 20 items 4 and 5): GET /api/timeseries against touches
inserted at known minutes with known latencies; the SVG on / drawn from the same numbers; report.funnel's
attribution on a hand-built campaign and the funnels on /campaigns drawn from it; /commands listing command_runs;
and, in the real browser (Debian's chromium, tests/browser.py), the pictures checked in the live DOM against the API
with a screenshot of each, and the console: a read answered, a write previewed, confirmed, done."""

from __future__ import annotations

import base64
import json
import math
import uuid
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from listener.intents.errors import NotFound
from listener.intents.report import report_funnel
from listener.web import charts
from tests import factories
from tests.browser import Page, chromium
from tests.test_dashboard_browser import chromium_binary  # noqa: F401 (the session fixture)
from tests.test_orchestrators import campaign, enroll
from tests.web_harness import web_client

SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
TOKEN = "pictures-test-token"
CHANNELS = ("voice", "whatsapp", "sms", "email")


# ---- rows at known moments ------------------------------------------------------------------------------------

async def sent_touches(db: asyncpg.Connection, account_id: uuid.UUID, lead_id: uuid.UUID, minute: datetime,
                       channel: str, latencies_ms: list[float], *, created_due: bool = False) -> None:
    """Touches sent 5 s into `minute`, each `latency` ms after it was due. Due is scheduled_at (created an hour
    earlier), or with created_due the creation itself (scheduled two hours before it: greatest() must pick it)."""
    await db.execute(
        """insert into touch_runs (account_id, lead_id, channel, status, created_at, scheduled_at, sent_at)
           select $1, $2, $3, 'sent',
                  case when $6 then due else due - interval '1 hour' end,
                  case when $6 then due - interval '2 hours' else due end,
                  sent
           from (select $4::timestamptz + interval '5 seconds' as sent) s,
                lateral (select s.sent - make_interval(secs => l / 1000.0) as due from unnest($5::float8[]) l) d""",
        account_id, lead_id, channel, minute, latencies_ms, created_due)


async def failed_events(db: asyncpg.Connection, lead_id: uuid.UUID, minute: datetime, channel: str, n: int) -> None:
    for i in range(n):
        await db.execute(
            "insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload, created_at)"
            " values ($1, 'touch_failed', 'test', $2, 'outbound', $3, $4)",
            lead_id, channel, {"touch_run_id": str(uuid.uuid4()), "error_code": "21211"},
            minute + timedelta(seconds=10 + i))


def disc(values: list[float], p: float) -> float:
    """percentile_disc: the first value whose cumulative share reaches p."""
    ordered = sorted(values)
    return ordered[max(math.ceil(p * len(ordered)), 1) - 1]


async def seed_timeseries(db: asyncpg.Connection) -> dict[str, Any]:
    """Sends and failures at minutes 10, 9 and 7 before this one (inside any window of 11 minutes or more, also if
    the minute turns during the test), and some outside the last hour."""
    account_id = await factories.account(db, "Pictures Dental")
    lead_id = await factories.lead(db, account_id)
    now_minute: datetime = await db.fetchval("select date_trunc('minute', now())")
    m10, m9, m7 = (now_minute - timedelta(minutes=k) for k in (10, 9, 7))
    busy = [float(ms) for ms in range(1, 101)]  # 1..100 ms
    await sent_touches(db, account_id, lead_id, m10, "sms", busy[:60])
    await sent_touches(db, account_id, lead_id, m10, "email", busy[60:], created_due=True)
    await sent_touches(db, account_id, lead_id, m7, "voice", [10.0, 20.0])
    await sent_touches(db, account_id, lead_id, m7, "whatsapp", [3000.0], created_due=True)
    await failed_events(db, lead_id, m9, "sms", 2)
    await failed_events(db, lead_id, m7, "whatsapp", 1)
    await failed_events(db, lead_id, m10, "email", 3)
    # outside the last hour: neither counted nor drawn
    await sent_touches(db, account_id, lead_id, now_minute - timedelta(minutes=75), "sms", [5.0, 6.0])
    await failed_events(db, lead_id, now_minute - timedelta(minutes=61), "sms", 4)
    # not sent: no count, no latency
    await factories.touch(db, account_id, lead_id, channel="sms", status="queued")
    await factories.event(db, lead_id, "touch_canceled", direction="internal", channel="sms")
    expected = {
        m10.isoformat(): {"sent": {"sms": 60, "email": 40}, "failed": {"email": 3},
                          "p50": disc(busy, 0.5), "p99": disc(busy, 0.99)},
        m9.isoformat(): {"sent": {}, "failed": {"sms": 2}, "p50": None, "p99": None},
        m7.isoformat(): {"sent": {"voice": 2, "whatsapp": 1}, "failed": {"whatsapp": 1},
                         "p50": disc([10, 20, 3000], 0.5), "p99": disc([10, 20, 3000], 0.99)},
    }
    return {"account_id": account_id, "lead_id": lead_id, "expected": expected}


def check_series(series: list[dict[str, Any]], expected: dict[str, dict[str, Any]]) -> None:
    by_minute = {m["minute"]: m for m in series}
    for minute, want in expected.items():
        got = by_minute[minute]
        assert got["sent"] == {c: want["sent"].get(c, 0) for c in CHANNELS}, minute
        assert got["failed"] == {c: want["failed"].get(c, 0) for c in CHANNELS}, minute
        assert got["latency_p50_ms"] == pytest.approx(want["p50"]) if want["p50"] is not None \
            else got["latency_p50_ms"] is None
        assert got["latency_p99_ms"] == pytest.approx(want["p99"]) if want["p99"] is not None \
            else got["latency_p99_ms"] is None
    for minute, got in by_minute.items():
        if minute not in expected:
            assert sum(got["sent"].values()) == sum(got["failed"].values()) == 0, minute
            assert got["latency_p50_ms"] is None and got["latency_p99_ms"] is None, minute


# ---- reading the SVG ------------------------------------------------------------------------------------------

class Shapes(HTMLParser):
    """Every rect, circle and svg of a page, with its attributes and the chart it is in."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[dict[str, str]] = []
        self.svgs: list[dict[str, str]] = []
        self.figure: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "figure":
            self.figure = a
        elif tag == "svg":
            self.svgs.append({**a, "chart": self.figure.get("data-chart", ""),
                              "campaign": self.figure.get("data-campaign", "")})
        elif tag in ("rect", "circle") and "data-value" in a:
            self.shapes.append({**a, "tag": tag, "chart": self.figure.get("data-chart", ""),
                                "campaign": self.figure.get("data-campaign", ""),
                                "scale": self.svgs[-1].get("data-scale", "") if self.svgs else ""})

    handle_startendtag = handle_starttag


def shapes_of(html: str) -> Shapes:
    parser = Shapes()
    parser.feed(html)
    return parser


def bars_from_api(series: list[dict[str, Any]]) -> set[tuple[str, str, str, int]]:
    return {(m["minute"], c, kind, m[kind][c]) for m in series for kind in ("sent", "failed") for c in CHANNELS
            if m[kind][c]}


def points_from_api(series: list[dict[str, Any]]) -> set[tuple[str, str, float]]:
    return {(m["minute"], name, m[f"latency_{name}_ms"]) for m in series for name in ("p50", "p99")
            if m[f"latency_{name}_ms"] is not None}


# ---- /api/timeseries --------------------------------------------------------------------------------------------

async def test_timeseries_counts_sends_failures_and_latency_per_minute(db, db_url):
    world = await seed_timeseries(db)
    async with web_client(db_url) as client:
        response = await client.get("/api/timeseries?minutes=60")
        assert response.status == 200
        doc = await response.json()
        assert doc["minutes"] == 60 and doc["channels"] == list(CHANNELS) and len(doc["series"]) == 60
        minutes = [datetime.fromisoformat(m["minute"]) for m in doc["series"]]
        assert all(b - a == timedelta(minutes=1) for a, b in zip(minutes, minutes[1:], strict=False))
        assert doc["from"] == doc["series"][0]["minute"] and "greatest(scheduled_at, created_at)" in doc["latency"]
        check_series(doc["series"], world["expected"])

        # the default is the last hour; a day holds the older rows too
        assert len((await (await client.get("/api/timeseries")).json())["series"]) == 60
        day = await (await client.get("/api/timeseries?minutes=1440")).json()
        assert len(day["series"]) == 1440
        assert sum(m["sent"]["sms"] for m in day["series"]) == 60 + 2
        assert sum(m["failed"]["sms"] for m in day["series"]) == 2 + 4
        # the last 5 minutes hold none of it
        five = await (await client.get("/api/timeseries?minutes=5")).json()
        assert len(five["series"]) == 5
        assert all(sum(m["sent"].values()) + sum(m["failed"].values()) == 0 for m in five["series"])

        for bad in ("0", "1441", "-5", "abc", "1.5", "9" * 40):
            response = await client.get(f"/api/timeseries?minutes={bad}")
            assert response.status == 400, bad
            assert "minutes must be an integer from 1 to 1440" in (await response.json())["error"]


async def test_timeseries_needs_the_token_when_one_is_set(db, db_url):
    async with web_client(db_url, dashboard_token=TOKEN) as client:
        assert (await client.get("/api/timeseries")).status == 401
        ok = await client.get("/api/timeseries?minutes=2", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status == 200 and len((await ok.json())["series"]) == 2


async def test_the_home_page_draws_the_api_numbers(db, db_url):
    world = await seed_timeseries(db)
    async with web_client(db_url) as client:
        html = await (await client.get("/")).text()
        doc = await (await client.get("/api/timeseries?minutes=60")).json()
    check_series(doc["series"], world["expected"])
    page = shapes_of(html)
    bars = [s for s in page.shapes if s["chart"] == "throughput"]
    drawn = {(b["data-minute"], b["data-channel"], b["data-kind"], int(b["data-value"])) for b in bars}
    assert drawn == bars_from_api(doc["series"])
    assert len(drawn) == len(bars)  # one bar per (minute, channel, kind) with something in it
    for b in bars:  # every bar's height is its count on the one scale the channels share
        assert float(b["height"]) == pytest.approx(int(b["data-value"]) * float(b["scale"]), abs=0.011)
    assert {s["data-max"] for s in page.svgs if s["chart"] == "throughput"} == {"100"}  # 60 sms + 40 email → 100
    points = [s for s in page.shapes if s["chart"] == "latency"]
    assert {(p["data-minute"], p["data-series"], float(p["data-value"])) for p in points} == \
        points_from_api(doc["series"])
    latency_svg = next(s for s in page.svgs if s["chart"] == "latency")
    assert latency_svg["data-max"] == "5000"  # p99 3000 ms → an axis to 5000
    for p in points:
        assert float(p["cy"]) == pytest.approx(charts.WIDE.base - float(p["data-value"]) * float(latency_svg["data-scale"]),
                                               abs=0.011)
    assert "<script" not in html.split("</head>")[1]  # CSP: the pictures need no script


async def test_chart_labels_are_escaped():
    minute = "2030-01-01T10:00:00+00:00"
    series = [{"minute": minute, "sent": {"<b>x</b>": 2}, "failed": {}, "latency_p50_ms": 1.0, "latency_p99_ms": 2.0}]
    svg = str(charts.throughput(series, ['<b>x</b>"']))
    assert "<b>x</b>" not in svg and "&lt;b&gt;x&lt;/b&gt;&#34;" in svg
    funnel = str(charts.funnel({"step": '1"><script>', "sent": 0, "delivered": 0, "replied": 0, "positive": 0,
                                "booked": 0, "unsubscribed": 0}))
    assert "<script>" not in funnel


# ---- report.funnel ----------------------------------------------------------------------------------------------

async def sent_touch(db: asyncpg.Connection, account_id: uuid.UUID, lead_id: uuid.UUID, campaign_id: uuid.UUID | None,
                     step: int, channel: str, hours_ago: float, *, delivery: str | None = None,
                     status: str = "sent") -> uuid.UUID:
    touch_id: uuid.UUID = await db.fetchval(
        """insert into touch_runs (account_id, lead_id, campaign_id, step, channel, status, created_at, scheduled_at,
                                   sent_at, delivery_status)
           values ($1, $2, $3, $4, $5, $6, now() - make_interval(secs => $7 * 3600 + 60),
                   now() - make_interval(secs => $7 * 3600 + 60),
                   case when $6 = 'sent' then now() - make_interval(secs => $7 * 3600) end, $8)
           returning id""",
        account_id, lead_id, campaign_id, step, channel, status, hours_ago, delivery)
    return touch_id


async def reaction(db: asyncpg.Connection, lead_id: uuid.UUID, event_type: str, hours_ago: float,
                   **payload: Any) -> None:
    await factories.event(db, lead_id, event_type, channel="sms", payload_=payload, created_ago_s=hours_ago * 3600)


async def seed_funnel(db: asyncpg.Connection) -> dict[str, Any]:
    account_id = await factories.account(db, "Funnel Dental")
    spring = await campaign(db, account_id, name="Spring check-ups", steps=[(0, {}), (0, {})])
    other = await campaign(db, account_id, name="Other campaign", steps=[(0, {})])
    a, b, c, d, e = [await factories.lead(db, account_id, full_name=f"Lead {n}") for n in "ABCDE"]
    for lead in (a, b, c, d, e):
        await enroll(db, spring, lead)
    # A: step 1 by SMS, delivered, replied to; step 2 by e-mail, read, a positive reply, then a booking
    await sent_touch(db, account_id, a, spring, 1, "sms", 50, delivery="delivered")
    await reaction(db, a, "reply_received", 49, classification="neutral")
    await sent_touch(db, account_id, a, spring, 2, "email", 30, delivery="read")
    await reaction(db, a, "reply_received", 29, classification="positive")
    await reaction(db, a, "reply_positive", 29)
    await reaction(db, a, "appointment_booked", 20)
    # B: step 1 by SMS, then by WhatsApp; the one-click unsubscribe names the SMS touch (§19), later than both
    b_sms = await sent_touch(db, account_id, b, spring, 1, "sms", 50)
    await sent_touch(db, account_id, b, spring, 1, "whatsapp", 40, delivery="undelivered")
    await reaction(db, b, "unsubscribe", 10, touch_run_id=str(b_sms))
    # C: step 1 by voice, delivered; an out-of-office notice (no reply); another campaign's touch; then a reply,
    # which counts for that other campaign's touch (the latest before it), not for Spring's
    await sent_touch(db, account_id, c, spring, 1, "voice", 45, delivery="delivered")
    await reaction(db, c, "reply_received", 44, classification="out_of_office")
    await sent_touch(db, account_id, c, other, 1, "sms", 20)
    await reaction(db, c, "reply_negative", 10)
    # A again: an appointment reminder (no campaign) after the booking takes the reply that follows it
    await sent_touch(db, account_id, a, None, 1, "whatsapp", 15)
    await reaction(db, a, "reply_received", 14, classification="neutral")
    # D: a touch sent before the window, its reply too; a failed touch; a reply with no sent touch before it
    await sent_touch(db, account_id, d, spring, 1, "sms", 40 * 24)
    await reaction(db, d, "reply_received", 39 * 24, classification="neutral")
    await sent_touch(db, account_id, d, spring, 1, "sms", 3, status="failed")
    await reaction(db, d, "reply_positive", 2)
    # E: a reply before its only touch; an unsubscribe naming a touch that is not one of Spring's
    await reaction(db, e, "reply_received", 6, classification="neutral")
    await sent_touch(db, account_id, e, spring, 1, "email", 5)
    await reaction(db, e, "unsubscribe", 1, touch_run_id=str(uuid.uuid4()))
    return {"account_id": account_id, "spring": spring, "other": other}


def row(step: int, channel: str, sent: int, delivered: int = 0, replied: int = 0, positive: int = 0,
        unsubscribed: int = 0, booked: int = 0) -> dict[str, Any]:
    counts = {"sent": sent, "delivered": delivered, "replied": replied, "positive": positive,
              "unsubscribed": unsubscribed, "booked": booked}
    return {"step": step, "channel": channel, **counts,
            "rates": {k: round(v / sent, 4) for k, v in counts.items() if k != "sent"}}


async def test_report_funnel_counts_and_attributes_per_step_and_channel(db):
    world = await seed_funnel(db)
    report = await report_funnel(db, world["spring"])
    assert report["campaign_name"] == "Spring check-ups" and report["days"] == 30
    assert report["rows"] == [
        row(1, "email", 1),
        row(1, "sms", 2, delivered=1, replied=1, unsubscribed=1),
        row(1, "voice", 1, delivered=1),
        row(1, "whatsapp", 1),
        row(2, "email", 1, delivered=1, replied=1, positive=1, booked=1),
    ]
    steps = {s["step"]: s for s in report["steps"]}
    assert [steps[1][k] for k in ("sent", "delivered", "replied", "positive", "unsubscribed", "booked")] == \
        [5, 2, 1, 0, 1, 0]
    assert steps[1]["rates"] == {"delivered": 0.4, "replied": 0.2, "positive": 0.0, "unsubscribed": 0.2,
                                 "booked": 0.0}
    assert steps[1]["channels"] == ["email", "sms", "voice", "whatsapp"]
    assert [steps[2][k] for k in ("sent", "delivered", "replied", "positive", "unsubscribed", "booked")] == \
        [1, 1, 1, 1, 0, 1]
    assert report["totals"]["sent"] == 6 and report["totals"]["replied"] == 2
    assert report["totals"]["rates"]["replied"] == 0.3333

    # the other campaign: C's reply is its (its touch was the last to reach C before it)
    other = await report_funnel(db, world["other"])
    assert other["rows"] == [row(1, "sms", 1, replied=1)]
    # the last day: only E's e-mail, and its earlier reply does not count
    day = await report_funnel(db, world["spring"], days=1)
    assert day["rows"] == [row(1, "email", 1)]
    assert [s["sent"] for s in day["steps"]] == [1, 0]  # every step of the campaign, also one nothing was sent at
    assert day["steps"][1]["rates"]["replied"] is None

    with pytest.raises(NotFound):
        await report_funnel(db, uuid.uuid4())
    for bad in (0, 367, -1):
        with pytest.raises(ValueError, match="days must be an integer from 1 to 366"):
            await report_funnel(db, world["spring"], days=bad)
    json.dumps(report)  # the API's answer as it is


async def test_the_campaigns_page_draws_report_funnel(db, db_url):
    world = await seed_funnel(db)
    report = await report_funnel(db, world["spring"])
    async with web_client(db_url) as client:
        html = await (await client.get("/campaigns")).text()
    bars = [s for s in shapes_of(html).shapes if s["chart"] == "funnel" and s["campaign"] == str(world["spring"])]
    drawn = {(int(b["data-step"]), b["data-stage"], int(b["data-value"])) for b in bars}
    stages = ("sent", "delivered", "replied", "positive", "booked", "unsubscribed")
    assert drawn == {(s["step"], k, s[k]) for s in report["steps"] for k in stages}
    for b in bars:  # each bar's length is its share of the step's touches sent (130 px: all of them)
        step = next(s for s in report["steps"] if s["step"] == int(b["data-step"]))
        share = int(b["data-value"]) / step["sent"] if step["sent"] else 0
        assert float(b["width"]) == pytest.approx(130 * share, abs=0.011)
    assert "Funnel per step, last 30 days" in html and "2 · 40.0%" in html  # step 1: 2 of 5 delivered


# ---- /commands ---------------------------------------------------------------------------------------------------

async def command_run(db: asyncpg.Connection, at_s_ago: float, intent: str, *, error: str | None = None,
                      text: str | None = None) -> Any:
    return await db.fetchval(
        """insert into command_runs (created_at, actor, text, intent, args, preview, result, error)
           values (now() - make_interval(secs => $1), 'dashboard', $2, $3, $4, $5, $6, $7) returning id""",
        at_s_ago, text, intent, {"campaign_id": str(uuid.uuid4())}, {"touches_canceled": 3},
        None if error else {"paused": True, "touches_canceled": 3}, error)


async def test_commands_page_lists_command_runs_newest_first_by_cursor(db, db_url):
    ids = [await command_run(db, 100 - i, "campaign.pause", text=f"pause campaign number {i}") for i in range(53)]
    failed = await command_run(db, 0.5, "touch.cancel", error="touch is sent, not queued or scheduled",
                               text="cancel touch <x>")
    async with web_client(db_url) as client:
        first = await (await client.get("/commands")).text()
        rows = first.split("<tr data-run=")[1:]
        assert len(rows) == 50
        assert rows[0].startswith(f'"{failed}"') and "touch is sent, not queued or scheduled" in rows[0]
        assert rows[1].startswith(f'"{ids[-1]}"') and "pause campaign number 52" in rows[1]
        assert "touches_canceled" in rows[1] and "dashboard" in rows[1]
        older = first.split('class="more" href="')[1].split('"')[0].replace("&amp;", "&")
        second = await (await client.get("/commands" + older)).text()
        rest = second.split("<tr data-run=")[1:]
        assert [r.split('"')[1] for r in rest] == [str(i) for i in reversed(ids[:4])]
        assert 'class="more"' not in second
        assert (await client.get("/commands?before=nonsense")).status == 400
        assert 'href="/commands"' in first  # linked from the nav


# ---- in the real browser ----------------------------------------------------------------------------------------

async def element_screenshot(page: Page, selector: str, path: Path) -> None:
    """A screenshot of one element (its box on the page, scrolled into view)."""
    box = await page.evaluate(f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                              ".getBoundingClientRect(); return {x: r.x + scrollX, y: r.y + scrollY,"
                              " width: r.width, height: r.height}; })()")
    shot = await page.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                      "clip": {**box, "scale": 1}})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


async def sign_in(page: Page, base: str) -> None:
    await page.goto(f"{base}/")
    page.errors.clear()  # the browser logs the login page's 401 itself
    page.loaded.clear()
    await page.evaluate(f"document.getElementById('token').value = {json.dumps(TOKEN)};"
                        " document.querySelector('form').submit()")
    await page.loaded.wait()
    assert await page.evaluate("location.pathname") == "/"


LIVE_BARS = """[...document.querySelectorAll('#throughput-charts rect[data-value]')].map(r => [r.dataset.minute,
    r.dataset.channel, r.dataset.kind, Number(r.dataset.value), Number(r.getAttribute('height')),
    Number(r.closest('svg').dataset.scale)])"""
LIVE_POINTS = """[...document.querySelectorAll('#latency-chart circle[data-value]')].map(c => [c.dataset.minute,
    c.dataset.series, Number(c.dataset.value)])"""
API = "fetch('/api/timeseries?minutes=60', {credentials: 'same-origin'}).then(r => r.json())"


async def test_pictures_in_a_real_browser(db, db_url, chromium_binary):  # noqa: F811
    world = await seed_timeseries(db)
    funnel = await seed_funnel(db)
    async with web_client(db_url, dashboard_token=TOKEN) as client, chromium(chromium_binary) as browser:
        base = str(client.make_url("/")).rstrip("/")
        page = await browser.new_page()
        await sign_in(page, base)
        doc = await page.evaluate(API, await_promise=True)  # the API, read by the page with its session cookie
        check_series(doc["series"], world["expected"])
        bars = await page.evaluate(LIVE_BARS)
        assert {(m, c, k, v) for m, c, k, v, _, _ in bars} == bars_from_api(doc["series"])
        assert all(h == pytest.approx(v * s, abs=0.011) for _, _, _, v, h, s in bars)
        points = await page.evaluate(LIVE_POINTS)
        assert {(m, s, v) for m, s, v in points} == points_from_api(doc["series"])
        # drawn, not only present: the sms chart's bars have a size on the screen
        size = await page.evaluate("(() => { const r = document.querySelector('#throughput-charts "
                                   "rect[data-channel=sms][data-kind=sent]').getBoundingClientRect();"
                                   " return [r.width, r.height]; })()")
        assert size[0] > 1 and size[1] > 20
        await element_screenshot(page, "#throughput-charts", SCREENSHOTS / "pictures-throughput.png")
        await element_screenshot(page, "#latency-chart", SCREENSHOTS / "pictures-latency.png")

        # live: a touch sent now shows up as a bar without reloading the page
        marker = await page.evaluate("document.getElementById('content').dataset.marker = 'same page'")
        sent_minute = await db.fetchval(
            """insert into touch_runs (account_id, lead_id, channel, status, scheduled_at, sent_at)
               values ($1, $2, 'email', 'sent', now() - interval '250 milliseconds', now())
               returning date_trunc('minute', sent_at)""", world["account_id"], world["lead_id"])
        await page.wait_for(f"document.querySelector('#throughput-charts rect[data-channel=email][data-kind=sent]"
                            f"[data-minute=\"{sent_minute.isoformat()}\"]')")
        assert await page.evaluate("document.getElementById('content').dataset.marker") == marker
        doc = await page.evaluate(API, await_promise=True)
        live = await page.evaluate(LIVE_BARS)
        now_bar = next(v for m, c, k, v, _, _ in live if m == sent_minute.isoformat() and c == "email")
        assert now_bar == next(m["sent"]["email"] for m in doc["series"] if m["minute"] == sent_minute.isoformat())
        assert page.errors == []

        await page.goto(f"{base}/campaigns")
        report = await report_funnel(db, funnel["spring"])
        figure = f"figure[data-chart=funnel][data-campaign=\"{funnel['spring']}\"]"
        drawn = await page.evaluate(f"[...document.querySelectorAll('{figure} rect[data-stage]')].map(r =>"
                                    " [Number(r.dataset.step), r.dataset.stage, Number(r.dataset.value),"
                                    " r.getBoundingClientRect().width])")
        stages = ("sent", "delivered", "replied", "positive", "booked", "unsubscribed")
        assert {(s, k, v) for s, k, v, _ in drawn} == {(s["step"], k, s[k]) for s in report["steps"] for k in stages}
        widths = {(s, k): w for s, k, _, w in drawn}
        assert widths[(1, "sent")] > 100 and widths[(1, "delivered")] == pytest.approx(widths[(1, "sent")] * 0.4,
                                                                                      abs=0.6)
        await element_screenshot(page, f".funnels[data-campaign=\"{funnel['spring']}\"]",
                                 SCREENSHOTS / "pictures-funnel.png")
        await page.screenshot(SCREENSHOTS / "campaigns-funnels.png")
        assert page.errors == []
    for name in ("pictures-throughput", "pictures-latency", "pictures-funnel"):
        assert (SCREENSHOTS / f"{name}.png").stat().st_size > 3_000


CONSOLE_STATE = "document.getElementById('command-out').dataset.state"


async def type_command(page: Page, text: str) -> None:
    await page.evaluate(f"document.getElementById('command-text').value = {json.dumps(text)};"
                        " document.getElementById('command-run').click()")


async def test_the_console_in_a_real_browser(db, db_url, chromium_binary):  # noqa: F811
    """A read answered; an unknown phrase refused with the intents and examples; a write previewed (nothing
    changed, no command_runs row), confirmed (the campaign paused, one command_runs row), and listed on /commands.
    Needs the v2 intents (campaign.pause, command_runs) of issue 20's first half."""
    account_id = await factories.account(db, "Consola Dental")
    campaign_id = await campaign(db, account_id, name="Spring check-ups")
    lead_id = await factories.lead(db, account_id, full_name="Ana Perez")
    await enroll(db, campaign_id, lead_id)
    queued = await factories.touch(db, account_id, lead_id, campaign_id=campaign_id, status="scheduled",
                                   scheduled_in_s=3600)
    async with web_client(db_url, dashboard_token=TOKEN) as client, chromium(chromium_binary) as browser:
        base = str(client.make_url("/")).rstrip("/")
        page = await browser.new_page()
        await sign_in(page, base)

        await type_command(page, "system status")
        await page.wait_for(f"{CONSOLE_STATE} === 'result'")
        assert await page.evaluate("document.getElementById('command-out').dataset.intent") == "system.status"
        text = await page.evaluate("document.getElementById('command-out').innerText")
        assert "queue" in text and "due" in text
        await element_screenshot(page, "#console", SCREENSHOTS / "console-read.png")

        await type_command(page, "make me a sandwich")
        await page.wait_for(f"{CONSOLE_STATE} === 'error'")
        assert await page.evaluate("document.getElementById('command-out').dataset.status") == "422"
        text = await page.evaluate("document.getElementById('command-out').innerText")
        assert "Known intents" in text and "system.status" in text
        await page.evaluate("document.querySelector('#command-out button.example').click()")
        assert await page.evaluate("document.getElementById('command-text').value") == "system status"
        assert all("status of 422" in e for e in page.errors), page.errors  # the browser logs the 422 itself
        page.errors.clear()

        await type_command(page, "pause campaign Spring check-ups")
        await page.wait_for(f"{CONSOLE_STATE} === 'preview' && document.getElementById('command-confirm')")
        assert await page.evaluate("document.getElementById('command-out').dataset.intent") == "campaign.pause"
        preview = await page.evaluate("document.getElementById('command-out').innerText")
        assert "nothing has changed yet" in preview.lower() and "Spring check-ups" in preview
        counts = await page.evaluate("Object.fromEntries([...document.querySelectorAll('#command-out tr[data-key]')]"
                                     ".map(r => [r.dataset.key, r.cells[r.cells.length - 1].innerText.trim()]))")
        assert "1" in [v for k, v in counts.items() if "touches" in k], counts  # the one scheduled touch
        assert await db.fetchval("select status from campaigns where id = $1", campaign_id) == "active"
        assert await db.fetchval("select count(*) from command_runs") == 0
        await element_screenshot(page, "#console", SCREENSHOTS / "console-preview.png")

        await page.evaluate("document.getElementById('command-confirm').click()")
        await page.wait_for(f"{CONSOLE_STATE} === 'done'")
        assert await db.fetchval("select status from campaigns where id = $1", campaign_id) == "paused"
        assert await db.fetchval("select status from touch_runs where id = $1", queued) == "canceled"
        run = await db.fetchrow("select * from command_runs")
        assert run["intent"] == "campaign.pause" and run["actor"] == "dashboard" and run["error"] is None
        assert run["args"]["campaign_id"] == str(campaign_id) and run["text"] == "pause campaign Spring check-ups"
        assert await page.evaluate("document.querySelector('#command-out a[href=\"/commands\"]') !== null")
        await element_screenshot(page, "#console", SCREENSHOTS / "console-done.png")

        await page.goto(f"{base}/commands")
        row = await page.evaluate(f"document.querySelector('tr[data-run=\"{run['id']}\"]').innerText")
        assert "campaign.pause" in row and "dashboard" in row
        await page.screenshot(SCREENSHOTS / "console-commands.png")
        assert page.errors == []
