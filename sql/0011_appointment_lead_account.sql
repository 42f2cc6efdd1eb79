-- An appointment's account is its lead's account: the reminders it creates are sent with that account's senders,
-- so an appointment naming another account's lead is refused by the database (SPEC §15 names both columns).
-- NOT VALID: rows written before this migration are not re-checked (`validate constraint` once cleaned).
alter table leads add constraint leads_id_account_id_key unique (id, account_id);
alter table appointments add constraint appointments_lead_account_fkey
  foreign key (lead_id, account_id) references leads (id, account_id) on update cascade on delete cascade not valid;
