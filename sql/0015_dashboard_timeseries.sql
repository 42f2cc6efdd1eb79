-- The director's pictures (SPEC §18): GET /api/timeseries, the charts on `/` and report.funnel (the funnels on
-- /campaigns) read bounded slices through these partial indexes, index-only where they can, never a scan of
-- touch_runs or core_memory_events. Each is partial, so it costs a write only for the rows it holds: a touch when
-- it becomes 'sent' (three entries, ~170 bytes: 142 MB beside the table's 218 MB in bench.dashboard's 1 M), a
-- touch_failed event, a reply, unsubscribe or booking.

-- Touches sent per minute and channel, and the due-to-provider latency (sent_at - greatest(scheduled_at,
-- created_at)) per minute, over the last N minutes: an index-only range scan on sent_at.
create index touch_runs_sent_at on touch_runs (sent_at) include (channel, scheduled_at, created_at)
  where status = 'sent';

-- Touches failed per minute and channel: the touch_failed events of the last N minutes (the moment each failed),
-- index-only, without reading the other events of those minutes.
create index core_memory_events_touch_failed on core_memory_events (created_at) include (channel)
  where event_type = 'touch_failed';

-- report.funnel: the campaigns' touches sent in the window, per step and channel, with their delivery status
-- (index-only).
create index touch_runs_campaign_sent on touch_runs (campaign_id, sent_at)
  include (step, channel, delivery_status)
  where status = 'sent';

-- report.funnel: the lead's latest touch sent at or before a reply, unsubscribe or booking (one backward probe).
create index touch_runs_lead_sent on touch_runs (lead_id, sent_at) where status = 'sent';

-- report.funnel: the window's replies, unsubscribes and bookings, without reading every other event of those days.
create index core_memory_events_reactions on core_memory_events (created_at)
  where event_type in ('reply_received', 'reply_positive', 'reply_negative', 'unsubscribe', 'appointment_booked');
