-- Where a lead can be reached (SPEC §3): lead_enriched first, else leads. The daemon validates and normalises
-- to E.164 with phonenumbers before sending; here "reachable" only means a contact value is present, which is
-- what the fallback decision uses to skip channels (SPEC §7) in SQL and in Python alike. Blank values are NULL
-- (a lead without a name has first_name NULL, so a {first_name} template fails instead of rendering "Hola ").
create or replace view lead_contacts_v1 as
select
  l.id          as lead_id,
  l.account_id,
  coalesce(nullif(btrim(le.phone), ''), nullif(btrim(l.phone), ''))  as phone,
  coalesce(nullif(btrim(le.email), ''), nullif(btrim(l.email), ''))  as email,
  coalesce(nullif(btrim(le.first_name), ''), nullif(split_part(btrim(coalesce(l.full_name, '')), ' ', 1), '')) as first_name,
  nullif(btrim(le.company_name), '') as company_name,
  coalesce(nullif(btrim(le.timezone), ''), nullif(btrim(l.timezone), '')) as timezone,
  coalesce(nullif(btrim(le.phone), ''), nullif(btrim(l.phone), '')) is not null as has_phone,
  coalesce(nullif(btrim(le.email), ''), nullif(btrim(l.email), '')) is not null as has_email
from leads l
left join lead_enriched le on le.lead_id = l.id;
