-- Rule 2 of the seed: core_memory_events is append-only. The database itself refuses UPDATE, DELETE and TRUNCATE.
create or replace function core_memory_events_refuse_change() returns trigger
language plpgsql as $$
begin
  raise exception 'core_memory_events is append-only: % is not allowed', tg_op
    using errcode = 'insufficient_privilege',
          hint = 'insert a new event instead of changing or removing an old one';
end;
$$;

drop trigger if exists core_memory_events_no_update_delete on core_memory_events;
create trigger core_memory_events_no_update_delete
  before update or delete on core_memory_events
  for each row execute function core_memory_events_refuse_change();

drop trigger if exists core_memory_events_no_truncate on core_memory_events;
create trigger core_memory_events_no_truncate
  before truncate on core_memory_events
  for each statement execute function core_memory_events_refuse_change();
