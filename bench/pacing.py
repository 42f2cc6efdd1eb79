"""pacing: SPEC §16's sender pacing, held across daemons. Two daemons at the shipped defaults share one database;
one account's sms sender (its default account_provider_settings row) is set to ``config.max_per_second`` = 5 and
given a backlog of N touches in one transaction (300 by default: a minute at 5/s).

Measured at the fake provider (its received_at_wall for every request of that sender):
* the count of requests in every 10 s window — a window starting at every request (sliding: its max is the
  max over all windows; its min over the windows that end before the last request) and the consecutive windows from
  the first request — against SPEC's bound ``max_per_second × 10 + 1``;
* the observed rate from the first to the last request, (n − 1) / span — SPEC: within 10 % of max_per_second;
* while waiting, touches stay ``queued``: the most sms touches seen ``processing`` at once (sampled every 0.2 s);
* the same account's e-mail (another sender, unpaced): a trickle, one every 200 ms, while the paced backlog waits,
  commit → request latency as bench/latency.py measures it, against the same trickle with no backlog before it
  (SPEC: a paced sender never delays another sender)."""

from __future__ import annotations

import asyncio
import bisect
import time
from typing import Any

import asyncpg

from bench.drain import SHIPPED, WARMUP_PER_DAEMON, start_daemons, warm_up
from bench.env import Env
from bench.fair import Trickle
from bench.latency import receipts_summary
from bench.workload import Workload, duplicates, insert_email, outcomes, wait_drained

WINDOW_S = 10.0
EMAIL_INTERVAL_S = 0.2
EMAIL_WARMUP = 5
DAEMONS = 2

PACE = """
update account_provider_settings set config = config || jsonb_build_object('max_per_second', $2::float8)
where account_id = $1 and channel = 'sms' and is_default
returning id
"""

SMS_STATUS = """
select count(*) filter (where status = 'processing')::int as processing,
       count(*) filter (where status in ('queued', 'scheduled'))::int as waiting
from touch_runs where account_id = $1 and channel = 'sms'
"""


