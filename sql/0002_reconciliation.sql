-- outcome_unknown reconciliation (SPEC §11): what the provider said about a touch whose outcome we could not know
-- (a read timeout, or a lease that expired mid-send). One row per touch looked up; `reconcile_touch` writes the
-- verdict and its one `touch_reconciled` event, whoever finds it first (the reconciler job or a status callback).

create table touch_reconciliations (
  touch_run_id uuid primary key references touch_runs (id) on delete cascade,
  attempts int not null default 0,
  last_attempt_at timestamptz not null default now(),
  reached_provider boolean,
  provider_status text,
  provider_message_id text,
  source text,
  done boolean not null default false,
  note text
);

create index touch_runs_outcome_unknown_idx on touch_runs (updated_at)
  where status = 'failed' and error like 'outcome_unknown%';

-- An attempt that found nothing conclusive (the provider could not be asked, or the touch cannot be looked up).
create function reconcile_attempt(p_touch uuid, p_note text, p_final boolean) returns void
language sql as $$
  insert into touch_reconciliations (touch_run_id, attempts, last_attempt_at, done, note)
  values (p_touch, 1, now(), p_final, p_note)
  on conflict (touch_run_id) do update
    set attempts = touch_reconciliations.attempts + 1, last_attempt_at = now(),
        done = touch_reconciliations.done or excluded.done, note = excluded.note
    where not touch_reconciliations.done;
$$;

-- The verdict: once per touch, with its event; the provider id is kept on the touch when it had none.
create function reconcile_touch(p_touch uuid, p_reached boolean, p_status text, p_sid text, p_source text)
returns boolean
language plpgsql as $$
declare
  v_touch touch_runs%rowtype;
begin
  insert into touch_reconciliations (touch_run_id, attempts, reached_provider, provider_status, provider_message_id,
                                     source, done)
  values (p_touch, 1, p_reached, p_status, p_sid, p_source, true)
  on conflict (touch_run_id) do update
    set attempts = touch_reconciliations.attempts + 1, last_attempt_at = now(), reached_provider = p_reached,
        provider_status = p_status, provider_message_id = p_sid, source = p_source, done = true
    where not touch_reconciliations.done;
  if not found then
    return false;
  end if;
  update touch_runs set provider_message_id = coalesce(provider_message_id, p_sid), updated_at = now()
  where id = p_touch
  returning * into v_touch;
  insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload)
  values (v_touch.lead_id, 'touch_reconciled', p_source, v_touch.channel, 'internal',
          jsonb_build_object('touch_run_id', v_touch.id, 'reached_provider', p_reached, 'provider_status', p_status,
                             'provider_message_id', p_sid, 'campaign_id', v_touch.campaign_id, 'step', v_touch.step));
  return true;
end;
$$;
