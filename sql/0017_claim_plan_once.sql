-- SPEC §17: the claim is planned once per connection (sql/views/10_claim.sql), so its plan must be good whatever the
-- statistics say when it is made. The out-of-office index was keyed by time (for `status`: leads paused now), and a
-- plan made while the database held no out-of-office reply found it as cheap as the lead's own probe: every claimed
-- touch would then walk every pause ever written. Keyed by lead, the pause of a lead is one probe in any plan;
-- `status` reads the index whole (only the pauses, however old), which stays small beside the events.
drop index if exists core_memory_events_out_of_office;
create index core_memory_events_out_of_office
  on core_memory_events (lead_id, created_at)
  where event_type = 'reply_out_of_office';

-- The keys the claim probes by are pinned selective in the statistics, whatever the sample says. A young database
-- (one account, a few leads, a backlog) would otherwise teach the planner that "this lead" or "this account" is
-- most of a table, and a plan made then — kept by every session — would walk a time-ordered index and filter by
-- the key; it stays wrong long after the leads and accounts multiply, since the table need not grow much for that.
-- n_distinct < 0 is a share of the rows (-0.05: twenty events per lead), > 0 a count; used from the next ANALYZE.
alter table core_memory_events alter column lead_id set (n_distinct = -0.05);
alter table touch_runs alter column lead_id set (n_distinct = -0.2);
alter table touch_runs alter column account_id set (n_distinct = 100);

-- The open touches are read by sender (touch_runs_open_by_sender, 0013): the claim, the dispatch loop's next moment
-- and the counts of due touches all walk that index. A second index over the same open touches, by time, only gave
-- a plan made on a queue's statistics (an empty queue, most of the time) a way to walk every open touch of every
-- sender and sort them to find one sender's — a tie the planner could break the wrong way in a plan kept for the
-- session. Gone; the counts of due touches read the by-sender index whole (only open touches).
drop index if exists touch_runs_due;
