-- Command OS v2 (SPEC §18): every executed write intent — from the dashboard's console, POST /api/command-os or the
-- CLI — is one row here, whether it succeeded (result) or was refused when it ran (error). A preview writes nothing.
-- actor: `dashboard` (signed in by token; there are no user names) or `cli`. text: what was typed, when the command
-- came as text. args: the intent's arguments as run (names resolved to ids). preview: what the intent said it would
-- change, read in the same transaction just before it ran.

create table command_runs (
  id          uuid primary key default gen_random_uuid(),
  created_at  timestamptz not null default now(),
  actor       text not null,
  text        text,
  intent      text not null,
  args        jsonb not null default '{}'::jsonb,
  preview     jsonb,
  result      jsonb,
  error       text,
  constraint command_runs_result_or_error check ((result is null) <> (error is null))
);
-- /commands: the latest runs first.
create index command_runs_created_at on command_runs (created_at desc, id desc);

-- campaign.pause and campaign.resume find a campaign's not-yet-sent touches without reading the account's others.
-- Partial: only queued and scheduled rows are in it.
create index touch_runs_open_by_campaign on touch_runs (campaign_id)
  where status in ('queued', 'scheduled') and campaign_id is not null;
