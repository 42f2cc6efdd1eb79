-- Fair dispatch and sender pacing (SPEC §16), one definition for the claim, the dispatcher's pushback and the
-- dashboard.

-- The senders (account, channel) that have open (queued or scheduled) touches, each with its oldest open touch's
-- scheduled_at (first_at: the sender has due work when it is past): a loose index scan over touch_runs_open_by_sender
-- (account_id, channel, scheduled_at), one probe per such sender, in the index's own order — an account without open
-- touches costs nothing. Every probe asks for that order, which only this index gives without a sort: the claim
-- plans with sorts off (sql/views/10_claim.sql), so whatever its statistics say of the open touches, it walks here.
drop function if exists open_senders();
create function open_senders()
returns table (account_id uuid, channel text, first_at timestamptz)
language sql stable parallel safe rows 10
as $$
  with recursive units (account_id, channel, first_at) as (
    (select t.account_id, t.channel, t.scheduled_at from touch_runs t
     where t.status in ('queued', 'scheduled') order by t.account_id, t.channel, t.scheduled_at limit 1)
    union all
    select n.account_id, n.channel, n.scheduled_at
    from units u
    cross join lateral (select t.account_id, t.channel, t.scheduled_at from touch_runs t
                        where t.status in ('queued', 'scheduled') and (t.account_id, t.channel) > (u.account_id, u.channel)
                        order by t.account_id, t.channel, t.scheduled_at limit 1) n
  )
  select units.account_id, units.channel, units.first_at from units
$$;

-- A sender's configured rate: config.max_per_second (requests per second), or null (unpaced).
create or replace function sender_max_per_second(p_config jsonb)
returns float8
language sql immutable parallel safe
as $$
  select case when jsonb_typeof(p_config -> 'max_per_second') = 'number'
              and (p_config ->> 'max_per_second')::float8 > 0
              then (p_config ->> 'max_per_second')::float8 end
$$;

-- A sender's in-flight limit: config.max_in_flight, or null (only REVENUE_ASI_CONCURRENCY limits it).
create or replace function sender_max_in_flight(p_config jsonb)
returns int
language sql immutable parallel safe
as $$
  select case when jsonb_typeof(p_config -> 'max_in_flight') = 'number'
              and (p_config ->> 'max_in_flight')::numeric >= 1
              then least((p_config ->> 'max_in_flight')::numeric, 100000)::int end
$$;

-- Additive increase, multiplicative decrease: a 429 halved the rate (pushback_rate) until pushback_until; then it
-- climbs back linearly to pushback_from over AIMD_CLIMB_S = 60 s, and after that the configured rate holds again
-- (null = unpaced). Before any pushback: the configured rate.
create or replace function sender_effective_rate(p_configured float8, p_pushback_rate float8, p_pushback_from float8,
                                                 p_pushback_until timestamptz, p_now timestamptz)
returns float8
language sql immutable parallel safe
as $$
  select case
    when p_pushback_until is null or p_pushback_rate is null then p_configured
    when p_now < p_pushback_until then p_pushback_rate
    when p_now >= p_pushback_until + interval '60 seconds' then p_configured
    else least(coalesce(p_configured, 'infinity'::float8),
               p_pushback_rate + (coalesce(p_pushback_from, p_pushback_rate * 2) - p_pushback_rate)
                 * extract(epoch from p_now - p_pushback_until)::float8 / 60.0)
  end
$$;

-- Is this sender paced right now (a configured rate or in-flight limit, or a pushback still in force)?
create or replace function sender_is_paced(p_config jsonb, p_pushback_until timestamptz, p_now timestamptz)
returns boolean
language sql immutable parallel safe
as $$
  select sender_max_per_second(p_config) is not null or sender_max_in_flight(p_config) is not null
         or (p_pushback_until is not null and p_now < p_pushback_until + interval '60 seconds')
$$;
