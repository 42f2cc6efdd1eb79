"""Bad input and provider failures: each fails (or cancels) its one touch with a reason in core_memory_events,
never reaches the provider when it should not, and the queue keeps moving (issue 3)."""

from __future__ import annotations

import pytest

from listener.providers.sandbox import SandboxProviders
from tests import factories
from tests.harness import daemon_settings, events_of, running_daemon, wait_terminal


async def _run(db, db_url, fake, touches, **settings):
    """Insert the touches (callables returning ids) with a good touch after them; run the daemon until all are
    terminal; return the rows of the bad ones and the good one."""
    async with running_daemon(db_url, daemon_settings(fake, **settings)):
        ids = [await make() for make in touches]
        rows = [await wait_terminal(db_url, touch_id) for touch_id in ids]
    return rows


async def _setup(db, **lead_kwargs):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id, **lead_kwargs)
    return account_id, lead_id


async def _failure(db, row):
    (event,) = await events_of(db, row["id"], "touch_failed")
    return event["payload"]


@pytest.mark.parametrize(
    ("lead_kwargs", "channel", "payload", "error_code"),
    [
        ({"phone": "not a phone"}, "sms", None, "invalid_phone"),
        ({"phone": "+1 555 000"}, "whatsapp", None, "invalid_phone"),
        ({"phone": None}, "voice", None, "no_phone"),
        ({"email": None}, "email", None, "no_email"),
        ({"email": "john at example"}, "email", None, "invalid_email"),
        ({}, "sms", {"delivery": {"template_key": "nope", "language": "es"}}, "template_not_found"),
        ({}, "sms", {"delivery": {"body": "Hola {clinic_name}"}}, "missing_variable"),
        ({}, "sms", {"routing": "voice", "delivery": {"body": "x"}}, "invalid_payload"),
        ({}, "sms", {"routing": {"fallback": {"order": "voice"}}, "delivery": {"body": "x"}}, "invalid_payload"),
    ],
    ids=["unparseable-phone", "impossible-phone", "no-phone", "no-email", "invalid-email", "unknown-template",
         "missing-variable", "routing-a-string", "order-not-a-list"],
)
async def test_bad_input_fails_one_touch_and_the_queue_moves(db, db_url, lead_kwargs, channel, payload, error_code):
    account_id, bad_lead = await _setup(db, **lead_kwargs)
    good_lead = await factories.lead(db, account_id, full_name="Ana Good", phone="+14155550199")
    async with SandboxProviders() as fake:
        bad, good = await _run(db, db_url, fake, [
            lambda: factories.touch(db, account_id, bad_lead, channel=channel,
                                    payload_=payload if payload is not None else factories.payload(channel)),
            lambda: factories.touch(db, account_id, good_lead, channel="sms"),
        ])
        recipients = [r.to for r in fake.requests]
    assert bad["status"] == "failed"
    assert bad["error"].startswith(error_code)
    failure = await _failure(db, bad)
    assert failure["error_code"] == error_code
    assert failure["failure_class"] == "permanent"
    assert failure["error"]
    assert good["status"] == "sent"
    assert recipients == ["+14155550199"]  # the bad touch never reached a provider


async def test_no_literal_placeholder_is_ever_sent(db, db_url):
    account_id, lead_id = await _setup(db)
    await db.execute("insert into message_templates (template_name, channel, language, body)"
                     " values ('t1', 'sms', 'es', 'Hola {first_name} de {company}')")
    async with SandboxProviders() as fake:
        (row,) = await _run(db, db_url, fake, [lambda: factories.touch(
            db, account_id, lead_id, payload_={"delivery": {"template_key": "t1", "language": "es",
                                                            "variables": {"first_name": "Ana"}}})])
        assert fake.requests == []
    assert (await _failure(db, row))["error_code"] == "missing_variable"


