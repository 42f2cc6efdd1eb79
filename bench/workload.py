"""The bench's workload, in plain SQL the way another program would write it: one account with default providers,
one lead per touch (so every touch is its own decision key), and sms touches whose text carries the touch id, so
the fake provider's request log maps back to touches (and shows any touch sent twice).

The payload is v2-shaped WITHOUT routing.fallback: the fallback decision after each touch_sent / touch_failed is a
cheap `stop` (no_fallback_plan) with its fallback_decision event, and never creates a follow-up touch, so a drain
of N touches is exactly N provider calls."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import asyncpg

from listener.store.database import connect

TOUCH_ID_IN_BODY = re.compile(r"bench ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")
OPEN_STATUSES = ("queued", "scheduled", "processing")

SEED_ACCOUNT = """
with a as (insert into accounts (name) values ('Bench Dental') returning id),
     p as (insert into account_provider_settings (account_id, channel, provider, is_default, config)
           select a.id, c.channel, c.provider, true, c.config
           from a, (values ('voice', 'twilio', '{"from": "+15005550006"}'::jsonb),
                           ('sms', 'twilio', '{"from": "+15005550006"}'::jsonb),
                           ('whatsapp', 'twilio', '{"from": "whatsapp:+14155238886"}'::jsonb),
                           ('email', 'elasticemail', '{"from_email": "hola@bench.test", "from_name": "Bench"}'::jsonb))
                   as c(channel, provider, config))
select id from a
"""

def daytime_zone() -> str:
    """A zone where it is daytime now and for the next hours, chosen at run time: the bench runs with the shipped
    sending rules (quiet hours 21:00-08:00 on) and must drain at any hour of the day."""
    from datetime import UTC, datetime

    from listener.demo import demo_zones

    return demo_zones("21:00-08:00", datetime.now(UTC))[0]


DAYTIME_ZONE = daytime_zone()

MAKE_LEADS = """
insert into leads (account_id, full_name, phone, email, timezone)
select $1, 'Lead ' || g, '+14155550123', 'lead' || g || '@example.com', $3
from generate_series(1, $2) g
returning id
"""

# One touch, its id chosen by the caller; returns the database clock at insert time (the commit follows at once).
INSERT_ONE = """
insert into touch_runs (id, account_id, lead_id, channel, status, payload)
values ($1::uuid, $2, $3, 'sms', 'queued',
        jsonb_build_object('message_class', 'bench',
                           'routing', jsonb_build_object('primary_channel', 'sms', 'current_channel', 'sms'),
                           'delivery', jsonb_build_object('language', 'es', 'body', 'bench ' || $1::text)))
returning extract(epoch from clock_timestamp())::float8
"""

# One e-mail touch (ElasticEmail: the sandbox reads the touch id back from Content.Postback).
INSERT_EMAIL = """
insert into touch_runs (id, account_id, lead_id, channel, status, payload)
values ($1::uuid, $2, $3, 'email', 'queued',
        jsonb_build_object('message_class', 'bench',
                           'routing', jsonb_build_object('primary_channel', 'email', 'current_channel', 'email'),
                           'delivery', jsonb_build_object('language', 'es', 'subject', 'bench',
                                                          'body', 'bench ' || $1::text)))
returning extract(epoch from clock_timestamp())::float8
"""

# Many touches in one statement (one transaction): one per lead given.
INSERT_MANY = """
insert into touch_runs (id, account_id, lead_id, channel, status, payload)
select t.id, $1, t.lead_id, 'sms', 'queued',
       jsonb_build_object('message_class', 'bench',
                          'routing', jsonb_build_object('primary_channel', 'sms', 'current_channel', 'sms'),
                          'delivery', jsonb_build_object('language', 'es', 'body', 'bench ' || t.id::text))
from (select gen_random_uuid() as id, l as lead_id from unnest($2::uuid[]) as l) t
returning id
"""

PROGRESS = """
select (select count(*) from touch_runs where status in ('queued', 'scheduled', 'processing'))::bigint as open,
       exists (select 1 from event_reactions) as reactions_pending
