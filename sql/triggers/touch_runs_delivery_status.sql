-- touch_runs.delivery_status only moves forward (SPEC §12): callbacks arrive out of order, so a late 'sent' after
-- 'delivered' changes nothing. Order: queued < sent < delivered < read < undelivered = failed.
create or replace function touch_delivery_status_rank(p_status text) returns int
language sql immutable as $$
  select case p_status
    when 'queued' then 0 when 'sent' then 1 when 'delivered' then 2 when 'read' then 3
    when 'undelivered' then 4 when 'failed' then 4 end
$$;

create or replace function touch_runs_delivery_status_forward() returns trigger
language plpgsql as $$
begin
  if old.delivery_status is not null
     and (new.delivery_status is null
          or touch_delivery_status_rank(new.delivery_status) <= touch_delivery_status_rank(old.delivery_status)) then
    new.delivery_status := old.delivery_status;
  end if;
  return new;
end;
$$;

drop trigger if exists touch_runs_delivery_status_forward on touch_runs;
create trigger touch_runs_delivery_status_forward
  before update of delivery_status on touch_runs
  for each row
  when (old.delivery_status is distinct from new.delivery_status)
  execute function touch_runs_delivery_status_forward();
