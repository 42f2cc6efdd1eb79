from tests import factories


async def test_fresh_database_has_schema(db):
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id)
    touch_id = await factories.touch(db, account_id, lead_id)
    row = await db.fetchrow("select status, payload from touch_runs where id = $1", touch_id)
    assert row["status"] == "queued"
    assert row["payload"]["routing"]["current_channel"] == "sms"
