-- The first stop event of a touch's cadence (SPEC §6, §7): an event of the touch's `routing.stop_on_events`
-- (default reply_positive, appointment_booked, do_not_contact) for its lead since the touch's (lead, campaign,
-- step) key began. A single scalar subquery, so PostgreSQL inlines it into the queries that call it.
create or replace function touch_stop_event(p_lead_id uuid, p_campaign_id uuid, p_step int, p_payload jsonb)
returns text
language sql stable
as $$
  select (
    select e.event_type
    from core_memory_events e
    where e.lead_id = p_lead_id
      and e.created_at >= (select min(k.created_at) from touch_runs k
                           where k.lead_id = p_lead_id and k.campaign_id is not distinct from p_campaign_id
                             and k.step = p_step)
      and e.event_type = any(
        case when jsonb_typeof(p_payload -> 'routing' -> 'stop_on_events') = 'array'
             then array(select jsonb_array_elements_text(p_payload -> 'routing' -> 'stop_on_events'))
             else array['reply_positive', 'appointment_booked', 'do_not_contact'] end)
    order by e.created_at
    limit 1
  )
$$;
