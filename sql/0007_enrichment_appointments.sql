-- Enrichment and appointments (SPEC §15).

create table appointments (
  id          uuid primary key default gen_random_uuid(),
  account_id  uuid not null references accounts(id) on delete cascade,
  -- an appointment for an unknown lead is refused by the database
  lead_id     uuid not null references leads(id) on delete cascade,
  starts_at   timestamptz not null,
  status      text not null default 'booked' constraint appointments_status_check
                check (status in ('booked', 'canceled', 'completed', 'no_show')),
  location    text,
  notes       text,
  created_at  timestamptz not null default now(),
  updated_at  timestamptz not null default now()
);
create index appointments_lead on appointments (lead_id, starts_at);
create index appointments_upcoming on appointments (starts_at) where status = 'booked';

-- The daemon's inboxes (beside the SPEC tables, like event_reactions): a trigger files the work in the writing
-- transaction and the daemon deletes the row in the transaction that does it, so nothing is lost while no daemon
-- listens and a crash rolls the take back.

-- Leads to (re-)enrich: inserted, or name / phone / email / timezone changed.
create table lead_enrichment_inbox (
  lead_id    uuid primary key,
  queued_at  timestamptz not null default now()
);
create index lead_enrichment_inbox_queued on lead_enrichment_inbox (queued_at);

-- The enrichment engine's own record per lead: what it last derived (so it owns only the lead_enriched values
-- it wrote: a value another system put there is kept) and what it found wrong (so an unchanged problem is not
-- reported twice, and `lead inspect` shows it). problems: ["invalid_phone", …], details: {problem: why}.
create table lead_enrichment_state (
  lead_id     uuid primary key references leads(id) on delete cascade,
  derived     jsonb not null default '{}'::jsonb,
  problems    jsonb not null default '[]'::jsonb,
  details     jsonb not null default '{}'::jsonb,
  checked_at  timestamptz not null default now()
);

-- Appointments to react to. The first row filed since the last reaction keeps the state the daemon last saw
-- (prev_status / prev_starts_at; both null with is_new for an insert), so a reschedule is told from a booking.
create table appointment_inbox (
  appointment_id  uuid primary key,
  is_new          boolean not null,
  prev_status     text,
  prev_starts_at  timestamptz,
  queued_at       timestamptz not null default now()
);
create index appointment_inbox_queued on appointment_inbox (queued_at);

-- Default reminder texts; variables {first_name}, {starts_at_local}, {location}. The code falls back to the
-- same built-in text when a row is missing, so deleting these never stops a reminder.
insert into message_templates (template_name, channel, language, subject, body) values
  ('appointment_reminder', null, 'es', 'Recordatorio de su cita',
   'Hola {first_name}, le recordamos su cita el {starts_at_local} en {location}. Si no puede asistir, responda a este mensaje.'),
  ('appointment_reminder', null, 'en', 'Appointment reminder',
   'Hi {first_name}, this is a reminder of your appointment on {starts_at_local} at {location}. If you cannot make it, reply to this message.')
on conflict (template_name, language) do nothing;
