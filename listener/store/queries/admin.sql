-- Migrations and status (revenue-asi migrate / status).

-- name: migrations_lock
select pg_advisory_lock(hashtext('revenue_asi:migrate'))

-- name: migrations_unlock
select pg_advisory_unlock(hashtext('revenue_asi:migrate'))

-- name: migrations_table
create table if not exists schema_migrations (
  name        text primary key,
  checksum    text not null,
  applied_at  timestamptz not null default now()
)

-- name: migrations_applied
select name, checksum from schema_migrations

-- name: migration_record
insert into schema_migrations (name, checksum) values ($1, $2)
on conflict (name) do update set checksum = excluded.checksum, applied_at = now()

-- name: schema_version
select coalesce(max(name) filter (where name ~ '^[0-9]'), 'none') as version,
       count(*) filter (where name ~ '^[0-9]') as migrations
from schema_migrations

-- name: status_touch_counts
select status, channel, count(*)::bigint as n from touch_runs group by status, channel order by status, channel

-- name: status_events_last_hour
select event_type, count(*)::bigint as n from core_memory_events
where created_at > now() - interval '1 hour' group by event_type order by event_type

-- name: status_queue
-- One sub-select per number, each walking a partial index of open touches (touch_runs_open_by_sender, touch_runs_leases):
-- the cost follows the open queue, not the table.
select
  (select count(*) from touch_runs where status in ('queued', 'scheduled') and scheduled_at <= now())::bigint as due,
  (select count(*) from touch_runs where status = 'scheduled' and scheduled_at > now())::bigint as scheduled_later,
  (select count(*) from touch_runs where status = 'processing')::bigint as processing,
  -- each sender's oldest open moment, from the loose scan of open touches (one probe per sender)
  extract(epoch from (now() - (select min(u.first_at) from open_senders() u where u.first_at <= now())))::float8
                                                                                                as oldest_due_age_s,
  (select count(*) from event_reactions where failed_at is null)::bigint as pending_reactions

-- name: status_failures_last_hour
select coalesce(e.payload->>'error_code', 'unknown') as error_code, count(*)::bigint as n
from core_memory_events e
where e.event_type = 'touch_failed' and e.created_at > now() - interval '1 hour'
group by 1 order by n desc, 1

-- name: status_last_job_runs
-- The newest run of each job: a loose index scan over job_runs_job (job, started_at desc), one probe per job.
with recursive names as (
  (select job from job_runs order by job limit 1)
  union all
  select (select r.job from job_runs r where r.job > n.job order by r.job limit 1) from names n where n.job is not null
)
select r.job, r.started_at, r.finished_at, r.dry_run, r.stats, r.error
from names n
cross join lateral (select * from job_runs r where r.job = n.job order by r.started_at desc limit 1) r
where n.job is not null
order by r.job

-- name: end_open_transaction
-- A pooled connection released inside a transaction (listener.store.database.light_reset).
rollback

-- name: status_reactions_set_aside
-- Reactions that could not be processed (0003_poison.sql): how many, and the latest few with their errors.
select (select count(*) from event_reactions where failed_at is not null)::bigint as set_aside,
       (select count(*) from event_reactions where failed_at is null and attempts > 0)::bigint as retrying,
       coalesce((select jsonb_agg(jsonb_build_object('event_id', r.event_id, 'lead_id', r.lead_id,
                                                     'event_type', r.event_type, 'attempts', r.attempts,
                                                     'error', r.error, 'failed_at', r.failed_at)
                                  order by r.failed_at desc)
                 from (select * from event_reactions where failed_at is not null
                       order by failed_at desc limit $1) r), '[]'::jsonb) as latest

-- name: set_row_lock_wait
-- SPEC §20: in a transaction that works on rows another session may hold (an operator's open transaction, a long
-- migration), wait for a row lock at most $1 ms; the work on that row is set aside and retried, the rest goes on.
select set_config('lock_timeout', $1, true)
