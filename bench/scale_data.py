"""The scale bench's data (bench/scale.py): one database grown in steps by core_memory_events, with its leads present
from the first step, generated in SQL (generate_series) with triggers off (session_replication_role = replica: the
history is not work for a daemon), in chunks, then VACUUM ANALYZE.

Shape (every id derived from a number — md5('scale-lead-' || n)::uuid — so a step, the due stock and the
measurements find a lead's, an account's or a touch's id without reading it back):

* ``ACCOUNTS`` accounts, a few large and a long tail (lead n belongs to account 1 + ⌊100·frac(n·φ)²⌋: the largest
  holds 10 % of the leads, the smallest 0.5 %), each with a default sender per channel (no pacing) and one campaign
  of 3 steps (voice first, the v2 fallback plan voice → whatsapp → sms → email);
* the leads (1 M at full size), one in five enriched; most without any history at the small sizes;
* history: a 5-touch cadence per historical lead (voice, voice, whatsapp, whatsapp, sms, an hour apart; 30 %
  failed), 3 events per touch (touch_scheduled, touch_sent or touch_failed, fallback_decision — one lead in 20
  replied and one in 100 unsubscribed instead of its last fallback_decision), its campaign_leads row: 15 events and
  5 touch_runs per cadence, so touch_runs ≈ events / 3;
* time: the history accrues at a constant rate (``EVENTS_PER_HOUR``), as a live system's does: each step first
  fills the time since the previous step (the last hour and day hold the same at every size), then prepends older
  history (10 M events reach back about a year);
* the dashboard's side tables (job runs, heartbeats) and campaign_lead_counts reseeded (its triggers were off);
* a step that adds ``REBUILD_FROM`` events or more loads without the secondary indexes of touch_runs,
  core_memory_events and campaign_leads and builds them afterwards (their definitions read back with pg_get_indexdef:
  the schema is the migrated one): packed indexes, as after a pg_restore, where a live database's would be grown.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

ACCOUNTS = 100
EVENTS_PER_CADENCE = 15  # 5 touches × 3 events
TOUCHES_PER_CADENCE = 5
EVENTS_PER_HOUR = 1_200  # the history's rate: 80 cadences an hour; 10 M events span 347 days
CHUNK_CADENCES = 20_000  # 300 k events, 100 k touches per transaction
CHUNK_LEADS = 250_000
# A step that adds at least this many events loads without the secondary indexes of the tables it fills and builds
# them again afterwards (as pg_restore does): inserting 9 M events through 9 indexes each, random keys among them,
# runs at ~15 k events/s on 2 cores, the load and the builds at several times that. The constraints' indexes (primary
# keys, unique keys) stay.
REBUILD_FROM = 500_000
REBUILT_TABLES = ("touch_runs", "core_memory_events", "campaign_leads")
MAINTENANCE_WORK_MEM = "1GB"
PLAN = ('{"order": ["voice", "whatsapp", "sms", "email"], "max_attempts": {"voice": 2, "whatsapp": 2, "sms": 1, '
        '"email": 1}, "cooldown_minutes": {"voice": 60, "whatsapp": 60, "sms": 0, "email": 0}}')
CHANNELS = ("voice", "whatsapp", "sms", "email")
# the due stock (constant at every size): DUE_TOUCHES due now over the DUE_ACCOUNTS largest accounts × DUE_CHANNELS,
# half of them for leads with history (a step-2 touch after their cadence), half for leads without; and LATER_TOUCHES
# scheduled in the future over the next LATER_ACCOUNTS accounts (open senders the claim walks, nothing due)
DUE_TOUCHES = 2_000
DUE_ACCOUNTS = 10
DUE_CHANNELS = ("sms", "email", "whatsapp")
LATER_TOUCHES = 1_000
LATER_ACCOUNTS = 10


def account_no(n: str) -> str:
    """SQL: the account number (1 … ACCOUNTS) of lead number ``n``."""
    return f"(1 + floor({ACCOUNTS} * power((({n})::numeric * 0.6180339887498949) % 1, 2))::int)"


def uid(kind: str, *parts: str) -> str:
    """SQL: the deterministic uuid of a generated row, e.g. uid('lead', 'n')."""
    return f"md5('scale-{kind}-' || " + " || '-' || ".join(f"({p})::text" for p in parts) + ")::uuid"


STEP_PAYLOAD = f"""jsonb_build_object(
  'message_class', 'cold_outreach',
  'routing', jsonb_build_object('primary_channel', 'voice', 'fallback', '{PLAN}'::jsonb),
  'delivery', jsonb_build_object('language', 'es', 'body', 'Hola {{first_name}}'))"""

SETUP = [
    f"""insert into accounts (id, name, created_at)
        select {uid('account', 'a')}, 'Scale account ' || lpad(a::text, 3, '0'), now() - interval '3 years'
        from generate_series(1, {ACCOUNTS}) a""",
    f"""insert into account_provider_settings (account_id, channel, provider, is_default, config, id)
        select {uid('account', 'a')}, c, case when c = 'email' then 'elasticemail' else 'twilio' end, true,
               case when c = 'email' then '{{"from_email": "hola@scale.example"}}'::jsonb
                    else '{{"from_number": "+14155550100"}}'::jsonb end,
               {uid('settings', 'a', 'c')}
        from generate_series(1, {ACCOUNTS}) a
        cross join unnest(array{list(CHANNELS)}) c""",
    f"""insert into campaigns (id, account_id, name, status, message_class, created_at)
        select {uid('campaign', 'a')}, {uid('account', 'a')}, 'Cadence ' || a, 'active', 'cold_outreach',
               now() - interval '3 years'
        from generate_series(1, {ACCOUNTS}) a""",
    f"""insert into campaign_steps (campaign_id, step, delay_minutes, payload)
        select {uid('campaign', 'a')}, s, (s - 1) * 1440, {STEP_PAYLOAD}
        from generate_series(1, {ACCOUNTS}) a cross join generate_series(1, 3) s""",
    """insert into job_runs (job, started_at, finished_at, stats)
       select (array['sweep', 'touch-orchestrator', 'reactivation'])[1 + g % 3], now() - make_interval(mins => g),
              now() - make_interval(mins => g) + interval '20 ms', '{"due_touches": 0}'::jsonb
       from generate_series(1, 2000) g""",
    """insert into daemon_heartbeats (worker_id, hostname, pid, started_at, beat_at, interval_s, listen_connected)
       values ('scale-1', 'bench', 1, now() - interval '1 day', now(), 5, true),
              ('scale-2', 'bench', 2, now() - interval '1 day', now(), 5, true)""",
]

# $1, $2: lead numbers (inclusive)
LEADS = f"""
insert into leads (id, account_id, full_name, phone, email, timezone, created_at)
select {uid('lead', 'n')}, {uid('account', account_no('n'))}, 'Lead ' || n, '+1415' || lpad((n % 10000000)::text, 7, '0'),
       'lead' || n || '@scale.example', (array['UTC', 'America/New_York', 'Europe/Madrid', 'America/Mexico_City'])[1 + n % 4],
       now() - interval '3 years'
