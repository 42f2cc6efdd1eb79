-- outcome_unknown reconciliation (SPEC §11).

-- name: touches_to_reconcile
-- Failed outcome_unknown in the last 7 days, settled for at least 5 s, not concluded; each looked up at most 5 times,
-- a minute apart.
select t.id, t.lead_id, t.channel, t.provider_message_id, t.updated_at as failed_at,
       c.phone as lead_phone, c.email as lead_email, ps.config::text as provider_config_json
from touch_runs t
join lead_contacts_v1 c on c.lead_id = t.lead_id
left join account_provider_settings ps on ps.account_id = t.account_id and ps.channel = t.channel and ps.is_default
left join touch_reconciliations r on r.touch_run_id = t.id
where t.status = 'failed' and t.error like 'outcome_unknown%'
  and t.updated_at > now() - interval '7 days' and t.updated_at < now() - make_interval(secs => $2)
  and (r.touch_run_id is null
       or (not r.done and r.attempts < 5 and r.last_attempt_at < now() - interval '1 minute'))
order by t.updated_at
limit $1

-- name: known_provider_ids
-- Provider ids already recorded for other touches: a listed message that is one of them is not ours.
select provider_message_id from touch_runs where provider_message_id = any($1::text[])

-- name: reconcile_touch
select reconcile_touch($1, $2, $3, $4, $5)

-- name: reconcile_attempt
select reconcile_attempt($1, $2, $3)
