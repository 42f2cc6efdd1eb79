"""The web surface probed as an attacker would (issue 17), over real HTTP and a real database: redirects after
sign-in stay on site, control characters in parameters are a 400 (never a 500), hostile JSON is a 400 or 422,
sign-out ends the session for every web process, wrong tokens are throttled, and no answer names its server."""

from __future__ import annotations

import asyncio
import html
import re
import uuid
from urllib.parse import quote, urljoin, urlsplit

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from listener.rules import safejson
from listener.web.auth import COOKIE, FAILURE_WINDOW_S, MAX_FAILURES, LoginThrottle, _safe_next
from tests import factories
from tests.test_orchestrators import campaign, step_payload
from tests.web_harness import web_client

TOKEN = "hostile-test-dashboard-token"
SITE = "https://dashboard.example/login"  # where a browser would resolve Location against
KNOWN_INTENTS = ["system.status", "lead.inspect", "lead.enroll", "campaign.list", "campaign.pause", "campaign.resume",
                 "lead.stop", "lead.suppress", "touch.cancel", "reactions.retry", "report.funnel"]


def stays_on_site(location: str) -> bool:
    """A path on this site as a browser follows it (urllib, like browsers, drops tab, CR and LF first)."""
    followed = urlsplit(urljoin(SITE, location))
    return (location.startswith("/") and not location.startswith(("//", "/\\"))
            and not re.search(r"[\x00-\x20\x7f\\]", location)
            and followed.scheme == "https" and followed.netloc == "dashboard.example")


# --- 1. open redirect after sign-in --------------------------------------------------------------------------

HOSTILE_NEXT = ["/\t/evil.example", "/\n/evil.example", "/\r\n/evil.example", "/\r/evil.example",
                "//evil.example", "/\\evil.example", "/\\/evil.example", "https://evil.example/", "http:evil.example",
                "\t//evil.example", " //evil.example", "/ /evil.example", "/\x00/evil.example", "///evil.example",
                "javascript:alert(1)", "/\u3000/evil.example", "/\x7f/evil.example", ""]


def hidden_next(page: str) -> str:
    (value,) = re.findall(r'<input type="hidden" name="next" value="([^"]*)"', page)
    return html.unescape(value)


@pytest.mark.parametrize("target", HOSTILE_NEXT)
def test_safe_next_refuses_what_would_leave_the_site(target):
    assert _safe_next(target) == "/"


@pytest.mark.parametrize("target", ["/jobs", "/touches?status=failed&channel=sms", "/leads/6f1c2a3b-1111-4a2b",
                                    "/%2F/evil.example"])
def test_safe_next_keeps_a_path_on_this_site(target):
    assert _safe_next(target) == target and stays_on_site(target)


@settings(max_examples=500, deadline=None, database=None)
@given(st.one_of(st.text(), st.text(alphabet="/\\\t\n\r :.%@?#evilxampl0-9AZ\x00\x7f\u3000"),
                 st.builds(lambda a, b: a + b, st.sampled_from(["/", "//", "/\\", "/\t", "https:", "\t/"]), st.text())))
def test_whatever_next_says_the_redirect_stays_on_site(target):
    assert stays_on_site(_safe_next(target))


async def test_login_redirect_stays_on_site_for_every_hostile_next(db_url):
    async with web_client(db_url, dashboard_token=TOKEN) as client:
        for target in HOSTILE_NEXT:
            # direct POST
            client.session.cookie_jar.clear()
            posted = await client.post("/login", data={"token": TOKEN, "next": target}, allow_redirects=False)
            assert posted.status == 303, target
            assert stays_on_site(posted.headers["Location"]), (target, posted.headers["Location"])
            # through the form: GET /login?next=… renders the hidden field, which the browser posts back
            client.session.cookie_jar.clear()
            form = await client.get(f"/login?next={quote(target, safe='')}")
            assert form.status == 200, target
            carried = hidden_next(await form.text())
            assert stays_on_site(carried), (target, carried)
            posted = await client.post("/login", data={"token": TOKEN, "next": carried}, allow_redirects=False)
            assert posted.status == 303 and stays_on_site(posted.headers["Location"]), (target, posted.headers)
        ok = await client.post("/login", data={"token": TOKEN, "next": "/jobs?job=sweep"}, allow_redirects=False)
        assert ok.headers["Location"] == "/jobs?job=sweep"  # a real path still goes where it should


