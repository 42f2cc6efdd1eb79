"""The JSON API, Command OS, health, auth and the dashboard's database limits (SPEC §14), over real HTTP."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest
from aiohttp import web

from listener.web import db as web_db
from listener.web.app import POOL
from tests import factories
from tests.cli_runner import cli, cli_env
from tests.harness import daemon_settings, running_daemon, wait_until
from tests.test_orchestrators import campaign, enroll, step_payload
from tests.web_harness import web_client

TOKEN = "s3cret-dashboard-token"


async def test_health_endpoints(db_url, empty_db_url):
    async with web_client(db_url) as client:
        assert (await client.get("/healthz")).status == 200
        ready = await client.get("/readyz")
        assert ready.status == 200 and (await ready.json())["status"] == "ready"
    async with web_client(empty_db_url) as client:
        assert (await client.get("/healthz")).status == 200
        ready = await client.get("/readyz")
        assert ready.status == 503 and "migrate" in (await ready.json())["reason"]


async def test_readyz_is_503_when_a_migration_is_missing(db, db_url):
    await db.execute("delete from schema_migrations where name = '0006_heartbeats.sql'")
    async with web_client(db_url) as client:
        ready = await client.get("/readyz")
        body = await ready.json()
    assert ready.status == 503 and body["missing_migrations"] == ["0006_heartbeats.sql"]


async def test_metrics_export_the_oldest_due_age(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    await factories.touch(db, account_id, lead_id, scheduled_in_s=-90)
    async with web_client(db_url) as client:
        response = await client.get("/metrics")
        text = await response.text()
    assert response.status == 200 and response.content_type.startswith("text/plain")
    (line,) = [ln for ln in text.splitlines() if ln.startswith("revenue_asi_oldest_due_touch_age_seconds ")]
    assert float(line.split()[1]) >= 90
    assert "revenue_asi_touches_due 1.0" in text and "revenue_asi_database_up 1.0" in text


async def test_api_status_is_the_cli_status_document(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    await factories.touch(db, account_id, lead_id, scheduled_in_s=-30)
    failed = await factories.touch(db, account_id, lead_id, channel="voice", status="failed")
    await factories.event(db, lead_id, "touch_failed", direction="outbound", channel="voice",
                          payload_={"touch_run_id": str(failed), "error_code": "21211"})
    async with web_client(db_url) as client:
        response = await client.get("/api/status")
        api = await response.json()
    assert response.status == 200
    cli_result = await cli("status", "--json", env=cli_env(db_url))
    assert cli_result.rc == 0, cli_result.err
    document = json.loads(cli_result.out)
    for doc in (api, document):  # the only values that move between the two calls
        doc["queue"].pop("oldest_due_age_s")
    assert api == document
    assert api["failures_last_hour"] == {"21211": 1} and api["queue"]["due"] == 1


async def test_api_lead_inspect_and_enroll(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id, full_name="Ana Perez")
    campaign_id = await campaign(db, account_id, steps=[(0, step_payload("whatsapp"))], name="Spring")
    async with web_client(db_url) as client:
        inspected = await client.get(f"/api/leads/{lead_id}")
        report = await inspected.json()
        assert inspected.status == 200 and report["lead"]["full_name"] == "Ana Perez"
        assert report["campaigns"] == [] and report["suppression"]["is_unsubscribed"] is False
        assert (await client.get(f"/api/leads/{uuid.uuid4()}")).status == 404
        assert (await client.get("/api/leads/nope")).status == 400

        enrolled = await client.post(f"/api/leads/{lead_id}/enroll", json={"campaign_id": str(campaign_id)})
        body = await enrolled.json()
        assert enrolled.status == 201 and body["status"] == "active" and body["campaign_name"] == "Spring"
        assert await db.fetchval("select status from campaign_leads where lead_id = $1", lead_id) == "active"
        again = await client.post(f"/api/leads/{lead_id}/enroll", json={"campaign_id": str(campaign_id)})
        assert again.status == 409 and "already enrolled" in (await again.json())["error"]
        missing = await client.post(f"/api/leads/{lead_id}/enroll", json={"campaign_id": str(uuid.uuid4())})
        assert missing.status == 404
        assert (await client.post(f"/api/leads/{lead_id}/enroll", json={})).status == 400
        assert (await client.post(f"/api/leads/{lead_id}/enroll", data="{nope",
                                  headers={"Content-Type": "application/json"})).status == 400
        form = await client.post(f"/api/leads/{lead_id}/enroll", data={"campaign_id": str(campaign_id)})
        assert form.status == 415  # a cross-site form post cannot enroll


async def test_command_os_intents_and_text(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id, full_name="Ana Perez")
    campaign_id = await campaign(db, account_id, steps=[(0, step_payload("sms"))], name="Spring")
    async with web_client(db_url) as client:
        status = await client.post("/api/command-os", json={"intent": "system.status"})
        body = await status.json()
        assert status.status == 200 and body["intent"] == "system.status" and body["args"] == {}
        assert set(body["result"]) >= {"queue", "touch_runs", "jobs", "cadences"}

        text = await client.post("/api/command-os", json={"text": "estado del sistema"})
        assert (await text.json())["intent"] == "system.status"

        inspect = await client.post("/api/command-os", json={"text": f"inspecciona el lead {lead_id}"})
        body = await inspect.json()
        assert inspect.status == 200 and body["intent"] == "lead.inspect"
        assert body["args"] == {"lead_id": str(lead_id)} and body["result"]["lead"]["full_name"] == "Ana Perez"

        enroll_text = f"inscribe al lead {lead_id} en la campaña {campaign_id}"
        previewed = await client.post("/api/command-os", json={"text": enroll_text})
        body = await previewed.json()
        assert previewed.status == 200 and body["intent"] == "lead.enroll" and body["confirm_required"] is True
        assert body["args"] == {"lead_id": str(lead_id), "campaign_id": str(campaign_id)}
        assert await db.fetchval("select count(*) from campaign_leads where lead_id = $1", lead_id) == 0  # SPEC §18
        enrolled = await client.post("/api/command-os", json={"intent": body["intent"], "args": body["args"],
                                                              "confirm": True, "text": enroll_text})
        assert enrolled.status == 200 and (await enrolled.json())["result"]["status"] == "active"
        twice = await client.post("/api/command-os", json={"intent": "lead.enroll",
                                                           "args": {"lead_id": str(lead_id),
                                                                    "campaign_id": str(campaign_id)}})
        assert twice.status == 409

        for bad in ({"text": "borra todo"}, {"intent": "lead.delete"}, {"intent": "lead.inspect", "args": {}},
                    {"intent": "lead.inspect", "args": {"lead_id": "x"}}, {}, [1, 2]):
            refused = await client.post("/api/command-os", json=bad)
            answer = await refused.json()
            assert refused.status == 422, bad
            assert answer["known_intents"][:3] == ["system.status", "lead.inspect", "lead.enroll"]
            assert len(answer["known_intents"]) == 11
        gone = await client.post("/api/command-os", json={"text": f"inspect lead {uuid.uuid4()}"})
        assert gone.status == 404


async def test_api_touches_filters_and_pages(db, db_url):
    account_id = await factories.account(db)
    ana = await factories.lead(db, account_id, full_name="Ana")
    bob = await factories.lead(db, account_id, full_name="Bob")
    campaign_id = await campaign(db, account_id, name="Spring")
    sms = [await factories.touch(db, account_id, ana, channel="sms", campaign_id=campaign_id) for _ in range(3)]
    email = await factories.touch(db, account_id, bob, channel="email", status="scheduled", scheduled_in_s=600)
    failed = await factories.touch(db, account_id, bob, channel="voice", status="failed")
    await db.execute("update touch_runs set error = '21211: invalid To number' where id = $1", failed)

    async def ids(client, query: str) -> set[str]:
        response = await client.get(f"/api/touches?{query}")
        assert response.status == 200, await response.text()
        return {t["id"] for t in (await response.json())["touches"]}

    async with web_client(db_url) as client:
        assert await ids(client, "") == {str(t) for t in (*sms, email, failed)}
        assert await ids(client, "channel=sms") == {str(t) for t in sms}
        assert await ids(client, "status=scheduled") == {str(email)}
        assert await ids(client, f"campaign={campaign_id}") == {str(t) for t in sms}
        assert await ids(client, f"lead={bob}") == {str(email), str(failed)}
        assert await ids(client, "error_code=21211") == {str(failed)}
        assert await ids(client, "error_code=30003") == set()
        first = await (await client.get("/api/touches?limit=2")).json()
        second = await (await client.get(f"/api/touches?limit=2&before={first['next']}")).json()
        third = await (await client.get(f"/api/touches?limit=2&before={second['next']}")).json()
        seen = [t["id"] for page in (first, second, third) for t in page["touches"]]
        assert len(seen) == 5 and len(set(seen)) == 5 and third["next"] is None
        for bad in ("status=sending", "channel=fax", "lead=nope", "limit=0", "limit=x", "before=garbage"):
            response = await client.get(f"/api/touches?{bad}")
            assert response.status == 400, bad
            assert "error" in await response.json()
        page = await client.get(f"/touches?lead={bob}&status=failed")
        html = await page.text()
        assert page.status == 200 and str(failed)[:8] in html and str(email)[:8] not in html
        assert (await client.get("/touches?channel=fax")).status == 400


async def test_auth_with_a_token(db_url):
    async def hook(request: web.Request) -> web.Response:
        return web.Response(text="hook")

    def extra(app: web.Application) -> None:  # a webhook route keeps its own authentication
        app.router.add_post("/webhooks/test", hook)

    async with web_client(db_url, extra=extra, dashboard_token=TOKEN) as client:
        for path in ("/", "/touches", "/campaigns", "/jobs", "/api/status", "/api/touches", "/metrics", "/api/feed"):
            response = await client.get(path, allow_redirects=False)
            assert response.status == 401, path
        page = await client.get("/touches?status=failed")
        assert 'name="token"' in await page.text()  # the login form, with a 401
        assert (await client.get("/api/status", headers={"Authorization": "Bearer wrong"})).status == 401
        assert (await client.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"})).status == 200
        assert (await client.post("/api/command-os", json={"intent": "system.status"})).status == 401
        assert (await client.get("/healthz")).status == 200 and (await client.get("/readyz")).status == 200
        assert (await client.post("/webhooks/test")).status == 200
        assert (await client.get("/static/dashboard.css")).status == 200
        sneaky = await client.get("/webhooks/../api/status", allow_redirects=False)
        assert sneaky.status in (401, 404)

        wrong = await client.post("/login", data={"token": "nope", "next": "/jobs"}, allow_redirects=False)
        assert wrong.status == 401 and "wrong token" in await wrong.text()
        assert "revenue_asi_session" not in client.session.cookie_jar.filter_cookies(client.make_url("/"))
        ok = await client.post("/login", data={"token": TOKEN, "next": "/jobs"}, allow_redirects=False)
        assert ok.status == 303 and ok.headers["Location"] == "/jobs"
        cookie = ok.cookies["revenue_asi_session"]
        assert TOKEN not in cookie.value and cookie["httponly"]
        assert (await client.get("/jobs")).status == 200
        assert (await client.get("/api/status")).status == 200
        away = await client.post("/login", data={"token": TOKEN, "next": "//evil.example/"}, allow_redirects=False)
        assert away.headers["Location"] == "/"
        await client.post("/logout", allow_redirects=False)
        assert (await client.get("/jobs", allow_redirects=False)).status == 401


async def test_dashboard_reads_are_read_only_and_time_limited(db_url):
    async with web_client(db_url) as client:
        app = client.server.app
        async with web_db.read_only(app) as conn:
            with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                await conn.execute("insert into accounts (name) values ('x')")
        async with web_db.read_only(app, timeout_ms=50) as conn:
            with pytest.raises(asyncpg.QueryCanceledError):
                await conn.execute("select pg_sleep(2)")
        async with app[POOL].acquire() as conn:
            assert await conn.fetchval("show statement_timeout") == "0"  # SET LOCAL ended with the transaction


async def test_heartbeat_and_home_page_show_the_daemon(db, db_url):
    from listener.providers.sandbox import SandboxProviders

    async with SandboxProviders() as fake:
        settings = daemon_settings(fake, worker_id="hb-test-worker")
        async with running_daemon(db_url, settings):
            await wait_until(db_url, "select listen_connected from daemon_heartbeats where worker_id = $1",
                             "hb-test-worker")
            async with web_client(db_url) as client:
                html = await (await client.get("/")).text()
                assert "hb-test-worker" in html and "alive" in html
                metrics = await (await client.get("/metrics")).text()
                assert 'revenue_asi_daemon_heartbeat_age_seconds{worker_id="hb-test-worker"}' in metrics
                assert "revenue_asi_daemons_alive 1.0" in metrics
    row = await db.fetchrow("select * from daemon_heartbeats where worker_id = 'hb-test-worker'")
    assert row["stopped_at"] is not None and row["listen_connected"] is False


async def sse_event(response, kind: str) -> dict:
    """The data of the next server-sent event of `kind` on an open /api/feed response."""
    event = None
    while True:
        line = (await response.content.readline()).decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event == kind:
            return json.loads(line[6:])


async def test_live_feed_streams_an_event_inserted_after_connecting(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    async with web_client(db_url) as client:
        response = await client.get("/api/feed")
        assert response.status == 200 and response.content_type == "text/event-stream"
        await asyncio.wait_for(sse_event(response, "ready"), 10)
        event_id = await factories.event(db, lead_id, "reply_positive", payload_={"body": "sí, me interesa"})
        event = await asyncio.wait_for(sse_event(response, "event"), 10)
        assert event["id"] == str(event_id) and event["event_type"] == "reply_positive"
        assert "body" not in json.dumps(event) and "interesa" not in json.dumps(event)
        response.close()


async def test_live_feed_comes_back_after_its_listen_connection_is_cut(db, db_url):
    from listener.web.feed import APPLICATION_NAME

    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    async with web_client(db_url) as client:
        response = await client.get("/api/feed")
        await asyncio.wait_for(sse_event(response, "ready"), 10)
        await wait_until(db_url, "select count(*) = 1 from pg_stat_activity where application_name = $1",
                         APPLICATION_NAME)
        assert await db.fetchval("select pg_terminate_backend(pid) from pg_stat_activity"
                                 " where application_name = $1", APPLICATION_NAME)
        await wait_until(db_url, "select count(*) = 1 from pg_stat_activity where application_name = $1",
                         APPLICATION_NAME)  # reconnected by itself
        event_id = await factories.event(db, lead_id, "do_not_contact")
        event = await asyncio.wait_for(sse_event(response, "event"), 10)
        assert event["id"] == str(event_id)
        response.close()


async def test_pages_render(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id, full_name="Ana Perez")
    campaign_id = await campaign(db, account_id, name="Spring")
    await enroll(db, campaign_id, lead_id)
    stopped = await factories.lead(db, account_id, full_name="Bruno Diaz")
    await db.execute("insert into campaign_leads (campaign_id, lead_id, status, stop_reason) values ($1, $2,"
                     " 'stopped', 'reply_positive')", campaign_id, stopped)
    touch_id = await factories.touch(db, account_id, lead_id, campaign_id=campaign_id, status="sent",
                                     payload_=factories.payload("sms", provider_config={"auth_token": "tok123"}))
    await factories.event(db, lead_id, "touch_deferred", direction="internal",
                          payload_={"touch_run_id": str(touch_id), "reason": "quiet_hours"})
    await factories.event(db, lead_id, "touch_delivered", direction="outbound",
                          payload_={"touch_run_id": str(touch_id), "provider_status": "delivered"})
    async with web_client(db_url) as client:
        for path in ("/", "/touches", f"/touches/{touch_id}", f"/leads/{lead_id}", "/campaigns", "/jobs"):
            response = await client.get(path)
            assert response.status == 200, (path, await response.text())
            assert "default-src 'self'" in response.headers["Content-Security-Policy"]
        detail = await (await client.get(f"/touches/{touch_id}")).text()
        assert "touch_deferred" in detail and "touch_delivered" in detail and "tok123" not in detail
        assert "delivered" in detail and "Ana Perez" in detail
        fragment = await (await client.get("/jobs", headers={"X-Fragment": "1"})).text()
        assert "<html" not in fragment and "job_runs" in fragment
        campaigns = await (await client.get("/campaigns")).text()
        assert "Spring" in campaigns and "reply_positive 1" in campaigns
        assert (await client.get(f"/touches/{uuid.uuid4()}")).status == 404
        assert (await client.get(f"/leads/{uuid.uuid4()}")).status == 404
        assert (await client.get("/touches/nope")).status == 400


async def test_revenue_asi_web_serves_the_dashboard(db_url):
    import signal
    import socket

    import aiohttp

    from tests.cli_runner import SCRIPT

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = cli_env(db_url, PORT=str(port), REVENUE_ASI_DASHBOARD_TOKEN=TOKEN)
    process = await asyncio.create_subprocess_exec(str(SCRIPT), "web", env=env, stdout=asyncio.subprocess.DEVNULL,
                                                   stderr=asyncio.subprocess.PIPE)
    try:
        assert process.stderr is not None
        while b"web application on" not in (line := await asyncio.wait_for(process.stderr.readline(), 60)):
            assert line, "revenue-asi web exited"
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{port}"
            async with http.get(f"{base}/readyz") as ready:
                assert ready.status == 200
            async with http.get(f"{base}/api/status") as denied:
                assert denied.status == 401
            async with http.get(f"{base}/api/status", headers={"Authorization": f"Bearer {TOKEN}"}) as ok:
                assert ok.status == 200 and "queue" in await ok.json()
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0


async def test_the_lead_page_shows_appointments_and_their_reminders(db, db_url):
    from listener.engine.appointments import drain_appointments
    from listener.settings import load_settings
    from listener.store.database import create_pool

    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id, full_name="Ana Perez")
    appt = await db.fetchval("insert into appointments (account_id, lead_id, starts_at, location) values"
                             " ($1, $2, now() + interval '3 days', 'Clinica <Centro>') returning id", account_id, lead_id)
    async with web_client(db_url) as client:
        before = await (await client.get(f"/leads/{lead_id}")).text()
        pool = await create_pool(db_url)
        try:
            await drain_appointments(pool, load_settings(appointment_channel="sms"))
        finally:
            await pool.close()
        page = await (await client.get(f"/leads/{lead_id}")).text()
    reminders = await db.fetch("select id from touch_runs where payload->'meta'->>'appointment_id' = $1", str(appt))
    assert len(reminders) == 2
    section = page[page.index('id="appointments"'):page.index("Timeline")]
    assert "Clinica &lt;Centro&gt;" in section and "upcoming" in section and "booked" in section  # escaped
    assert all(f"/touches/{r['id']}" in section for r in reminders)
    assert "1440 min · sms" in section and "60 min · sms" in section
    assert "/touches/" not in before[before.index('id="appointments"'):before.index("Timeline")]
