-- The first stop event of a touch's cadence (SPEC §6, §7): an event of the touch's `routing.stop_on_events`
-- (default_stop_events() without one) for its lead since the touch's (lead, campaign, step) key began.
-- A set-returning SQL function, so PostgreSQL inlines it where it is joined laterally (the claim); a scalar SQL
-- function whose body has a sub-select never is.
create or replace function touch_first_stop_event(p_lead_id uuid, p_campaign_id uuid, p_step int, p_payload jsonb)
returns table (event_type text)
language sql stable
as $$
  select e.event_type
  from core_memory_events e
  where e.lead_id = p_lead_id
    and e.created_at >= (select min(k.created_at) from touch_runs k
                         where k.lead_id = p_lead_id and k.campaign_id is not distinct from p_campaign_id
                           and k.step = p_step)
    and e.event_type = any(touch_stop_events(p_payload))
  order by e.created_at
  limit 1
$$;

-- The same as a value (null: none), for one touch at a time.
create or replace function touch_stop_event(p_lead_id uuid, p_campaign_id uuid, p_step int, p_payload jsonb)
returns text
language sql stable
as $$
  select (select event_type from touch_first_stop_event(p_lead_id, p_campaign_id, p_step, p_payload))
$$;
