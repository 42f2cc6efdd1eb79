-- Dispatch: claim with context (one statement, committed) → send → complete in batches (SPEC §6, §11).

-- name: claim_due_touches
-- Lease due touches; committed on its own before any provider call. SKIP LOCKED lets many daemons share the queue.
update touch_runs t
set status = 'processing', locked_by = $1, locked_until = now() + make_interval(secs => $2), updated_at = now()
from (
  select id from touch_runs
  where status in ('queued', 'scheduled') and scheduled_at <= now()
  order by scheduled_at
  limit $3
  for update skip locked
) due
where t.id = due.id
returning t.id

-- name: claim_touches_with_context
-- Lease due touches and read everything their sends need, and every reason not to send, in ONE statement that
-- commits before any provider call (SKIP LOCKED lets many daemons share the queue). Its snapshot is taken at the
-- claim, the last moment before the requests start: a stop event or suppression committed before it cancels the
-- touch; one committed after it can meet a request already on its way (README: the stop window, measured by
-- tests/test_stop_window.py). jsonb comes back as text, so one malformed value fails its own touch, not the batch.
--
-- Fair (SPEC §16): the slots are shared among the senders — (account, channel) — that have due touches, not handed
-- out in global scheduled_at order. open_senders() walks the senders with open touches (a loose index scan over
-- touch_runs_open_by_sender: one probe per sender with open work, none for a sender without); each due sender gets a
-- quota (the batch shared among the accounts, an account's share among its senders) and gives its oldest due
-- touches; the batch is then filled round robin (every sender's first touch, then every second, …), starting after
-- the sender this daemon served last ($4, $5), so one sender's backlog of any size never makes another wait.
-- Paced (SPEC §16): a sender with config.max_per_second / max_in_flight, or under a 429's pushback, gives at most
-- what its pace allows now — one request per 1/rate seconds (sender_pacing.next_at, advanced here), and no more
-- than max_in_flight processing at once — its row locked (SKIP LOCKED: while another daemon's claim holds it, this
-- claim takes nothing of that sender). A touch waiting for its pace stays queued: no lease, no request, no event.
-- more_due: the sender gave all its quota, so more may be due (the dispatcher claims again at once).
with due_units as (
  select u.account_id, u.channel, ps.id as settings_id, ps.config,
         ps.id is not null and sender_is_paced(ps.config, ps.pushback_until, now()) as is_paced,
         coalesce((u.account_id, u.channel) <= ($4::uuid, $5::text), false) as served_before
  from open_senders() u
  cross join lateral (select 1 from touch_runs t  -- one probe: does this sender have a due touch?
                      where t.account_id = u.account_id and t.channel = u.channel
                        and t.status in ('queued', 'scheduled') and t.scheduled_at <= now()
                      limit 1) due
  left join lateral (select ps.id, ps.config, sp.pushback_until  -- probes, whatever the estimates
                     from account_provider_settings ps
                     left join sender_pacing sp on sp.settings_id = ps.id
                     where ps.account_id = u.account_id and ps.channel = u.channel and ps.is_default
                     limit 1) ps on true
), paced as (
  select sp.* from due_units d
  join lateral (select * from sender_pacing sp where sp.settings_id = d.settings_id
                for update skip locked) sp on true
  where d.is_paced
), allowance as (
  select d.account_id, d.channel, d.settings_id, d.served_before, r.rate,
         case
           when not d.is_paced then $3::int
           when p.settings_id is null then 0  -- another daemon's claim holds this sender right now
           else least(
             case when r.rate is null then $3::int
                  when p.next_at is null or p.next_at <= now() then 1
                  else 0 end,
             case when sender_max_in_flight(d.config) is null then $3::int
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
  select a.*, least(a.allowed, ceil($3::numeric / max(a.account_rank) over () / a.account_senders)::int) as take
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
  select * from ranked order by turn, served_before, account_id, channel limit $3
), claimed as (
  update touch_runs t
  set status = 'processing', locked_by = $1, locked_until = now() + make_interval(secs => $2), updated_at = now(),
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
  t.more_due, t.turn as claim_turn, t.served_before,
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
  on ps.account_id = t.account_id and ps.channel = t.channel and ps.is_default

-- name: touch_stop_reason
-- Before a retry (after a 429 or 5xx the provider did not take the message): the same reasons not to send, on a
-- fresh snapshot, for one touch.
select s.is_unsubscribed, s.in_negative_cooldown, s.reason as suppression_reason,
       touch_stop_event(t.lead_id, t.campaign_id, t.step, t.payload) as stop_event
from touch_runs t
join lead_suppression_status_v1 s on s.lead_id = t.lead_id
where t.id = $1

-- name: templates_by_key
select template_name, language, channel, subject, body
from message_templates
where (template_name, language) in (select * from unnest($1::text[], $2::text[]))

-- name: complete_touches
-- The completer: status and event in one statement (so in one transaction) for every outcome that has arrived
-- since its last write — sent / failed / canceled, with their events. Only our own lease is completed. A touch row
-- locked by another session (an operator's open transaction) is skipped, not waited for (SPEC §20): it is returned
-- as busy and written again later, while the rest of the batch commits now.
with done as (
  select * from jsonb_to_recordset($1::text::jsonb) as d(
    id uuid, status text, error text, provider_message_id text, payload_patch jsonb,
    event_type text, event_payload jsonb)
), ours as (
  select t.id from touch_runs t join done d on d.id = t.id
  where t.status = 'processing' and t.locked_by = $2
  for update of t skip locked
), updated as (
  update touch_runs t
  set status = d.status,
      sent_at = case when d.status = 'sent' then now() else t.sent_at end,
      error = d.error,
      provider_message_id = coalesce(d.provider_message_id, t.provider_message_id),
      payload = case when d.payload_patch is null then t.payload else t.payload || d.payload_patch end,
      locked_by = null, locked_until = null, updated_at = now()
  from done d join ours o on o.id = d.id
  where t.id = d.id
  returning t.id, t.lead_id, t.channel, t.campaign_id, t.step
), events as (
  insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload)
  select u.lead_id, d.event_type, 'dispatcher', u.channel,
         case when d.event_type = 'touch_canceled' then 'internal' else 'outbound' end,
         d.event_payload || jsonb_build_object('touch_run_id', u.id, 'campaign_id', u.campaign_id, 'step', u.step)
  from updated u join done d on d.id = u.id
  returning 1
)
select d.id as busy_touch_id from done d
where d.id not in (select id from ours)
  and exists (select 1 from touch_runs t where t.id = d.id and t.status = 'processing' and t.locked_by = $2)

-- name: next_dispatch_at
-- When the dispatch loop has work again: the earliest moment any sender with open touches may give one — its
-- oldest open touch's scheduled_at, or for a paced sender the later of that and its next free moment (SPEC §16).
-- A moment in the past means now (due work another daemon holds, or a sender at its in-flight limit: look again
-- shortly). Walks the senders with open touches (open_senders()) as the claim does.
select min(case when sender_is_paced(ps.config, ps.pushback_until, now()) and ps.next_at > first.scheduled_at
                then ps.next_at else first.scheduled_at end) as next_at
from open_senders() u
cross join lateral (select t.scheduled_at from touch_runs t
                    where t.account_id = u.account_id and t.channel = u.channel and t.status in ('queued', 'scheduled')
                    order by t.scheduled_at limit 1) first
left join lateral (select ps.config, sp.next_at, sp.pushback_until
                   from account_provider_settings ps
                   left join sender_pacing sp on sp.settings_id = ps.id
                   where ps.account_id = u.account_id and ps.channel = u.channel and ps.is_default
                   limit 1) ps on true

-- name: sender_pushback
-- A 429 from a sender (SPEC §16): its effective rate is halved for 60 s (then sender_effective_rate climbs back).
-- A sender without max_per_second starts from its measured rate: what it handed over in the last 10 s (sent, plus
-- in flight now), at least 1/s. A burst of 429s (every request in flight at once) halves once per second, not once
-- per answer. $1 settings id, $2 account, $3 channel.
with sender as (
  select ps.id, sender_max_per_second(ps.config) as configured,
         sp.pushback_rate, sp.pushback_from, sp.pushback_at, sp.pushback_until
  from account_provider_settings ps
  left join sender_pacing sp on sp.settings_id = ps.id
  where ps.id = $1
), measured as (
  select greatest(1.0, ((select count(*) from touch_runs t
                         where t.account_id = $2 and t.channel = $3 and t.status = 'sent'
                           and t.sent_at > now() - interval '10 seconds')
                        + (select count(*) from touch_runs f
                           where f.provider_settings_id = $1 and f.status = 'processing'))::float8 / 10.0) as rate
), halved as (
  select s.id,
         coalesce(sender_effective_rate(s.configured, s.pushback_rate, s.pushback_from, s.pushback_until, now()),
                  m.rate) as current_rate,
         coalesce(case when s.pushback_until is not null and now() < s.pushback_until + interval '60 seconds'
                       then s.pushback_from end, s.configured, m.rate) as climb_to
  from sender s, measured m
)
insert into sender_pacing as sp (settings_id, pushback_rate, pushback_from, pushback_at, pushback_until, pushbacks,
                                 updated_at)
select h.id, greatest(h.current_rate / 2, 0.01), h.climb_to, now(), now() + interval '60 seconds', 1, now()
from halved h
on conflict (settings_id) do update
set pushback_rate = case when sp.pushback_at > now() - interval '1 second' and sp.pushback_rate is not null
                         then sp.pushback_rate else excluded.pushback_rate end,
    pushback_from = excluded.pushback_from,
    pushback_at = case when sp.pushback_at > now() - interval '1 second' then sp.pushback_at else now() end,
    pushback_until = excluded.pushback_until,
    pushbacks = sp.pushbacks + 1,
    updated_at = now()
returning sp.pushback_rate, sp.pushback_from, sp.pushback_until
