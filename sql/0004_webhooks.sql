-- Inbound webhooks (SPEC §12): every accepted provider request as a receipt, found again by its dedupe_key so a
-- provider's retry writes nothing new; touches found by the provider's id; the delivery status of each touch.

create table webhook_receipts (
  id            uuid primary key default gen_random_uuid(),
  provider      text not null constraint webhook_receipts_provider_check
                  check (provider in ('twilio', 'elasticemail')),
  kind          text not null,  -- message_status, call_status, inbound_message, email_notification
  dedupe_key    text not null constraint webhook_receipts_dedupe_key_key unique,
  touch_run_id  uuid,
  lead_id       uuid,
  params        jsonb not null default '{}'::jsonb
                  constraint webhook_receipts_params_is_object check (jsonb_typeof(params) = 'object'),
  received_at   timestamptz not null default now(),
  outcome       text
);
create index webhook_receipts_received_at on webhook_receipts (received_at);
create index webhook_receipts_lead on webhook_receipts (lead_id, received_at) where lead_id is not null;

-- Status callbacks find their touch by the provider's id (Twilio sid, ElasticEmail MessageID).
create index touch_runs_provider_message_id on touch_runs (provider_message_id) where provider_message_id is not null;

-- What the provider last said about delivery; only moves forward (sql/triggers/touch_runs_delivery_status.sql).
alter table touch_runs add column delivery_status text
  constraint touch_runs_delivery_status_check
  check (delivery_status is null or delivery_status in ('queued', 'sent', 'delivered', 'read', 'undelivered', 'failed'));
