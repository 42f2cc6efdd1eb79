"""Enrichment under a burst (SPEC §15): N leads inserted in ONE transaction while touches keep being dispatched.

    .venv/bin/python -m bench.enrichment [--leads 50000] [--touch-every-ms 50]

A fresh embedded PostgreSQL in a temporary folder, the SANDBOX providers on loopback and the real daemon, all in
this process (so the enrichment work in its worker thread competes with dispatch for the same interpreter, as in
production). Reported: leads/s from the burst's commit until every lead has its lead_enriched row and event, and
the dispatch latency (touch insert commit → touch sent) of touches offered before and during the burst."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from listener.engine.daemon import Daemon
from listener.providers.sandbox import SandboxProviders
from listener.settings import load_settings
from listener.store.database import connect
from listener.testing import EmbeddedTestServer


def _ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {"n": len(ordered), "p50": round(statistics.median(ordered) * 1000, 1),
            "p95": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 1), "max": round(ordered[-1] * 1000, 1)}


async def _offer_touches(url: str, account_id: uuid.UUID, lead_id: uuid.UUID, every_s: float, stop: asyncio.Event,
                         sent_at: dict[str, float], phase: list[str], by_phase: dict[str, list[str]]) -> None:
    conn = await connect(url)
    try:
        while not stop.is_set():
            touch_id = uuid.uuid4()
            await conn.execute("insert into touch_runs (id, account_id, lead_id, channel, payload)"
                               " values ($1, $2, $3, 'sms', '{\"message\": \"bench\"}')", touch_id, account_id, lead_id)
            sent_at[str(touch_id)] = time.perf_counter()
            by_phase[phase[0]].append(str(touch_id))
            await asyncio.sleep(every_s)
    finally:
        await conn.close()


async def run(n_leads: int, touch_every_ms: float) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-enrichment-"))
    server = EmbeddedTestServer(root)
    try:
        await server.prepare_template()
        url = await server.fresh_database("be")
        async with SandboxProviders() as fake:
            settings = load_settings(**fake.settings_overrides(), sweep_interval_s=1.0)
            conn = await connect(url)
            account_id = await conn.fetchval("insert into accounts (name) values ('bench') returning id")
            await conn.execute("insert into account_provider_settings (account_id, channel, provider, is_default, config)"
                               " values ($1, 'sms', 'twilio', true, '{\"from\": \"+15005550006\"}')", account_id)
            sender_lead = await conn.fetchval("insert into leads (account_id, full_name, phone)"
                                              " values ($1, 'Sender', '+14155550100') returning id", account_id)
            daemon = Daemon(settings, url, providers=None)
            task = asyncio.create_task(daemon.run())
            await asyncio.wait_for(daemon.ready.wait(), 60)
            committed: dict[str, float] = {}
            phase = ["before"]
            by_phase: dict[str, list[str]] = {"before": [], "during": [], "after": []}
            stop = asyncio.Event()
            offer = asyncio.create_task(_offer_touches(url, account_id, sender_lead, touch_every_ms / 1000, stop,
                                                       committed, phase, by_phase))
            await asyncio.sleep(3)
            phase[0] = "during"
            insert_started = time.perf_counter()
            async with conn.transaction():  # the burst: one transaction, one statement per 1,000 rows
                for start in range(0, n_leads, 1000):
                    await conn.execute(
                        "insert into leads (account_id, full_name, phone, email, timezone)"
                        " select $1, case i % 4 when 0 then 'Dra. Ana María Pérez ' || i when 1 then 'PÉREZ, Ana'"
                        "   when 2 then 'john' else '' end,"
                        " case when i % 10 = 0 then 'not a phone' else '+1415' || (2000000 + i) end,"
                        " case when i % 7 = 0 then 'broken@' else 'lead' || i || '@example.com' end,"
                        " case when i % 5 = 0 then 'America/Mexico_City' when i % 11 = 0 then 'Nowhere/Land' end"
                        " from generate_series($2::int, $3::int) i",
                        account_id, start, min(start + 1000, n_leads) - 1)
            committed_at = time.perf_counter()
            while await conn.fetchval("select count(*) from lead_enriched") < n_leads:
                await asyncio.sleep(0.2)
            enriched_at = time.perf_counter()
            phase[0] = "after"
            await asyncio.sleep(2)
            stop.set()
            await offer
            while await conn.fetchval("select count(*) from touch_runs where status in ('queued','scheduled','processing')"):
                await asyncio.sleep(0.1)
            rows = await conn.fetch("select t.id::text as id, e.created_at from touch_runs t"
                                    " join core_memory_events e on e.payload->>'touch_run_id' = t.id::text"
                                    " and e.event_type = 'touch_sent'")
            wall_sent = {r["id"]: r["created_at"] for r in rows}
            # latency on one clock: the touch's own created_at (insert) to its touch_sent event, both server times
            lat = {r["id"]: (r["sent"] - r["created"]).total_seconds() for r in await conn.fetch(
                "select t.id::text as id, t.created_at as created, e.created_at as sent from touch_runs t"
                " join core_memory_events e on e.payload->>'touch_run_id' = t.id::text and e.event_type = 'touch_sent'")}
            events = await conn.fetchval("select count(*) from core_memory_events where event_type = 'lead_enriched'")
            problems = await conn.fetch("select p, count(*) from lead_enrichment_state, jsonb_array_elements_text(problems) p"
                                        " group by p order by p")
            daemon.request_stop()
            await task
            await conn.close()
            return {
                "leads": n_leads,
                "insert_transaction_s": round(committed_at - insert_started, 2),
                "enriched_s_after_commit": round(enriched_at - committed_at, 2),
                "leads_per_s": round(n_leads / (enriched_at - committed_at)),
                "lead_enriched_events": events,
                "problems": {r["p"]: r["count"] for r in problems},
                "touches_sent": len(wall_sent),
                "dispatch_latency_ms": {ph: _ms([lat[t] for t in ids if t in lat]) for ph, ids in by_phase.items()},
            }
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=50_000)
    parser.add_argument("--touch-every-ms", type=float, default=50.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.leads, args.touch_every_ms)), indent=2))


if __name__ == "__main__":
    main()
