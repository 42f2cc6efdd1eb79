-- The orchestrators (SPEC §9): the touch orchestrator (was touch-orchestrator-v9, every 5 min) and the
-- reactivation orchestrator (was reactivation-orchestrator-v1, every 30 min). Both run in one transaction per
-- run that first takes a transaction-level advisory lock named after the job, so only one instance runs at a
-- time across every daemon and `revenue-asi tick`.

-- name: job_try_lock
select pg_try_advisory_xact_lock(hashtext('revenue_asi:job:' || $1::text))

-- name: orchestrator_candidates
-- Active campaign leads of active campaigns whose current step has no touch yet. skip_reason is null when the
-- step's first touch can be created; otherwise the evaluation is reported once per (lead, campaign, step,
-- reason) as an orchestrator_skipped event, so a lead that stays suppressed is not re-reported every run.
-- base_at: when the step began — enrolment for step 1, the move to a later step (updated_at) otherwise.
-- $1 = at most this many (null = all).
with candidates as (
  select cl.id as campaign_lead_id, cl.campaign_id, cl.lead_id, cl.current_step as step,
         case when cl.current_step = 1 then cl.enrolled_at else cl.updated_at end as base_at,
         s.payload -> 'routing' ->> 'primary_channel' as primary_channel,
         s.id as campaign_step_id, s.delay_minutes::text as delay_minutes,
         sup.reason as suppression_reason,
         case
           when s.id is null then 'step_missing'
           when jsonb_typeof(s.payload -> 'routing') is distinct from 'object'
             or (s.payload -> 'routing' ->> 'primary_channel') is null then 'missing_primary_channel'
           when (s.payload -> 'routing' ->> 'primary_channel') not in ('voice', 'whatsapp', 'sms', 'email')
             then 'invalid_primary_channel'
           -- SPEC §11: delays are 0..525600 minutes (one year); NaN sorts above every number, so it is caught too
           when s.delay_minutes > 525600 then 'invalid_delay'
           when sup.is_unsubscribed or sup.in_negative_cooldown then 'suppressed:' || coalesce(sup.reason, 'unknown')
         end as skip_reason,
         cl.enrolled_at
  from campaign_leads cl
  join campaigns cp on cp.id = cl.campaign_id and cp.status = 'active'
  left join campaign_steps s on s.campaign_id = cl.campaign_id and s.step = cl.current_step
  left join lead_suppression_status_v1 sup on sup.lead_id = cl.lead_id
  where cl.status = 'active'
    and not exists (select 1 from touch_runs t
                    where t.lead_id = cl.lead_id and t.campaign_id = cl.campaign_id and t.step = cl.current_step)
)
select c.*
from candidates c
where c.skip_reason is null
   or not exists (select 1 from core_memory_events e
                  where e.lead_id = c.lead_id and e.event_type = 'orchestrator_skipped'
                    and e.payload ->> 'campaign_id' = c.campaign_id::text
                    and (e.payload ->> 'step')::int = c.step
                    and e.payload ->> 'reason' = c.skip_reason)
order by c.enrolled_at, c.campaign_lead_id
limit $1

-- name: orchestrator_created_touches
select id, lead_id, campaign_id, step, channel, status, scheduled_at, idempotency_key
from touch_runs where id = any($1::uuid[])
order by scheduled_at, id

-- name: insert_orchestrator_skipped_events
-- The touch orchestrator's per-lead evaluation when it creates nothing (event type orchestrator_skipped,
-- an addition to SPEC §4): payload campaign_id, step, campaign_lead_id, reason (suppressed:<why> /
-- step_missing / missing_primary_channel / invalid_primary_channel / invalid_delay / error).
insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload)
select (d ->> 'lead_id')::uuid, 'orchestrator_skipped', 'touch_orchestrator', d ->> 'channel', 'internal',
       d - 'lead_id' - 'channel'
