-- Reactions to events (SPEC §7–§9): fallback decisions after touch outcomes, cancellations after stop events.

-- name: take_reactions
-- Taken in the transaction that performs the reactions: a crash rolls the take back, nothing is lost. Reactions
-- set aside (failed_at, 0003_poison.sql) are skipped, and those waiting for retry_at. The payload is not read
-- here: only its touch_run_id, as text, so a payload nobody can decode (nested thousands deep, a 5,000-digit
-- number) cannot fail the take of the whole batch.
delete from event_reactions r
using (select event_id from event_reactions
       where failed_at is null and (retry_at is null or retry_at <= now())
       order by created_at limit $1 for update skip locked) pick,
      core_memory_events e
where r.event_id = pick.event_id and e.id = r.event_id
returning e.id, e.lead_id, e.event_type, e.payload ->> 'touch_run_id' as touch_run_id, e.created_at, r.attempts

-- name: set_aside_reaction
-- A reaction that raised, run alone: kept with its error. $7 true = given up (failed_at, shown by `status`);
-- false = retried after $8 seconds.
insert into event_reactions (event_id, lead_id, event_type, created_at, attempts, error, failed_at, retry_at)
values ($1, $2, $3, $4, $5, $6, case when $7::boolean then now() end,
        case when not $7::boolean then now() + make_interval(secs => $8::float8) end)
on conflict (event_id) do update
set attempts = excluded.attempts, error = excluded.error, failed_at = excluded.failed_at, retry_at = excluded.retry_at

-- name: postpone_cooldown
-- A key whose re-decision raised, run alone: decided again $5 seconds later instead of blocking the timer list.
insert into pending_cooldowns (lead_id, campaign_id, step, latest_touch_id, due_at)
values ($1, $2, $3, $4, now() + make_interval(secs => $5::float8))
on conflict (latest_touch_id) do update set due_at = excluded.due_at

-- name: take_due_cooldowns
delete from pending_cooldowns p
using (select latest_touch_id from pending_cooldowns where due_at <= now() order by due_at limit $1
       for update skip locked) pick
where p.latest_touch_id = pick.latest_touch_id
returning p.lead_id, p.campaign_id, p.step, p.latest_touch_id

-- name: next_reaction_due
-- When the reaction service has work again: the next ended cooldown, or the next reaction waiting to be retried
-- (a row that was locked by another session, a transient error).
select least((select min(due_at) from pending_cooldowns),
             (select min(retry_at) from event_reactions where failed_at is null and retry_at is not null)) as next_at

-- name: stop_campaign_leads
-- Stop events and suppression: every active (or paused) campaign lead of the lead, or of the given campaigns;
-- $4, when set, spares enrolments made after the stop event (a late reaction must not stop a newer cadence).
update campaign_leads
set status = 'stopped', stop_reason = $3, updated_at = now()
where lead_id = $1 and status in ('active', 'paused') and ($2::uuid[] is null or campaign_id = any($2::uuid[]))
  and ($4::timestamptz is null or enrolled_at <= $4)
returning id, campaign_id, lead_id, current_step

-- name: insert_cadence_events
insert into core_memory_events (lead_id, event_type, event_source, direction, payload)
select (d ->> 'lead_id')::uuid, d ->> 'event_type', 'cadence', 'internal', d - 'event_type'
from jsonb_array_elements($1::jsonb) as d

-- name: insert_step_touch
-- The first touch of a campaign step (step_touch_row, sql/views/09_reactions.sql), due delay_minutes after $4 (when
-- the step began: enrolment, or the end of the previous step). Shared by the touch orchestrator and the cadence
-- (react_round_decisions); the idempotency key step:<campaign>:<lead>:<step> makes both create it once.
insert into touch_runs (account_id, lead_id, campaign_id, step, channel, status, scheduled_at, payload, idempotency_key)
select * from step_touch_row($1::uuid, $2::uuid, $3::int, $4::timestamptz)
on conflict (idempotency_key) do nothing
returning id

-- name: requeue_set_aside_reactions
-- `revenue-asi reactions retry`: reactions set aside (failed_at) — all of them ($1 null) or those of the given
-- events — are queued again with a fresh attempt count, and the daemons are woken.
with requeued as (
  update event_reactions
  set failed_at = null, retry_at = null, attempts = 0, error = null
  where failed_at is not null and ($1::uuid[] is null or event_id = any($1::uuid[]))
  returning event_id
), woken as (
  select pg_notify('core_memory_events', 'wake') from requeued limit 1
)
select (select array_agg(event_id) from requeued) as event_ids, (select count(*) from woken) as woken

-- name: react_to_events
-- A batch of events, reacted to set-based in rounds (sql/views/09_reactions.sql): one jsonb of counters per
-- statement it ran.
select r as counters from react_to_events($1::uuid[]) r

-- name: react_to_due_keys
-- Keys whose cooldown ended, decided again and acted on (sql/views/09_reactions.sql).
select r as counters from react_to_due_keys($1::uuid[], $2::uuid[], $3::int[], $4::uuid[]) r