async def test_an_unauthenticated_hostile_path_never_reaches_the_login_form(db_url):
    """The 401 login page carries the page asked for as `next`: a path that would leave the site is refused
    before (400) or carried as a path on the site."""
    async with web_client(db_url, dashboard_token=TOKEN) as client:
        for path in ("/%09/evil.example", "/%0A/evil.example", "/%0D%0A/evil.example", "/%2F/evil.example",
                     "//evil.example", "/%5C/evil.example"):
            base = str(client.make_url("/")).rstrip("/")
            answer = await client.session.get(URL(base + path, encoded=True), allow_redirects=False)
            assert answer.status in (400, 401, 404), path
            if answer.status == 401:
                carried = hidden_next(await answer.text())
                posted = await client.post("/login", data={"token": TOKEN, "next": carried}, allow_redirects=False)
                assert stays_on_site(posted.headers["Location"]), (path, posted.headers["Location"])
                client.session.cookie_jar.clear()


# --- 2. control characters in parameters ---------------------------------------------------------------------

CONTROL_URLS = [
    "/api/touches?error_code=%00", "/touches?error_code=%00", "/jobs?job=%00",
    "/api/touches?status=%00", "/touches?channel=sms%00", "/api/touches?lead=%00", "/touches?campaign=%00",
    "/api/touches?before=1_%00", "/api/touches?limit=5%00", "/api/events?limit=%00", "/touches?error_code=21211%0A",
    "/touches?error_code=%09", "/jobs?job=sweep%0D%0A", "/jobs?job=%1F", "/jobs?job=%7F", "/api/touches?%00=1",
    "/api/status?x=%00", "/?x=%00", "/campaigns?x=%0A", "/metrics?x=%00",
    "/leads/%00", "/touches/%00", "/api/leads/%00", "/api/leads/a%0Ab",
]


@pytest.mark.parametrize("url", CONTROL_URLS)
async def test_a_control_character_in_a_parameter_is_a_400(db_url, url):
    async with web_client(db_url) as client:
        answer = await client.get(url)
        text = await answer.text()
    assert answer.status == 400, (url, answer.status, text[:300])
    if url.startswith(("/api/", "/metrics")):
        assert answer.content_type == "application/json"
        assert "control character" in (await answer.json())["error"]
    else:
        assert answer.content_type == "text/html" and "control character" in text


async def test_a_control_character_is_a_400_behind_the_token_too(db_url):
    async with web_client(db_url, dashboard_token=TOKEN) as client:
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert (await client.get("/api/touches?error_code=%00", headers=bearer)).status == 400
        assert (await client.get("/touches?error_code=%00", headers=bearer)).status == 400
        assert (await client.get("/api/touches?error_code=21211", headers=bearer)).status == 200
        assert (await client.get("/touches?error_code=21211", headers=bearer)).status == 200


