-- One bad row never stalls the rest (SPEC §11).

-- A reaction that cannot be processed is kept with its error and skipped, never retried forever in front of the
-- others: failed_at set = given up (visible in `revenue-asi status`; `update event_reactions set failed_at = null,
-- retry_at = null where event_id = …` queues it again). A transient database error (lock or statement timeout,
-- serialization failure) retries the one reaction at retry_at, at most a few times, then gives up the same way.
alter table event_reactions
  add column attempts   int not null default 0,
  add column error      text,
  add column failed_at  timestamptz,
  add column retry_at   timestamptz;
create index event_reactions_ready on event_reactions (created_at) where failed_at is null;
create index event_reactions_failed on event_reactions (failed_at desc) where failed_at is not null;

-- Times the daemon reads must fit Python's datetime (years 1 to 9999). PostgreSQL itself takes 4713 BC to
-- 294276 AD and 'infinity'; asyncpg cannot decode those outside Python's range (OverflowError) and turns
-- ±infinity into naive datetimes, so one such row failed every fetch that read it. The rows that other systems
-- write are refused here instead, with the constraint's name as the reason. NOT VALID: an existing database with
-- such rows still migrates (new and updated rows are checked).
alter table touch_runs add constraint touch_runs_times_in_range check (
      scheduled_at >= '0001-01-01 00:00:00+00' and scheduled_at < '10000-01-01 00:00:00+00'
  and created_at   >= '0001-01-01 00:00:00+00' and created_at   < '10000-01-01 00:00:00+00'
  and (sent_at is null or (sent_at >= '0001-01-01 00:00:00+00' and sent_at < '10000-01-01 00:00:00+00'))
  and (locked_until is null
       or (locked_until >= '0001-01-01 00:00:00+00' and locked_until < '10000-01-01 00:00:00+00'))) not valid;
alter table core_memory_events add constraint core_memory_events_created_at_in_range check (
  created_at >= '0001-01-01 00:00:00+00' and created_at < '10000-01-01 00:00:00+00') not valid;
alter table campaign_leads add constraint campaign_leads_times_in_range check (
      enrolled_at >= '0001-01-01 00:00:00+00' and enrolled_at < '10000-01-01 00:00:00+00'
  and updated_at  >= '0001-01-01 00:00:00+00' and updated_at  < '10000-01-01 00:00:00+00') not valid;
alter table pending_cooldowns add constraint pending_cooldowns_due_at_in_range check (
  due_at >= '0001-01-01 00:00:00+00' and due_at < '10000-01-01 00:00:00+00') not valid;
