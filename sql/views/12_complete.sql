-- The completer's write (SPEC §6, §11, §17): every outcome that has arrived since its last write — sent / failed /
-- canceled — written with its event, and the fallback decision after each touch_sent / touch_failed made in the same
-- transaction: one statement and one commit per batch of outcomes for all of it, where the reaction used to be a
-- transaction of its own (take, decide, act) behind a NOTIFY.
--
-- Only our own lease is completed. A touch row locked by another session (an operator's open transaction) is
-- skipped, not waited for (SPEC §20): it comes back as busy and is written again later, while the rest of the batch
-- commits now. The reaction part reacts set-based (react_to_events) in a subtransaction that waits at most
-- p_row_lock_wait_ms for a row lock; the events' trigger does not file them in event_reactions meanwhile (the same
-- transaction reacts; a crash rolls back events and reactions together). When the reaction part fails — a row
-- locked elsewhere, a row the database refuses — it is rolled back alone and the events are filed in
-- event_reactions here, with a wake-up for the reaction service, which isolates them one by one with its retries
-- (SPEC §11, §20); the outcomes commit either way.
-- Returns one row per busy touch (busy_touch_id) and one per counters of the reaction (counters).
drop function if exists complete_touches(text, text, int);

create function complete_touches(p_outcomes text, p_worker text, p_row_lock_wait_ms int)
returns table (busy_touch_id uuid, counters jsonb)
language plpgsql
set plan_cache_mode = force_generic_plan
as $$
#variable_conflict use_column
declare
  outcome_events uuid[];
  busy uuid[];
  reacted jsonb;
  lock_wait text := current_setting('lock_timeout');
begin
  -- the trigger does not file these events' reactions (nor wake the reaction service): they are reacted to below
  perform set_config('revenue_asi.reacting_inline', 'on', true);
  with done as (
    select * from jsonb_to_recordset(p_outcomes::jsonb) as d(
      id uuid, status text, error text, provider_message_id text, payload_patch jsonb,
      event_type text, event_payload jsonb)
  ), ours as (
    select t.id from touch_runs t join done d on d.id = t.id
    where t.status = 'processing' and t.locked_by = p_worker
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
    returning id, event_type
  )
  select (select array_agg(e.id) from events e where e.event_type in ('touch_sent', 'touch_failed')),
         (select array_agg(d.id) from done d
          where d.id not in (select o.id from ours o)
            and exists (select 1 from touch_runs t where t.id = d.id and t.status = 'processing'
                                                     and t.locked_by = p_worker))
    into outcome_events, busy;
  perform set_config('revenue_asi.reacting_inline', 'off', true);

  return query select b, null::jsonb from unnest(busy) b;
  if outcome_events is null then
    return;
  end if;
  begin
    perform set_config('lock_timeout', p_row_lock_wait_ms::text, true);
    select jsonb_agg(r) into reacted from react_to_events(outcome_events) r;
    perform set_config('lock_timeout', lock_wait, true);
  exception when others then
    insert into event_reactions (event_id, lead_id, event_type, created_at)
    select e.id, e.lead_id, e.event_type, e.created_at from core_memory_events e where e.id = any(outcome_events)
    on conflict (event_id) do nothing;
    perform pg_notify('core_memory_events', 'wake');
    reacted := jsonb_build_array(jsonb_build_object('deferred', cardinality(outcome_events)));
  end;
  return query select null::uuid, r from jsonb_array_elements(reacted) r;
end;
$$;
