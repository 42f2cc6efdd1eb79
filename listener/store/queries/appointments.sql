-- Appointments and their reminders (SPEC §15): listener/engine/appointments.py.

-- name: appointment_take
-- Taken in the transaction that reacts: a crash rolls the take back, nothing is lost. $2: appointments this drain
-- set aside (their rows locked by another session, appointment_refile) — left for the next run.
with pick as (
  select appointment_id from appointment_inbox where appointment_id <> all($2::uuid[])
  order by queued_at limit $1 for update skip locked
), taken as (
  delete from appointment_inbox i using pick where i.appointment_id = pick.appointment_id
  returning i.appointment_id, i.is_new, i.prev_status, i.prev_starts_at, i.prev_location, i.queued_at
)
select a.id, a.account_id, a.lead_id, a.starts_at, a.status, a.location, a.notes,
       t.is_new, t.prev_status, t.prev_starts_at, t.prev_location, t.queued_at
from taken t join appointments a on a.id = t.appointment_id
order by a.created_at

-- name: appointment_refile
-- SPEC §20: appointments whose rows another session holds go back to the inbox as they were taken (the state the
-- daemon last saw, their place in the queue), in the transaction that took them; the next run reacts to them. A
-- change filed meanwhile waits for this transaction and then finds the row: the older state is the one to keep.
insert into appointment_inbox (appointment_id, is_new, prev_status, prev_starts_at, prev_location, queued_at)
select * from unnest($1::uuid[], $2::boolean[], $3::text[], $4::timestamptz[], $5::text[], $6::timestamptz[])
on conflict (appointment_id) do nothing

-- name: appointment_now
select now()

-- name: appointment_lead_context
-- $1 lead, $2 account: where and how to remind the lead. last_language = the language of the lead's last touch.
select c.phone, c.email, c.first_name, l.timezone as lead_timezone, le.timezone as enriched_timezone,
       s.is_unsubscribed,
       exists (select 1 from account_provider_settings ps
               where ps.account_id = $2 and ps.channel = 'whatsapp' and ps.is_default) as has_whatsapp_sender,
       (select nullif(btrim(ps.config ->> 'appointment_content_sid'), '') from account_provider_settings ps
        where ps.account_id = $2 and ps.channel = 'whatsapp' and ps.is_default) as whatsapp_content_sid,
       (select nullif(btrim(t.payload -> 'delivery' ->> 'language'), '')
        from touch_runs t where t.lead_id = l.id
        order by t.created_at desc, t.id desc limit 1) as last_language
from leads l
join lead_contacts_v1 c on c.lead_id = l.id
join lead_suppression_status_v1 s on s.lead_id = l.id
left join lead_enriched le on le.lead_id = l.id
where l.id = $1

-- name: appointment_templates
select language, subject, body from message_templates where template_name = $1

-- name: appointment_insert_reminders
-- The idempotency key appt:<id>:<minutes>:<starts_at epoch> makes a replayed reaction create nothing new.
insert into touch_runs (account_id, lead_id, campaign_id, step, channel, status, scheduled_at, payload, idempotency_key)
select r.account_id, r.lead_id, null, 1, r.channel,
       case when r.scheduled_at <= now() then 'queued' else 'scheduled' end,
       r.scheduled_at, r.payload, r.idempotency_key
from jsonb_to_recordset($1::jsonb) as r(account_id uuid, lead_id uuid, channel text, scheduled_at timestamptz,
                                        payload jsonb, idempotency_key text)
on conflict (idempotency_key) do nothing
returning id, channel, scheduled_at, idempotency_key

-- name: appointment_refresh_reminders
-- Open reminders (not yet claimed) whose planned content changed — a new location, or one put back by
-- appointment_revive_reminders with the text of its first booking — get the planned channel and payload.
update touch_runs t
set channel = r.channel, payload = r.payload, updated_at = now()
from jsonb_to_recordset($1::jsonb) as r(channel text, payload jsonb, idempotency_key text)
where t.idempotency_key = r.idempotency_key and t.status in ('queued', 'scheduled')
  and (t.payload is distinct from r.payload or t.channel is distinct from r.channel)
