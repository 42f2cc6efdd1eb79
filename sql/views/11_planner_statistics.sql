-- Planner statistics for the plans the daemon's sessions keep (SPEC §17). The claim is planned once per connection
-- (sql/views/10_claim.sql) and PostgreSQL plans again only when a table's statistics change. A plan made while a
-- table's statistics said it was (nearly) empty cannot tell a probe by key from reading the table whole, and keeps
-- that choice until the next ANALYZE — which autovacuum may run a minute or more after a bulk load into a young
-- database. Once the statistics know a table is not tiny, the claim's plan (index probes, row by row) no longer
-- depends on its size or on how much it grows, and autovacuum's own ANALYZE is soon enough. So the statistics service
-- (listener/engine/statistics.py) calls this every second: a table of the claim whose statistics saw fewer than 16
-- pages (128 KB) but which has 32 pages or more now is analysed at once — once or twice in the life of a database —
-- which also makes every session plan again. SKIP_LOCKED: an ANALYZE already running (autovacuum, another daemon) is
-- not waited for. Returns the tables analysed.
drop function if exists refresh_stale_planner_statistics();

create function refresh_stale_planner_statistics()
returns text[]
language plpgsql
as $$
declare
  stale text[];
  t text;
begin
  select array_agg(c.relname::text order by c.relname) into stale
  from pg_class c
  where c.oid in ('touch_runs'::regclass, 'core_memory_events'::regclass, 'leads'::regclass,
                  'lead_enriched'::regclass, 'account_provider_settings'::regclass, 'sender_pacing'::regclass,
                  'campaign_leads'::regclass)
    and c.relpages < 16
    and pg_relation_size(c.oid) >= 32 * current_setting('block_size')::bigint;
  foreach t in array coalesce(stale, '{}') loop
    execute format('analyze (skip_locked) %I', t);
  end loop;
  return coalesce(stale, '{}');
end;
$$;
