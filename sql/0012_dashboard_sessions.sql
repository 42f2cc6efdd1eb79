-- Director dashboard sessions (SPEC §14, issue 17): the login form's cookie names a row here, so signing out ends
-- the session for every web process at once, and an expired or ended session is refused.
-- `id` is HMAC-SHA256 (hex) of the cookie's random value keyed by REVENUE_ASI_DASHBOARD_TOKEN — never the value
-- itself: this table does not let anyone sign in, and a changed dashboard token ends every session opened with
-- the old one.

create table dashboard_sessions (
  id          text primary key,
  created_at  timestamptz not null default now(),
  expires_at  timestamptz not null,
  ended_at    timestamptz
);
-- sign-in prunes sessions that expired a day ago or more.
create index dashboard_sessions_expires_at on dashboard_sessions (expires_at);
