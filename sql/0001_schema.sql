-- Revenue ASI schema (SPEC §3). Applied once, tracked in schema_migrations. gen_random_uuid() is built in (PG ≥ 13).

create table accounts (
  id          uuid primary key default gen_random_uuid(),
  created_at  timestamptz not null default now(),
  name        text not null
);

create table account_provider_settings (
  id          uuid primary key default gen_random_uuid(),
  created_at  timestamptz not null default now(),
  account_id  uuid not null references accounts(id) on delete cascade,
  channel     text not null constraint account_provider_settings_channel_check
                check (channel in ('voice', 'whatsapp', 'sms', 'email')),
  provider    text not null constraint account_provider_settings_provider_check
                check (provider in ('twilio', 'elasticemail')),
  is_default  boolean not null default false,
  config      jsonb not null default '{}'::jsonb
                constraint account_provider_settings_config_is_object check (jsonb_typeof(config) = 'object')
);
-- One default provider per (account, channel).
create unique index account_provider_settings_one_default
  on account_provider_settings (account_id, channel) where is_default;

create table leads (
  id          uuid primary key default gen_random_uuid(),
  created_at  timestamptz not null default now(),
  account_id  uuid not null references accounts(id) on delete cascade,
  full_name   text,
  email       text,
  phone       text,
  timezone    text
);
create index leads_account_id on leads (account_id);

create table lead_enriched (
  lead_id       uuid primary key references leads(id) on delete cascade,
  created_at    timestamptz not null default now(),
  phone         text,
  email         text,
  first_name    text,
  company_name  text,
  timezone      text,
  enriched_at   timestamptz not null default now()
);

create table campaigns (
  id             uuid primary key default gen_random_uuid(),
  created_at     timestamptz not null default now(),
  account_id     uuid not null references accounts(id) on delete cascade,
  name           text not null,
  status         text not null default 'active' constraint campaigns_status_check
                   check (status in ('active', 'paused', 'archived')),
  message_class  text
);

create table campaign_steps (
  id             uuid primary key default gen_random_uuid(),
  created_at     timestamptz not null default now(),
  campaign_id    uuid not null references campaigns(id) on delete cascade,
  step           int not null constraint campaign_steps_step_positive check (step >= 1),
  delay_minutes  numeric not null default 0 constraint campaign_steps_delay_not_negative check (delay_minutes >= 0),
  payload        jsonb not null default '{}'::jsonb
                   constraint campaign_steps_payload_is_object check (jsonb_typeof(payload) = 'object'),
  constraint campaign_steps_campaign_step_key unique (campaign_id, step)
);

create table campaign_leads (
  id            uuid primary key default gen_random_uuid(),
  created_at    timestamptz not null default now(),
  campaign_id   uuid not null references campaigns(id) on delete cascade,
  lead_id       uuid not null references leads(id) on delete cascade,
  status        text not null default 'active' constraint campaign_leads_status_check
                  check (status in ('active', 'paused', 'completed', 'stopped')),
  current_step  int not null default 1 constraint campaign_leads_current_step_positive check (current_step >= 1),
  stop_reason   text,
  enrolled_at   timestamptz not null default now(),
  updated_at    timestamptz not null default now(),
  constraint campaign_leads_campaign_lead_key unique (campaign_id, lead_id)
);
create index campaign_leads_lead_id on campaign_leads (lead_id);
create index campaign_leads_active on campaign_leads (campaign_id) where status = 'active';

create table touch_runs (
  id                   uuid primary key default gen_random_uuid(),
  created_at           timestamptz not null default now(),
  account_id           uuid not null references accounts(id),
  lead_id              uuid not null references leads(id),
  campaign_id          uuid references campaigns(id),
  step                 int not null default 1,
  channel              text not null constraint touch_runs_channel_check
                         check (channel in ('voice', 'whatsapp', 'sms', 'email')),
  status               text not null default 'queued' constraint touch_runs_status_check
                         check (status in ('queued', 'scheduled', 'processing', 'sent', 'failed', 'canceled')),
  scheduled_at         timestamptz not null default now(),
  sent_at              timestamptz,
  payload              jsonb not null default '{}'::jsonb,
  error                text,
  idempotency_key      text constraint touch_runs_idempotency_key_key unique,
  locked_by            text,
  locked_until         timestamptz,
  provider_message_id  text,
  updated_at           timestamptz not null default now(),
  constraint touch_runs_processing_has_lease
    check (status <> 'processing' or (locked_by is not null and locked_until is not null))
);
-- The claim query: due touches in scheduled_at order.
create index touch_runs_due on touch_runs (scheduled_at) where status in ('queued', 'scheduled');
-- The sweep: expired leases.
create index touch_runs_leases on touch_runs (locked_until) where status = 'processing';
-- Decisions and cancellations: one lead's touches (per campaign and step).
create index touch_runs_lead_key on touch_runs (lead_id, campaign_id, step, created_at);

-- The memory engine: exactly the seed's nine columns. Append-only (sql/triggers/core_memory_events_append_only.sql).
create table core_memory_events (
  id            uuid primary key default gen_random_uuid(),
  lead_id       uuid not null,
  event_type    text not null,
  event_source  text,
  channel       text,
  direction     text,
  payload       jsonb not null default '{}'::jsonb,
  score_delta   int,
  created_at    timestamptz not null default now()
);
create index core_memory_events_lead on core_memory_events (lead_id, created_at);
create index core_memory_events_touch_run on core_memory_events ((payload->>'touch_run_id'));
create index core_memory_events_created on core_memory_events (created_at);

create table message_templates (
  id             uuid primary key default gen_random_uuid(),
  created_at     timestamptz not null default now(),
  template_name  text not null,
  channel        text constraint message_templates_channel_check
                   check (channel is null or channel in ('voice', 'whatsapp', 'sms', 'email')),
  language       text not null default 'es',
  subject        text,
  body           text not null,
  constraint message_templates_name_language_key unique (template_name, language)
);

create table job_runs (
  id           uuid primary key default gen_random_uuid(),
  created_at   timestamptz not null default now(),
  job          text not null,
  started_at   timestamptz not null default now(),
  finished_at  timestamptz,
  dry_run      boolean not null default false,
  stats        jsonb not null default '{}'::jsonb,
  error        text
);
create index job_runs_job on job_runs (job, started_at desc);

-- The daemon's inbox of events to react to (beside the SPEC tables). core_memory_events is append-only,
-- so "already reacted" cannot live on the event row: a trigger files each actionable event here in the
-- same transaction, and the daemon deletes the row in the transaction that performs the reaction.
-- Nothing is lost while the daemon is down; the sweep drains what a missed NOTIFY left behind.
create table event_reactions (
  event_id    uuid primary key,
  lead_id     uuid not null,
  event_type  text not null,
  created_at  timestamptz not null default now()
);
create index event_reactions_created on event_reactions (created_at);

-- Keys waiting out a cooldown (decision wait_cooldown): the daemon's timer list, re-decided at due_at.
create table pending_cooldowns (
  lead_id          uuid not null,
  campaign_id      uuid,
  step             int not null,
  latest_touch_id  uuid primary key,
  due_at           timestamptz not null,
  created_at       timestamptz not null default now()
);
create index pending_cooldowns_due on pending_cooldowns (due_at);
