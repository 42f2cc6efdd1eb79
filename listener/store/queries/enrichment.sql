-- The enrichment engine (SPEC §15): listener/engine/enrichment.py.

-- name: enrichment_take
-- Taken in the transaction that writes the result: a crash rolls the take back, nothing is lost. SKIP LOCKED
-- lets many daemons share the inbox; a lead changed meanwhile is filed again once this take commits.
with pick as (
  select lead_id from lead_enrichment_inbox order by queued_at limit $1 for update skip locked
), taken as (
  delete from lead_enrichment_inbox i using pick where i.lead_id = pick.lead_id returning i.lead_id
)
select l.id as lead_id, l.full_name, l.phone, l.email, l.timezone,
       le.lead_id is not null as has_enriched,
       le.phone as enriched_phone, le.email as enriched_email, le.first_name as enriched_first_name,
       le.timezone as enriched_timezone,
       s.derived as last_derived, s.problems as known_problems
from taken t
join leads l on l.id = t.lead_id
left join lead_enriched le on le.lead_id = l.id
left join lead_enrichment_state s on s.lead_id = l.id

-- name: enrichment_apply
-- $1: one object per lead (listener.engine.enrichment.plan_row). lead_enriched is compared-and-set field by field against
-- what the take saw ("seen"): a value another writer put there meanwhile is kept. $2 = 'lead_enriched'.
with d as (
  select d.* from jsonb_to_recordset($1::jsonb) as d(
    lead_id uuid, phone text, email text, first_name text, timezone text, seen jsonb, derived jsonb,
    write_row boolean, write_event boolean, changed jsonb, problems jsonb, details jsonb)
  join leads l on l.id = d.lead_id
), updated as (
  update lead_enriched le set
    phone = case when le.phone is not distinct from (d.seen ->> 'phone') then d.phone else le.phone end,
    email = case when le.email is not distinct from (d.seen ->> 'email') then d.email else le.email end,
    first_name = case when le.first_name is not distinct from (d.seen ->> 'first_name') then d.first_name
                      else le.first_name end,
    timezone = case when le.timezone is not distinct from (d.seen ->> 'timezone') then d.timezone else le.timezone end,
    enriched_at = now()
  from d
  where le.lead_id = d.lead_id and d.write_row
  returning le.lead_id
), inserted as (
  insert into lead_enriched (lead_id, phone, email, first_name, timezone, enriched_at)
  select lead_id, phone, email, first_name, timezone, now() from d where write_row
  on conflict (lead_id) do nothing
  returning lead_id
), state as (
  insert into lead_enrichment_state as s (lead_id, derived, problems, details, checked_at)
  select lead_id, derived, problems, details, now() from d
  on conflict (lead_id) do update set derived = excluded.derived, problems = excluded.problems,
                                      details = excluded.details, checked_at = now()
  returning s.lead_id
)
insert into core_memory_events (lead_id, event_type, event_source, direction, payload)
select d.lead_id, $2::text, 'enrichment', 'internal',
       jsonb_build_object('changed', d.changed, 'problems', d.problems, 'details', d.details)
from d where d.write_event

-- name: enrichment_refile
-- SPEC §20: leads whose rows another session holds go back to the inbox, at its end (queued_at now), in the
-- transaction that took them; the next run enriches them.
insert into lead_enrichment_inbox (lead_id)
select unnest($1::uuid[])
on conflict (lead_id) do nothing

-- name: enrichment_file_never_enriched
-- Backfill: leads the engine never looked at (inserted before it existed). Returns how many were filed.
with filed as (
  insert into lead_enrichment_inbox (lead_id)
  select l.id from leads l
  where not exists (select 1 from lead_enrichment_state s where s.lead_id = l.id)
  on conflict (lead_id) do nothing
  returning lead_id
)
select count(*)::bigint from filed

-- name: enrichment_inbox_count
select count(*)::bigint from lead_enrichment_inbox

-- name: enrichment_pending_count
-- What a backfill would enrich: the inbox plus leads never enriched.
select (select count(*) from lead_enrichment_inbox)
     + (select count(*) from leads l
        where not exists (select 1 from lead_enrichment_state s where s.lead_id = l.id)
          and not exists (select 1 from lead_enrichment_inbox i where i.lead_id = l.id))

-- name: enrichment_state_of_lead
select s.problems, s.details, s.checked_at,
       exists (select 1 from lead_enrichment_inbox i where i.lead_id = $1) as pending
from (select $1::uuid as lead_id) q
left join lead_enrichment_state s on s.lead_id = q.lead_id
