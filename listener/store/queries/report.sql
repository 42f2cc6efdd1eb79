-- report.funnel (SPEC §18; listener/intents/report.py): per campaign, step and channel, over the last $2 days.
-- Shared by the Command OS intent, the CLI and the funnels on /campaigns. Two queries, each through its own partial
-- index (migration 0015): what was sent and delivered, and what the replies, unsubscribes and bookings of the window
-- are attributed to.

-- name: report_funnel_campaigns
-- campaigns_pkey, campaign_steps_campaign_step_key: the campaigns asked for ($1), with their number of steps, and
-- the window's bounds ($2 days back from now).
select c.id, c.name, c.status,
       coalesce((select max(s.step) from campaign_steps s where s.campaign_id = c.id), 0)::int as steps,
       now() - make_interval(days => $2::int) as since, now() as until
from campaigns c
where c.id = any($1::uuid[])

-- name: report_funnel_sent
-- touch_runs_campaign_sent (index-only): the touches of the campaigns $1 sent (status 'sent', sent_at) in the last
-- $2 days, per campaign, step and channel, and how many of them the provider reported delivered (delivery_status
-- delivered or read, §12).
select campaign_id, step, channel, count(*)::bigint as sent,
       count(*) filter (where delivery_status in ('delivered', 'read'))::bigint as delivered
from touch_runs
where campaign_id = any($1::uuid[]) and status = 'sent'
  and sent_at >= now() - make_interval(days => $2::int) and sent_at <= now()
group by campaign_id, step, channel

-- name: report_funnel_reactions
-- The replies (reply_received — not an out-of-office notice —, reply_positive, reply_negative), unsubscribes and
-- bookings (appointment_booked) of the last $2 days, each attributed to one touch: the touch the event names
-- (payload.touch_run_id, e.g. a one-click unsubscribe, §19; touch_runs_pkey), else the lead's latest touch sent at
-- or before the event (touch_runs_lead_sent: one backward probe, whatever its campaign). Counted, per campaign of
-- $1, step and channel, as touches that got at least one of each kind — only when that touch was sent in the window
-- (so an event counts once in the whole system, for the touch that last reached the lead).
-- core_memory_events_reactions: the window's reactions without reading the other events.
with reaction as (
  select e.lead_id, e.event_type, e.created_at,
         case when e.payload->>'touch_run_id' ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
              then (e.payload->>'touch_run_id')::uuid end as named_touch
  from core_memory_events e
  where e.event_type in ('reply_received', 'reply_positive', 'reply_negative', 'unsubscribe', 'appointment_booked')
    and e.created_at >= now() - make_interval(days => $2::int) and e.created_at <= now()
    and not (e.event_type = 'reply_received' and coalesce(e.payload->>'classification', '') = 'out_of_office')
), attributed as (
  select t.id, t.campaign_id, t.step, t.channel, r.event_type
  from reaction r
  cross join lateral (
    select n.id, n.campaign_id, n.step, n.channel
    from touch_runs n
    where r.named_touch is not null and n.id = r.named_touch and n.lead_id = r.lead_id and n.status = 'sent'
      and n.sent_at >= now() - make_interval(days => $2::int) and n.sent_at <= r.created_at
    union all
    (select l.id, l.campaign_id, l.step, l.channel
     from touch_runs l
     where r.named_touch is null and l.lead_id = r.lead_id and l.status = 'sent'
       and l.sent_at >= now() - make_interval(days => $2::int) and l.sent_at <= r.created_at
     order by l.sent_at desc
     limit 1)
  ) t
  where t.campaign_id = any($1::uuid[])
)
select campaign_id, step, channel,
       count(distinct id) filter (where event_type in ('reply_received', 'reply_positive', 'reply_negative'))::bigint
         as replied,
       count(distinct id) filter (where event_type = 'reply_positive')::bigint as positive,
       count(distinct id) filter (where event_type = 'unsubscribe')::bigint as unsubscribed,
       count(distinct id) filter (where event_type = 'appointment_booked')::bigint as booked
from attributed
group by campaign_id, step, channel
