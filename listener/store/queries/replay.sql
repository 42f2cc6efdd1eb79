-- Replay (`revenue-asi replay`, SPEC §10): walk core_memory_events in order and re-run the daemon's reactions.
-- The events replayed are exactly those the daemon reacts to (core_memory_events_is_actionable: touch_sent,
-- touch_failed, the stop events, and anything inbound). $1 since (inclusive), $2 until (exclusive), $3 lead or null.

-- name: replay_count
select count(*)::bigint
from core_memory_events e
where e.created_at >= $1::timestamptz and e.created_at < $2::timestamptz
  and ($3::uuid is null or e.lead_id = $3::uuid)
  and core_memory_events_is_actionable(e.event_type, e.direction)

-- name: replay_events
-- One page, keyset-paginated on (created_at, id): $4/$5 = the last row of the previous page (null for the first).
select e.id, e.lead_id, e.event_type, e.direction, e.payload, e.created_at
from core_memory_events e
where e.created_at >= $1::timestamptz and e.created_at < $2::timestamptz
  and ($3::uuid is null or e.lead_id = $3::uuid)
  and core_memory_events_is_actionable(e.event_type, e.direction)
  and ($4::timestamptz is null or (e.created_at, e.id) > ($4::timestamptz, $5::uuid))
order by e.created_at, e.id
limit $6

-- name: replay_take_pending
-- The daemon has not reacted to this event yet: take its inbox row, so the reaction happens once (here).
delete from event_reactions where event_id = $1 returning event_id

-- name: replay_stop_event_is_stale
-- A stop event that predates touches or enrolments still open now must not cancel them (the daemon, reacting at
-- the time, never saw them). Suppression does not go stale: unsubscribe / do_not_contact ever, reply_negative
-- within 30 days. $1 lead, $2 the event's created_at, $3 its type.
select case
  when $3::text in ('unsubscribe', 'do_not_contact') then false
  when $3::text = 'reply_negative' and $2::timestamptz > now() - interval '720 hours' then false
  else exists (select 1 from touch_runs t
               where t.lead_id = $1 and t.status in ('queued', 'scheduled') and t.created_at > $2::timestamptz)
    or exists (select 1 from campaign_leads cl
               where cl.lead_id = $1 and cl.status in ('active', 'paused') and cl.enrolled_at > $2::timestamptz)
end

-- name: replay_lead_touches
select id, status, channel, campaign_id, step, scheduled_at, idempotency_key from touch_runs where lead_id = $1

-- name: replay_has_pending_cooldown
select exists (select 1 from pending_cooldowns where latest_touch_id = $1)

-- name: replay_now
select now()
