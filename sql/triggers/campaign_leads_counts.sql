-- campaign_lead_count_deltas (0008): one row per status a statement changed, with how many it added or removed.
create or replace function campaign_leads_count_deltas() returns trigger
language plpgsql as $$
begin
  if tg_op = 'INSERT' then
    insert into campaign_lead_count_deltas (status, n) select status, count(*) from new_rows group by status;
  elsif tg_op = 'DELETE' then
    insert into campaign_lead_count_deltas (status, n) select status, -count(*) from old_rows group by status;
  else
    insert into campaign_lead_count_deltas (status, n)
    select status, sum(n) from (select status, 1 as n from new_rows
                                union all select status, -1 from old_rows) d
    group by status having sum(n) <> 0;
  end if;
  return null;
end;
$$;

create or replace function campaign_leads_count_reset() returns trigger
language plpgsql as $$
begin
  delete from campaign_lead_count_deltas;
  delete from campaign_lead_counts;
  return null;
end;
$$;

drop trigger if exists campaign_leads_count_insert on campaign_leads;
create trigger campaign_leads_count_insert after insert on campaign_leads
  referencing new table as new_rows for each statement execute function campaign_leads_count_deltas();
drop trigger if exists campaign_leads_count_update on campaign_leads;
create trigger campaign_leads_count_update after update on campaign_leads
  referencing old table as old_rows new table as new_rows for each statement
  execute function campaign_leads_count_deltas();
drop trigger if exists campaign_leads_count_delete on campaign_leads;
create trigger campaign_leads_count_delete after delete on campaign_leads
  referencing old table as old_rows for each statement execute function campaign_leads_count_deltas();
drop trigger if exists campaign_leads_count_truncate on campaign_leads;
create trigger campaign_leads_count_truncate after truncate on campaign_leads
  for each statement execute function campaign_leads_count_reset();

-- (Re)seed under a lock that lets no write in until this transaction (which also (re)created the triggers) commits.
lock table campaign_leads in share mode;
delete from campaign_lead_count_deltas;
delete from campaign_lead_counts;
insert into campaign_lead_counts (status, n) select status, count(*) from campaign_leads group by status;