async def test_template_is_rendered(db, db_url):
    account_id, lead_id = await _setup(db, first_name="Johnny")
    await db.execute("insert into message_templates (template_name, channel, language, subject, body) values"
                     " ('cold_email', 'email', 'es', 'Hola {first_name}', 'Texto para {first_name}')")
    async with SandboxProviders() as fake:
        (row,) = await _run(db, db_url, fake, [lambda: factories.touch(
            db, account_id, lead_id, channel="email",
            payload_={"delivery": {"language": "es",
                                   "channel_overrides": {"email": {"template_name": "cold_email"}}}})])
        (request,) = fake.requests
    assert row["status"] == "sent"
    content = request.body["Content"]
    assert content["Subject"] == "Hola Johnny"
    assert content["Body"][0]["Content"] == "Texto para Johnny"
    assert content["Postback"] == str(row["id"])
    # the sandbox answered 200, so the X-ElasticEmail-ApiKey header matched (it records secrets redacted)


@pytest.mark.parametrize(
    ("mode", "error_code", "failure_class", "min_requests"),
    [
        ("error:400:21211", "21211", "permanent", 1),
        ("error:400:21610", "21610", "permanent", 1),
        ("error:401:20003", "20003", "permanent", 1),
        ("server_error", "http_500", "transient", 2),
        ("rate_limit:0.2", "rate_limited", "transient", 2),
        ("hang", "outcome_unknown", "transient", 1),
    ],
)
async def test_provider_failures(db, db_url, mode, error_code, failure_class, min_requests):
    account_id, lead_id = await _setup(db)
    async with SandboxProviders() as fake:
        fake.set_mode(mode)
        # a short lease bounds the retries of 500/429; the hang is cut by the provider timeout
        (row,) = await _run(db, db_url, fake, [lambda: factories.touch(db, account_id, lead_id)],
                            lease_s=3, provider_timeout_s=1)
        n_requests = len(fake.requests)
    assert row["status"] == "failed"
    failure = await _failure(db, row)
    assert (failure["error_code"], failure["failure_class"]) in {(error_code, failure_class),
                                                                  ("20429", "transient") if mode.startswith("rate") else (error_code, failure_class)}
    assert n_requests >= min_requests
    if failure_class == "permanent" or error_code == "outcome_unknown":
        assert n_requests == 1  # never retried


async def test_rate_limit_then_success_is_sent(db, db_url):
    account_id, lead_id = await _setup(db)
    async with SandboxProviders() as fake:
        fake.script("rate_limit:0.3", "ok")
        (row,) = await _run(db, db_url, fake, [lambda: factories.touch(db, account_id, lead_id)])
        first, second = fake.requests
    assert row["status"] == "sent"
    assert second.received_at_wall - first.received_at_wall >= 0.3 - 0.01  # Retry-After honoured


async def test_account_without_default_provider(db, db_url):
    account_id = await factories.account(db, providers=False)
    lead_id = await factories.lead(db, account_id)
    async with SandboxProviders() as fake:
        (row,) = await _run(db, db_url, fake, [lambda: factories.touch(db, account_id, lead_id)])
        assert fake.requests == []
    assert (await _failure(db, row))["error_code"] == "no_default_provider"


async def test_unconfigured_provider_fails_permanently(db, db_url):
    account_id, lead_id = await _setup(db)
    async with SandboxProviders() as fake:
        settings = {"elasticemail_api_key": None}
        (row,) = await _run(db, db_url, fake, [lambda: factories.touch(db, account_id, lead_id, channel="email")],
                            **settings)
        assert fake.requests == []
    failure = await _failure(db, row)
    assert failure["error_code"] == "provider_not_configured"
    assert failure["failure_class"] == "permanent"


async def test_secrets_never_reach_events_or_payloads(db, db_url):
    account_id, lead_id = await _setup(db)
    async with SandboxProviders() as fake:
        fake.set_mode("error:401:20003")
        await _run(db, db_url, fake, [lambda: factories.touch(db, account_id, lead_id),
                                      lambda: factories.touch(db, account_id, lead_id, channel="email")])
    dump = await db.fetchval("select string_agg(payload::text || coalesce(error, ''), ' ') from touch_runs")
    dump += await db.fetchval("select string_agg(payload::text, ' ') from core_memory_events")
    assert "sandbox-auth-token" not in dump and "sandbox-api-key" not in dump
