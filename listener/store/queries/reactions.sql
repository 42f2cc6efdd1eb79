-- Reactions to events (SPEC §7–§9): fallback decisions after touch outcomes, cancellations after stop events.

-- name: take_reactions
-- Taken in the transaction that performs the reactions: a crash rolls the take back, nothing is lost. Reactions
-- set aside (failed_at, 0003_poison.sql) are skipped, and those waiting for retry_at. The payload is not read
-- here: only its touch_run_id, as text, so a payload nobody can decode (nested thousands deep, a 5,000-digit
-- number) cannot fail the take of the whole batch.
delete from event_reactions r
using (select event_id from event_reactions
       where failed_at is null and (retry_at is null or retry_at <= now())
       order by created_at limit $1 for update skip locked) pick,
      core_memory_events e
where r.event_id = pick.event_id and e.id = r.event_id
returning e.id, e.lead_id, e.event_type, e.payload ->> 'touch_run_id' as touch_run_id, e.created_at, r.attempts,
          e.payload ->> 'failure_class' as failure_class, e.payload ->> 'classification' as classification

-- name: set_aside_reaction
-- A reaction that raised, run alone: kept with its error. $7 true = given up (failed_at, shown by `status`);
-- false = retried after $8 seconds.
insert into event_reactions (event_id, lead_id, event_type, created_at, attempts, error, failed_at, retry_at)
values ($1, $2, $3, $4, $5, $6, case when $7::boolean then now() end,
        case when not $7::boolean then now() + make_interval(secs => $8::float8) end)
on conflict (event_id) do update
set attempts = excluded.attempts, error = excluded.error, failed_at = excluded.failed_at, retry_at = excluded.retry_at

-- name: postpone_cooldown
-- A key whose re-decision raised, run alone: decided again $5 seconds later instead of blocking the timer list.
insert into pending_cooldowns (lead_id, campaign_id, step, latest_touch_id, due_at)
values ($1, $2, $3, $4, now() + make_interval(secs => $5::float8))
on conflict (latest_touch_id) do update set due_at = excluded.due_at

-- name: touch_keys
-- For touch outcome events: the touch's key, and whether the touch is still the newest of its key.
select t.id as touch_run_id, t.lead_id, t.campaign_id, t.step,
       t.id = (select k.id from touch_runs k
               where k.lead_id = t.lead_id and k.campaign_id is not distinct from t.campaign_id and k.step = t.step
               order by k.created_at desc, k.id desc limit 1) as is_latest,
       exists (select 1 from touch_runs k
               where k.lead_id = t.lead_id and k.campaign_id is not distinct from t.campaign_id and k.step = t.step
                 and k.status in ('queued', 'scheduled', 'processing')) as has_open
from touch_runs t
where t.id = any($1::uuid[])

-- name: insert_follow_up_touches
-- retry_same_channel / switch_channel: the newest touch again, on next_channel, due now. The idempotency key
-- next:<previous touch id> makes a replayed decision create nothing new.
insert into touch_runs (account_id, lead_id, campaign_id, step, channel, status, scheduled_at, payload, idempotency_key)
select t.account_id, t.lead_id, t.campaign_id, t.step, f.next_channel, 'queued', now(),
       jsonb_set(case when jsonb_typeof(t.payload) = 'object' then t.payload else '{}'::jsonb end,
                 '{routing,current_channel}', to_jsonb(f.next_channel))
         - 'dryRun' - 'to' - 'provider_config'
         || case when jsonb_typeof(t.payload -> 'provider') = 'string'
                 then jsonb_build_object('provider', jsonb_build_object('forced_provider', null, 'forced_sender_id', null))
                 else '{}'::jsonb end,
       'next:' || t.id
from unnest($1::uuid[], $2::text[]) as f(previous_touch_id, next_channel)
join touch_runs t on t.id = f.previous_touch_id
on conflict (idempotency_key) do nothing
returning id, idempotency_key

-- name: insert_decision_events
insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload)
select (d ->> 'lead_id')::uuid, 'fallback_decision', 'decision_engine', d ->> 'current_channel', 'internal', d
from jsonb_array_elements($1::jsonb) as d

-- name: upsert_pending_cooldowns
insert into pending_cooldowns (lead_id, campaign_id, step, latest_touch_id, due_at)
select * from unnest($1::uuid[], $2::uuid[], $3::int[], $4::uuid[], $5::timestamptz[])
on conflict (latest_touch_id) do update set due_at = excluded.due_at

