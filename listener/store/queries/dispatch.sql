-- Dispatch: claim with context (one statement, committed) → send → complete in batches (SPEC §6, §11).

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

-- name: claim_touches_with_context
-- Lease due touches and read everything their sends need, and every reason not to send, in ONE statement that
-- commits before any provider call (SKIP LOCKED lets many daemons share the queue). Its snapshot is taken at the
-- claim, the last moment before the requests start: a stop event or suppression committed before it cancels the
-- touch; one committed after it can meet a request already on its way (README: the stop window, measured by
-- tests/test_stop_window.py). jsonb comes back as text, so one malformed value fails its own touch, not the batch.
with due as (
  select id from touch_runs
  where status in ('queued', 'scheduled') and scheduled_at <= now()
  order by scheduled_at
  limit $3
  for update skip locked
), claimed as (
  update touch_runs t
  set status = 'processing', locked_by = $1, locked_until = now() + make_interval(secs => $2), updated_at = now()
  from due
  where t.id = due.id
  returning t.id, t.account_id, t.lead_id, t.campaign_id, t.step, t.channel, t.payload
)
select
  t.id, t.account_id, t.lead_id, t.campaign_id, t.step, t.channel, t.payload::text as payload_json,
  c.phone as lead_phone, c.email as lead_email, c.first_name, l.full_name, c.company_name,
  ps.provider as provider_name, ps.config::text as provider_config_json,
  ps.id as provider_settings_id, l.timezone as lead_timezone, le.timezone as enriched_timezone,
  s.is_unsubscribed, s.in_negative_cooldown, s.reason as suppression_reason,
  (select max(e.created_at) from core_memory_events e
   where e.lead_id = t.lead_id and e.event_type = 'reply_received' and e.channel = 'whatsapp') as last_whatsapp_reply_at,
  stop.event_type as stop_event,
  now() as checked_at
from claimed t
join leads l on l.id = t.lead_id
join lead_contacts_v1 c on c.lead_id = t.lead_id
join lead_suppression_status_v1 s on s.lead_id = t.lead_id
left join lateral touch_first_stop_event(t.lead_id, t.campaign_id, t.step, t.payload) stop on true
left join lead_enriched le on le.lead_id = t.lead_id
left join account_provider_settings ps
  on ps.account_id = t.account_id and ps.channel = t.channel and ps.is_default

-- name: touch_stop_reason
-- Before a retry (after a 429 or 5xx the provider did not take the message): the same reasons not to send, on a
-- fresh snapshot, for one touch.
select s.is_unsubscribed, s.in_negative_cooldown, s.reason as suppression_reason,
       touch_stop_event(t.lead_id, t.campaign_id, t.step, t.payload) as stop_event
from touch_runs t
join lead_suppression_status_v1 s on s.lead_id = t.lead_id
where t.id = $1

-- name: templates_by_key
select template_name, language, channel, subject, body
from message_templates
where (template_name, language) in (select * from unnest($1::text[], $2::text[]))

-- name: complete_touches
-- The completer: status and event in one statement (so in one transaction) for every outcome that has arrived
-- since its last write — sent / failed / canceled, with their events. Only our own lease is completed. A touch row
-- locked by another session (an operator's open transaction) is skipped, not waited for (SPEC §20): it is returned
-- as busy and written again later, while the rest of the batch commits now.
with done as (
  select * from jsonb_to_recordset($1::text::jsonb) as d(
    id uuid, status text, error text, provider_message_id text, payload_patch jsonb,
    event_type text, event_payload jsonb)
), ours as (
  select t.id from touch_runs t join done d on d.id = t.id
  where t.status = 'processing' and t.locked_by = $2
  for update of t skip locked
), updated as (
  update touch_runs t
  set status = d.status,
      sent_at = case when d.status = 'sent' then now() else t.sent_at end,
      error = d.error,
      provider_message_id = coalesce(d.provider_message_id, t.provider_message_id),
      payload = case when d.payload_patch is null then t.payload else t.payload || d.payload_patch end,
      locked_by = null, locked_until = null, updated_at = now()
  from done d join ours o on o.id = d.id
  where t.id = d.id
  returning t.id, t.lead_id, t.channel, t.campaign_id, t.step
), events as (
  insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload)
  select u.lead_id, d.event_type, 'dispatcher', u.channel,
         case when d.event_type = 'touch_canceled' then 'internal' else 'outbound' end,
         d.event_payload || jsonb_build_object('touch_run_id', u.id, 'campaign_id', u.campaign_id, 'step', u.step)
  from updated u join done d on d.id = u.id
  returning 1
)
select d.id as busy_touch_id from done d
where d.id not in (select id from ours)
  and exists (select 1 from touch_runs t where t.id = d.id and t.status = 'processing' and t.locked_by = $2)

-- name: next_scheduled_at
select min(scheduled_at) as next_at from touch_runs where status in ('queued', 'scheduled')
