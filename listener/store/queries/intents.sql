-- Command OS v2 intents (SPEC §18, listener/intents/): campaigns, leads, touches, reactions, and command_runs.
-- Everything an intent changes is written with event_source `command_os` and, in the payload, the id of the
-- command_runs row that records it.

-- name: intent_campaign_by_id
select c.id, c.name, c.status, c.account_id, a.name as account_name
from campaigns c join accounts a on a.id = c.account_id
where c.id = $1

-- name: intent_campaign_names
-- Every campaign, for finding one by name (case- and accent-insensitive, compared in Python with the resolver's own
-- folding: the server's normalize() needs a UTF-8 database, which an external DATABASE_URL may not be).
select c.id, c.name, c.status, c.account_id, a.name as account_name
from campaigns c join accounts a on a.id = c.account_id
order by a.name, c.name, c.id

-- name: intent_campaign_lock
-- The campaign row, locked for the pause / resume that changes it (two operators at once: one waits).
select c.id, c.name, c.status, c.account_id, a.name as account_name
from campaigns c join accounts a on a.id = c.account_id
where c.id = $1
for no key update of c

-- name: intent_campaign_list
-- campaign.list: the campaigns ($1 at most), by account and name.
select c.id, c.name, c.status, c.message_class, c.created_at, c.account_id, a.name as account_name,
       (select count(*) from campaign_steps s where s.campaign_id = c.id)::int as steps
from campaigns c join accounts a on a.id = c.account_id
order by a.name, c.name, c.id
limit $1

-- name: intent_campaign_steps
-- Each step of the given campaigns with its first channel.
select s.campaign_id, s.step, s.payload -> 'routing' ->> 'primary_channel' as primary_channel
from campaign_steps s
where s.campaign_id = any($1::uuid[])
order by s.campaign_id, s.step

-- name: intent_campaign_lead_counts
-- campaign_leads_funnel (index-only): campaign leads per campaign, current step and status.
select campaign_id, current_step as step, status, count(*)::bigint as n
from campaign_leads
where campaign_id = any($1::uuid[])
group by 1, 2, 3
order by 1, 2, 3

-- name: intent_campaign_open_touches
-- What pausing would touch: the campaign's not-yet-sent touches by channel (touch_runs_open_by_campaign), and those
-- in flight (processing: with a provider now; they finish, nothing cancels them).
select t.channel, count(*) filter (where t.status in ('queued', 'scheduled'))::bigint as open,
       count(*) filter (where t.status = 'processing')::bigint as in_flight
from touch_runs t
where t.campaign_id = $1 and t.status in ('queued', 'scheduled', 'processing')
group by t.channel
order by t.channel

-- name: intent_campaign_set_status
update campaigns set status = $2 where id = $1
returning id, status

-- name: intent_cancel_campaign_touches
-- campaign.pause: the campaign's queued and scheduled touches → canceled (reason $2), one touch_canceled each.
-- $3 = the command_runs id.
with canceled as (
  update touch_runs t
  set status = 'canceled', error = 'canceled: ' || $2, locked_by = null, locked_until = null, updated_at = now()
  where t.campaign_id = $1 and t.status in ('queued', 'scheduled')
  returning t.id, t.lead_id, t.channel, t.campaign_id, t.step
)
insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload)
select c.lead_id, 'touch_canceled', 'command_os', c.channel, 'internal',
       jsonb_build_object('touch_run_id', c.id, 'campaign_id', c.campaign_id, 'step', c.step, 'reason', $2::text,
                          'command_run_id', $3::uuid)
from canceled c
returning (payload ->> 'touch_run_id')::uuid as touch_run_id, lead_id, channel

