-- Planner statistics kept in step with the tables the daemon's cached plans read (SPEC §17). The claim is planned
-- once per connection (sql/views/10_claim.sql) and PostgreSQL plans again only when a table's statistics change; a
-- plan made while a table was empty keeps treating it as empty until the next ANALYZE, which autovacuum may run a
-- minute or more after a bulk load (and only past 10 % of changes). The statistics service (listener/engine/
-- statistics.py) calls this every few seconds: a table of the hot path that has grown to more than twice the pages
-- its statistics saw (and past 16 pages, so a small table is not analysed at every change) is analysed now, which
-- also makes every session plan it again. SKIP_LOCKED: an ANALYZE already running (autovacuum, another daemon) is
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
                  'campaign_leads'::regclass, 'event_reactions'::regclass, 'pending_cooldowns'::regclass)
    and pg_relation_size(c.oid) > 2 * greatest(c.relpages, 8)::bigint * current_setting('block_size')::bigint;
  foreach t in array coalesce(stale, '{}') loop
    execute format('analyze (skip_locked) %I', t);
  end loop;
  return coalesce(stale, '{}');
end;
$$;
