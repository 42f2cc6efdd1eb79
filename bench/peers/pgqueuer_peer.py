"""The peer: the same drain workload on pgqueuer, what a user would pick instead of our daemon.

Each touch is a pgqueuer job (payload = the touch id) whose entrypoint does what a straightforward pgqueuer
dispatcher does: read the touch with its lead's phone and the account's default sender (one query), make the same
provider call (Twilio Messages API, same form fields, Basic auth, over one keep-alive aiohttp session, as our
Twilio driver does), and write the same status update and touch_sent event (one statement, so one transaction).

Run by the bench as its own process (like our daemon):

    python -m bench.peers.pgqueuer_peer --url URL --base-url http://127.0.0.1:PORT --account-sid AC… --auth-token …

pgqueuer settings: its schema from its own installer (``Queries(driver).install()``, done by the bench), one asyncpg
connection for pgqueuer (its documented set-up), ``batch_size=16``, ``max_concurrent_tasks`` as the bench says (32, our
shipped concurrency; 64), uvloop, defaults otherwise.
It prints ``peer ready`` once the entrypoint is registered and the queue manager starts.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
from uuid import UUID

import aiohttp
import asyncpg
from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager

ENTRYPOINT = "send_touch"

TOUCH_CONTEXT = """
select t.id, coalesce(nullif(btrim(le.phone), ''), nullif(btrim(l.phone), '')) as phone,
       ps.config ->> 'from' as sender,
       coalesce(t.payload ->> 'message', t.payload -> 'delivery' ->> 'body', t.payload ->> 'body') as body
from touch_runs t
join leads l on l.id = t.lead_id
left join lead_enriched le on le.lead_id = t.lead_id
left join account_provider_settings ps on ps.account_id = t.account_id and ps.channel = t.channel and ps.is_default
where t.id = $1
"""

COMPLETE = """
with updated as (
  update touch_runs
  set status = $2, sent_at = case when $2 = 'sent' then now() end, provider_message_id = $3, error = $4,
      updated_at = now()
  where id = $1
  returning id, lead_id, channel, campaign_id, step
)
insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload)
select u.lead_id, case when $2 = 'sent' then 'touch_sent' else 'touch_failed' end, 'pgqueuer_peer', u.channel,
       'outbound', jsonb_build_object('touch_run_id', u.id, 'campaign_id', u.campaign_id, 'step', u.step,
                                      'provider', 'twilio', 'provider_message_id', $3::text, 'error', $4::text)
from updated u
"""


# Every job done (pgqueuer deletes a job when its entrypoint returned; the bench waits for this after a drain).
QUEUE_EMPTY = "select not exists (select 1 from pgqueuer)"


async def install(conn: asyncpg.Connection) -> None:
    """pgqueuer's schema, by its own installer."""
    await Queries(AsyncpgDriver(conn)).install()


async def enqueue(conn: asyncpg.Connection, touch_ids: list[UUID]) -> None:
    """One pgqueuer job per touch (in the caller's transaction, if any)."""
    n = len(touch_ids)
    await Queries(AsyncpgDriver(conn)).enqueue([ENTRYPOINT] * n, [str(t).encode() for t in touch_ids], [0] * n)


async def serve(args: argparse.Namespace) -> None:
    pool = await asyncpg.create_pool(args.url, min_size=4, max_size=16)
    auth = "Basic " + base64.b64encode(f"{args.account_sid}:{args.auth_token}".encode()).decode()
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=args.http_connections, keepalive_timeout=30),
        headers={"Authorization": auth, "Accept": "application/json"})
    url = f"{args.base_url.rstrip('/')}/2010-04-01/Accounts/{args.account_sid}/Messages.json"
    connection = await asyncpg.connect(args.url)
    qm = QueueManager(Queries(AsyncpgDriver(connection)))

    @qm.entrypoint(ENTRYPOINT)
    async def send_touch(job: Job) -> None:
        assert job.payload is not None
        touch_id = UUID(job.payload.decode())
        async with pool.acquire() as conn:
            row = await conn.fetchrow(TOUCH_CONTEXT, touch_id)
        if row is None:
            return
        form = {"To": row["phone"], "From": row["sender"], "Body": row["body"]}
        status, sid, error = "failed", None, None
        try:
            async with session.post(url, data=form, timeout=aiohttp.ClientTimeout(total=args.timeout_s)) as response:
                answer = json.loads(await response.read() or b"{}")
                if 200 <= response.status < 300 and isinstance(answer.get("sid"), str):
                    status, sid = "sent", answer["sid"]
                else:
                    error = f"http_{response.status}: {answer.get('message')}"
        except (TimeoutError, aiohttp.ClientError) as exc:
            error = f"outcome_unknown: {type(exc).__name__}"
        async with pool.acquire() as conn:
            await conn.execute(COMPLETE, touch_id, status, sid, error)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, qm.shutdown.set)
    print("peer ready", flush=True)
    try:
        await qm.run(batch_size=args.batch_size, max_concurrent_tasks=args.max_concurrent_tasks or None)
    finally:
        await session.close()
        await pool.close()
        await connection.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.peers.pgqueuer_peer", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--base-url", required=True)
    p.add_argument("--account-sid", required=True)
    p.add_argument("--auth-token", required=True)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-concurrent-tasks", type=int, default=0, help="0 = pgqueuer's default (no cap)")
    p.add_argument("--http-connections", type=int, default=128)
    p.add_argument("--timeout-s", type=float, default=15.0)
    import uvloop  # as our daemon runs (REVENUE_ASI_EVENT_LOOP=uvloop) and pgqueuer's own CLI does

    uvloop.run(serve(p.parse_args(argv)))


if __name__ == "__main__":
    main()