-- name: intent_resume_candidates
-- campaign.resume: each active campaign lead of the campaign, with the newest touch of its current step. A touch
-- the pause canceled (error 'canceled: campaign_paused', still the newest of its key: nothing came after it) is
-- created again; a step with no touch at all (enrolled while paused) is the touch orchestrator's, which creates
-- its first touch on its next run now that the campaign is active. Suppressed leads are counted, not resumed.
with keys as (
  select cl.id as campaign_lead_id, cl.lead_id, cl.current_step as step,
         (select t.id from touch_runs t
          where t.lead_id = cl.lead_id and t.campaign_id = cl.campaign_id and t.step = cl.current_step
          order by t.created_at desc, t.id desc limit 1) as latest_touch_id
  from campaign_leads cl
  where cl.campaign_id = $1 and cl.status = 'active'
)
select k.campaign_lead_id, k.lead_id, k.step, k.latest_touch_id, t.channel, t.status, t.scheduled_at,
       t.error = 'canceled: campaign_paused' as paused_touch,
       coalesce(sup.is_unsubscribed or sup.in_negative_cooldown, false) as suppressed
from keys k
left join touch_runs t on t.id = k.latest_touch_id
left join lead_suppression_status_v1 sup on sup.lead_id = k.lead_id
order by k.lead_id

-- name: intent_resume_touches
-- campaign.resume: each touch the pause canceled ($1, newest of its key) again — same lead, step, channel and
-- payload (less what a send attempt may have left in it, as insert_follow_up_touches), due when it was due (now if
-- that has passed). The idempotency key resume:<canceled touch id> makes a second resume (or two at once) create it
-- once.
insert into touch_runs (account_id, lead_id, campaign_id, step, channel, status, scheduled_at, payload, idempotency_key)
select t.account_id, t.lead_id, t.campaign_id, t.step, t.channel,
       case when t.scheduled_at <= now() then 'queued' else 'scheduled' end,
       greatest(t.scheduled_at, now()),
       case when jsonb_typeof(t.payload) = 'object' then t.payload - 'dryRun' - 'to' - 'provider_config'
            else t.payload end,
       'resume:' || t.id
from touch_runs t
where t.id = any($1::uuid[]) and t.status = 'canceled'
on conflict (idempotency_key) do nothing
returning id, lead_id, channel, status, scheduled_at, step

-- name: intent_lead
select l.id, l.full_name, l.account_id, a.name as account_name
from leads l join accounts a on a.id = l.account_id
where l.id = $1

-- name: intent_lead_state
-- lead.stop / lead.suppress previews: what the lead has going on now.
select (select coalesce(jsonb_agg(jsonb_build_object('campaign_lead_id', cl.id, 'campaign_id', cl.campaign_id,
                                                     'campaign_name', cp.name, 'status', cl.status,
                                                     'current_step', cl.current_step)
                                  order by cp.name, cl.id), '[]'::jsonb)
        from campaign_leads cl join campaigns cp on cp.id = cl.campaign_id
        where cl.lead_id = $1 and cl.status in ('active', 'paused')) as cadences,
       (select coalesce(jsonb_object_agg(channel, n), '{}'::jsonb)
        from (select channel, count(*) as n from touch_runs
              where lead_id = $1 and status in ('queued', 'scheduled') group by channel) o) as open_touches,
       (select count(*) from touch_runs where lead_id = $1 and status = 'processing')::bigint as in_flight,
       (select count(*) from pending_cooldowns where lead_id = $1)::bigint as cooldown_timers,
       (select exists (select 1 from core_memory_events e
                       where e.lead_id = $1 and e.event_type = 'do_not_contact')) as do_not_contact,
       sup.is_unsubscribed, sup.in_negative_cooldown, sup.reason as suppression_reason
from lead_suppression_status_v1 sup
where sup.lead_id = $1

