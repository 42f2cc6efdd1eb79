-- Reactions, set-based (SPEC §7–§9, §17): what the daemon does about a batch of events — fallback decisions after
-- touch outcomes and permanent undeliveries, cancellations and cadence stops after stop events, out-of-office
-- deferrals and their end — in a fixed few statements per batch, not a set of statements per event.
--
-- Equal to reacting one event at a time, in order, by construction: events of different leads never read or write
-- each other's rows (a decision reads its own lead's touches and events; a stop event acts on its own lead), so the
-- batch is cut into rounds — round k holds the k-th event (by created_at, id) of every lead — and each round runs
-- set-based, one statement per kind of work. A drain has one event per lead: one round. Two events of one lead in a
-- batch (a stop event and a send, a send and its undelivery) run in two rounds, in their order.
-- tests/test_reactions_batch.py holds the batch against one-by-one on random histories.
--
-- Each function returns its counters as jsonb (listener/engine/reactions.py ReactionStats); they run inside the
-- caller's transaction, which also took the events (take_reactions) or the keys (take_due_cooldowns).

drop function if exists react_to_events(uuid[]);
drop function if exists react_to_due_keys(uuid[], uuid[], int[], uuid[]);
drop function if exists react_round_decisions(uuid[], uuid[], int[], uuid[], uuid[]);
drop function if exists react_round_stop_events(uuid[]);
drop function if exists defer_for_out_of_office(uuid[]);
drop function if exists resume_after_reply(uuid[]);
drop function if exists step_touch_row(uuid, uuid, int, timestamptz);
drop function if exists follow_up_touch_row(uuid, text);
drop function if exists decision_event_payload(uuid, uuid, int, uuid, text, text, text, timestamptz, text, text[], uuid,
                                               timestamptz, jsonb);
drop function if exists iso_utc(timestamptz, boolean);

