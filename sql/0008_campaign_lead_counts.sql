-- Cadences by status (SPEC §14: `/`, `status`) without counting every campaign lead on each read: the count per
-- status, kept by statement triggers (triggers/campaign_leads_counts.sql) as insert-only deltas — no row that
-- concurrent transactions would queue on — which the sweep folds into campaign_lead_counts. A read sums the
-- folded counts and the few deltas not folded yet: exact, whatever the table's size. The counts are (re)seeded
-- where the triggers are (re)created, in one transaction, so no write falls between the two.
create table campaign_lead_counts (
  status  text primary key,
  n       bigint not null
);

create table campaign_lead_count_deltas (
  id      bigint generated always as identity primary key,
  status  text not null,
  n       bigint not null
);
