-- The sweep (SPEC §9): what a missed NOTIFY or a dead daemon left behind.

-- name: expire_leases
-- A lease that ran out means the daemon died mid-send: the provider may have the message, so the touch is failed
-- with outcome_unknown, never sent again. Rows still locked by a live send transaction are skipped. $2: only these
-- ids (null = any), for the one-by-one retry when a batch is refused (listener/engine/sweeper.py).
with expired as (
  update touch_runs t
  set status = 'failed', error = 'outcome_unknown: lease expired while processing (daemon ' ||
                                 coalesce(t.locked_by, '?') || ' stopped mid-send)',
      locked_by = null, locked_until = null, updated_at = now()
  from (select id from touch_runs where status = 'processing' and locked_until < now()
          and ($2::uuid[] is null or id = any($2::uuid[]))
        order by locked_until limit $1 for update skip locked) pick
  where t.id = pick.id
  returning t.id, t.lead_id, t.channel, t.campaign_id, t.step
)
insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload)
select e.lead_id, 'touch_failed', 'sweep', e.channel, 'outbound',
       jsonb_build_object('touch_run_id', e.id, 'campaign_id', e.campaign_id, 'step', e.step,
                          'error_code', 'outcome_unknown', 'failure_class', 'transient',
                          'error', 'lease expired while processing; the provider may or may not have the message')
from expired e
returning payload ->> 'touch_run_id' as touch_run_id

-- name: expired_lease_ids
select id from touch_runs where status = 'processing' and locked_until < now() order by locked_until limit $1

-- name: count_due_touches
select count(*)::bigint from touch_runs where status in ('queued', 'scheduled') and scheduled_at <= now()

-- name: insert_job_run
insert into job_runs (job, started_at, finished_at, dry_run, stats, error)
values ($1, $2, now(), $3, $4, $5)
returning id

-- name: fold_campaign_lead_counts
-- The deltas the campaign_leads triggers wrote, folded into campaign_lead_counts (0008) in one statement; two
-- sweeps at once fold each delta once (SKIP LOCKED: the second leaves the rows the first is deleting, instead of
-- waiting for it). A count row locked elsewhere fails the statement after the short lock wait of the caller's
-- transaction; the deltas stay for the next sweep (listener/engine/sweeper.py).
with folded as (
  delete from campaign_lead_count_deltas d
  where d.id in (select id from campaign_lead_count_deltas for update skip locked)
  returning d.status, d.n
)
insert into campaign_lead_counts (status, n)
select status, sum(n) from folded group by status order by status
on conflict (status) do update set n = campaign_lead_counts.n + excluded.n
