-- Provider webhooks (SPEC §12): receipts (deduplicated by dedupe_key), delivery status, inbound replies.
-- Each request is one statement, so its receipt, status change and events commit together — or, for a retry
-- (the receipt's dedupe_key exists), nothing at all.

-- name: record_touch_status
-- A delivery status callback. The touch: by id ($6, ElasticEmail's postback) or by provider_message_id ($5).
-- $7 delivery_status (null = leave it), $8 event type (null = none), $9 event_source, $10 direction,
-- $11 event payload (touch_run_id, campaign_id, step added here); $12 false = when no touch is found, write nothing
-- and answer one row with outcome 'not_found' (the caller waits a moment: the daemon may not have recorded the
-- provider's id yet). No row back when the receipt already existed.
with touch as (
  select t.id, t.lead_id, t.channel, t.campaign_id, t.step
  from touch_runs t
  where t.id = $6::uuid or t.provider_message_id = $5::text
  order by t.id = $6::uuid desc nulls last, t.created_at desc
  limit 1
),
receipt as (
  insert into webhook_receipts (provider, kind, dedupe_key, touch_run_id, lead_id, params, outcome)
  select $1::text, $2::text, $3::text, t.id, t.lead_id, $4::jsonb,
         case when t.id is null then 'unknown_message' else coalesce($8::text, 'recorded') end
  from (select 1) one
  left join touch t on true
  where t.id is not null or $12::boolean
  on conflict (dedupe_key) do nothing
  returning touch_run_id, lead_id, outcome
),
status as (
  update touch_runs t
  set delivery_status = $7::text
  from receipt r
  where t.id = r.touch_run_id and $7::text is not null
  returning t.id
),
event as (
  insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload)
  select t.lead_id, $8::text, $9::text, t.channel, $10::text,
         $11::jsonb || jsonb_build_object('touch_run_id', t.id, 'campaign_id', t.campaign_id, 'step', t.step)
  from receipt r
  join touch t on t.id = r.touch_run_id
  where $8::text is not null
  returning id
),
reconciled as (
  -- SPEC §11: a callback for a touch we failed as outcome_unknown says the provider had it
  select reconcile_touch(t.id, true, coalesce($11::jsonb ->> 'provider_status', $7::text), $5::text, $9::text) as done
  from receipt r
  join touch_runs t on t.id = r.touch_run_id
  where t.status = 'failed' and t.error like 'outcome_unknown%'
)
select r.touch_run_id, r.lead_id, r.outcome, (select count(*) from event)::int as events,
       (select count(*) from status)::int as status_updates,
       (select count(*) from reconciled where done)::int as reconciled
from receipt r
union all
select null, null, 'not_found', 0, 0, 0
where not $12::boolean and not exists (select 1 from touch)

-- name: match_inbound_lead
-- The lead who sent an inbound message: among the leads of the accounts whose Twilio sender (config.from,
-- compared by digits, so 'whatsapp:+1…' and '+1…' match) received it ($1 = the receiving number's digits), the
-- ones whose phone has the sender's digits ($2: E.164 digits, national digits); ties -> the most recently touched.
-- Candidates come from the phone-digit indexes of leads and lead_enriched (0009); lead_contacts_v1 then decides
-- which phone is the lead's (enriched first), as everywhere else.
with receivers as (
  select ps.account_id
  from account_provider_settings ps
  where ps.provider = 'twilio' and regexp_replace(ps.config ->> 'from', '[^0-9]', '', 'g') = $1::text
), candidates as (
  select l.id as lead_id
  from leads l
  where l.account_id in (select account_id from receivers)
    and regexp_replace(l.phone, '[^0-9]', '', 'g') = any($2::text[])
  union
  select le.lead_id
  from lead_enriched le
  where regexp_replace(le.phone, '[^0-9]', '', 'g') = any($2::text[])
)
select c.lead_id, c.account_id
from candidates k
join lead_contacts_v1 c on c.lead_id = k.lead_id
where c.account_id in (select account_id from receivers)
  and regexp_replace(c.phone, '[^0-9]', '', 'g') = any($2::text[])
order by (select max(t.created_at) from touch_runs t where t.lead_id = c.lead_id) desc nulls last, c.lead_id
limit 1

-- name: record_inbound_message
-- An inbound SMS / WhatsApp: the receipt, then (matched lead only) reply_received and the classification's event.
-- $1 dedupe_key, $2 params, $3 lead_id (null = unmatched), $4 channel, $5 event payload, $6 follow-up event type
-- (null = none), $7 outcome, $8 what the follow-up event's payload adds to $5 (null = nothing; reply_out_of_office:
-- until, resume_at, lead_timezone …, SPEC §19). No row back when the receipt already existed.
with receipt as (
  insert into webhook_receipts (provider, kind, dedupe_key, lead_id, params, outcome)
  values ('twilio', 'inbound_message', $1::text, $3::uuid, $2::jsonb, $7::text)
  on conflict (dedupe_key) do nothing
  returning lead_id, outcome
),
events as (
  insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload)
  select r.lead_id, x.event_type, 'webhook:twilio', $4::text, 'inbound',
         $5::jsonb || case when x.n = 2 then coalesce($8::jsonb, '{}'::jsonb) else '{}'::jsonb end
  from receipt r
  cross join (values (1, 'reply_received'), (2, $6::text)) x(n, event_type)
  where r.lead_id is not null and x.event_type is not null
  returning id
)
select r.lead_id, r.outcome, (select count(*) from events)::int as events
from receipt r

-- name: inbound_lead_clock
-- The lead's clock for an out-of-office reply (SPEC §19, §13 order): its own zone, its enriched zone, its phone.
select l.timezone as lead_timezone, le.timezone as enriched_timezone, c.phone
from leads l
join lead_contacts_v1 c on c.lead_id = l.id
left join lead_enriched le on le.lead_id = l.id
where l.id = $1
