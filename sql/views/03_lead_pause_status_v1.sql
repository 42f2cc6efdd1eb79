-- Out-of-office pauses (SPEC §19), derived from the events (why: sql/0016_out_of_office.sql).
--
-- lead_pause_status(lead, at): the lead's latest reply_out_of_office at `at` — its return date (`until`), when
-- outreach resumes (`resume_at`: 09:00 lead-local the day after `until`, computed when the reply arrived, in the
-- lead's zone then), the reply it came from — and the first non-automatic reply after it, which ends the pause at
-- once. in_force: not ended and resume_at still ahead. No row: the lead never sent an out-of-office reply.
--
-- The payload is read defensively, as other systems may write the event too: resume_at when it is a timestamp
-- within 200 days of the event; else 09:00 UTC the day after a readable `until` within 200 days; else 8 days after
-- the event (the 7-day default return date, and the next morning).
-- A single-statement SQL function, so PostgreSQL inlines it where it is joined laterally (the claim, the views).
-- `create or replace` (not drop and create): lead_next_action_view_v5 depends on it; a change of its columns needs a
-- new name.
create or replace function lead_pause_status(p_lead_id uuid, p_at timestamptz default now())
returns table (lead_id uuid, event_id uuid, paused_at timestamptz, until date, resume_at timestamptz,
               lead_timezone text, provider_message_id text, reply_body text, date_text text, until_source text,
               ended_at timestamptz, ended_by_event_id uuid, ended_by text, in_force boolean)
language sql stable
as $$
  select o.lead_id, o.id, o.created_at, coalesce(x.until, (r.resume_at - interval '1 day')::date), r.resume_at,
         o.payload ->> 'lead_timezone', o.payload ->> 'provider_message_id', left(o.payload ->> 'body', 500),
         o.payload ->> 'date_text', o.payload ->> 'until_source',
         h.created_at, h.id, h.event_type,
         h.id is null and r.resume_at > p_at
  from (select e.id, e.lead_id, e.created_at, e.payload
        from core_memory_events e
        where e.lead_id = p_lead_id and e.event_type = 'reply_out_of_office' and e.created_at <= p_at
        order by e.created_at desc, e.id desc
        limit 1) o
  cross join lateral (
    select case when pg_input_is_valid(o.payload ->> 'until', 'date')
                 and (o.payload ->> 'until')::date between o.created_at::date - 2 and o.created_at::date + 200
                then (o.payload ->> 'until')::date end as until,
           case when pg_input_is_valid(o.payload ->> 'resume_at', 'timestamptz')
                 and (o.payload ->> 'resume_at')::timestamptz between o.created_at
                                                                  and o.created_at + interval '200 days'
                then (o.payload ->> 'resume_at')::timestamptz end as resume_at
  ) x
  cross join lateral (
    select coalesce(x.resume_at, ((x.until + 1) + time '09:00') at time zone 'UTC',
                    o.created_at + interval '8 days') as resume_at
  ) r
  left join lateral (
    select e.id, e.created_at, e.event_type
    from core_memory_events e
    where e.lead_id = p_lead_id and e.created_at > o.created_at and e.created_at <= p_at
      and (e.event_type in ('reply_positive', 'reply_negative')
           or (e.event_type = 'reply_received'
               and coalesce(e.payload ->> 'classification', '') <> 'out_of_office'))
    order by e.created_at, e.id
    limit 1
  ) h on true
$$;

comment on function lead_pause_status(uuid, timestamptz) is
  'Out-of-office pause (SPEC §19) of one lead at p_at: the latest reply_out_of_office and the human reply that ended it.';

-- Every lead that ever sent an out-of-office reply, with its pause now: `select * from lead_pause_status_v1 where
-- in_force` lists the leads paused now.
create or replace view lead_pause_status_v1 as
select p.*
from (select distinct e.lead_id from core_memory_events e where e.event_type = 'reply_out_of_office') l
cross join lateral lead_pause_status(l.lead_id, now()) p;