-- A timestamp as Python's datetime.isoformat() writes a UTC datetime ('…+00:00', microseconds only when not zero),
-- or as pydantic does ('…Z'): the fallback_decision payload keeps the form it had when Python wrote it.
create function iso_utc(p_at timestamptz, p_zulu boolean default false) returns text
language sql stable parallel safe  -- stable, as to_char is: so it is inlined where it is called
as $$
  select to_char(p_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
         || case when date_part('microseconds', p_at)::bigint % 1000000 <> 0
                 then to_char(p_at at time zone 'UTC', '.US') else '' end
         || case when p_zulu then 'Z' else '+00:00' end
$$;

-- The first touch of a campaign step, on the step's routing.primary_channel, from the campaign_steps template with
-- the lead's variables, due delay_minutes after p_began_at (enrolment, or the end of the previous step). The
-- idempotency key step:<campaign>:<lead>:<step> makes the cadence and the touch orchestrator create it once.
-- Beyond one year (or NaN) of delay the step is skipped (SPEC §11; the orchestrator says why).
create function step_touch_row(p_campaign_id uuid, p_lead_id uuid, p_step int, p_began_at timestamptz)
returns table (account_id uuid, lead_id uuid, campaign_id uuid, step int, channel text, status text,
               scheduled_at timestamptz, payload jsonb, idempotency_key text)
language sql stable
as $$
  select l.account_id, l.id, s.campaign_id, s.step, s.payload -> 'routing' ->> 'primary_channel',
         case when p_began_at + make_interval(secs => s.delay_minutes * 60) <= now()
              then 'queued' else 'scheduled' end,
         p_began_at + make_interval(secs => s.delay_minutes * 60),
         s.payload || jsonb_build_object(
           'campaign_id', s.campaign_id::text,
           'step', s.step,
           'message_class', coalesce(s.payload ->> 'message_class', cp.message_class),
           'routing', (s.payload -> 'routing') || jsonb_build_object('current_channel', s.payload -> 'routing' -> 'primary_channel'),
           'delivery', coalesce(s.payload -> 'delivery', '{}'::jsonb) || jsonb_build_object('variables',
             jsonb_strip_nulls(jsonb_build_object('first_name', c.first_name, 'full_name', l.full_name,
                                                  'company_name', c.company_name))
               || coalesce(s.payload -> 'delivery' -> 'variables', '{}'::jsonb))),
         'step:' || s.campaign_id || ':' || l.id || ':' || s.step
  from campaign_steps s
  join campaigns cp on cp.id = s.campaign_id
  join leads l on l.id = p_lead_id
  join lead_contacts_v1 c on c.lead_id = l.id
  where s.campaign_id = p_campaign_id and s.step = p_step
    and s.payload -> 'routing' ->> 'primary_channel' in ('voice', 'whatsapp', 'sms', 'email')
    and s.delay_minutes <= 525600
$$;

-- retry_same_channel / switch_channel: the newest touch again, on p_next_channel, due now, without what a send
-- attempt left in its payload. The idempotency key next:<previous touch id> makes a replayed decision create nothing.
create function follow_up_touch_row(p_previous_touch_id uuid, p_next_channel text)
returns table (account_id uuid, lead_id uuid, campaign_id uuid, step int, channel text, status text,
               scheduled_at timestamptz, payload jsonb, idempotency_key text)
language sql stable
as $$
  select t.account_id, t.lead_id, t.campaign_id, t.step, p_next_channel, 'queued', now(),
         jsonb_set(case when jsonb_typeof(t.payload) = 'object' then t.payload else '{}'::jsonb end,
                   '{routing,current_channel}', to_jsonb(p_next_channel))
           - 'dryRun' - 'to' - 'provider_config'
           || case when jsonb_typeof(t.payload -> 'provider') = 'string'
                   then jsonb_build_object('provider', jsonb_build_object('forced_provider', null, 'forced_sender_id', null))
                   else '{}'::jsonb end,
         'next:' || t.id
  from touch_runs t
  where t.id = p_previous_touch_id
$$;

-- One round of keys (at most one per lead): decide each at now() and act — the fallback_decision event, the
-- follow-up touch, the cooldown timer, the step advanced (with its first touch) or the cadence completed or stopped,
-- and their events. A key whose newest touch is no longer p_latest_touch_ids[i], or that has a touch still open, is
-- superseded: that touch's own outcome decides. One statement.
create function react_round_decisions(p_lead_ids uuid[], p_campaign_ids uuid[], p_steps int[],
                                      p_latest_touch_ids uuid[], p_trigger_ids uuid[])
returns jsonb
language sql
set plan_cache_mode = force_generic_plan
as $$
  with keys as (
    select * from unnest(p_lead_ids, p_campaign_ids, p_steps, p_latest_touch_ids, p_trigger_ids)
                  with ordinality k(lead_id, campaign_id, step, latest_touch_id, trigger_id, ord)
  ), decided as (
    select distinct on (d.latest_touch_id)
           k.lead_id, k.campaign_id, k.step, k.trigger_id, d.decision, d.current_channel, d.next_channel,
           d.cooldown_until, coalesce(d.stop_reason, '') as stop_reason, d.skipped_channels, d.latest_touch_id,
           d.cadence_started_at, d.channels
    from keys k
    cross join lateral decide_next_channel_for_lead(k.lead_id, k.campaign_id, k.step, now()) d
    where d.latest_touch_id = k.latest_touch_id
      and not exists (select 1 from touch_runs o
                      where o.lead_id = k.lead_id and o.campaign_id is not distinct from k.campaign_id
                        and o.step = k.step and o.status in ('queued', 'scheduled', 'processing'))
    order by d.latest_touch_id, k.ord
  ), decision_events as (  -- the payload as listener.rules.decision.Decision.event_payload wrote it (SPEC §4)
    insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload)
    select d.lead_id, 'fallback_decision', 'decision_engine', d.current_channel, 'internal',
           jsonb_build_object(
             'touch_run_id', d.latest_touch_id::text, 'decision', d.decision, 'current_channel', d.current_channel,
             'next_channel', d.next_channel, 'cooldown_until', iso_utc(d.cooldown_until),
             'stop_reason', nullif(d.stop_reason, ''), 'skipped_channels', to_jsonb(coalesce(d.skipped_channels, '{}')),
             'attempts', c.attempts, 'channels', c.channels, 'cadence_started_at', iso_utc(d.cadence_started_at),
             'lead_id', d.lead_id::text, 'campaign_id', d.campaign_id::text, 'step', d.step,
             'trigger_event_id', d.trigger_id::text)
    from decided d
    cross join lateral (
      select coalesce(jsonb_object_agg(x.c ->> 'channel', x.c -> 'attempts_done'), '{}'::jsonb) as attempts,
             coalesce(jsonb_agg(x.c || jsonb_build_object(
                                  'last_attempt_at', iso_utc((x.c ->> 'last_attempt_at')::timestamptz, true),
                                  'cooldown_until', iso_utc((x.c ->> 'cooldown_until')::timestamptz, true))
                                order by x.n), '[]'::jsonb) as channels
      from jsonb_array_elements(d.channels) with ordinality x(c, n)) c
  ), follow_ups as (
    insert into touch_runs (account_id, lead_id, campaign_id, step, channel, status, scheduled_at, payload,
                            idempotency_key)
    select f.* from decided d cross join lateral follow_up_touch_row(d.latest_touch_id, d.next_channel) f
    where d.decision in ('retry_same_channel', 'switch_channel') and d.next_channel is not null
    on conflict (idempotency_key) do nothing
    returning 1
  ), cooldowns as (
    insert into pending_cooldowns (lead_id, campaign_id, step, latest_touch_id, due_at)
    select d.lead_id, d.campaign_id, d.step, d.latest_touch_id, d.cooldown_until from decided d
    where d.decision = 'wait_cooldown' and d.cooldown_until is not null
    on conflict (latest_touch_id) do update set due_at = excluded.due_at
  ), advanced as (  -- the step's channels are exhausted (or it has no usable plan): next step, or the cadence ends
    update campaign_leads c
    set current_step = coalesce(n.next_step, c.current_step),
        status = case when n.next_step is null then 'completed' else 'active' end,
        updated_at = now()
    from decided d
    cross join lateral (select min(s.step) as next_step from campaign_steps s
                        where s.campaign_id = d.campaign_id and s.step > d.step) n
    where d.decision = 'stop' and d.stop_reason in ('exhausted', 'no_fallback_plan', 'invalid_plan')
      and c.lead_id = d.lead_id and c.campaign_id = d.campaign_id and c.current_step = d.step
      and c.status = 'active'
    returning c.id, c.campaign_id, c.lead_id, d.step, n.next_step
  ), step_touches as (
    insert into touch_runs (account_id, lead_id, campaign_id, step, channel, status, scheduled_at, payload,
                            idempotency_key)
    select s.* from advanced a cross join lateral step_touch_row(a.campaign_id, a.lead_id, a.next_step, now()) s
    where a.next_step is not null
    on conflict (idempotency_key) do nothing
    returning 1
  ), stopped as (  -- any other stop ends the cadence
    update campaign_leads c
    set status = 'stopped', stop_reason = coalesce(nullif(d.stop_reason, ''), 'stop'), updated_at = now()
    from decided d
    where d.decision = 'stop' and d.stop_reason not in ('exhausted', 'no_fallback_plan', 'invalid_plan')
      and c.lead_id = d.lead_id and c.campaign_id = d.campaign_id and c.status in ('active', 'paused')
    returning c.id, c.campaign_id, c.lead_id, c.current_step, c.stop_reason
  ), cadence_events as (
    insert into core_memory_events (lead_id, event_type, event_source, direction, payload)
    select a.lead_id, 'cadence_completed', 'cadence', 'internal',
           jsonb_build_object('lead_id', a.lead_id::text, 'campaign_id', a.campaign_id::text, 'step', a.step,
                              'campaign_lead_id', a.id::text)
    from advanced a where a.next_step is null
    union all
    select s.lead_id, 'cadence_stopped', 'cadence', 'internal',
           jsonb_build_object('lead_id', s.lead_id::text, 'campaign_id', s.campaign_id::text, 'step', s.current_step,
                              'campaign_lead_id', s.id::text, 'reason', s.stop_reason)
    from stopped s
  )
  select jsonb_build_object(
    'decisions', (select coalesce(jsonb_object_agg(x.decision, x.n), '{}'::jsonb)
                  from (select d.decision, count(*) as n from decided d group by d.decision) x),
    'superseded', (select count(*) from keys) - (select count(*) from decided),
    'touches_created', (select count(*) from follow_ups) + (select count(*) from step_touches),
    'cadences_completed', (select count(*) from advanced a where a.next_step is null),
    'steps_advanced', (select count(*) from advanced a where a.next_step is not null),
    'cadences_stopped', (select count(*) from stopped))