from generate_series($1::bigint, $2::bigint) n
"""
ENRICHED = f"""
insert into lead_enriched (lead_id, first_name, company_name, enriched_at, created_at)
select {uid('lead', 'n')}, 'Nombre' || n, 'Clínica ' || (n % 5000), now() - interval '3 years', now() - interval '3 years'
from generate_series($1::bigint, $2::bigint) n
where n % 5 = 0
"""

# One chunk of cadences: leads $2 … $3 of a run that began at lead $1; the cadence of lead n ends (its 5th touch) at
# $4 - (n - $1) × $5 seconds. The touches of a chunk in a temporary table, from which touches, events and
# campaign_leads are written.
CHUNK_TOUCHES = f"""
create temp table g_touches on commit drop as
select {uid('touch', 'n', 'c.k')} as id, n, c.k, {uid('lead', 'n')} as lead_id, a.no as account_no,
       {uid('account', 'a.no')} as account_id, {uid('campaign', 'a.no')} as campaign_id, c.channel,
       $4::timestamptz - make_interval(secs => (n - $1) * $5::float8) - make_interval(hours => 5 - c.k) as at,
       abs(hashtext(n || ':' || c.k)) % 10 < 3 as failed
from generate_series($2::bigint, $3::bigint) n
cross join lateral (select {account_no('n')} as no) a
cross join (values (1, 'voice'), (2, 'voice'), (3, 'whatsapp'), (4, 'whatsapp'), (5, 'sms')) as c(k, channel)
"""
CHUNK_INSERT_TOUCHES = f"""
insert into touch_runs (id, account_id, lead_id, campaign_id, step, channel, status, scheduled_at, sent_at, payload,
                        error, idempotency_key, provider_message_id, provider_settings_id, delivery_status,
                        created_at, updated_at)