async def test_plain_parameters_still_work(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    failed = await factories.touch(db, account_id, lead_id, channel="voice", status="failed")
    await db.execute("update touch_runs set error = '21211: invalid To number' where id = $1", failed)
    async with web_client(db_url) as client:
        found = await client.get("/api/touches?error_code=21211&status=failed&channel=voice")
        assert found.status == 200 and [t["id"] for t in (await found.json())["touches"]] == [str(failed)]
        assert (await client.get("/touches?error_code=21211")).status == 200
        assert (await client.get("/jobs?job=sweep")).status == 200
        assert (await client.get("/touches?error_code=caf%C3%A9")).status == 200  # non-ASCII text is not control


# --- 3. hostile JSON -----------------------------------------------------------------------------------------

DEEP = "[" * 10_000 + "]" * 10_000


async def post_raw(client, path: str, body: str | bytes) -> aiohttp.ClientResponse:
    return await client.post(path, data=body if isinstance(body, bytes) else body.encode(),
                             headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("body, reason", [
    (DEEP, "nested more than"),
    ('{"intent": ' + DEEP + "}", "nested more than"),
    ('{"text": ' + "{\"a\": " * 5_000 + "1" + "}" * 5_000 + "}", "nested more than"),
    ('{"intent": "lead.inspect", "args": {"lead_id": ' + "1" * 5_000 + "}}", "digits"),
    ('{"intent": 1e999}', "out of range"),
    ('{"intent": NaN}', "not JSON"),
    ('{"intent": "system.status"', "not JSON"),
    ("", "not JSON"),
    (b'{"text": "\xff\xfe"}', "not UTF-8"),
])
async def test_hostile_json_on_command_os_is_a_400_with_the_reason(db_url, body, reason):
    async with web_client(db_url) as client:
        answer = await post_raw(client, "/api/command-os", body)
        assert answer.status == 400 and reason in (await answer.json())["error"], await answer.text()
        assert (await client.post("/api/command-os", json={"intent": "system.status"})).status == 200


@pytest.mark.parametrize("body, reason", [
    (DEEP, "nested more than"),
    ('{"campaign_id": ' + DEEP + "}", "nested more than"),
    ('{"campaign_id": ' + "9" * 5_000 + "}", "digits"),
    ('{"campaign_id": "x"', "not JSON"),
])
async def test_hostile_json_on_enroll_is_a_400_with_the_reason(db, db_url, body, reason):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    async with web_client(db_url) as client:
        answer = await post_raw(client, f"/api/leads/{lead_id}/enroll", body)
        assert answer.status == 400 and reason in (await answer.json())["error"], await answer.text()
    assert await db.fetchval("select count(*) from campaign_leads") == 0


async def test_a_body_beyond_the_bounds_is_refused_not_a_500(db_url):
    async with web_client(db_url) as client:
        big = '{"text": "' + "a" * safejson.MAX_JSON_CHARS + '"}'
        answer = await post_raw(client, "/api/command-os", big)
        assert answer.status in (400, 413)


@pytest.mark.parametrize("body", [
    {"intent": []}, {"intent": ["system.status"]}, {"intent": {}}, {"intent": {"system.status": 1}},
    {"intent": 1}, {"intent": None}, {"intent": True},
    {"intent": "lead.inspect", "args": []}, {"intent": "lead.inspect", "args": "lead_id"},
    {"intent": "lead.inspect", "args": 5}, {"intent": "system.status", "args": [1]},
    {"intent": "lead.inspect", "args": {"lead_id": []}}, {"intent": "lead.inspect", "args": {"lead_id": {}}},
    {"text": []}, {"text": {}}, {"text": 5}, {"text": None}, {"text": "\u0000"}, {"text": "\ud800"},
])
async def test_wrong_types_on_command_os_are_a_422_with_the_known_intents(db_url, body):
    async with web_client(db_url) as client:
        answer = await client.post("/api/command-os", json=body)
        assert answer.status == 422, (body, await answer.text())
        assert (await answer.json())["known_intents"] == KNOWN_INTENTS


async def test_wrong_types_on_enroll_are_a_400(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    campaign_id = await campaign(db, account_id, steps=[(0, step_payload("sms"))])
    async with web_client(db_url) as client:
        for body in ({"campaign_id": [str(campaign_id)]}, {"campaign_id": {"id": str(campaign_id)}},
                     {"campaign_id": None}, {"campaign_id": 5}, {"campaign_id": "\u0000"}, [str(campaign_id)], "x"):
            answer = await client.post(f"/api/leads/{lead_id}/enroll", json=body)
            assert answer.status == 400 and "error" in await answer.json(), body
        assert await db.fetchval("select count(*) from campaign_leads") == 0
        done = await client.post(f"/api/leads/{lead_id}/enroll", json={"campaign_id": str(campaign_id)})
        assert done.status == 201


# --- 4. sessions end at sign-out -----------------------------------------------------------------------------


async def sign_in(client, token: str = TOKEN) -> str:
    answer = await client.post("/login", data={"token": token, "next": "/jobs"}, allow_redirects=False)
    assert answer.status == 303, await answer.text()
    cookie = answer.cookies[COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    client.session.cookie_jar.clear()  # every request below names its cookie itself
    return cookie.value


async def with_cookie(client, path: str, value: str) -> int:
    async with client.session.get(client.make_url(path), headers={"Cookie": f"{COOKIE}={value}"},
                                  allow_redirects=False) as answer:
        return answer.status


async def test_logout_ends_the_session(db, db_url):
    async with web_client(db_url, dashboard_token=TOKEN) as client:
        value = await sign_in(client)
        assert TOKEN not in value
        assert await with_cookie(client, "/api/status", value) == 200
        assert await with_cookie(client, "/jobs", value) == 200
        stored = await db.fetch("select id, ended_at from dashboard_sessions")
        assert len(stored) == 1 and stored[0]["ended_at"] is None and value not in stored[0]["id"]

        async with client.session.post(client.make_url("/logout"), headers={"Cookie": f"{COOKIE}={value}"},
                                       allow_redirects=False) as out:
            assert out.status == 303 and out.headers["Location"] == "/login"
            assert out.cookies[COOKIE].value == ""  # the browser's copy is cleared
        assert await db.fetchval("select ended_at is not null from dashboard_sessions") is True
        assert await with_cookie(client, "/api/status", value) == 401
        assert await with_cookie(client, "/jobs", value) == 401
        assert await with_cookie(client, "/metrics", value) == 401
        # another sign-in is a new session; the ended one stays ended
        again = await sign_in(client)
        assert again != value and await with_cookie(client, "/api/status", again) == 200
        assert await with_cookie(client, "/api/status", value) == 401


async def test_an_expired_session_is_refused(db, db_url):
    async with web_client(db_url, dashboard_token=TOKEN) as client:
        value = await sign_in(client)
        assert await with_cookie(client, "/api/status", value) == 200
        await db.execute("update dashboard_sessions set expires_at = now() - interval '1 second'")
        assert await with_cookie(client, "/api/status", value) == 401
        assert await with_cookie(client, "/", value) == 401


async def test_sessions_are_shared_by_every_web_process(db_url):
    async with web_client(db_url, dashboard_token=TOKEN) as one, web_client(db_url, dashboard_token=TOKEN) as two:
        value = await sign_in(one)
        assert await with_cookie(two, "/api/status", value) == 200
        async with one.session.post(one.make_url("/logout"), headers={"Cookie": f"{COOKIE}={value}"},
                                    allow_redirects=False) as out:
            assert out.status == 303
        assert await with_cookie(two, "/api/status", value) == 401


async def test_a_new_dashboard_token_ends_the_old_sessions(db_url):
    async with web_client(db_url, dashboard_token=TOKEN) as old:
        value = await sign_in(old)
    async with web_client(db_url, dashboard_token="a-rotated-dashboard-token") as new:
        assert await with_cookie(new, "/api/status", value) == 401


async def test_forged_cookies_are_refused(db_url):
    async with web_client(db_url, dashboard_token=TOKEN) as client:
        await sign_in(client)
        for forged in ("x", "A" * 43, TOKEN, "' or 1=1 --", "a" * 4000):
            assert await with_cookie(client, "/api/status", forged) == 401, forged
        assert (await client.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"})).status == 200


# --- 5. failed sign-ins are throttled ------------------------------------------------------------------------


async def test_wrong_tokens_are_throttled_per_address(db_url):
    async with web_client(db_url, dashboard_token=TOKEN) as client:
        for attempt in range(MAX_FAILURES):
            wrong = await client.post("/login", data={"token": f"guess-{attempt}"}, allow_redirects=False)
            assert wrong.status == 401, attempt
        sixth = await client.post("/login", data={"token": "guess-6"}, allow_redirects=False)
        assert sixth.status == 429 and 0 < int(sixth.headers["Retry-After"]) <= FAILURE_WINDOW_S
        assert "too many wrong tokens" in await sixth.text()
        # while throttled even the right token waits (or a guesser would learn when it guessed right)
        right = await client.post("/login", data={"token": TOKEN}, allow_redirects=False)
        assert right.status == 429 and "Retry-After" in right.headers and COOKIE not in right.cookies
        # Bearer requests are not sign-ins
        assert (await client.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"})).status == 200

        # another client address is not affected
        other = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0)))
        try:
            async with other.post(client.make_url("/login"), data={"token": "nope"}, allow_redirects=False) as a:
                assert a.status == 401
            async with other.post(client.make_url("/login"), data={"token": TOKEN}, allow_redirects=False) as b:
                assert b.status == 303
        finally:
            await other.close()


async def test_a_successful_sign_in_resets_the_count(db_url):
    async with web_client(db_url, dashboard_token=TOKEN) as client:
        for _ in range(2):
            for attempt in range(MAX_FAILURES - 1):
                assert (await client.post("/login", data={"token": f"g{attempt}"}, allow_redirects=False)).status == 401
            assert (await client.post("/login", data={"token": TOKEN}, allow_redirects=False)).status == 303
        assert (await client.post("/login", data={"token": "g"}, allow_redirects=False)).status == 401


def test_the_throttle_window_slides():
    now = [1000.0]
    throttle = LoginThrottle(clock=lambda: now[0])
    for _ in range(MAX_FAILURES):
        assert throttle.retry_after("a") is None
        throttle.failed("a")
        now[0] += 10
    assert throttle.retry_after("a") == FAILURE_WINDOW_S - 50
    assert throttle.retry_after("b") is None
    now[0] = 1000.0 + FAILURE_WINDOW_S  # the first failure leaves the window: one more try
    assert throttle.retry_after("a") is None
    throttle.failed("a")
    assert throttle.retry_after("a") == 10
    throttle.succeeded("a")
    assert throttle.retry_after("a") is None


# --- 6. no Server: Python/… aiohttp/… ------------------------------------------------------------------------


async def test_no_answer_names_its_server(db_url):
    async def hook(_request: web.Request) -> web.Response:
        return web.Response(text="hook")

    def extra(app: web.Application) -> None:
        app.router.add_post("/webhooks/test", hook)

    async with web_client(db_url, extra=extra) as client:
        answers = [await client.get("/"), await client.get("/api/status"), await client.get("/no/such/page"),
                   await client.get("/api/no-such-route"), await client.get("/healthz"), await client.get("/readyz"),
                   await client.get("/metrics"), await client.get("/static/dashboard.css"),
                   await client.post("/webhooks/test"), await client.post("/webhooks/twilio/status"),
                   await client.get("/webhooks/elasticemail"), await client.get("/touches?status=%00"),
                   await client.get(f"/api/leads/{uuid.uuid4()}"), await client.delete("/api/status")]
        statuses = {a.status for a in answers}
        assert {200, 400, 403, 404, 405} <= statuses
        for answer in answers:
            server = answer.headers.get("Server", "")
            assert "aiohttp" not in server.lower() and "python" not in server.lower(), (answer.url, server)
    async with web_client(db_url, dashboard_token=TOKEN) as client:
        for answer in (await client.get("/"), await client.get("/api/status"),
                       await client.post("/login", data={"token": "x"}, allow_redirects=False)):
            assert answer.status == 401 and "aiohttp" not in answer.headers.get("Server", "").lower()


# --- found on the way: bytes that are not UTF-8 ----------------------------------------------------------------


async def raw_status(client, request: bytes) -> bytes:
    """Send `request` byte for byte (no client library re-encodes it) and return the status line."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(request)
        await writer.drain()
        return (await reader.readline()).strip()
    finally:
        writer.close()
        await writer.wait_closed()


async def test_bytes_that_are_not_utf8_are_refused_not_a_500(db_url):
    async with web_client(db_url, dashboard_token=TOKEN) as client:
        form = await client.post("/login", data=b"token=\xff\xfe&next=/jobs",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"}, allow_redirects=False)
        assert form.status == 400 and "UTF-8" in await form.text()
        bearer = await raw_status(client, b"GET /api/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                          b"Authorization: Bearer \xff\xfe\r\n\r\n")
        assert bearer == b"HTTP/1.1 401 Unauthorized"
        cookie = await raw_status(client, b"GET /api/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                          b"Cookie: " + COOKIE.encode() + b"=\xff\xfe\r\n\r\n")
        assert cookie == b"HTTP/1.1 401 Unauthorized"


async def test_a_signed_in_page_offers_sign_out_and_it_ends_the_session(db, db_url):
    async with web_client(db_url, dashboard_token=TOKEN) as client:
        value = await sign_in(client)
        async with client.session.get(client.make_url("/jobs"), headers={"Cookie": f"{COOKIE}={value}"}) as page:
            html = await page.text()
        assert page.status == 200 and '<form class="signout" method="post" action="/logout">' in html
        async with client.session.get(client.make_url("/jobs"),
                                      headers={"Authorization": f"Bearer {TOKEN}"}) as bearer:
            assert 'action="/logout"' not in await bearer.text()  # no session to end
        async with client.session.post(client.make_url("/logout"), headers={"Cookie": f"{COOKIE}={value}"},
                                       allow_redirects=False) as out:
            assert out.status == 303
        assert await with_cookie(client, "/jobs", value) == 401
