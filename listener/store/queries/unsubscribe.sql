-- One-click unsubscribe (SPEC §19, RFC 8058): the signed token names a lead, its account and a touch; they must
-- exist and belong together, or the link is not ours (404, nothing written).

-- name: unsubscribe_target
-- $1 lead, $2 account, $3 touch (from a verified token): the account's name (the page says whose e-mails stop) and
-- whether the lead is unsubscribed now (lead_suppression_status_v1). No row: a foreign token.
select l.id as lead_id, a.name as account_name, t.id as touch_run_id, t.channel,
       coalesce(s.is_unsubscribed, false) as is_unsubscribed
from leads l
join accounts a on a.id = l.account_id
join touch_runs t on t.id = $3::uuid and t.lead_id = l.id and t.account_id = l.account_id
left join lead_suppression_status_v1 s on s.lead_id = l.id
where l.id = $1::uuid and l.account_id = $2::uuid

-- name: record_one_click_unsubscribe
-- The click: one `unsubscribe` event (event_source one_click, payload touch_run_id) unless the lead is already
-- unsubscribed — run after lead_lock in the same transaction, so two clicks at once write one event (the second
-- statement's snapshot is taken after the first transaction committed). The event reaches the daemon through the
-- core_memory_events trigger, which cancels the lead's open touches at once (SPEC §8).
insert into core_memory_events (lead_id, event_type, event_source, channel, direction, payload)
select t.lead_id, 'unsubscribe', 'one_click', t.channel, 'inbound',
       jsonb_build_object('touch_run_id', t.id, 'campaign_id', t.campaign_id, 'step', t.step,
                          'method', 'List-Unsubscribe=One-Click')
from touch_runs t
join leads l on l.id = t.lead_id and l.account_id = t.account_id
where t.id = $3::uuid and t.lead_id = $1::uuid and t.account_id = $2::uuid
  and not coalesce((select s.is_unsubscribed from lead_suppression_status_v1 s where s.lead_id = t.lead_id), false)
returning id