select t.id, t.account_id, t.lead_id, t.campaign_id, 1, t.channel, case when t.failed then 'failed' else 'sent' end,
       t.at, case when not t.failed then t.at + interval '400 ms' end,
       p.payload,
       case when t.failed then 'http_500: Twilio 500' end,
       case when t.k = 1 then 'step:' || t.campaign_id || ':' || t.lead_id || ':1'
            else 'next:' || {uid('touch', 't.n', 't.k - 1')} end,
       case when not t.failed then 'SM' || md5(t.id::text) end,
       {uid('settings', 't.account_no', 't.channel')},
       case when not t.failed and abs(hashtext(t.id::text)) % 3 <> 0 then 'delivered' end,
       t.at, t.at + interval '1 second'
from g_touches t
join g_payloads p on p.account_no = t.account_no and p.channel = t.channel
"""
# The touch payloads, one per (account, channel): a step-1 touch as step_touch_row writes it, moved to the channel.
PAYLOADS = f"""
create temp table if not exists g_payloads as
select a as account_no, c as channel,
       {STEP_PAYLOAD} || jsonb_build_object(
         'campaign_id', {uid('campaign', 'a')}::text, 'step', 1,
         'routing', jsonb_build_object('primary_channel', 'voice', 'current_channel', c, 'fallback', '{PLAN}'::jsonb),
         'delivery', jsonb_build_object('language', 'es', 'body', 'Hola {{first_name}}',
                                        'variables', jsonb_build_object('first_name', 'Nombre'))) as payload
from generate_series(1, {ACCOUNTS}) a cross join unnest(array{list(CHANNELS)}) c
"""
CHUNK_INSERT_EVENTS = """
insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload, created_at)
select t.lead_id, e.event_type, e.source, t.channel, e.direction,
       case when e.direction = 'inbound' then jsonb_build_object('classification', 'neutral', 'body', 'Gracias')
            else jsonb_build_object('touch_run_id', t.id, 'campaign_id', t.campaign_id, 'step', 1) end
         || case when e.event_type = 'touch_failed'
                 then '{"error_code": "http_500", "failure_class": "transient"}'::jsonb else '{}'::jsonb end,
       t.at + e.offset_s * interval '1 second'
from g_touches t
cross join lateral (values ('touch_scheduled', 'orchestrator', 'internal', 0),
                           (case when t.failed then 'touch_failed' else 'touch_sent' end, 'dispatcher', 'outbound', 1),
                           (case when t.k < 5 then 'fallback_decision'
                                 when t.n % 100 = 13 then 'unsubscribe'
                                 when t.n % 20 = 7 then 'reply_received'
                                 else 'fallback_decision' end,
                            case when t.k = 5 and (t.n % 100 = 13 or t.n % 20 = 7) then 'inbound_webhook'
                                 else 'decision_engine' end,
                            case when t.k = 5 and (t.n % 100 = 13 or t.n % 20 = 7) then 'inbound'
                                 else 'internal' end, 2)) as e(event_type, source, direction, offset_s)
"""
CHUNK_INSERT_CAMPAIGN_LEADS = """
insert into campaign_leads (campaign_id, lead_id, status, current_step, stop_reason, enrolled_at, created_at, updated_at)
select t.campaign_id, t.lead_id,
       case when t.n % 10 < 7 then 'completed' when t.n % 10 = 7 then 'stopped' else 'active' end, 1,
       case when t.n % 10 = 7 then 'reply_positive' end, t.at - interval '1 minute', t.at - interval '1 minute',
       t.at + interval '4 hours'
from g_touches t where t.k = 1
"""

# $1: how many; $2: the last lead number with history at the first step; $3, $4: lead numbers that never get history
DUE_STOCK = f"""
with cand as (
  select n, n <= $2 as has_history
  from (select n from generate_series(1, $2::bigint) n
        union all select n from generate_series($3::bigint, $4::bigint) n) g
  where {account_no('n')} <= {DUE_ACCOUNTS}
), old as (
  select * from cand where has_history order by n limit $1::int / 2
), chosen as (
  select *, row_number() over (order by n) as i
  from (select * from old
        union all (select * from cand where not has_history order by n
                   limit $1::int - (select count(*) from old))) c
)
insert into touch_runs (account_id, lead_id, campaign_id, step, channel, status, scheduled_at, payload,
                        idempotency_key, created_at, updated_at)
select {uid('account', account_no('c.n'))}, {uid('lead', 'c.n')}, {uid('campaign', account_no('c.n'))},
       case when c.has_history then 2 else 1 end, ch.channel, 'queued',
       now() - make_interval(secs => 1 + (c.i % 600)),
       {STEP_PAYLOAD} || jsonb_build_object('campaign_id', {uid('campaign', account_no('c.n'))}::text,
                                            'step', case when c.has_history then 2 else 1 end),
       'due:' || c.n || ':' || ch.channel, now() - interval '15 minutes', now() - interval '15 minutes'