$$;

-- One round of stop events (at most one per lead): the lead's open touches this event stops are canceled — all of
-- them for suppression, else those whose plan lists it and whose cadence (lead, campaign, step) began before the
-- event (as the dispatcher's re-check reads it) — and its campaign leads stopped: all of them for suppression and
-- the default stop events (enrolments made after the event spared, except for suppression), else those of the
-- canceled touches' campaigns. One statement.
create function react_round_stop_events(p_event_ids uuid[])
returns jsonb
language sql
set plan_cache_mode = force_generic_plan
as $$
  with ev as (
    select e.id, e.lead_id, e.event_type, e.created_at, x.suppression,
           x.suppression or e.event_type = any(default_stop_events()) as stops_every_cadence,
           case when x.suppression then 'suppressed:' else 'stop_event:' end || e.event_type as reason
    from core_memory_events e
    cross join lateral (select e.event_type in ('unsubscribe', 'do_not_contact', 'reply_negative') as suppression) x
    where e.id = any(p_event_ids)
  ), canceled as (
    update touch_runs t
    set status = 'canceled', error = 'canceled: ' || ev.reason, locked_by = null, locked_until = null,
        updated_at = now()
    from ev
    where t.lead_id = ev.lead_id and t.status in ('queued', 'scheduled')
      and (ev.suppression or (ev.event_type = any(touch_stop_events(t.payload))
           and (select min(k.created_at) from touch_runs k
                where k.lead_id = t.lead_id and k.campaign_id is not distinct from t.campaign_id
                  and k.step = t.step) <= ev.created_at))
    returning t.id, t.lead_id, t.channel, t.campaign_id, t.step, ev.reason, ev.id as event_id
  ), cancel_events as (
    insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload)
    select c.lead_id, 'touch_canceled', 'stop_events', c.channel, 'internal',
           jsonb_build_object('touch_run_id', c.id, 'campaign_id', c.campaign_id, 'step', c.step, 'reason', c.reason,
                              'event_id', c.event_id)
    from canceled c
  ), stopped as (
    update campaign_leads cl
    set status = 'stopped', stop_reason = ev.event_type, updated_at = now()
    from ev
    where cl.lead_id = ev.lead_id and cl.status in ('active', 'paused')
      and (ev.stops_every_cadence
           or cl.campaign_id in (select c.campaign_id from canceled c where c.lead_id = ev.lead_id))
      and (ev.suppression or cl.enrolled_at <= ev.created_at)
    returning cl.id, cl.campaign_id, cl.lead_id, cl.current_step, ev.event_type, ev.id as event_id
  ), cadence_events as (
    insert into core_memory_events (lead_id, event_type, event_source, direction, payload)
    select s.lead_id, 'cadence_stopped', 'cadence', 'internal',
           jsonb_build_object('lead_id', s.lead_id::text, 'campaign_id', s.campaign_id::text, 'step', s.current_step,
                              'campaign_lead_id', s.id::text, 'reason', s.event_type, 'event_id', s.event_id::text)
    from stopped s
  )
  select jsonb_build_object('touches_canceled', (select count(*) from canceled),
                            'cadences_stopped', (select count(*) from stopped))
