-- SPEC §19, out-of-office pauses. A pause is kept as data in the events themselves, not in a table of its own:
-- the lead's latest `reply_out_of_office` (payload until, resume_at, lead_timezone) is the pause, and the first
-- non-automatic reply after it (`reply_received` not classified out_of_office, `reply_positive`, `reply_negative`)
-- ends it. lead_pause_status() (sql/views/03_lead_pause_status_v1.sql) derives it, so a pause can never disagree
-- with the timeline, a replay or a backfill needs no second write, and an expired pause needs no cleaning.
--
-- What makes that cheap: one partial index over exactly those replies, so "the latest pause of this lead" and "the
-- first human reply after it" are each one short index probe (the claim asks it for every claimed touch, the
-- reactions and the lead page for one lead), and one over the pauses by time, for `status` (leads paused now).
create index if not exists core_memory_events_replies
  on core_memory_events (lead_id, created_at)
  where event_type in ('reply_out_of_office', 'reply_received', 'reply_positive', 'reply_negative');

create index if not exists core_memory_events_out_of_office
  on core_memory_events (created_at)
  where event_type = 'reply_out_of_office';
