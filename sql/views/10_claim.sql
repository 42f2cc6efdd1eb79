-- The daemon's claim as a function whose plan the session keeps (sql/views/10_claim.sql explains why).

drop function if exists claim_touches_with_context(text, float8, int, uuid, text);

-- The claim (SPEC §6, §11, §16): lease due touches and read everything their sends need, and every reason not to
-- send them, in ONE statement that commits before any provider call (SKIP LOCKED lets many daemons share the queue).
-- Its snapshot is taken at the claim, the last moment before the requests start: a stop event or suppression
-- committed before it cancels the touch; one committed after it can meet a request already on its way (README: the
-- stop window, measured by tests/test_stop_window.py). jsonb comes back as text, so one malformed value fails its own
-- touch, not the batch.
--
-- Fair (SPEC §16): the slots are shared among the senders — (account, channel) — that have due touches, not handed
-- out in global scheduled_at order. open_senders() walks the senders with open touches (a loose index scan over
-- touch_runs_open_by_sender: one probe per sender with open work, none for a sender without); each due sender gets a
-- quota (the batch shared among the accounts, an account's share among its senders) and gives its oldest due
-- touches; the batch is then filled round robin (every sender's first touch, then every second, …), starting after
-- the sender this daemon served last (p_cursor_account, p_cursor_channel), so one sender's backlog of any size never
-- makes another wait.
-- Paced (SPEC §16): a sender with config.max_per_second / max_in_flight, or under a 429's pushback, gives at most
-- what its pace allows now — one request per 1/rate seconds (sender_pacing.next_at, advanced here), and no more
-- than max_in_flight processing at once — its row locked (SKIP LOCKED: while another daemon's claim holds it, this
-- claim takes nothing of that sender). A touch waiting for its pace stays queued: no lease, no request, no event.
-- more_due: the sender gave all its quota, so more may be due (the dispatcher claims again at once).
--
-- Planned once per connection (SPEC §17). Planning the statement costs several times more than running it (about
-- 4–5 ms against 1–3 ms), and a custom plan was made at every call. As a PL/pgSQL function its plan is cached in
-- the session: force_generic_plan plans it once (and again only when a table's statistics change). A generic plan
-- cannot see the parameters and would follow the statistics of the moment — on a young database, seq scans that
-- stay in the cached plan while the table grows by millions; in a queue, statistics taken while it was empty, which
-- make a walk of every open touch and a sort look as cheap as the probe of one sender. So the function also tells
-- the planner what the statement is: every access is a probe by index for a few rows (a batch of at most p_limit
-- touches, a probe per sender), joined row by row, and the open touches are read in the order of
-- touch_runs_open_by_sender — seq scans, hash and merge joins, and sorts where an index gives the order, off. The
-- plan is then the same on an empty database and at 10 M events (bench/scale.py prints it at each size).
create function claim_touches_with_context(p_worker text, p_lease_s float8, p_limit int, p_cursor_account uuid,
                                           p_cursor_channel text)
returns table (id uuid, account_id uuid, lead_id uuid, campaign_id uuid, step int, channel text, payload_json text,
               lead_phone text, lead_email text, first_name text, full_name text, company_name text,
               provider_name text, provider_config_json text, provider_settings_id uuid, lead_timezone text,
               enriched_timezone text, is_unsubscribed boolean, in_negative_cooldown boolean,
               suppression_reason text, last_whatsapp_reply_at timestamptz, stop_event text, checked_at timestamptz,
               more_due boolean, claim_turn bigint, served_before boolean, pause_resume_at timestamptz,
               pause_timezone text)
language plpgsql
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
set enable_hashjoin = off
set enable_mergejoin = off
set enable_sort = off
as $fn$
#variable_conflict use_column
begin
  return query
    with due_units as (
      select u.account_id, u.channel, ps.id as settings_id, ps.config,
             ps.id is not null and sender_is_paced(ps.config, ps.pushback_until, now()) as is_paced,
             coalesce((u.account_id, u.channel) <= (p_cursor_account::uuid, p_cursor_channel::text), false) as served_before
      from open_senders() u  -- with its oldest open touch's moment: due when it is past
      left join lateral (select ps.id, ps.config, sp.pushback_until  -- probes, whatever the estimates
                         from account_provider_settings ps
                         left join sender_pacing sp on sp.settings_id = ps.id
                         where ps.account_id = u.account_id and ps.channel = u.channel and ps.is_default
                         limit 1) ps on true
      where u.first_at <= now()
    ), paced as (
      select sp.* from due_units d
      join lateral (select * from sender_pacing sp where sp.settings_id = d.settings_id
                    for update skip locked) sp on true
      where d.is_paced
    ), allowance as (
      select d.account_id, d.channel, d.settings_id, d.served_before, r.rate,
             case
               when not d.is_paced then p_limit::int
               when p.settings_id is null then 0  -- another daemon's claim holds this sender right now
               else least(
                 case when r.rate is null then p_limit::int
                      when p.next_at is null or p.next_at <= now() then 1
                      else 0 end,
                 case when sender_max_in_flight(d.config) is null then p_limit::int
                      else greatest(0, sender_max_in_flight(d.config)
                                       - (select count(*) from touch_runs f
                                          where f.provider_settings_id = d.settings_id and f.status = 'processing'))::int
                 end)
             end as allowed,
             count(*) over (partition by d.account_id) as account_senders,
             dense_rank() over (order by d.account_id) as account_rank
      from due_units d
      left join paced p on p.settings_id = d.settings_id
      cross join lateral (select sender_effective_rate(sender_max_per_second(d.config), p.pushback_rate,
                                                       p.pushback_from, p.pushback_until, now()) as rate) r
    ), quota as (
      select a.*, least(a.allowed, ceil(p_limit::numeric / max(a.account_rank) over () / a.account_senders)::int) as take
      from allowance a
    ), picked as (
      select q.account_id, q.channel, q.settings_id, q.served_before, q.rate, q.take, c.id, c.scheduled_at
      from quota q
      cross join lateral (select t.id, t.scheduled_at from touch_runs t
                          where t.account_id = q.account_id and t.channel = q.channel
                            and t.status in ('queued', 'scheduled') and t.scheduled_at <= now()
                          order by t.scheduled_at
                          limit q.take
                          for update skip locked) c
      where q.take > 0
    ), ranked as (
      select p.*, row_number() over (partition by p.account_id, p.channel order by p.scheduled_at) as turn,
             count(*) over (partition by p.account_id, p.channel) = p.take as more_due
      from picked p
    ), chosen as (
      select * from ranked order by turn, served_before, account_id, channel limit p_limit
    ), claimed as (
      update touch_runs t
      set status = 'processing', locked_by = p_worker, locked_until = now() + make_interval(secs => p_lease_s), updated_at = now(),
          provider_settings_id = c.settings_id
      from chosen c
      where t.id = c.id
      returning t.id, t.account_id, t.lead_id, t.campaign_id, t.step, t.channel, t.payload, c.more_due, c.turn,
                c.served_before
    ), paced_forward as (
      update sender_pacing sp
      -- on schedule: from the moment that was due, when this claim comes less than one interval after it (the time a
      -- claim takes is not lost at every request); from now after a longer idle (no burst to catch up)
      set next_at = case when sp.next_at > now() - make_interval(secs => 1 / g.rate) then sp.next_at else now() end
                    + make_interval(secs => g.n / g.rate),
          updated_at = now()
      from (select c.settings_id, count(*) as n, min(c.rate) as rate from chosen c
            where c.rate is not null and c.settings_id in (select settings_id from paced)
            group by c.settings_id) g
      where sp.settings_id = g.settings_id
    )
    select
      t.id, t.account_id, t.lead_id, t.campaign_id, t.step, t.channel, t.payload::text as payload_json,
      c.phone as lead_phone, c.email as lead_email, c.first_name, l.full_name, c.company_name,
      ps.provider as provider_name, ps.config::text as provider_config_json,
      ps.id as provider_settings_id, l.timezone as lead_timezone, le.timezone as enriched_timezone,
      s.is_unsubscribed, s.in_negative_cooldown, s.reason as suppression_reason,
      (select max(e.created_at) from core_memory_events e
       where e.lead_id = t.lead_id and e.event_type = 'reply_received' and e.channel = 'whatsapp') as last_whatsapp_reply_at,
      stop.event_type as stop_event,
      now() as checked_at,
      t.more_due, t.turn, t.served_before,
      pause.resume_at as pause_resume_at, pause.lead_timezone as pause_timezone
    from claimed t
    join leads l on l.id = t.lead_id
    join lead_contacts_v1 c on c.lead_id = t.lead_id
    join lead_suppression_status_v1 s on s.lead_id = t.lead_id
    left join lateral touch_first_stop_event(t.lead_id, t.campaign_id, t.step, t.payload) stop on true
    -- SPEC §19: the lead is paused out of office until resume_at (the dispatcher defers the touch to then)
    left join lateral (select p.resume_at, p.lead_timezone from lead_pause_status(t.lead_id, now()) p
                       where p.in_force) pause on true
    left join lead_enriched le on le.lead_id = t.lead_id
    left join account_provider_settings ps
      on ps.account_id = t.account_id and ps.channel = t.channel and ps.is_default;
end;
$fn$;
