-- The brain (SPEC §8): one recommendation per lead, in this order of precedence:
--   stop_all   unsubscribed / do_not_contact
--   cooldown   reply_negative within 30 days (delay = minutes until the cooldown ends)
--   do_nothing a positive reply or an appointment (a human has it; an upcoming booked one too)
--   cooldown   paused out of office (SPEC §19: lead_pause_status in force; delay = minutes until outreach resumes,
--              09:00 lead-local the day after the return date)
--   do_nothing no contact value at all, or touched within the last 45 days with nothing open (delay = minutes until
--              reactivation)
--   send       open touches or an active campaign (delay = minutes until the next open touch is due),
--              or never touched at all
--   reactivate touched before (a touch_sent or touch_failed), nothing open, no active campaign, last outbound older than 45 days
-- priority_score = sum(score_delta) + recency (30 points fading one a day since the last event).
create or replace view lead_next_action_view_v5 as
with facts as (
  select
    c.lead_id,
    l.full_name                                              as lead_name,
    c.has_phone,
    c.has_email,
    sup.is_unsubscribed,
    sup.in_negative_cooldown,
    sup.reactivation_eligible_at,
    sup.reason                                               as suppression_reason,
    ev.score_sum,
    ev.last_event_at,
    ev.last_outbound_at,
    ev.last_outbound_channel,
    ev.last_negative_at,
    ev.has_positive,
    ot.open_touches,
    ot.next_due_at,
    exists (select 1 from campaign_leads cl join campaigns cp on cp.id = cl.campaign_id
            where cl.lead_id = c.lead_id and cl.status = 'active' and cp.status = 'active') as in_active_campaign,
    -- SPEC §15: a lead with an upcoming appointment is never reactivated (even before appointment_booked is written)
    exists (select 1 from appointments a
            where a.lead_id = c.lead_id and a.status = 'booked' and a.starts_at > now()) as has_upcoming_appointment,
    pz.until                                                 as paused_until,
    pz.resume_at                                             as resumes_at
  from lead_contacts_v1 c
  join leads l on l.id = c.lead_id
  join lead_suppression_status_v1 sup on sup.lead_id = c.lead_id
  left join lateral (
    select
      coalesce(sum(e.score_delta), 0)                                              as score_sum,
      max(e.created_at)                                                            as last_event_at,
      max(e.created_at) filter (where e.event_type in ('touch_sent', 'touch_failed')) as last_outbound_at,
      max(e.created_at) filter (where e.event_type = 'reply_negative')             as last_negative_at,
      (array_agg(e.channel order by e.created_at desc)
         filter (where e.event_type = 'touch_sent'))[1]                            as last_outbound_channel,
      bool_or(e.event_type in ('reply_positive', 'appointment_booked'))            as has_positive
    from core_memory_events e
    where e.lead_id = c.lead_id
  ) ev on true
  left join lateral (select p.until, p.resume_at from lead_pause_status(c.lead_id, now()) p where p.in_force) pz on true
  left join lateral (
    select count(*) as open_touches, min(t.scheduled_at) as next_due_at
    from touch_runs t
    where t.lead_id = c.lead_id and t.status in ('queued', 'scheduled', 'processing')
  ) ot on true
),
decided as (
  select f.*,
    case
      when f.is_unsubscribed then 'stop_all'
      when f.in_negative_cooldown then 'cooldown'
      when coalesce(f.has_positive, false) or f.has_upcoming_appointment then 'do_nothing'
      when f.resumes_at is not null then 'cooldown'
      when not (f.has_phone or f.has_email) then 'do_nothing'
      when f.open_touches > 0 or f.in_active_campaign then 'send'
      when f.last_outbound_at is null then 'send'
      when f.last_outbound_at < now() - interval '45 days' then 'reactivate'
      else 'do_nothing'
    end as recommended_action
  from facts f
)
select
  d.lead_id,
  d.lead_name,
  case
    when d.recommended_action = 'stop_all' then null
    when d.last_outbound_channel in ('voice', 'whatsapp', 'sms') and d.has_phone then d.last_outbound_channel
    when d.last_outbound_channel = 'email' and d.has_email then 'email'
    when d.has_phone then 'whatsapp'
    when d.has_email then 'email'
  end as recommended_channel,
  d.recommended_action,
  -- at most 2^31 - 1 minutes: a touch due in year 9999 is valid data and must not overflow the int (SPEC §11)
  least(2147483647, case d.recommended_action
    -- until the cooldown ends (not reactivation_eligible_at, which may be later: 45 days after the last touch)
    when 'cooldown' then greatest(0, ceil(extract(epoch from (
      case when d.in_negative_cooldown then d.last_negative_at + interval '720 hours' else d.resumes_at end
      - now())) / 60))
    when 'send' then greatest(0, ceil(extract(epoch from (coalesce(d.next_due_at, now()) - now())) / 60))
    when 'do_nothing' then case when d.reactivation_eligible_at is null then null
                           else greatest(0, ceil(extract(epoch from (d.reactivation_eligible_at - now())) / 60)) end
    else 0
  end)::int as recommended_delay_minutes,
  (d.score_sum + greatest(0, 30 - coalesce(extract(epoch from (now() - d.last_event_at)) / 86400, 30)))::int
    as priority_score,
  d.suppression_reason,
  d.last_outbound_at,
  d.open_touches,
  d.in_active_campaign,
  d.has_upcoming_appointment,
  d.paused_until,  -- SPEC §19: out of office until (null: no pause in force)
  d.resumes_at
from decided d;
