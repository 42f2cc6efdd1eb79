-- The fallback decision (SPEC §7): the SQL form (sql/views/05_decide_next_channel_for_lead.sql) and the inputs
-- of its Python mirror (listener/rules/decision.py). Key: (lead_id, campaign_id, step); campaign_id may be null.

-- name: decide_for_key
-- One key at $4 (the decision's "now"). Zero rows when the key has no touch.
select d.decision, d.current_channel, d.next_channel, d.cooldown_until, d.stop_reason, d.skipped_channels,
       d.latest_touch_id, d.cadence_started_at, d.channels
from decide_next_channel_for_lead($1::uuid, $2::uuid, $3::int, $4::timestamptz) d

-- name: decide_for_keys
-- Many keys in one round trip: parallel arrays of lead ids, campaign ids (null allowed) and steps, decided at $4
-- (null = the transaction's now(), as the daemon's reactions decide).
-- Keys without a touch give no row; rows come back in the order of the arrays.
select k.lead_id, k.campaign_id, k.step,
       d.decision, d.current_channel, d.next_channel, d.cooldown_until, d.stop_reason, d.skipped_channels,
       d.latest_touch_id, d.cadence_started_at, d.channels
from unnest($1::uuid[], $2::uuid[], $3::int[]) with ordinality as k(lead_id, campaign_id, step, ord)
cross join lateral decide_next_channel_for_lead(k.lead_id, k.campaign_id, k.step, coalesce($4::timestamptz, now())) d
order by k.ord

-- name: decision_inputs_for_key
-- Everything listener.rules.decision.decide needs for one key, in one row (none when the key has no touch): the newest
-- touch (payload as text, so numbers parse exactly), the cadence start, where the lead can be reached, every
-- touch_sent / touch_failed event of the key's touches (parallel arrays), and the lead's events that can stop or
-- suppress it (suppression types at any time; the plan's stop_on_events, or the defaults, since the cadence began).
with key_touches as (
  select t.id, t.channel, t.created_at, t.payload
  from touch_runs t
  where t.lead_id = $1::uuid
    and t.step = $3::int
    and (t.campaign_id = $2::uuid or ($2::uuid is null and t.campaign_id is null))
),
latest as (
  select k.id, k.channel, k.payload,
         (select min(k2.created_at) from key_touches k2) as cadence_started_at
  from key_touches k
  order by k.created_at desc, k.id desc
  limit 1
),
stop_types as (
  select x.event_type
  from latest l
  cross join lateral jsonb_array_elements_text(
    case when jsonb_typeof(l.payload->'routing'->'stop_on_events') = 'array'
         then l.payload->'routing'->'stop_on_events'
         else '["reply_positive", "appointment_booked", "do_not_contact"]'::jsonb end) x(event_type)
)
select l.id                       as latest_touch_id,
       l.channel                  as latest_channel,
       l.payload::text            as latest_payload,
       l.cadence_started_at,
       coalesce(c.has_phone, false) as has_phone,
       coalesce(c.has_email, false) as has_email,
       coalesce(a.channels, '{}')   as attempt_channels,
       coalesce(a.types, '{}')      as attempt_types,
       coalesce(a.times, '{}')      as attempt_times,
       coalesce(a.classes, '{}')    as attempt_failure_classes,
       coalesce(ev.types, '{}')     as event_types,
       coalesce(ev.times, '{}')     as event_times
from latest l
left join lead_contacts_v1 c on c.lead_id = $1::uuid
cross join lateral (
  select array_agg(k.channel order by e.created_at, e.id)                         as channels,
         array_agg(e.event_type order by e.created_at, e.id)                      as types,
         array_agg(e.created_at order by e.created_at, e.id)                      as times,
         array_agg(e.payload->>'failure_class' order by e.created_at, e.id)       as classes
  from key_touches k
  join core_memory_events e on e.payload->>'touch_run_id' = k.id::text
  where e.event_type in ('touch_sent', 'touch_failed', 'touch_undelivered', 'email_bounced')
) a
cross join lateral (
  select array_agg(e.event_type order by e.created_at, e.event_type) as types,
         array_agg(e.created_at order by e.created_at, e.event_type) as times
  from core_memory_events e
  where e.lead_id = $1::uuid
    and (e.event_type in ('unsubscribe', 'do_not_contact', 'reply_negative', 'resubscribe')
         or (e.created_at >= l.cadence_started_at and e.event_type in (select s.event_type from stop_types s)))
) ev
