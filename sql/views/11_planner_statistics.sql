-- Planner statistics for the plans the daemon's sessions keep (SPEC §17). The claim is planned once per connection
-- (sql/views/10_claim.sql) and PostgreSQL plans again only when a table's statistics change. A plan made from
-- statistics that no longer describe a table — taken while it was (nearly) empty, or while a bulk insert was still
-- uncommitted — keeps its choices until the next ANALYZE, which autovacuum may run a minute or more later (and only
-- past 10 % of changes). The statistics service (listener/engine/statistics.py) calls this every second: a table of
-- the claim is analysed at once when its statistics saw fewer than 16 pages (128 KB) and it has 32 or more now, or
-- when it has changed more since its last ANALYZE than the rows that ANALYZE counted (at least 1,000): a young
-- database's first loads, a burst into a quiet queue. On a large table that is rarer than autovacuum's own. ANALYZE
-- makes every session plan again. SKIP_LOCKED: an ANALYZE already running (autovacuum, another daemon) is not waited
-- for. Returns the tables analysed.
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
  join pg_stat_user_tables s on s.relid = c.oid
  where c.oid in ('touch_runs'::regclass, 'core_memory_events'::regclass, 'leads'::regclass,
                  'lead_enriched'::regclass, 'account_provider_settings'::regclass, 'sender_pacing'::regclass,
                  'campaign_leads'::regclass)
    and ((c.relpages < 16 and pg_relation_size(c.oid) >= 32 * current_setting('block_size')::bigint)
         or s.n_mod_since_analyze > greatest(c.reltuples, 1000));
  foreach t in array coalesce(stale, '{}') loop
    execute format('analyze (skip_locked) %I', t);
  end loop;
  return coalesce(stale, '{}');
end;
$$;
