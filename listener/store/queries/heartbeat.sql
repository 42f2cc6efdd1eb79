-- Daemon heartbeats (SPEC §14): listener/engine/heartbeat.py writes them, the dashboard reads them.

-- name: heartbeat_beat
insert into daemon_heartbeats (worker_id, hostname, pid, interval_s, listen_connected)
values ($1, $2, $3, $4, $5)
on conflict (worker_id) do update
  set beat_at = now(), interval_s = excluded.interval_s, listen_connected = excluded.listen_connected,
      stopped_at = null

-- name: heartbeat_stopped
update daemon_heartbeats set beat_at = now(), stopped_at = now(), listen_connected = false where worker_id = $1

-- name: heartbeat_forget_old
-- Heartbeats of daemons gone for a week are history nobody reads.
delete from daemon_heartbeats where beat_at < now() - interval '7 days'
