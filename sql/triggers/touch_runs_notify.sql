-- Wake the daemon when touches become due-able (inserted or updated to queued/scheduled).
-- Statement-level with a constant payload: NOTIFY takes a database-wide lock at commit, identical
-- notifications collapse within a transaction, and the claim query finds the work itself (SPEC §4).
create or replace function touch_runs_notify_wake() returns trigger
language plpgsql as $$
begin
  if exists (select 1 from new_rows where status in ('queued', 'scheduled')) then
    perform pg_notify('touch_runs', 'wake');
  end if;
  return null;
end;
$$;

drop trigger if exists touch_runs_notify_insert on touch_runs;
create trigger touch_runs_notify_insert
  after insert on touch_runs
  referencing new table as new_rows
  for each statement execute function touch_runs_notify_wake();

drop trigger if exists touch_runs_notify_update on touch_runs;
create trigger touch_runs_notify_update
  after update on touch_runs
  referencing new table as new_rows
  for each statement execute function touch_runs_notify_wake();

-- Every touch gets a touch_scheduled event when it is created, whoever inserts it (seed: "touch_scheduled al
-- crear el touch"). One set-based insert per statement.
create or replace function touch_runs_log_scheduled() returns trigger
language plpgsql as $$
begin
  insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload)
  select n.lead_id, 'touch_scheduled', 'touch_runs', n.channel, 'internal',
         jsonb_build_object('touch_run_id', n.id, 'campaign_id', n.campaign_id, 'step', n.step,
                            'status', n.status, 'scheduled_at', n.scheduled_at,
                            'idempotency_key', n.idempotency_key)
  from new_rows n;
  return null;
end;
$$;

drop trigger if exists touch_runs_log_scheduled on touch_runs;
create trigger touch_runs_log_scheduled
  after insert on touch_runs
  referencing new table as new_rows
  for each statement execute function touch_runs_log_scheduled();
