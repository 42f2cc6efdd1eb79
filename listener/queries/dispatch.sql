-- Dispatch: claim → lock + re-check → send → complete (SPEC §6).

-- name: claim_due_touches
-- Lease due touches; committed on its own before any provider call. SKIP LOCKED lets many daemons share the queue.
update touch_runs t
set status = 'processing', locked_by = $1, locked_until = now() + make_interval(secs => $2), updated_at = now()
from (
  select id from touch_runs
  where status in ('queued', 'scheduled') and scheduled_at <= now()
  order by scheduled_at
  limit $3
  for update skip locked
) due
where t.id = due.id
returning t.id

-- name: generic_plans_in_transaction
-- Small send batches: reuse each prepared statement's generic plan instead of re-planning it (SET LOCAL: this
-- transaction only).
set local plan_cache_mode = force_generic_plan

-- name: lock_claimed_touches
-- In the send transaction: hold our touches (the sweep skips locked rows) and share-lock their leads, so a stop
-- event (its trigger takes the lead FOR NO KEY UPDATE) waits for in-flight sends and every later check sees it.
select t.id
from touch_runs t
join leads l on l.id = t.lead_id
where t.id = any($1::uuid[]) and t.status = 'processing' and t.locked_by = $2
order by l.id
for update of t for share of l

-- name: touch_send_contexts
-- Everything a send needs, and every reason not to send, for a batch of locked touches — one round trip.
select
  t.id, t.account_id, t.lead_id, t.campaign_id, t.step, t.channel, t.payload,
  c.phone as lead_phone, c.email as lead_email, c.first_name, l.full_name, c.company_name,
  ps.provider as provider_name, ps.config as provider_config,
  s.is_unsubscribed, s.in_negative_cooldown, s.reason as suppression_reason,
  (select max(e.created_at) from core_memory_events e
   where e.lead_id = t.lead_id and e.event_type = 'reply_received' and e.channel = 'whatsapp') as last_whatsapp_reply_at,
  (
    select e.event_type
    from core_memory_events e
    where e.lead_id = t.lead_id
      and e.created_at >= (select min(k.created_at) from touch_runs k
                           where k.lead_id = t.lead_id and k.campaign_id is not distinct from t.campaign_id
                             and k.step = t.step)
      and e.event_type = any(
        case when jsonb_typeof(t.payload -> 'routing' -> 'stop_on_events') = 'array'
             then array(select jsonb_array_elements_text(t.payload -> 'routing' -> 'stop_on_events'))
             else array['reply_positive', 'appointment_booked', 'do_not_contact'] end)
    order by e.created_at
    limit 1
  ) as stop_event
from touch_runs t
join leads l on l.id = t.lead_id
join lead_contacts_v1 c on c.lead_id = t.lead_id
join lead_suppression_status_v1 s on s.lead_id = t.lead_id
left join account_provider_settings ps
  on ps.account_id = t.account_id and ps.channel = t.channel and ps.is_default
where t.id = any($1::uuid[])

-- name: templates_by_key
select template_name, language, channel, subject, body
from message_templates
where (template_name, language) in (select * from unnest($1::text[], $2::text[]))

-- name: complete_touches
-- Status and event in one statement (so in one transaction): sent / failed / canceled, with their events.
with done as (
  select * from jsonb_to_recordset($1::jsonb) as d(
    id uuid, status text, error text, provider_message_id text, payload_patch jsonb,
    event_type text, event_payload jsonb)
), updated as (
  update touch_runs t
  set status = d.status,
      sent_at = case when d.status = 'sent' then now() else t.sent_at end,
      error = d.error,
      provider_message_id = coalesce(d.provider_message_id, t.provider_message_id),
      payload = case when d.payload_patch is null then t.payload else t.payload || d.payload_patch end,
      locked_by = null, locked_until = null, updated_at = now()
  from done d
  where t.id = d.id and t.status = 'processing' and t.locked_by = $2
  returning t.id, t.lead_id, t.channel, t.campaign_id, t.step
)
insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload)
select u.lead_id, d.event_type, 'dispatcher', u.channel,
       case when d.event_type = 'touch_canceled' then 'internal' else 'outbound' end,
       d.event_payload || jsonb_build_object('touch_run_id', u.id, 'campaign_id', u.campaign_id, 'step', u.step)
from updated u join done d on d.id = u.id
returning payload ->> 'touch_run_id' as touch_run_id

-- name: release_claimed_touches
-- Graceful shutdown: touches claimed but never handed to a provider go back to the queue.
update touch_runs
set status = 'queued', locked_by = null, locked_until = null, updated_at = now()
where id = any($1::uuid[]) and status = 'processing' and locked_by = $2

-- name: next_scheduled_at
select min(scheduled_at) as next_at from touch_runs where status in ('queued', 'scheduled')
