"""Webhook bench (SPEC §12): signed requests/s of `revenue-asi web`, and the time from a STOP reply's 200 to the
cancel of the lead's open touch by `revenue-asi run`.

    python -m bench.webhooks [--requests 3000] [--concurrency 32] [--runs 3] [--samples 50]

Everything on loopback, started here: a fresh embedded PostgreSQL, `revenue-asi web` and `revenue-asi run` as
processes (stopped by their own PIDs). Throughput: `--runs` runs of `--requests` signed message status callbacks
(each a new receipt + delivery_status + event; signatures computed before the clock starts), `--concurrency` in
flight; the median run is reported. Latency: `--samples` leads, one at a time, each with an open touch due in an
hour; a signed STOP reaches the web process, and the clock runs from its 200 until the touch reads `canceled`
(polled every millisecond on a connection of its own)."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
from twilio.request_validator import RequestValidator

from bench.env import AUTH_TOKEN, PgServer, Process, clean_env
from listener.store.database import connect

PHONE_FROM = "+15005550006"


async def seed(url: str, n: int) -> list[dict[str, Any]]:
    conn = await connect(url)
    try:
        account_id = await conn.fetchval("insert into accounts (name) values ('bench webhooks') returning id")
        await conn.execute("insert into account_provider_settings (account_id, channel, provider, is_default, config)"
                           " values ($1, 'sms', 'twilio', true, $2)", account_id, {"from": PHONE_FROM})
        rows = await conn.fetch(
            "with l as (insert into leads (account_id, full_name, phone)"
            "           select $1, 'Lead ' || g, '+1415' || lpad(g::text, 7, '0') from generate_series(1, $2) g"
            "           returning id, phone)"
            " insert into touch_runs (account_id, lead_id, channel, status, sent_at, provider_message_id, payload)"
            " select $1, l.id, 'sms', 'sent', now(), 'SM' || md5(l.id::text), '{}'::jsonb from l"
            " returning id, lead_id, provider_message_id", account_id, n)
        phones = {r["id"]: r["phone"] for r in await conn.fetch("select id, phone from leads where account_id = $1",
                                                                account_id)}
        return [{"touch_id": r["id"], "lead_id": r["lead_id"], "sid": r["provider_message_id"],
                 "phone": phones[r["lead_id"]], "account_id": account_id} for r in rows]
    finally:
        await conn.close()


def signed(validator: RequestValidator, url: str, params: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return urlencode(params).encode(), {"X-Twilio-Signature": validator.compute_signature(url, params),
                                        "Content-Type": "application/x-www-form-urlencoded"}


async def throughput(session: aiohttp.ClientSession, base: str, leads: list[dict[str, Any]], status: str,
                     requests: int, concurrency: int) -> tuple[float, int]:
    validator = RequestValidator(AUTH_TOKEN)
    url = base + "/webhooks/twilio/status"
    prepared = [signed(validator, url, {"MessageSid": lead["sid"], "MessageStatus": status, "AccountSid": "ACb",
                                        "From": PHONE_FROM, "To": lead["phone"]})
                for lead in (leads[i % len(leads)] for i in range(requests))]
    queue = iter(prepared)
    errors = 0

    async def worker() -> None:
        nonlocal errors
        for body, headers in queue:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return requests / (time.perf_counter() - started), errors


async def stop_latency(session: aiohttp.ClientSession, base: str, url: str, leads: list[dict[str, Any]],
                       samples: int) -> list[float]:
    validator = RequestValidator(AUTH_TOKEN)
    inbound = base + "/webhooks/twilio/inbound"
    conn = await connect(url)
    out: list[float] = []
    try:
        for lead in leads[:samples]:
            touch_id = await conn.fetchval(
                "insert into touch_runs (account_id, lead_id, channel, status, scheduled_at, payload)"
                " values ($1, $2, 'sms', 'scheduled', now() + interval '1 hour', '{}') returning id",
                lead["account_id"], lead["lead_id"])
            body, headers = signed(validator, inbound, {"MessageSid": "SM" + uuid.uuid4().hex, "From": lead["phone"],
                                                        "To": PHONE_FROM, "Body": "STOP"})
            async with session.post(inbound, data=body, headers=headers) as response:
                answer = await response.json()
                t200 = time.perf_counter()
            if response.status != 200 or answer.get("outcome") != "unsubscribe":
                raise RuntimeError(f"STOP answered {response.status} {answer}")
            while await conn.fetchval("select status from touch_runs where id = $1", touch_id) != "canceled":
                if time.perf_counter() - t200 > 30:
                    raise RuntimeError("the open touch was not canceled within 30 s")
                await asyncio.sleep(0.001)
            out.append((time.perf_counter() - t200) * 1000)
    finally:
        await conn.close()
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="revenue-asi-bench-webhooks-"))
    pg = PgServer(root)
    web: Process | None = None
    daemon: Process | None = None
    try:
        await pg.prepare_template()
        url = await pg.fresh_database()
        leads = await seed(url, max(args.requests, args.samples))
        with __import__("socket").socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        env = clean_env({"DATABASE_URL": url, "PORT": str(port), "REVENUE_ASI_PUBLIC_URL": base,
                         "REVENUE_ASI_UNSUBSCRIBE_SECRET": "bench-" + uuid.uuid4().hex,  # SPEC §19
                         "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_ACCOUNT_SID": "ACbench",
                         "TWILIO_BASE_URL": "http://127.0.0.1:9", "REVENUE_ASI_LOG_LEVEL": "INFO"})
        cli = [sys.executable, "-m", "listener.cli"]
        web = Process("web", [*cli, "web"], env, root / "web.log")
        daemon = Process("daemon", [*cli, "run"], env, root / "daemon.log")
        await web.wait_for_log(r"web application on", timeout=60)
        await daemon.wait_for_log(r"daemon \S+ starting", timeout=60)
        connector = aiohttp.TCPConnector(limit=args.concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            await throughput(session, base, leads, "queued", min(200, args.requests), args.concurrency)  # warm-up
            runs = []
            for status in ("sent", "delivered", "read")[: args.runs]:
                rate, errors = await throughput(session, base, leads, status, args.requests, args.concurrency)
                if errors:
                    raise RuntimeError(f"{errors} webhook requests did not answer 200")
                runs.append(rate)
            latencies = await stop_latency(session, base, url, leads[len(leads) - args.samples:], args.samples)
        return {"webhook_requests_per_s": {"median": round(statistics.median(runs)), "runs": [round(r) for r in runs],
                                           "requests_per_run": args.requests, "concurrency": args.concurrency},
                "stop_to_cancel_ms": {"p50": round(percentile(latencies, 0.5), 1),
                                      "p99": round(percentile(latencies, 0.99), 1),
                                      "max": round(max(latencies), 1), "samples": len(latencies)}}
    finally:
        for proc in (daemon, web):
            if proc is not None:
                await proc.stop()
        pg.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webhooks", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3, choices=(1, 2, 3))
    parser.add_argument("--samples", type=int, default=50)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(main_async(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
