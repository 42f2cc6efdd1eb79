-- Director dashboard, JSON API and health (SPEC §14). Every query here runs in a read-only transaction with a
-- statement_timeout (listener/web/db.py) and reads a bounded slice through an index (listed per query); the
-- session writes of sign-in and sign-out (dash_session_start, dash_session_end) in a time-limited writable one.

-- name: dash_session_limits
select set_config('statement_timeout', $1, true), set_config('plan_cache_mode', 'force_custom_plan', true)

-- name: dash_ping
select 1

-- name: dash_now
select now()

-- name: dash_heartbeats
-- daemon_heartbeats_beat_at: the daemons seen in the last day, newest beat first.
select worker_id, hostname, pid, started_at, beat_at, interval_s, listen_connected, stopped_at,
       extract(epoch from (now() - beat_at))::float8 as age_s,
       (stopped_at is null and beat_at > now() - make_interval(secs => 3 * interval_s + 2)) as alive
from daemon_heartbeats
where beat_at > now() - interval '1 day'
order by beat_at desc
limit 20

-- name: dash_leases_expiring
-- touch_runs_leases: leases that end within $1 seconds (or already ended: the sweep reclaims them).
select count(*)::bigint from touch_runs
where status = 'processing' and locked_until < now() + make_interval(secs => $1)

-- name: dash_deferred_by_reason
-- core_memory_events_deferred, then touch_runs_pkey: touches deferred in the last day that still wait, by reason
-- (§13 touch_deferred events; a newer deferral of the same touch wins).
select reason, count(*)::bigint as n
from (
  select distinct on (t.id) t.id, coalesce(e.payload->>'reason', 'unknown') as reason
  from core_memory_events e
  join touch_runs t on t.id = case when e.payload->>'touch_run_id' ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                                   then (e.payload->>'touch_run_id')::uuid end
  where e.event_type = 'touch_deferred' and e.created_at > now() - interval '1 day'
    and t.status = 'scheduled' and t.scheduled_at > now()
  order by t.id, e.created_at desc
) d
group by reason
order by n desc, reason

-- name: dash_channel_last_hour
-- core_memory_events_created: touch outcomes of the last hour by channel.
select coalesce(channel, 'unknown') as channel, event_type, count(*)::bigint as n
from core_memory_events
where created_at > now() - interval '1 hour' and event_type in ('touch_sent', 'touch_failed', 'touch_canceled')
group by 1, 2

-- name: dash_recent_events
-- core_memory_events_created, newest first. Only fields safe to show: never bodies or contact data.
select e.id, e.lead_id, e.event_type, e.event_source, e.channel, e.direction, e.created_at,
       e.payload->>'touch_run_id' as touch_run_id, e.payload->>'error_code' as error_code,
       e.payload->>'reason' as reason, e.payload->>'decision' as decision, e.payload->>'next_channel' as next_channel,
       e.payload->>'provider_status' as provider_status
from core_memory_events e
where ($1::timestamptz is null or e.created_at > $1)
order by e.created_at desc, e.id desc
limit $2

-- name: dash_touches
-- touch_runs_created walked backwards (filters on it), touch_runs_lead_key for a lead, touch_runs_failed_code for
-- an error code, touch_runs_open_by_sender / touch_runs_leases for open statuses. Keyset pagination on (created_at, id).
select t.id, t.lead_id, l.full_name as lead_name, t.campaign_id, c.name as campaign_name, t.step, t.channel,
       t.status, t.scheduled_at, t.sent_at, t.created_at, t.updated_at,
       case when t.status = 'failed' then split_part(t.error, ':', 1) end as error_code, t.error,
       t.provider_message_id
from touch_runs t
left join leads l on l.id = t.lead_id
left join campaigns c on c.id = t.campaign_id
where ($1::text is null or t.status = $1)
  and ($2::text is null or t.channel = $2)
  and ($3::uuid is null or t.campaign_id = $3)
  and ($4::text is null or (t.status = 'failed' and split_part(t.error, ':', 1) = $4))
  and ($5::uuid is null or t.lead_id = $5)
  and ($6::timestamptz is null or (t.created_at, t.id) < ($6, $7::uuid))