-- name: take_due_cooldowns
delete from pending_cooldowns p
using (select latest_touch_id from pending_cooldowns where due_at <= now() order by due_at limit $1
       for update skip locked) pick
where p.latest_touch_id = pick.latest_touch_id
returning p.lead_id, p.campaign_id, p.step, p.latest_touch_id

-- name: next_reaction_due
-- When the reaction service has work again: the next ended cooldown, or the next reaction waiting to be retried
-- (a row that was locked by another session, a transient error).
select least((select min(due_at) from pending_cooldowns),
             (select min(retry_at) from event_reactions where failed_at is null and retry_at is not null)) as next_at

-- name: advance_campaign_lead
-- A step ended because its channels are exhausted: move to the next step, or complete the cadence.
with cl as (
  select cl.id, cl.campaign_id, cl.lead_id,
         (select min(s.step) from campaign_steps s where s.campaign_id = cl.campaign_id and s.step > $3) as next_step
  from campaign_leads cl
  where cl.lead_id = $1 and cl.campaign_id = $2 and cl.current_step = $3 and cl.status = 'active'
  for update
)
update campaign_leads c
set current_step = coalesce(cl.next_step, c.current_step),
    status = case when cl.next_step is null then 'completed' else 'active' end,
    updated_at = now()
from cl
where c.id = cl.id
returning c.id, c.campaign_id, c.lead_id, c.status, c.current_step, cl.next_step

-- name: stop_campaign_leads
-- Stop events and suppression: every active (or paused) campaign lead of the lead, or of the given campaigns;
-- $4, when set, spares enrolments made after the stop event (a late reaction must not stop a newer cadence).
update campaign_leads
set status = 'stopped', stop_reason = $3, updated_at = now()
where lead_id = $1 and status in ('active', 'paused') and ($2::uuid[] is null or campaign_id = any($2::uuid[]))
  and ($4::timestamptz is null or enrolled_at <= $4)
returning id, campaign_id, lead_id, current_step

-- name: cancel_open_touches
-- Open touches of a lead that this event stops: all of them for suppression, else those whose plan lists it and
-- whose cadence (lead, campaign, step) began before the event ($6) — as the dispatcher's re-check reads it.
with canceled as (
  update touch_runs t
  set status = 'canceled', error = 'canceled: ' || $3, locked_by = null, locked_until = null, updated_at = now()
  where t.lead_id = $1 and t.status in ('queued', 'scheduled')
    and ($4 or ($2 = any(touch_stop_events(t.payload))
         and (select min(k.created_at) from touch_runs k
              where k.lead_id = t.lead_id and k.campaign_id is not distinct from t.campaign_id
                and k.step = t.step) <= $6))
  returning t.id, t.lead_id, t.channel, t.campaign_id, t.step
)
insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload)
select c.lead_id, 'touch_canceled', 'stop_events', c.channel, 'internal',
       jsonb_build_object('touch_run_id', c.id, 'campaign_id', c.campaign_id, 'step', c.step, 'reason', $3,
                          'event_id', $5::uuid)
from canceled c
returning (payload ->> 'campaign_id')::uuid as campaign_id

-- name: insert_cadence_events
insert into core_memory_events (lead_id, event_type, event_source, direction, payload)
select (d ->> 'lead_id')::uuid, d ->> 'event_type', 'cadence', 'internal', d - 'event_type'
from jsonb_array_elements($1::jsonb) as d

-- name: insert_step_touch
-- $4 = when the step began (enrolment, or the end of the previous step); due delay_minutes after it.
-- The first touch of a campaign step, on the step's routing.primary_channel, from the campaign_steps template
-- with the lead's variables. Shared by the cadence (next step) and the touch orchestrator; the idempotency key
-- step:<campaign>:<lead>:<step> makes both create it once.
insert into touch_runs (account_id, lead_id, campaign_id, step, channel, status, scheduled_at, payload, idempotency_key)
select l.account_id, l.id, s.campaign_id, s.step, s.payload -> 'routing' ->> 'primary_channel',
       case when $4::timestamptz + make_interval(secs => s.delay_minutes * 60) <= now()
            then 'queued' else 'scheduled' end,
       $4::timestamptz + make_interval(secs => s.delay_minutes * 60),
       s.payload || jsonb_build_object(
         'campaign_id', s.campaign_id::text,
         'step', s.step,
         'message_class', coalesce(s.payload ->> 'message_class', cp.message_class),
         'routing', (s.payload -> 'routing') || jsonb_build_object('current_channel', s.payload -> 'routing' -> 'primary_channel'),
         'delivery', coalesce(s.payload -> 'delivery', '{}'::jsonb) || jsonb_build_object('variables',
           jsonb_strip_nulls(jsonb_build_object('first_name', c.first_name, 'full_name', l.full_name,
                                                'company_name', c.company_name))
             || coalesce(s.payload -> 'delivery' -> 'variables', '{}'::jsonb))),
       'step:' || s.campaign_id || ':' || l.id || ':' || s.step