-- name: intent_cancel_lead_touches
-- lead.stop: every queued and scheduled touch of the lead → canceled (reason $2), one touch_canceled each
-- (payload stop_reason $3, command_run_id $4).
with canceled as (
  update touch_runs t
  set status = 'canceled', error = 'canceled: ' || $2, locked_by = null, locked_until = null, updated_at = now()
  where t.lead_id = $1 and t.status in ('queued', 'scheduled')
  returning t.id, t.lead_id, t.channel, t.campaign_id, t.step
)
insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload)
select c.lead_id, 'touch_canceled', 'command_os', c.channel, 'internal',
       jsonb_build_object('touch_run_id', c.id, 'campaign_id', c.campaign_id, 'step', c.step, 'reason', $2::text,
                          'stop_reason', $3::text, 'command_run_id', $4::uuid)
from canceled c
returning (payload ->> 'touch_run_id')::uuid as touch_run_id, channel

-- name: intent_drop_lead_cooldowns
-- lead.stop: the lead's cooldown timers end with its cadences (a timer would otherwise decide its key again and
-- create the next touch of a stopped cadence).
delete from pending_cooldowns where lead_id = $1
returning latest_touch_id

-- name: intent_insert_do_not_contact
-- lead.suppress: the do_not_contact event (SPEC §8); its trigger files the reaction, which the intent also runs at
-- once in the same transaction (listener/engine/reactions.py react_to_events).
insert into core_memory_events (lead_id, event_type, event_source, direction, payload)
values ($1, 'do_not_contact', 'command_os', 'internal', jsonb_build_object('command_run_id', $2::uuid))
returning id, created_at

-- name: intent_touch
select t.id, t.account_id, t.lead_id, t.campaign_id, t.step, t.channel, t.status, t.scheduled_at, t.created_at,
       l.full_name as lead_name, cp.name as campaign_name
from touch_runs t
join leads l on l.id = t.lead_id
left join campaigns cp on cp.id = t.campaign_id
where t.id = $1

-- name: intent_cancel_touch
-- touch.cancel: one queued or scheduled touch → canceled (reason $2), with its touch_canceled event ($3 = the
-- command_runs id). No row: it does not exist, or it is no longer queued or scheduled.
with canceled as (
  update touch_runs t
  set status = 'canceled', error = 'canceled: ' || $2, locked_by = null, locked_until = null, updated_at = now()
  where t.id = $1 and t.status in ('queued', 'scheduled')
  returning t.id, t.lead_id, t.channel, t.campaign_id, t.step
), event as (
  insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload)
  select c.lead_id, 'touch_canceled', 'command_os', c.channel, 'internal',
         jsonb_build_object('touch_run_id', c.id, 'campaign_id', c.campaign_id, 'step', c.step, 'reason', $2::text,
                            'command_run_id', $3::uuid)
  from canceled c
  returning id
)
select c.id, c.lead_id, c.channel, c.campaign_id, c.step, (select id from event) as event_id
from canceled c

-- name: intent_set_aside_reactions
-- reactions.retry preview: the reactions set aside (failed_at) — all ($1 null) or those of the given events — the
-- newest $2 listed, all counted.
select (select count(*) from event_reactions
        where failed_at is not null and ($1::uuid[] is null or event_id = any($1::uuid[])))::bigint as n,
       (select array_agg(event_id) from event_reactions
        where failed_at is not null and $1::uuid[] is not null and event_id = any($1::uuid[])) as event_ids,
       coalesce((select jsonb_agg(jsonb_build_object('event_id', r.event_id, 'event_type', r.event_type,
                                                     'lead_id', r.lead_id, 'attempts', r.attempts, 'error', r.error,
                                                     'failed_at', r.failed_at) order by r.failed_at desc)
                 from (select * from event_reactions
                       where failed_at is not null and ($1::uuid[] is null or event_id = any($1::uuid[]))
                       order by failed_at desc limit $2) r), '[]'::jsonb) as latest

-- name: intent_record_command_run
insert into command_runs (id, actor, text, intent, args, preview, result, error)
values ($1, $2, $3, $4, $5, $6, $7, $8)
returning id, created_at
