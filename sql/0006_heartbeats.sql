-- Director dashboard (SPEC §14): each daemon's heartbeat, so "daemon alive" is a fact the dashboard reads, and
-- the indexes the dashboard's pages walk (each page reads a bounded slice, never the whole of touch_runs).

create table daemon_heartbeats (
  worker_id         text primary key,
  hostname          text,
  pid               int,
  started_at        timestamptz not null default now(),
  beat_at           timestamptz not null default now(),
  interval_s        float8 not null,
  listen_connected  boolean,
  stopped_at        timestamptz
);
create index daemon_heartbeats_beat_at on daemon_heartbeats (beat_at);

-- /touches: newest first, with or without filters; /touches?error_code=…: failed touches by their code
-- (touch_runs.error is written "<error_code>: <message>").
create index touch_runs_created on touch_runs (created_at, id);
create index touch_runs_failed_code on touch_runs ((split_part(error, ':', 1)), created_at) where status = 'failed';
-- / "deferred by reason": the last day's touch_deferred events (§13) without reading every other event of the day.
create index core_memory_events_deferred on core_memory_events (created_at) where event_type = 'touch_deferred';
-- /campaigns and the cadence counts: campaign leads by campaign, step and status (index-only scans).
create index campaign_leads_funnel on campaign_leads (campaign_id, current_step, status) include (stop_reason);
create index campaign_leads_status on campaign_leads (status);
-- /jobs: the latest runs of every job.
create index job_runs_started on job_runs (started_at);
