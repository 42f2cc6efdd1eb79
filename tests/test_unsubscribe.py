"""One-click unsubscribe (SPEC §19, RFC 8058), each line of the contract: the signed token, the headers on every
e-mail (through the ElasticEmail driver and the sandbox, which checks Content.Headers as ElasticEmail's definition
has it), {unsubscribe_url} in templates, the refusal to start without a secret, POST /u/{token} (one event, open
touches canceled at once, idempotent), GET /u/{token} (a page, never an unsubscribe), forged / truncated / foreign
tokens (404, nothing written), the public route under a dashboard token and the request guard, and secrets kept out
of logs, events and payloads. Real HTTP, the real daemon, the embedded PostgreSQL."""

from __future__ import annotations

import json
import logging
import uuid

import aiohttp
import pytest

from listener.engine.daemon import Daemon
from listener.providers.base import OutboundMessage
from listener.providers.elasticemail import ElasticEmailProvider, email_header_problem
from listener.providers.sandbox import SandboxProviders
from listener.rules.errors import ProviderError
from listener.rules.unsubscribe import TOKEN_CHARS, UnsubscribeToken, sign, unsubscribe_url, verify
from listener.settings import SettingsError, load_settings
from listener.web.app import create_app
from tests import factories
from tests.cli_runner import cli, cli_env
from tests.harness import UNSUBSCRIBE_SECRET, daemon_settings, events_of, running_daemon, wait_until
from tests.webhook_client import PUBLIC_URL, web_app

ONE_CLICK = {"List-Unsubscribe": "One-Click"}
SECRET_NAME = "REVENUE_ASI_UNSUBSCRIBE_SECRET"


async def email_touch(db, **kw):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id, email="ana@example.com")
    touch_id = await factories.touch(db, account_id, lead_id, channel="email", **kw)
    return account_id, lead_id, touch_id


async def unsubscribes(db, lead_id=None):
    return await db.fetch("select * from core_memory_events where event_type = 'unsubscribe'"
                          " and ($1::uuid is null or lead_id = $1)", lead_id)


async def post(client, token, data=None, **kw):
    async with client.session.post(f"{client.base_url}/u/{token}", data=ONE_CLICK if data is None else data,
                                   **kw) as response:
        return response.status, await response.text()


async def get(client, token):
    async with client.session.get(f"{client.base_url}/u/{token}") as response:
        return response.status, await response.text(), response.headers


# --- the token ------------------------------------------------------------------------------------------------


def test_the_token_names_lead_account_and_touch_and_refuses_anything_else():
    lead, account, touch = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    token = sign(UNSUBSCRIBE_SECRET, lead, account, touch)
    assert len(token) == TOKEN_CHARS == 87 and token.replace("-", "").replace("_", "").isalnum()  # URL-safe
    assert verify(UNSUBSCRIBE_SECRET, token) == UnsubscribeToken(lead, account, touch)
    flipped = token[:40] + ("A" if token[40] != "A" else "B") + token[41:]
    last = token[:-1] + ("B" if token[-1] == "A" else "A")  # changes the MAC, or is a second spelling of it
    for bad in (flipped, last, token[:-1], token[:-10], token + "A", token + "=", token[1:], "", "x" * 87,
                token.replace("-", "+").replace("_", "/"), " " + token[1:]):
        assert verify(UNSUBSCRIBE_SECRET, bad) is None, bad
    assert verify("another secret of enough length", token) is None
    assert verify(UNSUBSCRIBE_SECRET, sign(UNSUBSCRIBE_SECRET, lead, account, touch)) is not None  # deterministic
    url = unsubscribe_url(PUBLIC_URL + "/", UNSUBSCRIBE_SECRET, lead, account, touch)
    assert url == f"{PUBLIC_URL}/u/{token}"


# --- the headers on every e-mail, and {unsubscribe_url} -------------------------------------------------------


