-- Suppression (SPEC §8): do_not_contact ever, or an unsubscribe not followed by a later resubscribe (§12); reply_negative within 30 days (720 hours, as the
-- decision function counts them: interval '30 days' would follow daylight saving in the session time zone).
-- reactivation_eligible_at: when the brain may reach out again (null = never, for unsubscribed leads).
create or replace view lead_suppression_status_v1 as
select
  l.id as lead_id,
  (s.unsubscribed_at is not null)                                        as is_unsubscribed,
  coalesce(s.last_negative_at > now() - interval '720 hours', false)       as in_negative_cooldown,
  case
    when s.unsubscribed_at is not null then null
    else greatest(s.last_negative_at + interval '720 hours', o.last_outbound_at + interval '45 days')
  end                                                                    as reactivation_eligible_at,
  case
    when s.unsubscribed_at is not null then s.unsubscribe_type
    when s.last_negative_at > now() - interval '720 hours' then 'reply_negative'
  end                                                                    as reason
from leads l
left join lateral (
  select
    min(e.created_at) filter (where x.live)                                          as unsubscribed_at,
    (array_agg(e.event_type order by e.created_at) filter (where x.live))[1]         as unsubscribe_type,
    max(e.created_at) filter (where e.event_type = 'reply_negative')                 as last_negative_at
  from core_memory_events e
  -- live: a do_not_contact, or an unsubscribe not followed by a later resubscribe (SPEC §12)
  cross join lateral (
    select e.event_type = 'do_not_contact'
           or (e.event_type = 'unsubscribe'
               and not exists (select 1 from core_memory_events r
                               where r.lead_id = e.lead_id and r.event_type = 'resubscribe'
                                 and r.created_at > e.created_at)) as live
  ) x
  where e.lead_id = l.id
    and e.event_type in ('unsubscribe', 'do_not_contact', 'reply_negative')
) s on true
left join lateral (
  select max(e.created_at) as last_outbound_at
  from core_memory_events e
  where e.lead_id = l.id and e.event_type in ('touch_sent', 'touch_failed')
) o on true;
