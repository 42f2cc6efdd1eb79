-- The seed's attempt history, grouped also by campaign (SPEC §7): attempts = touch_sent + touch_failed events.
-- permanent_failures counts touch_failed events with failure_class = permanent, which exhaust a channel at once.
create or replace view v_lead_channel_attempts as
select
  tr.lead_id,
  tr.campaign_id,
  tr.step,
  tr.channel,
  count(cme.id) filter (where cme.event_type in ('touch_sent', 'touch_failed'))       as attempts_done,
  max(cme.created_at) filter (where cme.event_type in ('touch_sent', 'touch_failed')) as last_attempt_at,
  count(cme.id) filter (where cme.event_type = 'touch_failed'
                          and cme.payload->>'failure_class' = 'permanent')             as permanent_failures
from touch_runs tr
left join core_memory_events cme
  on cme.payload->>'touch_run_id' = tr.id::text
 and cme.event_type in ('touch_sent', 'touch_failed')
group by tr.lead_id, tr.campaign_id, tr.step, tr.channel;
