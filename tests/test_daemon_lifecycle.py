"""`revenue-asi run` as users run it (Procfile): a process that starts, says what is unconfigured, and stops
gracefully on SIGTERM — in-flight sends finish, nothing is left leased."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from listener.providers.sandbox import SandboxProviders
from tests import factories
from tests.harness import wait_until


def _daemon_env(db_url: str, fake: SandboxProviders, **extra: str) -> dict[str, str]:
    overrides = fake.settings_overrides()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "ELASTICEMAIL_", "REVENUE_ASI_"))}
    env.update({"DATABASE_URL": db_url, "TWILIO_ACCOUNT_SID": overrides["twilio_account_sid"],
                "TWILIO_AUTH_TOKEN": overrides["twilio_auth_token"], "TWILIO_BASE_URL": fake.base_url,
                "REVENUE_ASI_SWEEP_INTERVAL_S": "0.5", "REVENUE_ASI_QUIET_HOURS": "off", **extra})
    return env


async def _start(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "revenue-asi"), "run", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def test_sigterm_finishes_in_flight_sends_and_exits_zero(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    async with SandboxProviders(delay_ms=1000) as fake:
        process = await _start(_daemon_env(db_url, fake, REVENUE_ASI_SHUTDOWN_GRACE_S="10"))
        try:
            touch_id = await factories.touch(db, account_id, lead_id)
            await fake.wait_for_requests(1, timeout=30)  # in flight: the provider answers after 1 s
            process.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert process.returncode == 0
    row = await db.fetchrow("select status, locked_by from touch_runs where id = $1", touch_id)
    assert row["status"] == "sent" and row["locked_by"] is None
    log = stderr.decode()
    assert "SIGTERM received" in log
    assert "no provider credentials for: email" in log  # said at start: ElasticEmail has no key here
    assert "sandbox-auth-token" not in log


async def test_a_restarted_daemon_catches_up_on_what_arrived_while_it_was_down(db, db_url):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    async with SandboxProviders() as fake:
        env = _daemon_env(db_url, fake)
        first = await _start(env)
        touch_id = await factories.touch(db, account_id, lead_id)
        await wait_until(db_url, "select status = 'sent' from touch_runs where id = $1", touch_id)
        first.send_signal(signal.SIGTERM)
        await asyncio.wait_for(first.communicate(), timeout=30)
        assert first.returncode == 0
        later = [await factories.touch(db, account_id, lead_id) for _ in range(3)]
        second = await _start(env)
        try:
            await wait_until(db_url, "select count(*) = 3 from touch_runs where id = any($1) and status = 'sent'",
                             later)
        finally:
            second.send_signal(signal.SIGTERM)
            await asyncio.wait_for(second.communicate(), timeout=30)
        assert len(fake.requests) == 4


async def test_metrics_are_served_when_a_port_is_set(db, db_url, unused_tcp_port):
    import httpx

    from tests.harness import daemon_settings, running_daemon, wait_terminal

    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)

    def sent_count(text: str) -> float:
        line = next(x for x in text.splitlines() if x.startswith('revenue_asi_touches_total{outcome="sent"}'))
        return float(line.split()[-1])

    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake, metrics_port=unused_tcp_port)):
        async with httpx.AsyncClient() as client:
            touch_id = await factories.touch(db, account_id, lead_id)
            await wait_terminal(db_url, touch_id)
            await wait_until(db_url, "select count(*) > 0 from core_memory_events where event_type = 'touch_sent'")
            before_second = sent_count((await client.get(f"http://127.0.0.1:{unused_tcp_port}/metrics")).text)
            second = await factories.touch(db, account_id, lead_id)
            await wait_terminal(db_url, second)
            # the counter moves just after the commit the status is read from; no event marks it, so poll briefly
            for _ in range(100):
                text = (await client.get(f"http://127.0.0.1:{unused_tcp_port}/metrics")).text
                if sent_count(text) > before_second:
                    break
                await asyncio.sleep(0.02)
    assert sent_count(text) == before_second + 1
    assert "revenue_asi_sends_in_flight" in text


async def test_loops_outlive_an_error_a_database_restart_can_raise(db, db_url, monkeypatch):
    """asyncpg raises InternalClientError when a pooled connection cut mid-query is released (seen in the chaos
    run's PostgreSQL restarts); it once escaped the reaction loop and stopped the daemon."""
    import asyncpg

    import listener.engine.daemon as daemon_module
    from tests.harness import daemon_settings, running_daemon

    real_drain = daemon_module.drain_reactions
    failures = []

    async def drain_failing_once(pool, *args, **kwargs):
        if not failures:
            failures.append(1)
            raise asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress")
        return await real_drain(pool, *args, **kwargs)

    monkeypatch.setattr(daemon_module, "drain_reactions", drain_failing_once)
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake)):
        await factories.touch(db, account_id, lead_id)  # no fallback plan: its decision is a stop
        await wait_until(db_url, "select count(*) = 1 from core_memory_events where event_type = 'fallback_decision'")
    assert failures == [1]


async def test_the_daemons_sweep_records_its_runs_in_job_runs(db, db_url):
    from tests.harness import daemon_settings, running_daemon

    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    touch_id = await factories.touch(db, account_id, lead_id)
    await db.execute("update touch_runs set status = 'processing', locked_by = 'dead-daemon',"
                     " locked_until = now() - interval '1 second' where id = $1", touch_id)
    async with SandboxProviders() as fake, running_daemon(db_url, daemon_settings(fake, sweep_interval_s=0.2)):
        await wait_until(db_url, "select count(*) > 0 from job_runs where job = 'sweep'"
                                 " and (stats->>'leases_expired')::int = 1")
        assert fake.requests == []  # an expired lease is never sent again
    row = await db.fetchrow("select status, error from touch_runs where id = $1", touch_id)
    assert row["status"] == "failed" and row["error"].startswith("outcome_unknown")