from chosen c
cross join lateral (select (array{list(DUE_CHANNELS)})[1 + (c.i % {len(DUE_CHANNELS)})::int] as channel) ch
"""
# $1: how many; $2, $3: the lead numbers to take them from
LATER_STOCK = f"""
with cand as (
  select n, row_number() over (order by n) as i from generate_series($2::bigint, $3::bigint) n
  where {account_no('n')} between {DUE_ACCOUNTS + 1} and {DUE_ACCOUNTS + LATER_ACCOUNTS}
  limit $1
)
insert into touch_runs (account_id, lead_id, campaign_id, step, channel, status, scheduled_at, payload,
                        idempotency_key)
select {uid('account', account_no('c.n'))}, {uid('lead', 'c.n')}, {uid('campaign', account_no('c.n'))}, 1,
       case when c.i % 2 = 0 then 'sms' else 'email' end, 'scheduled', now() + make_interval(mins => 10 + c.i::int),
       {STEP_PAYLOAD}, 'later:' || c.n
from cand c
"""
RESEED_COUNTS = [
    "delete from campaign_lead_count_deltas",
    "delete from campaign_lead_counts",
    "insert into campaign_lead_counts (status, n) select status, count(*) from campaign_leads group by status",
]


def _progress(message: str) -> None:
    print(f"[scale] {message}", file=sys.stderr, flush=True)


@dataclass
class History:
    """What the database holds so far: ``cadences`` historical leads (numbers 1 … cadences), their cadence ends
    between ``oldest`` and ``newest``."""

    leads: int
    cadences: int = 0
    newest: datetime | None = None
    oldest: datetime | None = None
    first_step_cadences: int = 0

    @property
    def events(self) -> int:
        return self.cadences * EVENTS_PER_CADENCE

    @staticmethod
    def step_s() -> float:
        return 3600.0 * EVENTS_PER_CADENCE / EVENTS_PER_HOUR


async def _replica(conn: asyncpg.Connection) -> None:
    await conn.execute("set local session_replication_role = replica")
    await conn.execute("set local synchronous_commit = off")


async def setup(conn: asyncpg.Connection, leads: int) -> dict[str, float]:
    """Accounts, senders, campaigns and every lead (chunks of CHUNK_LEADS), triggers off for the leads."""
    started = time.perf_counter()
    async with conn.transaction():
        for statement in SETUP:
            await conn.execute(statement)
    done = 0
    while done < leads:
        last = min(leads, done + CHUNK_LEADS)
        async with conn.transaction():
            await _replica(conn)
            await conn.execute(LEADS, done + 1, last)
            await conn.execute(ENRICHED, done + 1, last)
        done = last
        took = time.perf_counter() - started
        _progress(f"leads {done:,} / {leads:,} ({done / took:,.0f} leads/s)")
    return {"leads_s": round(time.perf_counter() - started, 1)}


async def _cadences(conns: list[asyncpg.Connection], history: History, first: int, count: int, anchor: datetime,
                    total: int, started: float, done: list[int]) -> None:
    """``count`` cadences for leads first … first + count - 1, ending at anchor, anchor - step, …: chunks of
    CHUNK_CADENCES, one transaction each, loaded by every connection of ``conns`` at once."""
    chunks = [(n, min(first + count - 1, n + CHUNK_CADENCES - 1)) for n in range(first, first + count, CHUNK_CADENCES)]
    chunks.reverse()

    async def loader(conn: asyncpg.Connection) -> None:
        while chunks:
            n, last = chunks.pop()
            async with conn.transaction():
                await _replica(conn)
                await conn.execute(PAYLOADS)
                await conn.execute(CHUNK_TOUCHES, first, n, last, anchor, history.step_s())
                await conn.execute(CHUNK_INSERT_TOUCHES)
                await conn.execute(CHUNK_INSERT_EVENTS)
                await conn.execute(CHUNK_INSERT_CAMPAIGN_LEADS)
            done[0] += (last - n + 1) * EVENTS_PER_CADENCE
            took = time.perf_counter() - started
            _progress(f"history {done[0]:,} / {total:,} events ({100 * done[0] / total:.0f} %), "
                      f"{done[0] / took:,.0f} events/s, "
                      f"{done[0] / EVENTS_PER_CADENCE * TOUCHES_PER_CADENCE / took:,.0f} touch_runs/s")

    await asyncio.gather(*(loader(conn) for conn in conns))


SECONDARY_INDEXES = """
select i.indexrelid::regclass::text as name, pg_get_indexdef(i.indexrelid) as definition,
       i.indrelid::regclass::text as table_name
