-- The seed's Command OS intents lead.inspect and lead.enroll (`revenue-asi lead inspect|enroll`).

-- name: lead_inspect_lead
select l.id, l.account_id, a.name as account_name, l.full_name, l.created_at, l.timezone as raw_timezone,
       l.phone as raw_phone, l.email as raw_email,
       le.phone as enriched_phone, le.email as enriched_email, le.first_name as enriched_first_name,
       le.company_name as enriched_company_name, le.enriched_at,
       c.phone, c.email, c.first_name, c.company_name, c.timezone, c.has_phone, c.has_email
from leads l
join accounts a on a.id = l.account_id
join lead_contacts_v1 c on c.lead_id = l.id
left join lead_enriched le on le.lead_id = l.id
where l.id = $1

-- name: lead_inspect_suppression
select is_unsubscribed, in_negative_cooldown, reactivation_eligible_at, reason
from lead_suppression_status_v1 where lead_id = $1

-- name: lead_inspect_next_action
select recommended_channel, recommended_action, recommended_delay_minutes, priority_score, suppression_reason,
       last_outbound_at, open_touches, in_active_campaign
from lead_next_action_view_v5 where lead_id = $1

-- name: lead_inspect_campaigns
select cl.id as campaign_lead_id, cl.campaign_id, cp.name as campaign_name, cp.status as campaign_status,
       cl.status, cl.current_step, cl.stop_reason, cl.enrolled_at, cl.updated_at,
       (select count(*) from campaign_steps s where s.campaign_id = cl.campaign_id)::int as steps
from campaign_leads cl
join campaigns cp on cp.id = cl.campaign_id
where cl.lead_id = $1
order by cl.enrolled_at desc

-- name: lead_inspect_open_touches
select id, campaign_id, step, channel, status, scheduled_at, locked_by, locked_until, idempotency_key, created_at
from touch_runs
where lead_id = $1 and status in ('queued', 'scheduled', 'processing')
order by scheduled_at, created_at

-- name: lead_inspect_recent_touches
select id, campaign_id, step, channel, status, scheduled_at, sent_at, error, provider_message_id, idempotency_key,
       created_at
from touch_runs
where lead_id = $1 and status in ('sent', 'failed', 'canceled')
order by created_at desc, id desc
limit $2

-- name: lead_inspect_events
select id, event_type, event_source, channel, direction, payload, score_delta, created_at
from core_memory_events
where lead_id = $1
order by created_at desc, id desc
limit $2

-- name: lead_inspect_decisions
-- The current fallback decision for each active step of the lead: the current step of every active campaign
-- lead, and the key of every open touch (reactivation touches have campaign_id null). A key without a touch
-- yet has no decision (the touch orchestrator creates its first touch).
with keys as (
  select cl.campaign_id, cl.current_step as step
  from campaign_leads cl join campaigns cp on cp.id = cl.campaign_id
  where cl.lead_id = $1 and cl.status = 'active'
  union
  select t.campaign_id, t.step
  from touch_runs t
  where t.lead_id = $1 and t.status in ('queued', 'scheduled', 'processing')
)
select k.campaign_id, k.step, d.decision, d.current_channel, d.next_channel, d.cooldown_until, d.stop_reason,
       d.skipped_channels, d.latest_touch_id, d.cadence_started_at, d.channels
from keys k
left join lateral decide_next_channel_for_lead($1, k.campaign_id, k.step, now()) d on true
order by k.campaign_id nulls first, k.step

-- name: lead_enroll_check
-- Everything lead.enroll refuses on, in one row; no row when the lead does not exist.
select l.id as lead_id, l.full_name, l.account_id as lead_account_id,
       cp.id as campaign_id, cp.name as campaign_name, cp.status as campaign_status, cp.account_id as campaign_account_id,
       (select count(*) from campaign_steps s where s.campaign_id = cp.id)::int as steps,
       sup.is_unsubscribed, sup.in_negative_cooldown, sup.reason as suppression_reason,
       cl.status as enrolled_status, cl.id as campaign_lead_id
from leads l
left join campaigns cp on cp.id = $2
left join lead_suppression_status_v1 sup on sup.lead_id = l.id
left join campaign_leads cl on cl.lead_id = l.id and cl.campaign_id = $2
where l.id = $1

-- name: lead_enroll_insert
insert into campaign_leads (campaign_id, lead_id, status, current_step)
values ($1, $2, 'active', coalesce((select min(step) from campaign_steps where campaign_id = $1), 1))
on conflict (campaign_id, lead_id) do nothing
returning id, campaign_id, lead_id, status, current_step, enrolled_at

-- name: lead_enroll_first_step
select step, delay_minutes::float8 as delay_minutes, payload -> 'routing' ->> 'primary_channel' as primary_channel
from campaign_steps where campaign_id = $1 and step = $2

-- name: lead_lock
select id from leads where id = $1 for no key update
