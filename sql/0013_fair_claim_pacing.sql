-- Many accounts on one database (SPEC §16): the fair claim walks the senders (account, channel) that have open
-- touches through this index — two index probes per sender with open work, nothing for an account without — and
-- takes each one's oldest due touches. sender_pacing holds each sender's pace in the database, so every daemon
-- sharing it keeps the same rate.

create index touch_runs_open_by_sender on touch_runs (account_id, channel, scheduled_at)
  where status in ('queued', 'scheduled');

-- The sender a claimed touch went out with (the account's default settings row for its channel): in-flight counts
-- per sender (config.max_in_flight) and the dashboard's per-sender view read it.
alter table touch_runs add column provider_settings_id uuid;
create index touch_runs_in_flight_by_sender on touch_runs (provider_settings_id) where status = 'processing';

-- A positive number / a positive integer, or absent: anything else is refused where it is written, with the
-- constraint's name as the reason. NOT VALID: an existing database with such rows still migrates.
alter table account_provider_settings add constraint account_provider_settings_max_per_second_positive check (
  not config ? 'max_per_second'
  or (jsonb_typeof(config -> 'max_per_second') = 'number' and (config ->> 'max_per_second')::numeric > 0
      and (config ->> 'max_per_second')::numeric <= 100000)) not valid;
alter table account_provider_settings add constraint account_provider_settings_max_in_flight_positive check (
  not config ? 'max_in_flight'
  or (jsonb_typeof(config -> 'max_in_flight') = 'number' and (config ->> 'max_in_flight')::numeric >= 1
      and (config ->> 'max_in_flight')::numeric <= 100000
      and (config ->> 'max_in_flight')::numeric = trunc((config ->> 'max_in_flight')::numeric))) not valid;

-- One row per sender (kept by sql/triggers/account_provider_settings_pacing.sql). next_at: the earliest moment its
-- next request may leave (GCRA's theoretical arrival time, advanced by the claim). pushback_*: a 429 halved its
-- rate until pushback_until, after which it climbs back to pushback_from over 60 s (sender_effective_rate).
create table sender_pacing (
  settings_id     uuid primary key references account_provider_settings(id) on delete cascade,
  next_at         timestamptz,
  pushback_rate   float8 check (pushback_rate > 0),
  pushback_from   float8 check (pushback_from > 0),
  pushback_at     timestamptz,
  pushback_until  timestamptz,
  pushbacks       bigint not null default 0,
  updated_at      timestamptz not null default now()
);
insert into sender_pacing (settings_id) select id from account_provider_settings on conflict do nothing;

-- The paced senders (the dashboard, status, /metrics): found without reading every sender.
create index account_provider_settings_paced on account_provider_settings (id)
  where is_default and (config ? 'max_per_second' or config ? 'max_in_flight');
create index sender_pacing_pushback on sender_pacing (pushback_until) where pushback_until is not null;