order by t.created_at desc, t.id desc
limit $8

-- name: dash_touch
-- touch_runs_pkey. to_jsonb: columns added by later migrations (delivery_status, …) come along by themselves.
select to_jsonb(t) as touch, l.full_name as lead_name, c.name as campaign_name
from touch_runs t
left join leads l on l.id = t.lead_id
left join campaigns c on c.id = t.campaign_id
where t.id = $1

-- name: dash_touch_events
-- core_memory_events_touch_run: every event of one touch, oldest first.
select id, event_type, event_source, channel, direction, payload, score_delta, created_at
from core_memory_events
where payload->>'touch_run_id' = $1::text
order by created_at, id
limit 500

-- name: dash_campaigns
select c.id, c.name, c.status, c.message_class, c.created_at,
       (select count(*) from campaign_steps s where s.campaign_id = c.id)::int as steps
from campaigns c
order by c.created_at desc, c.id
limit $1

-- name: dash_campaign_funnel
-- campaign_leads_funnel (index-only): campaign leads per campaign, step, status and stop reason.
select campaign_id, current_step as step, status, stop_reason, count(*)::bigint as n
from campaign_leads
where campaign_id = any($1::uuid[])
group by 1, 2, 3, 4
order by 1, 2, 3, 4

-- name: dash_jobs
-- job_runs_started (all jobs) or job_runs_job (one job), newest first.
select id, job, started_at, finished_at, dry_run, stats, error,
       (extract(epoch from (finished_at - started_at)) * 1000)::float8 as took_ms
from job_runs
where ($1::text is null or job = $1)
order by started_at desc
limit $2

-- name: dash_session_start
-- Sign-in (listener/web/auth.py): a new session of $2 seconds under id $1 (an HMAC of the cookie value, never the
-- value). Sessions that expired a day ago or more go (dashboard_sessions_expires_at).
with pruned as (
  delete from dashboard_sessions where expires_at < now() - interval '1 day'
)
insert into dashboard_sessions (id, expires_at) values ($1, now() + make_interval(secs => $2))

-- name: dash_session_valid
-- dashboard_sessions_pkey: the session exists, was not ended and has not expired.
select exists (
  select 1 from dashboard_sessions where id = $1 and ended_at is null and expires_at > now()
)

-- name: dash_session_end
-- Sign-out: the session ends now, for every web process.
update dashboard_sessions set ended_at = now() where id = $1 and ended_at is null

-- name: dash_paced_senders
-- The paced senders (SPEC §16), for the home page, `status` / GET /api/status and /metrics: a sender (an account's
-- default account_provider_settings row for a channel) with config.max_per_second or max_in_flight, or under a
-- 429's pushback (sender_is_paced; the same functions the claim reads). Found without touch_runs: the candidates are
-- the settings rows that have either key in config and the sender_pacing rows with a recent pushback (each table read
-- once: one row per sender; an index on either predicate would make it a probe), sender_is_paced decides; accounts by
-- key. Then, for each paced sender shown ($1 at most), two index probes: touch_runs_open_by_sender for its touches
-- waiting for pace (queued or scheduled, due) and touch_runs_in_flight_by_sender for its requests in flight
-- (processing, claimed with it).
-- pushback_until is set while a 429's pushback still moves the rate: halved until then, climbing back for 60 s after.
-- next_at: the moment its next request may leave (null: never paced yet); next_in_s: seconds until then (0: now).
select p.settings_id, p.account_id, p.account_name, p.channel, p.provider, p.max_per_second,
       sender_effective_rate(p.max_per_second, p.pushback_rate, p.pushback_from, p.pushback_until, now())
         as effective_rate,
       p.max_in_flight, flight.n as in_flight, waiting.n as waiting,
       coalesce(now() < p.pushback_until, false) as pushback_in_force,
       case when now() < p.pushback_until + interval '60 seconds' then p.pushback_until end as pushback_until,
       case when now() < p.pushback_until + interval '60 seconds' then p.pushback_until + interval '60 seconds' end
         as climbs_back_until,
       coalesce(p.pushbacks, 0)::bigint as pushbacks, p.next_at,
       greatest(0, coalesce(extract(epoch from p.next_at - now()), 0))::float8 as next_in_s