$$;

-- SPEC §19: out-of-office replies landed. Each lead's open touches (queued, scheduled; not one already being sent)
-- due before its pause ends go back to scheduled at the resume moment (09:00 lead-local the day after `until`), with
-- one touch_deferred event each (reason out_of_office). The pause is read from lead_pause_status, not from the
-- event: a later out-of-office reply, or a human reply that ended the pause meanwhile, wins. At most one event per
-- lead. Returns the deferred touches.
create function defer_for_out_of_office(p_event_ids uuid[])
returns table (touch_run_id uuid)
language sql
set plan_cache_mode = force_generic_plan
as $$
  with pause as (
    select e.id as trigger_event_id, p.*
    from core_memory_events e
    cross join lateral lead_pause_status(e.lead_id, now()) p
    where e.id = any(p_event_ids) and p.in_force
  ), deferred as (
    update touch_runs t
    set status = 'scheduled', scheduled_at = p.resume_at, locked_by = null, locked_until = null, updated_at = now()
    from pause p
    where t.lead_id = p.lead_id and t.status in ('queued', 'scheduled') and t.scheduled_at < p.resume_at
    returning t.id, t.lead_id, t.channel, t.campaign_id, t.step, p.resume_at, p.until, p.lead_timezone, p.event_id,
              p.trigger_event_id
  ), events as (
    insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload)
    select d.lead_id, 'touch_deferred', 'out_of_office', d.channel, 'internal',
           jsonb_strip_nulls(jsonb_build_object(
             'touch_run_id', d.id, 'reason', 'out_of_office', 'next_at', d.resume_at, 'lead_timezone', d.lead_timezone,
             'until', d.until, 'campaign_id', d.campaign_id, 'step', d.step, 'event_id', d.event_id,
             'trigger_event_id', d.trigger_event_id))
    from deferred d
  )
  select d.id from deferred d