from campaign_steps s
join campaigns cp on cp.id = s.campaign_id
join leads l on l.id = $2
join lead_contacts_v1 c on c.lead_id = l.id
where s.campaign_id = $1 and s.step = $3
  and s.payload -> 'routing' ->> 'primary_channel' in ('voice', 'whatsapp', 'sms', 'email')
  and s.delay_minutes <= 525600  -- SPEC §11: beyond one year (or NaN) the step is skipped; the orchestrator says why
on conflict (idempotency_key) do nothing
returning id

-- name: requeue_set_aside_reactions
-- `revenue-asi reactions retry`: reactions set aside (failed_at) — all of them ($1 null) or those of the given
-- events — are queued again with a fresh attempt count, and the daemons are woken.
with requeued as (
  update event_reactions
  set failed_at = null, retry_at = null, attempts = 0, error = null
  where failed_at is not null and ($1::uuid[] is null or event_id = any($1::uuid[]))
  returning event_id
), woken as (
  select pg_notify('core_memory_events', 'wake') from requeued limit 1
)
select (select array_agg(event_id) from requeued) as event_ids, (select count(*) from woken) as woken

-- name: defer_for_out_of_office
-- SPEC §19: a reply_out_of_office landed. The lead's open touches (queued, scheduled; not one already being sent) due
-- before the pause ends go back to scheduled at its resume moment (09:00 lead-local the day after `until`), with one
-- touch_deferred event each (reason out_of_office). The pause is read from lead_pause_status, not from the event: a
-- later out-of-office reply, or a human reply that ended the pause meanwhile, wins. $1 lead, $2 the event.
with pause as (
  select p.* from lead_pause_status($1::uuid, now()) p where p.in_force
), deferred as (
  update touch_runs t
  set status = 'scheduled', scheduled_at = p.resume_at, locked_by = null, locked_until = null, updated_at = now()
  from pause p
  where t.lead_id = $1::uuid and t.status in ('queued', 'scheduled') and t.scheduled_at < p.resume_at
  returning t.id, t.lead_id, t.channel, t.campaign_id, t.step, p.resume_at, p.until, p.lead_timezone, p.event_id
)
insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload)
select d.lead_id, 'touch_deferred', 'out_of_office', d.channel, 'internal',
       jsonb_strip_nulls(jsonb_build_object(
         'touch_run_id', d.id, 'reason', 'out_of_office', 'next_at', d.resume_at, 'lead_timezone', d.lead_timezone,
         'until', d.until, 'campaign_id', d.campaign_id, 'step', d.step, 'event_id', d.event_id,
         'trigger_event_id', $2::uuid))
from deferred d
returning payload ->> 'touch_run_id' as touch_run_id

-- name: resume_after_reply
-- SPEC §19: a non-automatic reply ends an out-of-office pause at once. The lead's touches waiting for that pause
-- (scheduled, their latest touch_deferred says out_of_office) become due now — the dispatcher then checks them as
-- any due touch (stop events, suppression, quiet hours, caps) — with a touch_scheduled event each (reason
-- out_of_office_ended). Nothing moves while a pause is still in force (a newer out-of-office reply). $1 lead, $2 the
-- reply event.
with resumed as (
  update touch_runs t
  set scheduled_at = now(), updated_at = now()
  from touch_deferrals_v1 d
  where d.id = t.id and d.lead_id = $1::uuid and d.reason = 'out_of_office'
    and t.status = 'scheduled' and t.scheduled_at > now()
    and not exists (select 1 from lead_pause_status($1::uuid, now()) p where p.in_force)
  returning t.id, t.lead_id, t.channel, t.campaign_id, t.step, t.status, t.scheduled_at
)
insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload)
select r.lead_id, 'touch_scheduled', 'out_of_office', r.channel, 'internal',
       jsonb_build_object('touch_run_id', r.id, 'campaign_id', r.campaign_id, 'step', r.step, 'status', r.status,
                          'scheduled_at', r.scheduled_at, 'reason', 'out_of_office_ended', 'event_id', $2::uuid)
from resumed r
returning payload ->> 'touch_run_id' as touch_run_id