from jsonb_array_elements($1::jsonb) as d

-- name: reactivation_candidates
-- lead_next_action_view_v5 says reactivate; suppression and the cooldown are re-checked here, and a lead gets at
-- most one reactivation touch per window: none if a reactivation touch of the lead was created within the last
-- $2 days. $1 = at most this many (null = all), highest priority first.
select v.lead_id, v.lead_name, v.recommended_channel, v.recommended_delay_minutes, v.priority_score,
       v.last_outbound_at, l.account_id, c.first_name, c.company_name, c.has_phone, c.has_email,
       coalesce((select max(t.step) from touch_runs t where t.lead_id = v.lead_id and t.campaign_id is null), 0) + 1
         as next_step
from lead_next_action_view_v5 v
join leads l on l.id = v.lead_id
join lead_contacts_v1 c on c.lead_id = v.lead_id
join lead_suppression_status_v1 sup on sup.lead_id = v.lead_id
where v.recommended_action = 'reactivate'
  and v.recommended_channel is not null
  and not sup.is_unsubscribed
  and not sup.in_negative_cooldown
  and (sup.reactivation_eligible_at is null or sup.reactivation_eligible_at <= now())
  and not exists (select 1 from touch_runs t
                  where t.lead_id = v.lead_id and t.status in ('queued', 'scheduled', 'processing'))
  and not exists (select 1 from touch_runs t
                  where t.lead_id = v.lead_id and t.campaign_id is null
                    and t.payload -> 'meta' ->> 'source' = 'brain_full_auto_reactivation'
                    and t.created_at > now() - make_interval(days => $2::int))
order by v.priority_score desc, v.lead_id
limit $1

-- name: insert_reactivation_touch
-- One reactivation touch (campaign_id null) and its reactivation_created event, in one statement. The idempotency
-- key reactivation:<lead>:<window start date> makes concurrent runs in one window create it once.
with touch as (
  insert into touch_runs (account_id, lead_id, campaign_id, step, channel, status, scheduled_at, payload,
                          idempotency_key)
  values ($1, $2, null, $3, $4,
          case when $5::float8 <= 0 then 'queued' else 'scheduled' end,
          now() + make_interval(secs => $5::float8 * 60), $6::jsonb, $7)
  on conflict (idempotency_key) do nothing
  returning id, lead_id, channel, status, scheduled_at, step, idempotency_key
), event as (
  insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload)
  select t.lead_id, 'reactivation_created', 'reactivation_orchestrator', t.channel, 'internal',
         jsonb_build_object('touch_run_id', t.id, 'step', t.step, 'status', t.status,
                            'scheduled_at', t.scheduled_at, 'idempotency_key', t.idempotency_key,
                            'source', 'brain_full_auto_reactivation') || $8::jsonb
  from touch t
)
select id, lead_id, channel, status, scheduled_at, step, idempotency_key from touch

-- name: status_cadences
-- For `revenue-asi status` and `/`: campaign leads by status (the counts kept by 0008, not a count of the table),
-- and the cooldown timers waiting.
select coalesce((select jsonb_object_agg(status, n order by status)
                 from (select status, sum(n)::bigint as n
                       from (select status, n from campaign_lead_counts
                             union all select status, n from campaign_lead_count_deltas) c
                       group by status having sum(n) <> 0) s), '{}'::jsonb) as campaign_leads,
       (select count(*) from pending_cooldowns)::bigint as cooldown_timers,
       (select min(due_at) from pending_cooldowns) as next_cooldown_at,
       (select min(n.scheduled_at) from open_senders() u  -- one probe per sender with open touches
        cross join lateral (select t.scheduled_at from touch_runs t
                            where t.account_id = u.account_id and t.channel = u.channel
                              and t.status in ('queued', 'scheduled') and t.scheduled_at > now()
                              and t.status = 'scheduled'
                            order by t.scheduled_at limit 1) n) as next_scheduled_at
