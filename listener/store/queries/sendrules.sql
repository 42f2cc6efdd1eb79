-- Sending rules (SPEC §13): caps decided in the database, and deferral. See listener/engine/sendcaps.py for why the
-- check and the hand-out cannot race.

-- name: sendrules_lock_cap_keys
-- Transaction-scoped advisory locks, one per capped sender (namespace 1301) and capped lead (1302), always taken
-- in the same order (namespace, hash) so two daemons locking overlapping sets cannot deadlock. Released at
-- commit, after the decisions made under them are visible.
select count(pg_advisory_xact_lock(k.ns, hashtext(k.id::text))) as locked
from (
  select ns, id from unnest($1::int[], $2::uuid[]) as u(ns, id)
  group by ns, id
  order by ns, hashtext(id::text)
  offset 0
) k

-- name: sendrules_sender_usage
-- Per settings row: touches its (account, channel) sent in the last 24 h plus those in flight (processing,
-- excluding the batch being checked, $2), and the oldest of them (when a slot frees).
select ps.id, count(k.id)::int as used, min(coalesce(k.sent_at, now())) as oldest
from account_provider_settings ps
left join touch_runs k
  on k.account_id = ps.account_id and k.channel = ps.channel
 and ((k.status = 'sent' and k.sent_at > now() - interval '24 hours')
      or (k.status = 'processing' and k.id <> all($2::uuid[])))
where ps.id = any($1::uuid[])
group by ps.id

-- name: sendrules_lead_usage
-- Per lead, across all channels: touches sent in the last 24 h plus those in flight (excluding the batch, $2).
select u.lead_id, count(k.id)::int as used, min(coalesce(k.sent_at, now())) as oldest
from unnest($1::uuid[]) as u(lead_id)
left join touch_runs k
  on k.lead_id = u.lead_id
 and ((k.status = 'sent' and k.sent_at > now() - interval '24 hours')
      or (k.status = 'processing' and k.id <> all($2::uuid[])))
group by u.lead_id

-- name: defer_touches
-- Status and event in one statement: back to scheduled at the next allowed moment, with one touch_deferred
-- event each (SPEC §13). Only touches we still hold ($2 = our worker id) move.
with d as (
  select * from jsonb_to_recordset($1::jsonb) as d(
    id uuid, reason text, next_at timestamptz, lead_timezone text, notes jsonb)
), updated as (
  update touch_runs t
  set status = 'scheduled', scheduled_at = d.next_at, locked_by = null, locked_until = null, updated_at = now()
  from d
  where t.id = d.id and t.status = 'processing' and t.locked_by = $2
  returning t.id, t.lead_id, t.channel, t.campaign_id, t.step
)
insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload)
select u.lead_id, 'touch_deferred', 'sendrules', u.channel, 'internal',
       jsonb_strip_nulls(jsonb_build_object(
         'touch_run_id', u.id, 'reason', d.reason, 'next_at', d.next_at, 'lead_timezone', d.lead_timezone,
         'campaign_id', u.campaign_id, 'step', u.step, 'notes', d.notes))
from updated u join d on d.id = u.id
returning payload ->> 'touch_run_id' as touch_run_id

-- name: deferred_touches_by_reason
-- `revenue-asi status`: touches waiting because of a sending rule, by reason, and when the first will go.
select reason, count(*)::int as touches, min(next_at) as next_at, max(next_at) as last_at
from touch_deferrals_v1
group by 1
order by 1

-- name: lead_deferred_touches
-- `lead inspect`: this lead's touches waiting because of a sending rule, with the reason and when each will go.
select id, channel, campaign_id, step, next_at, reason, lead_timezone
from touch_deferrals_v1
where lead_id = $1
order by next_at