returning t.id

-- name: appointment_cancel_reminders
-- $1 lead, $2 appointment id (text), $3 reason, $4 keys to keep (the reminders the appointment should have now).
with canceled as (
  update touch_runs t
  set status = 'canceled', error = 'canceled: ' || $3, locked_by = null, locked_until = null, updated_at = now()
  where t.lead_id = $1 and t.status in ('queued', 'scheduled')
    and t.payload -> 'meta' ->> 'source' = 'appointment_reminder'
    and t.payload -> 'meta' ->> 'appointment_id' = $2::text
    and not coalesce(t.idempotency_key = any($4::text[]), false)
  returning t.id, t.lead_id, t.channel, t.campaign_id, t.step
)
insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload)
select c.lead_id, 'touch_canceled', 'appointments', c.channel, 'internal',
       jsonb_build_object('touch_run_id', c.id, 'campaign_id', c.campaign_id, 'step', c.step, 'reason', $3,
                          'appointment_id', $2::text)
from canceled c
returning payload ->> 'touch_run_id' as touch_run_id

-- name: appointment_insert_event
insert into core_memory_events (lead_id, event_type, event_source, direction, payload)
values ($1, $2, 'appointments', $3, $4)

-- name: appointment_replay_candidates
-- Replay: booked, upcoming appointments created or changed in [$1, $2), of lead $3 (or all).
select a.id, a.account_id, a.lead_id, a.starts_at, a.status, a.location
from appointments a
where a.status = 'booked' and a.starts_at > now()
  and a.updated_at >= $1::timestamptz and a.updated_at < $2::timestamptz
  and ($3::uuid is null or a.lead_id = $3::uuid)
order by a.updated_at, a.id

-- name: appointments_of_lead
select a.id, a.starts_at, a.status, a.location, a.notes, (a.status = 'booked' and a.starts_at > now()) as upcoming,
       coalesce((select jsonb_agg(jsonb_build_object('touch_run_id', t.id, 'channel', t.channel, 'status', t.status,
                                                      'scheduled_at', t.scheduled_at,
                                                      'minutes_before', t.payload -> 'meta' -> 'minutes_before')
                                   order by t.scheduled_at)
                 from touch_runs t
                 where t.lead_id = a.lead_id and t.payload -> 'meta' ->> 'source' = 'appointment_reminder'
                   and t.payload -> 'meta' ->> 'appointment_id' = a.id::text), '[]'::jsonb) as reminders
from appointments a
where a.lead_id = $1
order by a.starts_at desc
limit 20

-- name: appointment_revive_reminders
-- An appointment booked again at the same time: its reminders canceled by its own cancellation (not by suppression
-- or anything else) keep their idempotency keys, so they are put back instead of created. $1 keys, $2 reason.
with revived as (
  update touch_runs t
  set status = case when t.scheduled_at <= now() then 'queued' else 'scheduled' end, error = null, updated_at = now()
  where t.idempotency_key = any($1::text[]) and t.status = 'canceled' and t.error like 'canceled: appointment\_%'
  returning t.id, t.lead_id, t.channel, t.campaign_id, t.step, t.status, t.scheduled_at, t.idempotency_key
)
insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload)
select r.lead_id, 'touch_scheduled', 'appointments', r.channel, 'internal',
       jsonb_build_object('touch_run_id', r.id, 'campaign_id', r.campaign_id, 'step', r.step, 'status', r.status,
                          'scheduled_at', r.scheduled_at, 'idempotency_key', r.idempotency_key, 'reason', $2::text)
from revived r
returning payload ->> 'touch_run_id' as id, channel, (payload ->> 'scheduled_at')::timestamptz as scheduled_at,
          payload ->> 'idempotency_key' as idempotency_key
