-- Out-of-office pauses and unsubscribe sources as the operator sees them (SPEC §19): `lead inspect`, the lead page,
-- `status`.

-- name: lead_out_of_office
-- The lead's latest out-of-office pause (in force, ended by a reply, or over), with the reply it came from.
select p.event_id, p.paused_at, p.until, p.resume_at, p.lead_timezone, p.provider_message_id, p.reply_body,
       p.date_text, p.until_source, p.ended_at, p.ended_by_event_id, p.ended_by, p.in_force,
       (select count(*) from touch_deferrals_v1 d where d.lead_id = $1 and d.reason = 'out_of_office')::int
         as touches_waiting
from lead_pause_status($1::uuid, now()) p

-- name: lead_unsubscribe_source
-- What unsubscribed the lead, when it is unsubscribed (lead_suppression_status_v1's rule): the first live
-- do_not_contact / unsubscribe event — its type, source (one_click, webhook:twilio, webhook:elasticemail,
-- command_os …), channel, touch, and for an inbound reply its classification and text.
select e.id as event_id, e.event_type, e.event_source, e.channel, e.created_at,
       e.payload ->> 'touch_run_id' as touch_run_id, e.payload ->> 'classification' as classification,
       e.payload ->> 'opt_out_type' as opt_out_type, left(e.payload ->> 'body', 200) as body,
       e.payload ->> 'provider_status' as provider_status
from core_memory_events e
where e.lead_id = $1 and e.event_type in ('unsubscribe', 'do_not_contact')
  and (e.event_type = 'do_not_contact'
       or not exists (select 1 from core_memory_events r
                      where r.lead_id = e.lead_id and r.event_type = 'resubscribe' and r.created_at > e.created_at))
order by e.created_at, e.event_type
limit 1

-- name: status_out_of_office
-- `revenue-asi status`: leads paused out of office now, and when the first of them resumes. Walks only the leads
-- with a recent reply_out_of_office (a pause lasts at most 200 days; index core_memory_events_out_of_office, keyed by
-- lead: read whole, only the pauses).
select count(*)::int as leads_paused, min(p.resume_at) as next_resume_at
from (select distinct e.lead_id from core_memory_events e
      where e.event_type = 'reply_out_of_office' and e.created_at > now() - interval '200 days') l
cross join lateral lead_pause_status(l.lead_id, now()) p
where p.in_force
