-- The fallback decision (SPEC §7), SQL-first. listener/rules/decision.py mirrors it 1:1 and a property test proves
-- they agree. Key: (lead_id, campaign_id, step); campaign_id null for reactivation touches. To see why a lead
-- gets what it gets:
--   select * from decide_next_channel_for_lead('<lead>', '<campaign>' or null, <step>);          -- now()
--   select * from decide_next_channel_for_lead('<lead>', null, 1, '2026-03-01 12:00+00');        -- at a time
--   select * from lead_fallback_decisions_v1 where lead_id = '<lead>';                           -- every key
--
-- Rules, evaluated at p_now, first match wins:
--   a. routing / routing.fallback missing -> stop 'no_fallback_plan'; not the v2 shape -> stop 'invalid_plan'
--      (see fallback_plan_v2 for the exact shape);
--   b. a stop_on_events event of the lead in [cadence start, p_now] -> stop 'stop_event:<type>' (the earliest);
--   c. the lead is suppressed at p_now -> stop 'suppressed:<reason>' (lead_suppression_status_at);
--   d. p_now > expires_at -> stop 'expired';
--   e. per channel: attempts_done (touch_sent + touch_failed events of the key's touches on that channel,
--      created_at <= p_now), attempts_allowed (max_attempts, missing 1), permanent failure (touch_failed, or a
--      webhook's touch_undelivered / email_bounced, with failure_class permanent — not attempts), reachable
--      (phone for voice/whatsapp/sms, email for email); exhausted = attempts used up, permanent, or unreachable;
--   f. current channel not exhausted: retry_same_channel when last_attempt_at + cooldown <= p_now (or no attempt
--      yet), else wait_cooldown until then; the cooldown is cooldown_minutes * 60e6 rounded to whole microseconds
--      (half away from zero), in exact numeric arithmetic (0.05 = 3 s);
--   g. current exhausted: switch_channel to the first later channel in order not exhausted (from the start of
--      order when the current channel is not in it), naming the unreachable channels skipped on the way;
--      none left -> stop 'exhausted'.
--
-- The function is a single SQL statement (language sql, stable, not strict), so the planner inlines it into the
-- calling query: `explain select * from decide_next_channel_for_lead(...)` shows the real plan, which reads only
-- that lead's rows through touch_runs_lead_key, core_memory_events_touch_run and core_memory_events_lead.

drop view if exists lead_fallback_decisions_v1;
drop function if exists decide_next_channel_for_lead(uuid, uuid, int, timestamptz);
drop function if exists lead_suppression_status_at(uuid, timestamptz);
drop function if exists fallback_plan_v2(jsonb, text);

-- The routing plan of a touch payload, validated and normalised. problem is null for a usable plan, else
-- 'no_fallback_plan' (payload not an object, routing or routing.fallback missing or null) or 'invalid_plan':
--   routing not an object; fallback not an object;
--   order not a non-empty array of distinct known channels (voice, whatsapp, sms, email);
--   the payload beyond the JSON bounds (nested more than 64 deep, more than 1 MiB of text: listener/rules/safejson.py);
--   max_attempts not an object (null = {}) whose values are all integral numbers in [0, 20] (2.0 is 2; "2", 1.5,
--     -1, 21, 1e5000 are invalid) — a channel missing from it gets 1;
--   cooldown_minutes not an object (null = {}) whose values are all numbers in [0, 525600] (fractions allowed;
--     the cap is one year, SPEC §11) — a channel missing from it gets 0;
--   current_channel present (not null) but not a known channel; missing -> the touch's channel column;
--   stop_on_events present (not null) but not an array of strings; missing -> the three defaults;
--   expires_at present (not null) but not an ISO 8601 timestamp with an offset, seconds optional, 0-6 fraction
--     digits, years 1000-2999: YYYY-MM-DD(T| )hh:mm[:ss[.ffffff]](Z|±hh[[:]mm]) that is a real date and time.
-- current_channel is returned for every plan (the resolved one when usable, else the touch's channel).
create or replace function fallback_plan_v2(
  p_payload jsonb, p_touch_channel text,
  out problem text, out current_channel text, out channel_order text[], out max_attempts jsonb,
  out cooldown_minutes jsonb, out stop_on_events text[], out expires_at timestamptz)
language plpgsql stable
as $$
declare
  known    constant text[] := array['voice', 'whatsapp', 'sms', 'email'];
  iso_ts   constant text := '^[12][0-9]{3}-[0-9]{2}-[0-9]{2}[T ]([01][0-9]|2[0-3]):[0-5][0-9]'
                            '(:[0-5][0-9](\.[0-9]{1,6})?)?(Z|[+-](0[0-9]|1[0-5])(:?[0-5][0-9])?)$';
  routing  jsonb;
  fallback jsonb;
  v        jsonb;
begin
  current_channel := p_touch_channel;
  -- Beyond the JSON bounds every reader applies (listener/rules/safejson.py: nested more than 64 deep, or more than
  -- 1 MiB of text): the daemon cannot read the payload, so the plan is invalid (checked first, as in Python).
  if char_length(p_payload::text) > 1048576
     or jsonb_path_exists(p_payload, 'strict $.**{64 to last} ? (@.type() == "object" || @.type() == "array")') then
    problem := 'invalid_plan';
    return;
  end if;
  routing := case when jsonb_typeof(p_payload) = 'object' then p_payload->'routing' end;
  if jsonb_typeof(routing) = 'object' and jsonb_typeof(routing->'current_channel') = 'string'
     and (routing->>'current_channel') = any(known) then
    current_channel := routing->>'current_channel';
  end if;

  if routing is null or jsonb_typeof(routing) = 'null' then
    problem := 'no_fallback_plan';
    return;
  end if;
  if jsonb_typeof(routing) <> 'object' then
    problem := 'invalid_plan';
    return;
  end if;
  fallback := routing->'fallback';
  if fallback is null or jsonb_typeof(fallback) = 'null' then
    problem := 'no_fallback_plan';
    return;
  end if;
  problem := 'invalid_plan';  -- until every part below is known good
  if jsonb_typeof(fallback) <> 'object' then
    return;
  end if;

  -- current_channel
  v := routing->'current_channel';
  if v is not null and jsonb_typeof(v) <> 'null'
     and not (jsonb_typeof(v) = 'string' and (v #>> '{}') = any(known)) then
    return;
  end if;

  -- order: a non-empty array of distinct known channels
  v := fallback->'order';
  if v is null or jsonb_typeof(v) <> 'array' or jsonb_array_length(v) = 0 then
    return;
  end if;
  if exists (select 1 from jsonb_array_elements(v) e(x)
             where jsonb_typeof(e.x) <> 'string' or not ((e.x #>> '{}') = any(known))) then
    return;
  end if;
  select array_agg(e.x order by e.n) into channel_order from jsonb_array_elements_text(v) with ordinality e(x, n);
  if (select count(distinct c) from unnest(channel_order) c) <> cardinality(channel_order) then
    channel_order := null;
    return;
  end if;

  -- max_attempts: integral numbers in [0, 20] (SPEC §11)
  max_attempts := coalesce(nullif(fallback->'max_attempts', 'null'::jsonb), '{}'::jsonb);
  if jsonb_typeof(max_attempts) <> 'object'
     or exists (select 1 from jsonb_each(max_attempts) e
                where case when jsonb_typeof(e.value) <> 'number' then true
                           else e.value::numeric < 0 or e.value::numeric > 20
                                or e.value::numeric <> trunc(e.value::numeric) end) then
    channel_order := null;
    max_attempts := null;
    return;
  end if;

  -- cooldown_minutes: numbers in [0, 525600] (one year, SPEC §11)
  cooldown_minutes := coalesce(nullif(fallback->'cooldown_minutes', 'null'::jsonb), '{}'::jsonb);
  if jsonb_typeof(cooldown_minutes) <> 'object'
     or exists (select 1 from jsonb_each(cooldown_minutes) e
                where case when jsonb_typeof(e.value) <> 'number' then true
                           else e.value::numeric < 0 or e.value::numeric > 525600 end) then
    channel_order := null;
    max_attempts := null;
    cooldown_minutes := null;
    return;
  end if;

  -- stop_on_events: an array of strings (missing -> the defaults)
  v := routing->'stop_on_events';
  if v is null or jsonb_typeof(v) = 'null' then
    stop_on_events := default_stop_events();
  elsif jsonb_typeof(v) = 'array'
        and not exists (select 1 from jsonb_array_elements(v) e(x) where jsonb_typeof(e.x) <> 'string') then
    stop_on_events := array(select e.x from jsonb_array_elements_text(v) with ordinality e(x, n) order by e.n);
  else
    channel_order := null;
    max_attempts := null;
    cooldown_minutes := null;
    return;
  end if;

  -- expires_at: ISO 8601 with an offset
  v := routing->'expires_at';
  if v is not null and jsonb_typeof(v) <> 'null' then
    if jsonb_typeof(v) <> 'string' or (v #>> '{}') !~ iso_ts
       or not pg_input_is_valid(v #>> '{}', 'timestamptz') then
      channel_order := null;
      max_attempts := null;
      cooldown_minutes := null;
      stop_on_events := null;
      return;
    end if;
    expires_at := (v #>> '{}')::timestamptz;
  end if;

  problem := null;
end;
$$;

-- Suppression (SPEC §8) at a given time, the rule of lead_suppression_status_v1 with p_now instead of now():
-- unsubscribe / do_not_contact at any time <= p_now, or reply_negative in (p_now - 30 days, p_now]. 30 days
-- are 720 hours here (not interval '30 days', which follows daylight saving in the session time zone), so the
-- Python mirror (timedelta(days=30)) agrees to the microsecond. reason: the earliest unsubscribe /
-- do_not_contact event's type (ties by type), else 'reply_negative', else null.
create or replace function lead_suppression_status_at(p_lead_id uuid, p_now timestamptz)
returns table (is_unsubscribed boolean, in_negative_cooldown boolean, reason text)
language sql stable
as $$
  select u.event_type is not null,
         n.last_negative_at is not null,
         coalesce(u.event_type, case when n.last_negative_at is not null then 'reply_negative' end)
  from (select 1) one
  left join lateral (
    select e.event_type
    from core_memory_events e
    where e.lead_id = p_lead_id
      and e.created_at <= p_now
      and e.event_type in ('unsubscribe', 'do_not_contact')
      and (e.event_type = 'do_not_contact'
           or not exists (select 1 from core_memory_events r  -- a later resubscribe lifts an unsubscribe (§12)
                          where r.lead_id = p_lead_id and r.event_type = 'resubscribe'
                            and r.created_at > e.created_at and r.created_at <= p_now))
    order by e.created_at, e.event_type
    limit 1
  ) u on true
  cross join lateral (
    select max(e.created_at) as last_negative_at
    from core_memory_events e
    where e.lead_id = p_lead_id
      and e.created_at > p_now - interval '720 hours'
      and e.created_at <= p_now
      and e.event_type = 'reply_negative'
  ) n
$$;

create or replace function decide_next_channel_for_lead(
  p_lead_id uuid, p_campaign_id uuid, p_step int, p_now timestamptz default now())
returns table (
  decision            text,
  current_channel     text,
  next_channel        text,
  cooldown_until      timestamptz,
  stop_reason         text,
  skipped_channels    text[],
  latest_touch_id     uuid,
  cadence_started_at  timestamptz,
  channels            jsonb)
language sql stable
as $$
with key_touches as (
  select t.id, t.channel, t.created_at, t.payload
  from touch_runs t
  where t.lead_id = p_lead_id
    and t.step = p_step
    and (t.campaign_id = p_campaign_id or (p_campaign_id is null and t.campaign_id is null))
),
latest as (
  select k.id, k.channel, k.payload
  from key_touches k
  order by k.created_at desc, k.id desc
  limit 1
),
plan as (
  select l.id as touch_id,
         (select min(k.created_at) from key_touches k) as started_at,
         p.problem, p.current_channel as cur_channel, p.channel_order, p.max_attempts, p.cooldown_minutes,
         p.stop_on_events, p.expires_at
  from latest l
  cross join lateral fallback_plan_v2(l.payload, l.channel) p
),
contact as (
  select coalesce(bool_or(c.has_phone), false) as has_phone,
         coalesce(bool_or(c.has_email), false) as has_email
  from lead_contacts_v1 c
  where c.lead_id = p_lead_id
),
attempts as (  -- v_lead_channel_attempts for this key, as of p_now
  select k.channel, e.event_type, e.created_at, e.payload->>'failure_class' as failure_class
  from key_touches k
  join core_memory_events e on e.payload->>'touch_run_id' = k.id::text
  where e.event_type in ('touch_sent', 'touch_failed', 'touch_undelivered', 'email_bounced')
    and e.created_at <= p_now
),
considered as (  -- the plan's channels in order, plus the current channel when it is not in the order
  select o.channel, o.pos
  from plan p
  cross join lateral unnest(p.channel_order) with ordinality o(channel, pos)
  where p.problem is null
  union all
  select p.cur_channel, null::bigint
  from plan p
  where p.problem is null and not (p.cur_channel = any(p.channel_order))
),
state as (
  select c.channel, c.pos, x.attempts_done, a.allowed, x.last_attempt_at, x.permanent_failure, r.reachable,
         -- exact: the cooldown in whole microseconds (numeric round, half away from zero), an integer < 2^53
         x.last_attempt_at + interval '1 microsecond' * round(a.cooldown_min * 60000000)::float8 as until,
         (x.attempts_done >= a.allowed or x.permanent_failure or not r.reachable) as exhausted
  from considered c
  cross join plan p
  cross join contact ct
  cross join lateral (
    select coalesce((p.max_attempts->>c.channel)::numeric, 1)     as allowed,
           coalesce((p.cooldown_minutes->>c.channel)::numeric, 0) as cooldown_min
  ) a
  cross join lateral (
    select case when c.channel = 'email' then ct.has_email else ct.has_phone end as reachable
  ) r
  cross join lateral (
    select count(*) filter (where at.event_type in ('touch_sent', 'touch_failed'))::int as attempts_done,
           max(at.created_at) filter (where at.event_type in ('touch_sent', 'touch_failed')) as last_attempt_at,
           -- a permanent undelivery / bounce (webhooks, SPEC §12) exhausts like a permanent touch_failed
           coalesce(bool_or(at.event_type in ('touch_failed', 'touch_undelivered', 'email_bounced')
                            and at.failure_class = 'permanent'), false)
             as permanent_failure
    from attempts at
    where at.channel = c.channel
  ) x
),
cur as (
  select s.* from state s cross join plan p where s.channel = p.cur_channel
),
nxt as (
  select s.channel, s.pos
  from state s
  where s.pos > coalesce((select c.pos from cur c), 0)
    and not s.exhausted
  order by s.pos
  limit 1
),
stop_event as (
  select e.event_type
  from plan p
  join core_memory_events e
    on e.lead_id = p_lead_id
   and e.created_at >= p.started_at
   and e.created_at <= p_now
   and e.event_type = any(p.stop_on_events)
  where p.problem is null
  order by e.created_at, e.event_type
  limit 1
),
decided as (
  select p.*, c.exhausted as cur_exhausted, c.until as cur_until, c.pos as cur_pos,
         n.channel as nxt_channel, n.pos as nxt_pos,
         case
           when p.problem is not null then p.problem
           when se.event_type is not null then 'stop_event:' || se.event_type
           when su.reason is not null then 'suppressed:' || su.reason
           when p.expires_at is not null and p_now > p.expires_at then 'expired'
           when not c.exhausted then null
           when n.channel is not null then null
           else 'exhausted'
         end as why
  from plan p
  left join cur c on true
  left join nxt n on true
  left join stop_event se on true
  left join lateral lead_suppression_status_at(p_lead_id, p_now) su on true
)
select
  case
    when d.why is not null then 'stop'
    when not d.cur_exhausted then
      case when d.cur_until is null or d.cur_until <= p_now then 'retry_same_channel' else 'wait_cooldown' end
    else 'switch_channel'
  end,
  d.cur_channel,
  case
    when d.why is not null then null
    when not d.cur_exhausted then
      case when d.cur_until is null or d.cur_until <= p_now then d.cur_channel end
    else d.nxt_channel
  end,
  case when d.why is null and not d.cur_exhausted and d.cur_until > p_now then d.cur_until end,
  d.why,
  case
    when d.why is null and d.cur_exhausted then
      array(select s.channel from state s
            where s.pos > coalesce(d.cur_pos, 0) and s.pos < d.nxt_pos and not s.reachable
            order by s.pos)
    else '{}'::text[]
  end,
  d.touch_id,
  d.started_at,
  coalesce((
    select jsonb_agg(jsonb_build_object(
             'channel',           s.channel,
             'attempts_done',     s.attempts_done,
             'attempts_allowed',  trunc(s.allowed),
             'last_attempt_at',   s.last_attempt_at,
             'cooldown_until',    s.until,
             'permanent_failure', s.permanent_failure,
             'reachable',         s.reachable,
             'exhausted',         s.exhausted) order by s.pos)
    from state s
    where s.pos is not null), '[]'::jsonb)
from decided d
$$;

comment on function decide_next_channel_for_lead(uuid, uuid, int, timestamptz) is
  'Fallback decision (SPEC §7) for one (lead, campaign, step) key at p_now; zero rows when the key has no touch.';

-- Every key that has touches, decided at now(): `select * from lead_fallback_decisions_v1 where lead_id = …`.
create view lead_fallback_decisions_v1 as
select k.lead_id, k.campaign_id, k.step, d.*
from (select distinct t.lead_id, t.campaign_id, t.step from touch_runs t) k
cross join lateral decide_next_channel_for_lead(k.lead_id, k.campaign_id, k.step, now()) d;
