-- 0005: sending rules (SPEC §13). Caps are counted in the database, inside the pre-send transaction
-- (listener/engine/sendcaps.py, queries/sendrules.sql). A sender's usage is its (account, channel)'s touches sent in
-- the last rolling 24 h plus those in flight; this index serves the "sent" half (the in-flight half uses
-- touch_runs_leases, status = 'processing'). A lead's usage is served by touch_runs_lead_key (lead_id first).
create index if not exists touch_runs_sent_by_sender on touch_runs (account_id, channel, sent_at)
  where status = 'sent';