"""

OUTCOMES = """
select status, case when status = 'failed' then split_part(error, ':', 1) end as reason, count(*)::bigint as n
from touch_runs group by 1, 2 order by 1, 2
"""


def payload_for(touch_id: uuid.UUID | str) -> dict[str, Any]:
    """The same document INSERT_ONE / INSERT_MANY build in SQL."""
    return {"message_class": "bench", "routing": {"primary_channel": "sms", "current_channel": "sms"},
            "delivery": {"language": "es", "body": f"bench {touch_id}"}}


async def seed_account(conn: asyncpg.Connection) -> uuid.UUID:
    return await conn.fetchval(SEED_ACCOUNT)


async def make_leads(conn: asyncpg.Connection, account_id: uuid.UUID, n: int) -> list[uuid.UUID]:
    if n <= 0:
        return []
    return [r["id"] for r in await conn.fetch(MAKE_LEADS, account_id, n, DAYTIME_ZONE)]


async def insert_one(conn: asyncpg.Connection, account_id: uuid.UUID, lead_id: uuid.UUID,
                     touch_id: uuid.UUID) -> float:
    return float(await conn.fetchval(INSERT_ONE, touch_id, account_id, lead_id))


async def insert_email(conn: asyncpg.Connection, account_id: uuid.UUID, lead_id: uuid.UUID,
                       touch_id: uuid.UUID) -> float:
    return float(await conn.fetchval(INSERT_EMAIL, touch_id, account_id, lead_id))


async def insert_many(conn: asyncpg.Connection, account_id: uuid.UUID, lead_ids: Sequence[uuid.UUID]
                      ) -> list[uuid.UUID]:
    return [r["id"] for r in await conn.fetch(INSERT_MANY, account_id, list(lead_ids))]


class Workload:
    """A database prepared for the bench: one account and a stock of unused leads."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.account_id: uuid.UUID | None = None
        self._leads: list[uuid.UUID] = []

    async def setup(self, leads: int) -> Workload:
        conn = await connect(self.url)
        try:
            self.account_id = await seed_account(conn)
            self._leads = await make_leads(conn, self.account_id, leads)
        finally:
            await conn.close()
        return self

    async def more_leads(self, n: int) -> None:
        assert self.account_id is not None
        conn = await connect(self.url)
        try:
            self._leads.extend(await make_leads(conn, self.account_id, n))
        finally:
            await conn.close()

    def take_leads(self, n: int) -> list[uuid.UUID]:
        if n > len(self._leads):
            raise RuntimeError(f"workload has {len(self._leads)} unused leads, {n} asked")
        taken, self._leads = self._leads[:n], self._leads[n:]
        return taken

    async def burst(self, n: int) -> tuple[list[uuid.UUID], float, float]:
        """Insert ``n`` touches in one transaction. Returns (ids, seconds the insert took, wall clock at commit)."""
        assert self.account_id is not None
        leads = self.take_leads(n)
        conn = await connect(self.url)
        try:
            started = time.perf_counter()
            ids = await insert_many(conn, self.account_id, leads)
            committed = time.time()
            return ids, time.perf_counter() - started, committed
        finally:
            await conn.close()


STATS_FLUSH_S = 1.5  # backends report their transaction counts to pg_stat_database within about a second
XACTS = "select xact_commit + xact_rollback from pg_stat_database where datname = current_database()"


async def checkpoint_and_count(url: str) -> int:
    """CHECKPOINT before a measured drain (every run starts from the same WAL state: a timed checkpoint or the full
    page writes after it land in neither side by chance), then the database's transaction count so far."""
    conn = await connect(url)
    try:
        await conn.execute("checkpoint")
        await asyncio.sleep(STATS_FLUSH_S)
        return int(await conn.fetchval(XACTS))
    finally:
        await conn.close()



async def progress(conn: asyncpg.Connection) -> tuple[int, bool]:
    row = await conn.fetchrow(PROGRESS)
    return int(row["open"]), bool(row["reactions_pending"])


async def wait_drained(url: str, *, timeout: float, poll_s: float = 0.02, started: float | None = None
                       ) -> dict[str, float | None]:
    """Poll until no touch is open and no reaction is pending. Returns wall-clock times: all terminal, all reacted
    (None for a stage not reached within ``timeout``)."""
    conn = await connect(url)
    try:
        deadline = time.monotonic() + timeout
        terminal_at: float | None = None
        while True:
            open_, pending = await progress(conn)
            now = time.time()
            if open_ == 0 and terminal_at is None:
                terminal_at = now
            if open_ == 0 and not pending:
                return {"terminal_at": terminal_at, "reacted_at": now}
            if time.monotonic() > deadline:
                return {"terminal_at": terminal_at, "reacted_at": None}
            await asyncio.sleep(poll_s)
    finally:
        await conn.close()


async def outcomes(conn: asyncpg.Connection) -> dict[str, Any]:
    by_status: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for row in await conn.fetch(OUTCOMES):
        by_status[row["status"]] += row["n"]
        if row["status"] == "failed":
            failed[row["reason"] or "?"] += row["n"]
    return {"by_status": dict(by_status), "failed_by_reason": dict(failed)}


def touch_id_of(request: Mapping[str, Any]) -> str | None:
    if request.get("touch_run_id"):
        return str(request["touch_run_id"])
    body = request.get("body") or {}
    match = TOUCH_ID_IN_BODY.search(str(body.get("Body", ""))) if isinstance(body, dict) else None
    return match.group(1) if match else None


def accepted(request: Mapping[str, Any]) -> bool:
    """The fake took the message (2xx), or may have (it never answered: a hang, or the client died waiting)."""
    status = request.get("status")
    return status is None or 200 <= int(status) < 300


def first_receipts(requests: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    seen: dict[str, float] = {}
    for request in requests:
        touch_id = touch_id_of(request)
        if touch_id is not None and touch_id not in seen:
            seen[touch_id] = float(request["received_at_wall"])
    return seen


def duplicates(requests: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Touch ids that reached the fake more than once in a way that may have been delivered (see ``accepted``)."""
    counts: Counter[str] = Counter()
    for request in requests:
        touch_id = touch_id_of(request)
        if touch_id is not None and accepted(request):
            counts[touch_id] += 1
    return {t: n for t, n in counts.items() if n > 1}


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary_ms(seconds: Sequence[float]) -> dict[str, float | None]:
    ms = [s * 1000 for s in seconds]

    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 2)

    return {"p50_ms": r(percentile(ms, 0.5)), "p90_ms": r(percentile(ms, 0.9)), "p99_ms": r(percentile(ms, 0.99)),
            "max_ms": r(max(ms) if ms else None)}
