-- The seed's attempt history, grouped also by campaign (SPEC §7): attempts = touch_sent + touch_failed events.
-- permanent_failures counts touch_failed events with failure_class = permanent, and the permanent touch_undelivered /
-- email_bounced events of provider webhooks (SPEC §12), which exhaust a channel at once without being attempts.
create or replace view v_lead_channel_attempts as
select
  tr.lead_id,
  tr.campaign_id,
  tr.step,
  tr.channel,
  count(cme.id) filter (where cme.event_type in ('touch_sent', 'touch_failed'))       as attempts_done,
  max(cme.created_at) filter (where cme.event_type in ('touch_sent', 'touch_failed')) as last_attempt_at,
  count(cme.id) filter (where cme.event_type in ('touch_failed', 'touch_undelivered', 'email_bounced')
                          and cme.payload->>'failure_class' = 'permanent')             as permanent_failures
from touch_runs tr
left join core_memory_events cme
  on cme.payload->>'touch_run_id' = tr.id::text
 and cme.event_type in ('touch_sent', 'touch_failed', 'touch_undelivered', 'email_bounced')
group by tr.lead_id, tr.campaign_id, tr.step, tr.channel;