from (
  select ps.id as settings_id, ps.account_id, ps.channel, ps.provider,
         (select a.name from accounts a where a.id = ps.account_id) as account_name,
         sender_max_per_second(ps.config) as max_per_second, sender_max_in_flight(ps.config) as max_in_flight,
         sp.pushback_rate, sp.pushback_from, sp.pushback_until, sp.pushbacks, sp.next_at
  from (select c.id from account_provider_settings c
        where c.is_default and (c.config ? 'max_per_second' or c.config ? 'max_in_flight')
        union
        select c.settings_id from sender_pacing c where c.pushback_until > now() - interval '60 seconds') candidate
  join account_provider_settings ps on ps.id = candidate.id and ps.is_default
  left join sender_pacing sp on sp.settings_id = ps.id
  where sender_is_paced(ps.config, sp.pushback_until, now())
  order by account_name, ps.account_id, ps.channel
  limit $1
) p
cross join lateral (select count(*)::bigint as n from touch_runs f
                    where f.provider_settings_id = p.settings_id and f.status = 'processing') flight
cross join lateral (select count(*)::bigint as n from touch_runs t
                    where t.account_id = p.account_id and t.channel = p.channel
                      and t.status in ('queued', 'scheduled') and t.scheduled_at <= now()) waiting
order by p.account_name, p.account_id, p.channel

-- name: dash_timeseries
-- GET /api/timeseries and the charts on / (SPEC §18): per minute over the last $1 minutes (this one included, so
-- the window starts at the top of the minute $1 - 1 minutes ago), rows of three kinds:
--   'sent'    touches whose sent_at falls in the minute, per channel (channel null: all channels), with the
--             due-to-provider latency of those touches, sent_at - greatest(scheduled_at, created_at), as p50 and
--             p99 in milliseconds (percentile_disc: a latency some touch had, not an interpolation);
--             touch_runs_sent_at (0015), index-only;
--   'failed'  touch_failed events of the minute per channel (the moment each touch failed);
--             core_memory_events_touch_failed (0015), index-only;
--   'window'  the first minute of the window (every minute is listed, also those without a row).
-- sent_at is written by the completer with the touch_sent event, in one statement, once the provider answered: the
-- latency runs from the moment the touch was due to the moment its send was recorded (the provider's answer).
with w as (select date_trunc('minute', now()) - make_interval(mins => $1::int - 1) as since,
                  date_trunc('minute', now()) + interval '1 minute' as until)
select 'sent' as kind, date_trunc('minute', t.sent_at) as minute, t.channel, count(*)::bigint as n,
       (extract(epoch from percentile_disc(0.5) within group (
          order by t.sent_at - greatest(t.scheduled_at, t.created_at))) * 1000)::float8 as p50_ms,
       (extract(epoch from percentile_disc(0.99) within group (
          order by t.sent_at - greatest(t.scheduled_at, t.created_at))) * 1000)::float8 as p99_ms
from touch_runs t, w
where t.status = 'sent' and t.sent_at >= w.since and t.sent_at < w.until
group by grouping sets ((date_trunc('minute', t.sent_at), t.channel), (date_trunc('minute', t.sent_at)))
union all
select 'failed', date_trunc('minute', e.created_at), coalesce(e.channel, 'unknown'), count(*)::bigint, null, null
from core_memory_events e, w
where e.event_type = 'touch_failed' and e.created_at >= w.since and e.created_at < w.until
group by 2, 3
union all
select 'window', w.since, null, null, null, null from w

-- name: dash_command_runs
-- /commands: the Command OS writes that ran (SPEC §18), newest first; keyset pagination on (created_at, id) as
-- /touches ($1, $2: the last row of the previous page), $3 rows.
select id, created_at, actor, text, intent, args, preview, result, error
from command_runs
where ($1::timestamptz is null or (created_at, id) < ($1, $2::uuid))
order by created_at desc, id desc
limit $3