def windows(times: list[float], width: float = WINDOW_S) -> dict[str, Any]:
    """Requests per ``width``-second window: one window starting at every request (the max over these is the max
    over every window of that width), and the consecutive windows from the first request."""
    times = sorted(times)
    if not times:
        return {"requests": 0}
    last = times[-1]
    sliding = [bisect.bisect_left(times, t + width) - i for i, t in enumerate(times)]
    inside = [c for t, c in zip(times, sliding, strict=True) if t + width <= last]
    full = int((last - times[0]) // width)
    fixed = [bisect.bisect_left(times, times[0] + (k + 1) * width) - bisect.bisect_left(times, times[0] + k * width)
             for k in range(full)]
    span = last - times[0]
    return {"requests": len(times), "span_s": round(span, 3),
            "rate_first_to_last": round((len(times) - 1) / span, 3) if span > 0 else None,
            "sliding_max": max(sliding), "sliding_min": min(inside) if inside else None,
            "sliding_windows": len(inside),
            "fixed_windows": fixed, "fixed_min": min(fixed) if fixed else None,
            "fixed_max": max(fixed) if fixed else None,
            "min_gap_ms": round(min((b - a for a, b in zip(times, times[1:], strict=False)), default=0) * 1000, 1)}


async def _email_trickle(pool: asyncpg.Pool, workload: Workload, count: int, until: asyncio.Event
                         ) -> list[tuple[str, float, float]]:
    """Up to ``count`` e-mail touches, one every EMAIL_INTERVAL_S, until ``until`` is set."""
    return await Trickle(pool, workload, EMAIL_INTERVAL_S, count, insert=insert_email).run(until)


async def run(env: Env, n: int, rate: float = 5.0, baseline_emails: int = 50) -> dict[str, Any]:
    assert env.pg is not None
    url = await env.pg.fresh_database("pacing")
    paced_s = n / rate
    email_leads = int(paced_s * 1.5 / EMAIL_INTERVAL_S) + 20
    workload = await Workload(url).setup(n + WARMUP_PER_DAEMON * DAEMONS + EMAIL_WARMUP + baseline_emails
                                         + email_leads)
    assert workload.account_id is not None
    procs = await start_daemons(env, url, DAEMONS, SHIPPED)
    pool = await asyncpg.create_pool(url, min_size=4, max_size=4)
    try:
        await warm_up(env, workload, WARMUP_PER_DAEMON * DAEMONS)  # sms, unpaced: connections and statements ready
        never = asyncio.Event()
        await _email_trickle(pool, workload, EMAIL_WARMUP, never)
        await wait_drained(url, timeout=60)
        async with pool.acquire() as conn:
            settings_id = await conn.fetchval(PACE, workload.account_id, rate)

        # the e-mail trickle alone: the reference latency
        await env.sandbox.reset()
        baseline = await _email_trickle(pool, workload, baseline_emails, never)
        await wait_drained(url, timeout=60)
        baseline_summary = receipts_summary(baseline, await env.sandbox.requests())

        # the paced backlog, and the same e-mail trickle while it waits
        await env.sandbox.reset()
        _, insert_s, committed = await workload.burst(n)
        stop = asyncio.Event()
        emailing = asyncio.create_task(_email_trickle(pool, workload, email_leads, stop))
        most_processing, deadline = 0, time.monotonic() + paced_s * 2 + 60
        async with pool.acquire() as conn:
            while time.monotonic() < deadline:
                row = await conn.fetchrow(SMS_STATUS, workload.account_id)
                most_processing = max(most_processing, row["processing"])
                if row["processing"] == 0 and row["waiting"] == 0:
                    break
                await asyncio.sleep(0.2)
        sms_done_at = time.time()
        stop.set()
        during = await emailing
        done = await wait_drained(url, timeout=60)
        requests = await env.sandbox.requests()
        async with pool.acquire() as conn:
            counts = await outcomes(conn)
            pacing_row = await conn.fetchrow("select next_at, pushbacks from sender_pacing where settings_id = $1",
                                             settings_id)
    finally:
        await pool.close()
        await env.stop_daemons(procs)
        await env.pg.drop_database(url)
    if done["reacted_at"] is None:
        raise RuntimeError(f"pacing: the paced backlog of {n} did not drain: {counts}")
    sms = [float(r["received_at_wall"]) for r in requests if r.get("kind") == "sms"]
    observed = windows(sms)
    bound = int(rate * WINDOW_S) + 1
    during_summary = receipts_summary(during, requests)
    rate_ok = observed.get("rate_first_to_last") is not None and abs(observed["rate_first_to_last"] / rate - 1) <= 0.10
    return {
        "daemons": DAEMONS, "settings": SHIPPED, "max_per_second": rate, "touches": n,
        "insert_s": round(insert_s, 3), "sms_requests": len(sms),
        "commit_to_last_s": round(max(sms) - committed, 3) if sms else None,
        "all_terminal_s": round(sms_done_at - committed, 3),
        "window_s": WINDOW_S, "window_bound": bound, "windows": observed,
        "most_processing_at_once": most_processing, "sender_pushbacks": pacing_row["pushbacks"] if pacing_row else None,
        "sent_twice": len(duplicates(requests)), "outcomes": counts,
        "email": {"interval_ms": round(EMAIL_INTERVAL_S * 1000), "no_backlog": baseline_summary,
                  "during_paced_backlog": during_summary,
                  "p50_ratio_during_over_alone": _ratio(during_summary.get("p50_ms"), baseline_summary.get("p50_ms")),
                  "p99_ratio_during_over_alone": _ratio(during_summary.get("p99_ms"), baseline_summary.get("p99_ms"))},
        "within_spec": {"window_max_within_bound": observed.get("sliding_max", 0) <= bound,
                        "rate_within_10_percent": rate_ok},
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None
