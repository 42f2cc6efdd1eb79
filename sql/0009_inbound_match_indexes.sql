-- Inbound messages (SPEC §12) find their sender among the receiving accounts' leads by phone digits
-- (queries/webhooks.sql match_inbound_lead): through these indexes, not a scan of every lead.
create index leads_phone_digits on leads (account_id, (regexp_replace(phone, '[^0-9]', '', 'g')));
create index lead_enriched_phone_digits on lead_enriched ((regexp_replace(phone, '[^0-9]', '', 'g')));