$$;

-- SPEC §19: non-automatic replies end an out-of-office pause at once. Each lead's touches waiting for that pause
-- (scheduled, their latest touch_deferred says out_of_office) become due now — the dispatcher then checks them as
-- any due touch (stop events, suppression, quiet hours, caps) — with a touch_scheduled event each (reason
-- out_of_office_ended). Nothing moves while a pause is still in force (a newer out-of-office reply). At most one
-- event per lead. Returns the resumed touches.
create function resume_after_reply(p_event_ids uuid[])
returns table (touch_run_id uuid)
language sql
set plan_cache_mode = force_generic_plan
as $$
  with resumed as (
    update touch_runs t
    set scheduled_at = now(), updated_at = now()
    from core_memory_events e
    join touch_deferrals_v1 d on d.lead_id = e.lead_id and d.reason = 'out_of_office'
    where e.id = any(p_event_ids) and d.id = t.id
      and t.status = 'scheduled' and t.scheduled_at > now()
      and not exists (select 1 from lead_pause_status(e.lead_id, now()) p where p.in_force)
    returning t.id, t.lead_id, t.channel, t.campaign_id, t.step, t.status, t.scheduled_at, e.id as event_id
  ), events as (
    insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload)
    select r.lead_id, 'touch_scheduled', 'out_of_office', r.channel, 'internal',
           jsonb_build_object('touch_run_id', r.id, 'campaign_id', r.campaign_id, 'step', r.step, 'status', r.status,
                              'scheduled_at', r.scheduled_at, 'reason', 'out_of_office_ended', 'event_id', r.event_id)
    from resumed r
  )
  select r.id from resumed r
$$;

