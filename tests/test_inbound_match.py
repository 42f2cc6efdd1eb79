"""Who sent an inbound message (SPEC §12, queries/webhooks.sql match_inbound_lead): found through the phone-digit
indexes of leads and lead_enriched (0009), with lead_contacts_v1's rule that an enriched phone wins."""

from __future__ import annotations

from listener.store.queries import Q
from tests import factories

RECEIVER = "15005550006"  # the factories' Twilio sms sender, as digits


async def _many_leads(db, account_id, n: int) -> None:
    await db.execute("insert into leads (account_id, full_name, phone) select $1, 'Lead ' || g, "
                     "'+1212' || lpad(g::text, 7, '0') from generate_series(1, $2::int) g", account_id, n)


async def test_the_sender_is_found_by_digits_and_an_enriched_phone_wins(db):
    account_id = await factories.account(db)
    other_account = await factories.account(db, "Other")
    await _many_leads(db, account_id, 500)
    plain = await factories.lead(db, account_id, phone="+1 (415) 555-0199")
    national = await factories.lead(db, account_id, phone="(415) 555-0142")
    enriched = await factories.lead(db, account_id, phone="+14155550111")
    await db.execute("insert into lead_enriched (lead_id, phone) values ($1, '+34 600 111 222')", enriched)
    elsewhere = await factories.lead(db, other_account, phone="+14155550177")
    await db.execute("update account_provider_settings set config = '{\"from\": \"+15005550007\"}'::jsonb "
                     "where account_id = $1", other_account)

    async def match(*digits: str):
        row = await db.fetchrow(Q.match_inbound_lead, RECEIVER, list(digits))
        return row["lead_id"] if row else None

    assert await match("14155550199") == plain
    assert await match("14155550142", "4155550142") == national  # a phone stored without its country code
    assert await match("34600111222") == enriched
    assert await match("14155550111") is None  # the lead's own phone, replaced by the enriched one
    assert await match("14155550177") is None  # another account's lead, reached through another sender
    other = await db.fetchrow(Q.match_inbound_lead, "15005550007", ["14155550177"])  # through its own sender
    assert other["lead_id"] == elsewhere and other["account_id"] == other_account


async def test_the_match_reads_the_digit_indexes_not_every_lead(db):
    account_id = await factories.account(db)
    await _many_leads(db, account_id, 5000)
    await db.execute("insert into lead_enriched (lead_id, phone) select id, '+1646' || right(phone, 7) from leads "
                     "where right(phone, 1) in ('1', '3', '5')")
    await db.execute("analyze")
    plan = "\n".join(r[0] for r in await db.fetch(
        "explain " + Q.match_inbound_lead.replace("$1::text", "'15005550006'")
        .replace("$2::text[]", "array['12120000042']")))
    assert "leads_phone_digits" in plan and "lead_enriched_phone_digits" in plan, plan
    assert "Seq Scan on leads" not in plan and "Seq Scan on lead_enriched" not in plan, plan
