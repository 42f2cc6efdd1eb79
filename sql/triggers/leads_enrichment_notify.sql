-- Enrichment at once (SPEC §15): a leads insert, or an update of full_name / phone / email / timezone, files the
-- lead in lead_enrichment_inbox and wakes the daemon with one constant NOTIFY per statement (SPEC §4).
-- Statement-level with transition tables: a 50,000-row insert is one inbox insert and one notification.
create or replace function leads_file_enrichment_insert() returns trigger
language plpgsql as $$
begin
  insert into lead_enrichment_inbox (lead_id)
  select n.id from new_rows n
  on conflict (lead_id) do nothing;
  perform pg_notify('leads', 'wake');
  return null;
end;
$$;

-- (Transition tables cannot be combined with an UPDATE OF column list, so the columns are compared here.)
create or replace function leads_file_enrichment_update() returns trigger
language plpgsql as $$
begin
  insert into lead_enrichment_inbox (lead_id)
  select n.id
  from new_rows n join old_rows o on o.id = n.id
  where n.full_name is distinct from o.full_name or n.phone is distinct from o.phone
     or n.email is distinct from o.email or n.timezone is distinct from o.timezone
  on conflict (lead_id) do nothing;
  if found then
    perform pg_notify('leads', 'wake');
  end if;
  return null;
end;
$$;

drop trigger if exists leads_enrichment_insert on leads;
create trigger leads_enrichment_insert
  after insert on leads
  referencing new table as new_rows
  for each statement execute function leads_file_enrichment_insert();

drop trigger if exists leads_enrichment_update on leads;
create trigger leads_enrichment_update
  after update on leads
  referencing old table as old_rows new table as new_rows
  for each statement execute function leads_file_enrichment_update();
