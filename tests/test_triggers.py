"""SPEC §4: NOTIFY wake-ups from touch_runs and core_memory_events, the reactions inbox, touch_scheduled events.

A second connection LISTENs. To prove that something did NOT notify, the writer then sends a sentinel with
pg_notify on the same channel: notifications arrive in commit order, so everything the earlier statements
sent has arrived by the time the sentinel does.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from listener.store.database import connect
from tests import factories

TIMEOUT = 10.0
SENTINEL = "sentinel"


class Inbox:
    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    def callback(self, conn: asyncpg.Connection, pid: int, channel: str, payload: str) -> None:
        assert channel == self.channel
        self.queue.put_nowait(payload)

    async def next(self) -> str:
        return await asyncio.wait_for(self.queue.get(), TIMEOUT)

    async def until_sentinel(self, writer: asyncpg.Connection) -> list[str]:
        """Everything received before a sentinel sent now by the writer."""
        await writer.execute("select pg_notify($1, $2)", self.channel, SENTINEL)
        received = []
        while (payload := await self.next()) != SENTINEL:
            received.append(payload)
        return received


@pytest.fixture
async def listen_conn(db_url) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(db_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def touches(listen_conn) -> Inbox:
    inbox = Inbox("touch_runs")
    await listen_conn.add_listener("touch_runs", inbox.callback)
    return inbox


@pytest.fixture
async def events(listen_conn) -> Inbox:
    inbox = Inbox("core_memory_events")
    await listen_conn.add_listener("core_memory_events", inbox.callback)
    return inbox


@pytest.fixture
async def ids(db) -> tuple[uuid.UUID, uuid.UUID]:
    account_id = await factories.account(db)
    lead_id = await factories.lead(db, account_id, phone="+14155550123")
    return account_id, lead_id


# ---------------------------------------------------------------- touch_runs


async def test_sentinel_alone_means_nothing_else_arrived(db, touches):
    assert await touches.until_sentinel(db) == []


async def test_inserting_a_queued_touch_notifies(db, touches, ids):
    await factories.touch(db, *ids)
    payload = await touches.next()
    assert payload and len(payload) < 64
    assert await touches.until_sentinel(db) == []


async def test_inserting_a_future_scheduled_touch_notifies(db, touches, ids):
    await factories.touch(db, *ids, status="scheduled", scheduled_in_s=3600)
    await touches.next()
    assert await touches.until_sentinel(db) == []


async def test_inserting_a_finished_touch_does_not_notify(db, touches, ids):
    for status in ("sent", "failed", "canceled"):
        await factories.touch(db, *ids, status=status)
    assert await touches.until_sentinel(db) == []


async def test_failed_touch_requeued_notifies(db, touches, ids):
    touch_id = await factories.touch(db, *ids, status="failed")
    assert await touches.until_sentinel(db) == []
    await db.execute("update touch_runs set status = 'queued', updated_at = now() where id = $1", touch_id)
    await touches.next()
    assert await touches.until_sentinel(db) == []


async def test_updating_to_sent_or_processing_does_not_notify(db, touches, ids):
    touch_id = await factories.touch(db, *ids)
    assert len(await touches.until_sentinel(db)) == 1  # the insert's wake-up
    await db.execute(
        "update touch_runs set status = 'processing', locked_by = 'w1', locked_until = now() + interval '2 min'"
        " where id = $1",
        touch_id,
    )
    await db.execute(
        "update touch_runs set status = 'sent', sent_at = now(), locked_by = null, locked_until = null where id = $1",
        touch_id,
    )
    assert await touches.until_sentinel(db) == []
    # A later notifying action still arrives, alone.
    await factories.touch(db, *ids, channel="email")
    assert len(await touches.until_sentinel(db)) == 1


async def test_hundred_touches_in_one_transaction_notify_once_with_a_small_constant_payload(db, touches, ids):
    account_id, lead_id = ids
    phone = await db.fetchval("select phone from leads where id = $1", lead_id)
    async with db.transaction():
        for i in range(100):
            await factories.touch(db, account_id, lead_id, payload_=factories.payload("sms", body=f"Hola {i} {phone}"))
    received = await touches.until_sentinel(db)
    assert len(received) == 1, received
    payload = received[0]
    assert len(payload) < 64
    assert phone not in payload and phone.lstrip("+") not in payload
    assert "Hola" not in payload
    assert await db.fetchval("select count(*) from touch_runs") == 100

    # The payload is a constant: another touch, another transaction, the same payload.
    await factories.touch(db, account_id, lead_id, channel="email")
    assert await touches.until_sentinel(db) == [payload]


async def test_multi_row_insert_statement_notifies_once(db, touches, ids):
    account_id, lead_id = ids
    await db.execute(
        """insert into touch_runs (account_id, lead_id, channel, status, scheduled_at)
           select $1, $2, 'sms', case when g % 2 = 0 then 'queued' else 'scheduled' end,
                  now() + make_interval(mins => g)
           from generate_series(1, 50) g""",
        account_id, lead_id,
    )
    assert len(await touches.until_sentinel(db)) == 1


async def test_rolled_back_insert_does_not_notify(db, touches, ids):
    with pytest.raises(RuntimeError):
        async with db.transaction():
            await factories.touch(db, *ids)
            raise RuntimeError("abort")
    assert await touches.until_sentinel(db) == []
    assert await db.fetchval("select count(*) from touch_runs") == 0


# ---------------------------------------------------------------- touch_scheduled events


async def test_inserting_a_touch_writes_a_touch_scheduled_event(db, ids):
    account_id, lead_id = ids
    touch_id = await factories.touch(db, account_id, lead_id, channel="whatsapp", idempotency_key="k1")
    rows = await db.fetch("select * from core_memory_events where event_type = 'touch_scheduled'")
    assert len(rows) == 1
    event = rows[0]
    assert event["lead_id"] == lead_id
    assert event["channel"] == "whatsapp"
    assert event["direction"] == "internal"
    assert event["payload"]["touch_run_id"] == str(touch_id)
    # Found by the touch_run_id lookup the daemon uses.
    found = await db.fetchval(
        "select count(*) from core_memory_events where payload->>'touch_run_id' = $1", str(touch_id)
    )
    assert found == 1


async def test_every_touch_of_a_statement_gets_its_event(db, ids):
    account_id, lead_id = ids
    inserted = await db.fetch(
        """insert into touch_runs (account_id, lead_id, channel)
           select $1, $2, c from unnest(array['voice', 'whatsapp', 'sms', 'email']) c returning id""",
        account_id, lead_id,
    )
    logged = await db.fetch(
        "select payload->>'touch_run_id' as id from core_memory_events where event_type = 'touch_scheduled'"
    )
    assert sorted(r["id"] for r in logged) == sorted(str(r["id"]) for r in inserted)


async def test_touch_scheduled_event_is_not_actionable(db, events, ids):
    await factories.touch(db, *ids)
    assert await events.until_sentinel(db) == []
    assert await db.fetchval("select count(*) from event_reactions") == 0


# ---------------------------------------------------------------- core_memory_events


ACTIONABLE = [
    ("touch_sent", "outbound"),
    ("touch_failed", "outbound"),
    ("reply_positive", "inbound"),
    ("reply_negative", "inbound"),
    ("appointment_booked", "inbound"),
    ("do_not_contact", "inbound"),
    ("unsubscribe", "inbound"),
    # The stop signals act even when another system files them with an unexpected direction.
    ("unsubscribe", "internal"),
    ("appointment_booked", None),
    # Any inbound event is acted on.
    ("sms_received", "inbound"),
]


@pytest.mark.parametrize(("event_type", "direction"), ACTIONABLE)
async def test_actionable_event_notifies_and_is_filed(db, events, ids, event_type, direction):
    _, lead_id = ids
    event_id = await factories.event(db, lead_id, event_type, direction=direction, channel="sms")
    payload = await events.next()
    assert len(payload) < 64 and str(lead_id) not in payload
    assert await events.until_sentinel(db) == []
    filed = await db.fetch("select * from event_reactions")
    assert len(filed) == 1
    assert filed[0]["event_id"] == event_id
    assert filed[0]["lead_id"] == lead_id
    assert filed[0]["event_type"] == event_type


@pytest.mark.parametrize(
    ("event_type", "direction"),
    [("touch_scheduled", "internal"), ("fallback_decision", "internal"), ("touch_canceled", "internal"),
     ("reactivation_created", "internal"), ("note", "outbound"), ("note", None)],
)
async def test_non_actionable_event_files_nothing(db, events, ids, event_type, direction):
    _, lead_id = ids
    await factories.event(db, lead_id, event_type, direction=direction)
    assert await events.until_sentinel(db) == []
    assert await db.fetchval("select count(*) from event_reactions") == 0
    assert await db.fetchval("select count(*) from core_memory_events where event_type = $1", event_type) == 1


async def test_many_events_in_one_statement_file_each_and_notify_once(db, events, ids):
    _, lead_id = ids
    inserted = await db.fetch(
        """insert into core_memory_events (lead_id, event_type, direction)
           select $1, t, d from (values ('touch_sent', 'outbound'), ('reply_negative', 'inbound'),
                                        ('fallback_decision', 'internal'), ('unsubscribe', 'inbound')) v(t, d)
           returning id, event_type""",
        lead_id,
    )
    assert len(await events.until_sentinel(db)) == 1
    filed = {r["event_id"]: r["event_type"] for r in await db.fetch("select * from event_reactions")}
    expected = {r["id"]: r["event_type"] for r in inserted if r["event_type"] != "fallback_decision"}
    assert filed == expected


async def test_rolled_back_event_files_nothing_and_does_not_notify(db, events, ids):
    _, lead_id = ids
    with pytest.raises(RuntimeError):
        async with db.transaction():
            await factories.event(db, lead_id, "reply_positive")
            raise RuntimeError("abort")
    assert await events.until_sentinel(db) == []
    assert await db.fetchval("select count(*) from event_reactions") == 0
