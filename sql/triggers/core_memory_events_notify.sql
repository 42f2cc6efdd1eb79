-- Events the daemon reacts to: its own touch outcomes (fallback decision), undeliveries and bounces reported
-- by provider webhooks (a permanent one exhausts the channel: decision again, SPEC §12) and inbound stop signals
-- (cancellations). Each is filed in event_reactions in the same transaction, so nothing is lost while no
-- daemon listens, and one constant NOTIFY per statement wakes the daemon.
create or replace function core_memory_events_is_actionable(event_type text, direction text) returns boolean
language sql immutable as $$
  select event_type in ('touch_sent', 'touch_failed', 'touch_undelivered', 'email_bounced', 'reply_positive', 'reply_negative',
                        'appointment_booked', 'do_not_contact', 'unsubscribe')
      or direction = 'inbound'
$$;

create or replace function core_memory_events_file_reactions() returns trigger
language plpgsql as $$
begin
  -- The completer reacts to its own touch outcomes in the same transaction (sql/views/12_complete.sql): those are not
  -- filed (it files them itself, with a wake-up, if its reaction part fails), and they are no stop signals.
  if current_setting('revenue_asi.reacting_inline', true) = 'on' then
    return null;
  end if;
  -- A stop signal takes its lead's row lock, the one `lead enroll` takes before it checks suppression
  -- (queries/lead.sql lead_lock), so an enrolment and a stop event of the same lead never miss each other.
  -- (The send path holds no lead lock: its stop guarantee is the measured window of SPEC §11, README.)
  perform 1 from leads l
  where l.id in (select n.lead_id from new_rows n
                 where core_memory_events_is_actionable(n.event_type, n.direction)
                   and n.event_type not in ('touch_sent', 'touch_failed', 'touch_undelivered', 'email_bounced'))
  order by l.id
  for no key update;
  insert into event_reactions (event_id, lead_id, event_type, created_at)
  select n.id, n.lead_id, n.event_type, n.created_at
  from new_rows n
  where core_memory_events_is_actionable(n.event_type, n.direction)
  on conflict (event_id) do nothing;
  if found then
    perform pg_notify('core_memory_events', 'wake');
  end if;
  return null;
end;
$$;

drop trigger if exists core_memory_events_notify_insert on core_memory_events;
create trigger core_memory_events_notify_insert
  after insert on core_memory_events
  referencing new table as new_rows
  for each statement execute function core_memory_events_file_reactions();