async def test_every_email_carries_list_unsubscribe_and_templates_get_the_same_url(db, db_url):
    payload = factories.payload("email", body="Hola {first_name}. Para no recibir más: {unsubscribe_url}")
    payload["delivery"]["variables"]["unsubscribe_url"] = "https://evil.example/"  # the daemon's own value wins
    account_id, lead_id, touch_id = await email_touch(db, payload_=payload)
    plain = await factories.touch(db, account_id, lead_id, channel="email")
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake, public_url=PUBLIC_URL)):
        await wait_until(db_url, "select count(*) = 2 from touch_runs where status = 'sent'")
    by_touch = {r.touch_run_id: r for r in fake.requests}
    for touch in (touch_id, plain):
        recorded = by_touch[str(touch)]
        token = sign(UNSUBSCRIBE_SECRET, lead_id, account_id, touch)
        assert recorded.status == 200
        assert recorded.email_headers == recorded.body["Content"]["Headers"] == {
            "List-Unsubscribe": f"<{PUBLIC_URL}/u/{token}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
        assert verify(UNSUBSCRIBE_SECRET, token) == UnsubscribeToken(lead_id, account_id, touch)
    text = by_touch[str(touch_id)].body["Content"]["Body"][0]["Content"]
    assert text == f"Hola John. Para no recibir más: {PUBLIC_URL}/u/{sign(UNSUBSCRIBE_SECRET, lead_id, account_id, touch_id)}"


async def test_without_a_public_url_no_headers_and_the_placeholder_fails_the_touch(db, db_url):
    account_id, lead_id, plain = await email_touch(db)
    templated = await factories.touch(db, account_id, lead_id, channel="email",
                                      payload_=factories.payload("email", body="Baja: {unsubscribe_url}"))
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake)):
        await wait_until(db_url, "select count(*) = 2 from touch_runs where status in ('sent', 'failed')")
    (recorded,) = fake.requests  # the templated touch never reached the provider
    assert recorded.touch_run_id == str(plain) and "Headers" not in recorded.body["Content"]
    assert recorded.email_headers is None
    (failed,) = await events_of(db, templated, "touch_failed")
    assert failed["payload"]["error_code"] == "missing_variable" and failed["payload"]["failure_class"] == "permanent"
    assert "REVENUE_ASI_PUBLIC_URL" in failed["payload"]["error"]


async def test_the_sandbox_checks_content_headers_as_elasticemail_defines_them():
    base = {"Recipients": {"To": ["ana@example.com"]},
            "Content": {"From": "hola@acme.test", "Subject": "Hola", "Postback": str(uuid.uuid4()),
                        "Body": [{"ContentType": "PlainText", "Content": "hola"}]}}
    cases = [({"List-Unsubscribe": "<https://x.test/u/a>"}, 200), (["List-Unsubscribe", "<x>"], 400),
             ({"List-Unsubscribe": 1}, 400), ({"List-Unsubscribe": None}, 400),
             ({"List-Unsubscribe": "<https://x.test>\r\nBcc: all@x.test"}, 400), ({"Bad Name": "x"}, 400),
             ({"X:Colon": "x"}, 400), ("List-Unsubscribe: <x>", 400)]
    async with SandboxProviders(api_key="k") as fake, aiohttp.ClientSession() as session:
        for headers, expected in cases:
            document = json.loads(json.dumps(base))
            document["Content"]["Headers"] = headers
            async with session.post(fake.base_url + "/v4/emails/transactional", json=document,
                                    headers={"X-ElasticEmail-ApiKey": "k"}) as response:
                answer = await response.json()
                assert response.status == expected, (headers, answer)
                if expected == 400:
                    assert "Content.Headers" in answer["Error"]
        assert fake.requests[0].email_headers == {"List-Unsubscribe": "<https://x.test/u/a>"}


