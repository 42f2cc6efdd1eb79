-- Touches waiting because of a sending rule (SPEC §13): each scheduled touch with its latest `touch_deferred` event
-- (reason, zone). Read by `revenue-asi status` and `lead inspect`; a filter on lead_id reaches touch_runs' index.
create or replace view touch_deferrals_v1 as
select t.id, t.lead_id, t.channel, t.campaign_id, t.step, t.scheduled_at as next_at,
       e.payload ->> 'reason' as reason, e.payload ->> 'lead_timezone' as lead_timezone
from touch_runs t
cross join lateral (
  select payload from core_memory_events
  where payload ->> 'touch_run_id' = t.id::text and event_type = 'touch_deferred'
  order by created_at desc
  limit 1
) e
where t.status = 'scheduled';