-- A batch of events, in rounds (see the top of this file). Per round, a fixed few statements, each run only when
-- the round has work of its kind: out-of-office deferrals, the end of a pause, stop events (every event that is
-- not a touch outcome: what it stops, if anything), and the decisions after touch outcomes. Returns one jsonb of
-- counters per statement run.
create function react_to_events(p_event_ids uuid[])
returns setof jsonb
language plpgsql
set plan_cache_mode = force_generic_plan
as $$
declare
  ids uuid[];         -- every event, in order (created_at, id), with:
  rounds int[];       --   its round: its rank among the events of its lead (the touch's lead for a touch outcome)
  kinds text[];       --   decide | no_touch (an outcome whose payload names no touch) | other (any other event)
                      --   | pause | pause_end (SPEC §19; also 'other': they may stop something too) | none
  t_ids uuid[];       --   an outcome's touch, when it exists: its key
  t_leads uuid[];
  t_campaigns uuid[];
  t_steps int[];
  round_no int;
  in_round boolean[];
  picked uuid[];
  k_leads uuid[];
  k_campaigns uuid[];
  k_steps int[];
  k_touches uuid[];
  k_triggers uuid[];
begin
  select array_agg(c.id order by c.created_at, c.id),
         array_agg(c.n order by c.created_at, c.id),
         array_agg(c.kind order by c.created_at, c.id),
         array_agg(c.touch_id order by c.created_at, c.id),
         array_agg(c.touch_lead order by c.created_at, c.id),
         array_agg(c.touch_campaign order by c.created_at, c.id),
         array_agg(c.touch_step order by c.created_at, c.id)
    into ids, rounds, kinds, t_ids, t_leads, t_campaigns, t_steps
  from (select e.id, e.created_at, t.id as touch_id, t.lead_id as touch_lead, t.campaign_id as touch_campaign,
               t.step as touch_step,
               row_number() over (partition by coalesce(t.lead_id, e.lead_id) order by e.created_at, e.id) as n,
               case
                 when not x.outcome then
                   case when e.event_type = 'reply_out_of_office' then 'pause'
                        when e.event_type in ('reply_positive', 'reply_negative')
                             or (e.event_type = 'reply_received'
                                 and (e.payload ->> 'classification') is distinct from 'out_of_office')
                        then 'pause_end'
                        else 'other' end
                 when e.event_type in ('touch_undelivered', 'email_bounced')
                      and (e.payload ->> 'failure_class') is distinct from 'permanent' then 'none'
                 when x.touch_run_id is null then 'no_touch'
                 else 'decide'
               end as kind
        from core_memory_events e
        cross join lateral (
          select e.event_type in ('touch_sent', 'touch_failed', 'touch_undelivered', 'email_bounced') as outcome,
                 case when pg_input_is_valid(e.payload ->> 'touch_run_id', 'uuid')
                      then (e.payload ->> 'touch_run_id')::uuid end as touch_run_id) x
        left join touch_runs t on x.outcome and t.id = x.touch_run_id
        where e.id = any(p_event_ids)) c;
  if ids is null then
    return;
  end if;

  for round_no in 1 .. (select max(n) from unnest(rounds) n) loop
    in_round := array(select r = round_no from unnest(rounds) r);
    return next jsonb_build_object(
      'events', (select count(*) from unnest(in_round) i where i),
      'without_touch', (select count(*) from unnest(in_round, kinds) u(i, k) where i and k = 'no_touch'));

    picked := array(select u.id from unnest(ids, in_round, kinds) u(id, i, k) where i and k = 'pause');
    if picked <> '{}' then  -- SPEC §19: a pause, not a stop (then, below, whatever it stops)
      return next (select jsonb_build_object('touches_deferred', count(*)) from defer_for_out_of_office(picked));
    end if;
    picked := array(select u.id from unnest(ids, in_round, kinds) u(id, i, k) where i and k = 'pause_end');
    if picked <> '{}' then  -- a non-automatic reply ends an out-of-office pause at once
      return next (select jsonb_build_object('touches_resumed', count(*)) from resume_after_reply(picked));
    end if;
    picked := array(select u.id from unnest(ids, in_round, kinds) u(id, i, k)
                    where i and k in ('other', 'pause', 'pause_end'));
    if picked <> '{}' then
      return next react_round_stop_events(picked);
    end if;

    -- touch outcomes: the touch's key (an outcome whose touch does not exist is superseded: nothing to decide)
    select array_agg(u.lead_id) filter (where u.lead_id is not null),
           array_agg(u.campaign_id) filter (where u.lead_id is not null),
           array_agg(u.step) filter (where u.lead_id is not null),
           array_agg(u.touch_id) filter (where u.lead_id is not null),
           array_agg(u.id) filter (where u.lead_id is not null)
      into k_leads, k_campaigns, k_steps, k_touches, k_triggers
    from unnest(ids, in_round, kinds, t_ids, t_leads, t_campaigns, t_steps)
         u(id, i, k, touch_id, lead_id, campaign_id, step)
    where u.i and u.k = 'decide';
    return next jsonb_build_object('superseded', (select count(*) from unnest(in_round, kinds, t_ids) u(i, k, t)
                                                  where i and k = 'decide' and t is null));
    if k_leads is not null then
      return next react_round_decisions(k_leads, k_campaigns, k_steps, k_touches, k_triggers);
    end if;
  end loop;
end;
$$;

-- Keys whose cooldown has ended (take_due_cooldowns), decided again: in rounds of at most one key per lead.
create function react_to_due_keys(p_lead_ids uuid[], p_campaign_ids uuid[], p_steps int[], p_latest_touch_ids uuid[])
returns setof jsonb
language plpgsql
set plan_cache_mode = force_generic_plan
as $$
declare
  round_no int := 0;
  r record;
begin
  loop
    round_no := round_no + 1;
    select array_agg(k.lead_id order by k.ord) as leads, array_agg(k.campaign_id order by k.ord) as campaigns,
           array_agg(k.step order by k.ord) as steps, array_agg(k.touch_id order by k.ord) as touches
      into r
    from (select u.*, row_number() over (partition by u.lead_id order by u.ord) as n
          from unnest(p_lead_ids, p_campaign_ids, p_steps, p_latest_touch_ids)
               with ordinality u(lead_id, campaign_id, step, touch_id, ord)) k
    where k.n = round_no;
    exit when r.leads is null;
    return next react_round_decisions(r.leads, r.campaigns, r.steps, r.touches,
                                      array_fill(null::uuid, array[cardinality(r.leads)]));
  end loop;
end;
$$;
