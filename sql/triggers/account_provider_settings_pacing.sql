-- Every sender has its sender_pacing row (SPEC §16): the claim locks it only while the sender is paced.
create or replace function account_provider_settings_pacing_row() returns trigger
language plpgsql as $$
begin
  insert into sender_pacing (settings_id) select n.id from new_rows n on conflict do nothing;
  return null;
end;
$$;

drop trigger if exists account_provider_settings_pacing_row on account_provider_settings;
create trigger account_provider_settings_pacing_row
  after insert on account_provider_settings
  referencing new table as new_rows
  for each statement execute function account_provider_settings_pacing_row();
