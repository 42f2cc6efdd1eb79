-- Dispatch: claim with context (one statement, committed) → send → complete in batches (SPEC §6, §11).

-- name: claim_touches_with_context
-- Lease due touches with their context and reasons not to send, fairly and within each sender's pace, in one
-- statement committed before any provider call: sql/views/10_claim.sql (planned once per connection).
select * from claim_touches_with_context($1::text, $2::float8, $3::int, $4::uuid, $5::text)

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
-- The completer's write: outcomes with their events, and the decisions after them, in one statement and one commit
-- (sql/views/12_complete.sql). $3: how long the reaction part waits for a row lock, in ms (SPEC §20).
select busy_touch_id, counters from complete_touches($1::text, $2::text, $3::int)

-- name: next_dispatch_at
-- When the dispatch loop has work again: the earliest moment any sender with open touches may give one — its
-- oldest open touch's scheduled_at, or for a paced sender the later of that and its next free moment (SPEC §16).
-- A moment in the past means now (due work another daemon holds, or a sender at its in-flight limit: look again
-- shortly). Walks the senders with open touches (open_senders()) as the claim does.
select min(case when sender_is_paced(ps.config, ps.pushback_until, now()) and ps.next_at > u.first_at
                then ps.next_at else u.first_at end) as next_at
from open_senders() u
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
