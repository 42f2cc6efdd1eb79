-- Appointments (SPEC §15): an insert, or a change of status / starts_at / location, files the appointment in
-- appointment_inbox (keeping the state the daemon last saw) and wakes the daemon (constant payload).
create or replace function appointments_file_insert() returns trigger
language plpgsql as $$
begin
  insert into appointment_inbox (appointment_id, is_new)
  select n.id, true from new_rows n
  on conflict (appointment_id) do nothing;
  perform pg_notify('appointments', 'wake');
  return null;
end;
$$;

create or replace function appointments_file_update() returns trigger
language plpgsql as $$
begin
  insert into appointment_inbox (appointment_id, is_new, prev_status, prev_starts_at, prev_location)
  select n.id, false, o.status, o.starts_at, o.location
  from new_rows n join old_rows o on o.id = n.id
  where n.status is distinct from o.status or n.starts_at is distinct from o.starts_at
     or n.location is distinct from o.location
  on conflict (appointment_id) do nothing;
  if found then
    perform pg_notify('appointments', 'wake');
  end if;
  return null;
end;
$$;

drop trigger if exists appointments_file_insert on appointments;
create trigger appointments_file_insert
  after insert on appointments
  referencing new table as new_rows
  for each statement execute function appointments_file_insert();

drop trigger if exists appointments_file_update on appointments;
create trigger appointments_file_update
  after update on appointments
  referencing old table as old_rows new table as new_rows
  for each statement execute function appointments_file_update();

-- updated_at follows every change, whoever writes it (replay's window reads it).
create or replace function appointments_touch_updated_at() returns trigger
language plpgsql as $$
begin
  new.updated_at := now();
  return new;
end;
$$;

drop trigger if exists appointments_updated_at on appointments;
create trigger appointments_updated_at
  before update on appointments
  for each row execute function appointments_touch_updated_at();
