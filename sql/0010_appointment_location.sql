-- A booked appointment whose location changes (SPEC §15 is silent; README "Appointments"): its open reminders are
-- rewritten with the new place. The inbox keeps the location the daemon last saw, as it keeps status and starts_at.
alter table appointment_inbox add column prev_location text;
