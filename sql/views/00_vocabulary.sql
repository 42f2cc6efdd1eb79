-- The names SQL shares with listener/rules/vocabulary.py, spelled once (tests/test_vocabulary.py compares them).

-- The stop events of a plan without routing.stop_on_events (SPEC §7).
create or replace function default_stop_events()
returns text[]
language sql immutable parallel safe
as $$ select array['reply_positive', 'appointment_booked', 'do_not_contact']::text[] $$;

-- The stop events of a touch payload: its routing.stop_on_events when that is an array, else the defaults.
create or replace function touch_stop_events(p_payload jsonb)
returns text[]
language sql immutable parallel safe
as $$
  select case when jsonb_typeof(p_payload -> 'routing' -> 'stop_on_events') = 'array'
              then array(select jsonb_array_elements_text(p_payload -> 'routing' -> 'stop_on_events'))
              else default_stop_events() end
$$;