def test_the_driver_refuses_a_header_that_would_inject_another_before_any_request():
    message = OutboundMessage(touch_run_id=uuid.uuid4(), channel="email", to="ana@example.com", sender="hola@acme.test",
                              subject="Hola", body="hola",
                              headers={"List-Unsubscribe": "<https://x.test/u/a>\r\nBcc: all@x.test"})
    problem = email_header_problem(message)
    assert problem is not None and problem.error_code == "invalid_email_header"
    with pytest.raises(ProviderError):
        ElasticEmailProvider(api_key="k").request_body(message)
    good = message.model_copy(update={"headers": {"List-Unsubscribe": "<https://x.test/u/a>",
                                                  "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}})
    assert ElasticEmailProvider(api_key="k").request_body(good)["Content"]["Headers"] == good.headers


# --- refusing to start without the secret ---------------------------------------------------------------------


async def test_the_daemon_and_the_web_app_refuse_a_public_url_without_the_secret(db_url):
    settings = load_settings(public_url=PUBLIC_URL, quiet_hours="off")
    with pytest.raises(SettingsError) as web_refusal:
        create_app(settings, db_url)
    with pytest.raises(SettingsError) as daemon_refusal:
        await Daemon(settings, db_url).run()
    for refusal in (web_refusal, daemon_refusal):
        message = str(refusal.value)
        assert SECRET_NAME in message and "REVENUE_ASI_PUBLIC_URL" in message and "\n" not in message
    with pytest.raises(SettingsError) as short:
        load_settings(unsubscribe_secret="tiny-secret")
    assert SECRET_NAME in str(short.value) and "tiny-secret" not in str(short.value)
    create_app(load_settings(), db_url)  # no public URL: no links, no secret needed


@pytest.mark.parametrize("command", ["run", "web"])
async def test_the_commands_refuse_in_one_line(db_url, command):
    result = await cli(command, env=cli_env(db_url, REVENUE_ASI_PUBLIC_URL=PUBLIC_URL, PORT="0"), timeout=60)
    assert result.rc == 2, (result.out, result.err)
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and SECRET_NAME in lines[0] and lines[0].startswith("error:"), result.err


# --- POST /u/{token} ------------------------------------------------------------------------------------------


async def test_one_click_unsubscribes_once_and_the_open_touches_are_canceled_at_once(db, db_url):
    account_id, lead_id, sent = await email_touch(db, status="sent")
    later = [await factories.touch(db, account_id, lead_id, channel=channel, status="scheduled", scheduled_in_s=3600)
             for channel in ("sms", "email")]
    token = sign(UNSUBSCRIBE_SECRET, lead_id, account_id, sent)
    # sweeps an hour apart: only the event's NOTIFY can cancel the touches in time
    settings = daemon_settings(None, sweep_interval_s=3600)
    async with running_daemon(db_url, settings), web_app(db_url) as client:
        status, html = await post(client, token)
        assert status == 200 and "You are unsubscribed" in html and "Acme Dental" in html
        await wait_until(db_url, "select count(*) = 2 from touch_runs where id = any($1::uuid[]) and status = 'canceled'",
                         later, timeout=10)
        again, html = await post(client, token)
        assert again == 200 and "already unsubscribed" in html
        multipart = aiohttp.FormData()
        multipart.add_field("List-Unsubscribe", "One-Click")
        assert (await post(client, token, data=multipart))[0] == 200  # RFC 8058 allows multipart/form-data too
    (event,) = await unsubscribes(db)
    assert (event["lead_id"], event["event_source"], event["direction"], event["channel"]) == \
        (lead_id, "one_click", "inbound", "email")
    assert event["payload"]["touch_run_id"] == str(sent)
    for touch_id in later:
        (canceled,) = await events_of(db, touch_id, "touch_canceled")
        assert canceled["payload"]["reason"] == "suppressed:unsubscribe"
    row = await db.fetchrow("select is_unsubscribed, reason from lead_suppression_status_v1 where lead_id = $1", lead_id)
    assert row["is_unsubscribed"] and row["reason"] == "unsubscribe"
    assert await db.fetchval("select recommended_action from lead_next_action_view_v5 where lead_id = $1",
                             lead_id) == "stop_all"


async def test_a_click_after_a_resubscribe_unsubscribes_again_and_one_after_a_stop_writes_nothing(db, db_url):
    account_id, lead_id, sent = await email_touch(db, status="sent")
    token = sign(UNSUBSCRIBE_SECRET, lead_id, account_id, sent)
    async with web_app(db_url) as client:
        await factories.event(db, lead_id, "unsubscribe", created_ago_s=20)  # STOP by SMS
        assert (await post(client, token))[0] == 200
        assert len(await unsubscribes(db)) == 1  # already unsubscribed: nothing new
        await factories.event(db, lead_id, "resubscribe", created_ago_s=10)
        assert (await post(client, token))[0] == 200
    assert [e["event_source"] for e in await unsubscribes(db)] == ["test", "one_click"]


async def test_two_clicks_at_once_write_one_event(db, db_url):
    import asyncio

    account_id, lead_id, sent = await email_touch(db, status="sent")
    token = sign(UNSUBSCRIBE_SECRET, lead_id, account_id, sent)
    async with web_app(db_url) as client:
        answers = await asyncio.gather(*(post(client, token) for _ in range(6)))
    assert {status for status, _ in answers} == {200}
    assert len(await unsubscribes(db)) == 1


# --- GET /u/{token} -------------------------------------------------------------------------------------------


async def test_a_get_shows_the_button_and_never_unsubscribes(db, db_url):
    account_id, lead_id, sent = await email_touch(db, status="sent")
    token = sign(UNSUBSCRIBE_SECRET, lead_id, account_id, sent)
    async with web_app(db_url) as client:
        for _ in range(3):  # a mail scanner prefetching the link, a preview, the person
            status, html, headers = await get(client, token)
            assert status == 200
            assert f'<form method="post" action="/u/{token}">' in html
            assert '<input type="hidden" name="List-Unsubscribe" value="One-Click">' in html
            assert "Acme Dental" in html and "nav" not in html  # the public page shows no dashboard
            assert headers["Cache-Control"] == "no-store" and headers["Referrer-Policy"] == "no-referrer"
        async with client.session.head(f"{client.base_url}/u/{token}") as response:
            assert response.status == 200
        assert not await unsubscribes(db)
        await post(client, token)
        status, html, _ = await get(client, token)
    assert status == 200 and "You are unsubscribed" in html and "<form" not in html
    assert len(await unsubscribes(db)) == 1


# --- forged, truncated, foreign -------------------------------------------------------------------------------


async def test_forged_truncated_and_foreign_tokens_are_404_and_write_nothing(db, db_url):
    account_id, lead_id, sent = await email_touch(db, status="sent")
    other_account = await factories.account(db, "Other Co")
    other_lead = await factories.lead(db, other_account, phone="+14155550999", email="bob@example.com")
    other_touch = await factories.touch(db, other_account, other_lead, channel="email", status="sent")
    token = sign(UNSUBSCRIBE_SECRET, lead_id, account_id, sent)
    forged = token[:30] + ("x" if token[30] != "x" else "y") + token[31:]
    tokens = {
        "forged": forged, "truncated": token[:60], "one short": token[:-1], "padded": token + "A",
        "another secret": sign("another-secret-0123456789", lead_id, account_id, sent),
        "no such touch": sign(UNSUBSCRIBE_SECRET, lead_id, account_id, uuid.uuid4()),
        "another lead's touch": sign(UNSUBSCRIBE_SECRET, lead_id, account_id, other_touch),
        "another account": sign(UNSUBSCRIBE_SECRET, lead_id, other_account, sent),
        "no such lead": sign(UNSUBSCRIBE_SECRET, uuid.uuid4(), account_id, sent),
        "garbage": "not-a-token", "long": "A" * 5000,
    }
    async with web_app(db_url) as client:
        for name, bad in tokens.items():
            status, html = await post(client, bad)
            assert status == 404 and "Link not valid" in html, name
            assert (await get(client, bad))[0] == 404, name
        # a right token with another body: 400, nothing written
        for data in ({"List-Unsubscribe": "Yes"}, {}, {"List-Unsubscribe": ["One-Click", "One-Click"]}):
            assert (await post(client, token, data=data))[0] == 400, data
        async with client.session.post(f"{client.base_url}/u/{token}", json=ONE_CLICK) as response:
            assert response.status == 400
    assert not await unsubscribes(db)
    assert await db.fetchval("select count(*) from core_memory_events where direction = 'inbound'") == 0


async def test_without_a_secret_every_link_is_404(db, db_url):
    account_id, lead_id, sent = await email_touch(db, status="sent")
    token = sign(UNSUBSCRIBE_SECRET, lead_id, account_id, sent)
    async with web_app(db_url, load_settings()) as client:  # no public URL, no secret
        assert (await post(client, token))[0] == 404
    assert not await unsubscribes(db)


# --- public, and through the guard ----------------------------------------------------------------------------


async def test_the_links_are_public_under_a_dashboard_token_and_pass_the_guard(db, db_url):
    from tests.webhook_client import web_settings

    account_id, lead_id, sent = await email_touch(db, status="sent")
    token = sign(UNSUBSCRIBE_SECRET, lead_id, account_id, sent)
    async with web_app(db_url, web_settings(dashboard_token="dash-token-123")) as client:
        async with client.session.get(f"{client.base_url}/api/status") as response:
            assert response.status == 401  # the dashboard still needs the token
        status, html, headers = await get(client, token)
        assert status == 200 and "<form" in html and headers["Server"] == "revenue-asi"
        assert "default-src 'self'" in headers["Content-Security-Policy"]
        async with client.session.get(f"{client.base_url}/u/%00{token[1:]}") as response:
            assert response.status == 400  # the guard: a control character in the path
        assert (await post(client, token))[0] == 200
    assert len(await unsubscribes(db)) == 1


# --- secrets --------------------------------------------------------------------------------------------------


async def test_the_secret_never_reaches_logs_events_or_payloads(db, db_url, caplog):
    account_id, lead_id, touch_id = await email_touch(db)
    settings = daemon_settings(None, public_url=PUBLIC_URL)
    assert UNSUBSCRIBE_SECRET in settings.secrets() and UNSUBSCRIBE_SECRET not in repr(settings)
    with caplog.at_level(logging.DEBUG):
        async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake, public_url=PUBLIC_URL)), \
                web_app(db_url) as client:
            await wait_until(db_url, "select status = 'sent' from touch_runs where id = $1", touch_id)
            link = fake.requests[0].email_headers["List-Unsubscribe"].strip("<>")
            token = link.rsplit("/", 1)[1]
            assert (await post(client, token))[0] == 200
            await wait_until(db_url, "select count(*) = 1 from core_memory_events where event_source = 'one_click'")
    stored = await db.fetchval(
        "select string_agg(x, ' ') from (select payload::text as x from core_memory_events union all"
        " select payload::text from touch_runs union all select coalesce(error, '') from touch_runs union all"
        " select stats::text from job_runs) s")
    recorded = json.dumps([r.to_json() for r in fake.requests])
    for where, text in (("logs", caplog.text), ("database", stored), ("provider requests", recorded)):
        assert UNSUBSCRIBE_SECRET not in text, where
    assert token in recorded  # the token is no secret: it is the link itself