from pg_index i
where i.indrelid = any($1::regclass[])
  and not exists (select 1 from pg_constraint c where c.conindid = i.indexrelid)
order by pg_relation_size(i.indrelid) desc, i.indexrelid::regclass::text
"""


async def drop_secondary_indexes(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    indexes = await conn.fetch(SECONDARY_INDEXES, list(REBUILT_TABLES))
    async with conn.transaction():
        for index in indexes:
            await conn.execute(f'drop index "{index["name"]}"')
    _progress(f"dropped {len(indexes)} secondary indexes of {', '.join(REBUILT_TABLES)} for the load")
    return indexes


async def build_indexes(conns: list[asyncpg.Connection], indexes: list[asyncpg.Record]) -> None:
    """Build ``indexes``, one per connection at a time (the largest first)."""
    todo = list(indexes)

    async def builder(conn: asyncpg.Connection) -> None:
        await conn.execute(f"set maintenance_work_mem = '{MAINTENANCE_WORK_MEM}'")
        try:
            while todo:
                index = todo.pop(0)
                started = time.perf_counter()
                await conn.execute(index["definition"])
                _progress(f"index {index['name']} built in {time.perf_counter() - started:.1f} s")
        finally:
            await conn.execute("reset maintenance_work_mem")

    await asyncio.gather(*(builder(conn) for conn in conns))


async def grow(conns: list[asyncpg.Connection], history: History, events: int) -> dict[str, Any]:
    """Grow the history to ``events`` core_memory_events: first the time since the last step (at the history's rate),
    then older history, loaded over every connection of ``conns``; then VACUUM ANALYZE. Returns the seconds each part
    took."""
    conn = conns[0]
    want = max(0, round(events / EVENTS_PER_CADENCE) - history.cadences)
    if history.cadences + want > history.leads:
        raise ValueError(f"{events:,} events need {history.cadences + want:,} leads with history; "
                         f"only {history.leads:,} leads")
    started = time.perf_counter()
    now: datetime = await conn.fetchval("select clock_timestamp()")
    step = timedelta(seconds=history.step_s())
    total = want * EVENTS_PER_CADENCE
    done = [0]
    recent = 0
    dropped = await drop_secondary_indexes(conn) if total >= REBUILD_FROM else []
    if history.newest is None:
        recent = want
        history.newest, history.oldest = now, now - step * max(0, want - 1)
    else:
        recent = min(want, int((now - history.newest) / step))
        if recent:
            history.newest = now
    if recent:
        await _cadences(conns, history, history.cadences + 1, recent, now, total, started, done)
        history.cadences += recent
    older = want - recent
    if older:
        assert history.oldest is not None
        anchor = history.oldest - step
        await _cadences(conns, history, history.cadences + 1, older, anchor, total, started, done)
        history.cadences += older
        history.oldest = anchor - step * (older - 1)
    if not history.first_step_cadences:
        history.first_step_cadences = history.cadences
    insert_s = time.perf_counter() - started
    t = time.perf_counter()
    await build_indexes(conns, dropped)
    index_s = time.perf_counter() - t
    async with conn.transaction():
        for statement in RESEED_COUNTS:
            await conn.execute(statement)
    t = time.perf_counter()
    _progress("vacuum analyze …")
    await conn.execute("vacuum analyze")
    vacuum_s = time.perf_counter() - t
    return {"added_events": total, "recent_cadences": recent, "older_cadences": older,
            "insert_s": round(insert_s, 1), "indexes_rebuilt": len(dropped), "index_build_s": round(index_s, 1),
            "vacuum_analyze_s": round(vacuum_s, 1),
            "events_per_s": round(total / insert_s) if insert_s else None,
            "history_from": history.oldest.isoformat() if history.oldest else None,
            "history_to": history.newest.isoformat() if history.newest else None}


async def stock(conn: asyncpg.Connection, history: History, reserved: int) -> dict[str, int]:
    """The due stock (once, after the first step): DUE_TOUCHES queued and due, LATER_TOUCHES scheduled later. Leads
    from ``reserved`` on never get history, so the stock's leads have the same history at every size."""
    async with conn.transaction():
        await _replica(conn)  # no touch_scheduled events: the events are the history's alone
        due = await conn.execute(DUE_STOCK, DUE_TOUCHES, history.first_step_cadences, reserved, history.leads)
        later = await conn.execute(LATER_STOCK, LATER_TOUCHES, reserved, history.leads)
    await conn.execute("vacuum analyze touch_runs")
    return {"due": int(due.split()[-1]), "scheduled_later": int(later.split()[-1])}
