"""Command OS v2 intents (SPEC §18) on the real database, through POST /api/command-os (real HTTP) and the real
`revenue-asi` CLI: a write's preview changes nothing and writes no command_runs row; confirmed, it changes everything
it said in one transaction with its command_runs row (actor `dashboard` or `cli`); the errors are 404 / 409 / 422,
never a 500, and the CLI and the API give the same documents."""

from __future__ import annotations

import json
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from listener.engine.orchestrators import orchestrate_touches
from listener.engine.reactions import drain_reactions
from listener.intents.command_os import KNOWN_INTENTS, check_args, run_command
from listener.store.database import create_pool
from tests import factories
from tests.cli_runner import cli, cli_env
from tests.test_orchestrators import campaign, enroll, step_payload
from tests.web_harness import web_client

NAME = "Revisión gratuita"


@dataclass
class World:
    account: uuid.UUID
    campaign: uuid.UUID  # "Revisión gratuita": sms then email
    other: uuid.UUID  # "Spring", same account
    ana: uuid.UUID
    bob: uuid.UUID
    ana_touch: uuid.UUID  # queued, campaign step 1
    bob_touch: uuid.UUID  # scheduled in an hour, campaign step 1
    other_touch: uuid.UUID  # queued, of the other campaign


async def world(db: asyncpg.Connection) -> World:
    account = await factories.account(db)
    camp = await campaign(db, account, name=NAME, steps=[(0, step_payload("sms")), (60, step_payload("email"))])
    other = await campaign(db, account, name="Spring")
    ana = await factories.lead(db, account, full_name="Ana Pérez")
    bob = await factories.lead(db, account, full_name="Bob Stone", phone="+14155550188", email="bob@example.com")
    for lead in (ana, bob):
        await enroll(db, camp, lead)
    await enroll(db, other, ana)
    ana_touch = await factories.touch(db, account, ana, campaign_id=camp, idempotency_key=f"step:{camp}:{ana}:1")
    bob_touch = await factories.touch(db, account, bob, campaign_id=camp, status="scheduled", scheduled_in_s=3600,
                                      idempotency_key=f"step:{camp}:{bob}:1")
    other_touch = await factories.touch(db, account, ana, campaign_id=other, channel="email")
    return World(account, camp, other, ana, bob, ana_touch, bob_touch, other_touch)


async def statuses(db: asyncpg.Connection, *touches: uuid.UUID) -> list[str]:
    return [await db.fetchval("select status from touch_runs where id = $1", t) for t in touches]


async def command_runs(db: asyncpg.Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in await db.fetch("select * from command_runs order by created_at, id")]


async def post(client: Any, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = await client.post("/api/command-os", json=body)
    return response.status, await response.json()


async def cli_json(db_url: str, *args: str) -> tuple[int, Any, str]:
    result = await cli(*args, "--json", env=cli_env(db_url))
    return result.rc, (json.loads(result.out) if result.out.strip() else None), result.err


# --- campaign.list ------------------------------------------------------------------------------------------


async def test_campaign_list_is_the_same_document_through_the_api_and_the_cli(db, db_url):
    w = await world(db)
    await db.execute("update campaign_leads set status = 'stopped', stop_reason = 'reply_positive' "
                     "where lead_id = $1 and campaign_id = $2", w.bob, w.campaign)
    async with web_client(db_url) as client:
        status, api = await post(client, {"text": "lista las campañas"})
    assert status == 200 and api["intent"] == "campaign.list" and api["args"] == {} and "confirm_required" not in api
    rc, doc, err = await cli_json(db_url, "campaign", "list")
    assert rc == 0, err
    assert doc == {k: v for k, v in api.items() if k != "resolved_by"}
    rc, typed, err = await cli_json(db_url, "command", "lista", "las", "campañas")
    assert rc == 0 and typed == api
    by_name = {c["name"]: c for c in api["result"]["campaigns"]}
    review = by_name[NAME]
    assert review["status"] == "active" and review["steps"] == 2 and review["account_name"] == "Acme Dental"
    assert review["campaign_leads"] == {"active": 1, "paused": 0, "completed": 0, "stopped": 1}
    assert [(s["step"], s["primary_channel"], s["active"], s["stopped"]) for s in review["per_step"]] == \
        [(1, "sms", 1, 1), (2, "email", 0, 0)]
    assert await command_runs(db) == []  # a read is not recorded


# --- campaign.pause / campaign.resume -------------------------------------------------------------------------


async def test_pause_previews_then_pauses_in_one_transaction_with_its_command_run(db, db_url):
    w = await world(db)
    processing = await factories.touch(db, w.account, w.bob, campaign_id=w.campaign, channel="voice")
    await db.execute("update touch_runs set status = 'processing', locked_by = 'w1', "
                     "locked_until = now() + interval '1 minute' where id = $1", processing)
    text = "pausa la campaña revision gratuita"
    async with web_client(db_url) as client:
        status, preview = await post(client, {"text": text})
        assert status == 200 and preview["confirm_required"] is True and preview["intent"] == "campaign.pause"
        assert preview["args"] == {"campaign_id": str(w.campaign)}  # the name, resolved: confirm runs exactly this
        assert preview["resolved_by"] == "rules"
        p = preview["preview"]
        assert p["campaign"]["name"] == NAME and p["status"] == {"from": "active", "to": "paused"}
        assert p["touches_to_cancel"] == 2 and p["touches_to_cancel_by_channel"] == {"sms": 2}
        assert p["in_flight"] == 1
        # the preview changed nothing and recorded nothing
        assert await db.fetchval("select status from campaigns where id = $1", w.campaign) == "active"
        assert await statuses(db, w.ana_touch, w.bob_touch) == ["queued", "scheduled"]
        assert await command_runs(db) == []

        status, done = await post(client, {"intent": preview["intent"], "args": preview["args"], "confirm": True,
                                           "text": text})
    assert status == 200 and done["intent"] == "campaign.pause" and "confirm_required" not in done
    r = done["result"]
    assert r["touches_canceled"] == 2 and r["status"] == {"from": "active", "to": "paused"} and r["in_flight"] == 1
    assert await db.fetchval("select status from campaigns where id = $1", w.campaign) == "paused"
    assert await statuses(db, w.ana_touch, w.bob_touch, processing, w.other_touch) == \
        ["canceled", "canceled", "processing", "queued"]
    assert await db.fetchval("select error from touch_runs where id = $1", w.ana_touch) == "canceled: campaign_paused"
    events = await db.fetch("select event_source, payload from core_memory_events where event_type = 'touch_canceled'"
                            " order by payload ->> 'touch_run_id'")
    assert sorted(e["payload"]["touch_run_id"] for e in events) == sorted([str(w.ana_touch), str(w.bob_touch)])
    assert {(e["event_source"], e["payload"]["reason"], e["payload"]["command_run_id"]) for e in events} == \
        {("command_os", "campaign_paused", done["command_run_id"])}
    (run,) = await command_runs(db)
    assert str(run["id"]) == done["command_run_id"] and run["actor"] == "dashboard" and run["text"] == text
    assert run["intent"] == "campaign.pause" and run["args"] == {"campaign_id": str(w.campaign)}
    assert run["preview"]["touches_to_cancel"] == 2 and run["result"]["touches_canceled"] == 2
    assert run["error"] is None

    # the touch orchestrator creates nothing for a paused campaign, even for a lead enrolled after the pause
    eva = await factories.lead(db, w.account, full_name="Eva", phone="+14155550199", email="eva@example.com")
    await enroll(db, w.campaign, eva)
    async with db.transaction():
        created = await orchestrate_touches(db, None)
    assert [t for t in created["touches"] if t["campaign_id"] == str(w.campaign)] == []


async def test_resume_recreates_what_the_pause_canceled_once(db, db_url):
    w = await world(db)
    env = cli_env(db_url)
    paused = await cli("campaign", "pause", "Revisión", "gratuita", "--yes", env=env)  # a name in two words
    assert paused.rc == 0, paused.err
    assert "campaign.pause" in paused.out and "touches_canceled: 2" in paused.out
    # while paused: a lead enrolled (the orchestrator's, once active) and a lead suppressed (never resumed)
    eva = await factories.lead(db, w.account, full_name="Eva", phone="+14155550199", email="eva@example.com")
    await enroll(db, w.campaign, eva)
    await factories.event(db, w.bob, "do_not_contact")

    rc, preview, err = await cli_json(db_url, "campaign", "resume", w.campaign.hex)  # not confirmed: stdin is closed
    assert rc == 3 and "not confirmed: nothing changed" in err
    assert preview["preview"]["touches_to_recreate"] == 1 and preview["preview"]["skipped_suppressed"] == 1
    assert preview["preview"]["not_started"] == 1 and preview["preview"]["status"] == {"from": "paused", "to": "active"}
    assert await db.fetchval("select status from campaigns where id = $1", w.campaign) == "paused"

    rc, done, err = await cli_json(db_url, "campaign", "resume", NAME, "--yes")
    assert rc == 0, err
    r = done["result"]
    assert r["touches_recreated"] == 1 and r["skipped_suppressed"] == 1 and r["not_started"] == 1
    (again,) = r["touches"]
    row = await db.fetchrow("select * from touch_runs where id = $1", uuid.UUID(again["touch_run_id"]))
    assert (row["lead_id"], row["campaign_id"], row["step"], row["channel"], row["status"]) == \
        (w.ana, w.campaign, 1, "sms", "queued")
    assert row["idempotency_key"] == f"resume:{w.ana_touch}"
    assert await db.fetchval("select status from campaigns where id = $1", w.campaign) == "active"
    runs = await command_runs(db)
    assert [(x["intent"], x["actor"], x["error"]) for x in runs] == [("campaign.pause", "cli", None),
                                                                     ("campaign.resume", "cli", None)]

    rc, twice, err = await cli_json(db_url, "command", "reanuda la campaña Revisión gratuita", "--yes")
    assert rc == 0, err
    assert twice["result"]["touches_recreated"] == 0 and twice["result"]["status"]["from"] == "active"
    assert await db.fetchval("select count(*) from touch_runs where campaign_id = $1 and lead_id = $2",
                             w.campaign, w.ana) == 2
    assert (await command_runs(db))[-1]["text"] == "reanuda la campaña Revisión gratuita"

    async with db.transaction():  # the lead enrolled while paused: the orchestrator's, now that it is active
        created = await orchestrate_touches(db, None)
    assert [t["lead_id"] for t in created["touches"] if t["campaign_id"] == str(w.campaign)] == [str(eva)]


async def test_a_confirmed_write_is_one_transaction_with_its_record(db, db_url):
    """When the command_runs row cannot be written, the pause it records does not happen either."""
    w = await world(db)
    await db.execute("""create function refuse_command_run() returns trigger language plpgsql as $$
                        begin raise exception 'no record today'; end $$;
                        create trigger refuse before insert on command_runs
                        for each row execute function refuse_command_run()""")

    @asynccontextmanager
    async def begin(readonly: bool) -> Any:
        async with db.transaction(readonly=readonly):
            yield db

    with pytest.raises(asyncpg.RaiseError, match="no record today"):
        await run_command(begin, "campaign.pause", check_args("campaign.pause", {"campaign_id": NAME}),
                          confirm=True, actor="cli")
    assert await db.fetchval("select status from campaigns where id = $1", w.campaign) == "active"
    assert await statuses(db, w.ana_touch, w.bob_touch) == ["queued", "scheduled"]
    assert await db.fetchval("select count(*) from core_memory_events where event_type = 'touch_canceled'") == 0


async def test_campaign_names_and_their_errors(db, db_url):
    w = await world(db)
    elsewhere = await factories.account(db, "Beta Clinic", providers=False)
    twin = await campaign(db, elsewhere, name="spring")  # the same name as w.other, another account
    archived = await campaign(db, w.account, name="Old promo", status="archived")
    async with web_client(db_url) as client:
        status, body = await post(client, {"text": "pause campaign Spring"})
        assert status == 409 and {c["id"] for c in body["candidates"]} == {str(w.other), str(twin)}
        assert {c["account_name"] for c in body["candidates"]} == {"Acme Dental", "Beta Clinic"}
        status, body = await post(client, {"text": "pausa la campaña No Existe"})
        assert status == 404 and "No Existe" in body["error"]
        status, body = await post(client, {"intent": "campaign.pause", "args": {"campaign_id": str(uuid.uuid4())}})
        assert status == 404
        status, body = await post(client, {"intent": "campaign.resume", "args": {"campaign_id": str(archived)},
                                           "confirm": True})
        assert status == 409 and "archived" in body["error"]
        status, body = await post(client, {"text": "funnel for campaign revision"})  # the words of one name
        assert status == 200 and body["intent"] == "report.funnel" and body["args"]["campaign_id"] == str(w.campaign)
        for bad in ({"intent": "campaign.pause"}, {"intent": "campaign.pause", "args": {"campaign_id": 7}},
                    {"intent": "lead.stop", "args": {"lead_id": str(w.ana)}}, {"text": "borra todo"},
                    {"text": "pausa"}, {"intent": "campaign.pause", "args": {"campaign_id": NAME}, "confirm": "yes"},
                    {"intent": "touch.cancel", "args": {"touch_id": "x"}, "confirm": True}):
            status, body = await post(client, bad)
            assert status == 422, bad
            assert body["known_intents"] == list(KNOWN_INTENTS) and len(body["known_intents"]) == 11
            assert body["examples"]["campaign.pause"] == ["pause campaign <name or id>", "pausa la campaña <nombre o id>"]
    # the refused ones above all failed before running: only the confirmed archived resume left a row, with its error
    (run,) = await command_runs(db)
    assert run["intent"] == "campaign.resume" and "archived" in run["error"] and run["result"] is None
    rc, doc, err = await cli_json(db_url, "campaign", "pause", "Spring", "--yes")
    assert rc == 1 and len(doc["candidates"]) == 2 and str(twin) in err
    bad = await cli("lead", "stop", "not-a-uuid", "--reason", "x", env=cli_env(db_url))
    assert bad.rc == 2 and "lead_id must be a uuid" in bad.err


# --- lead.stop / lead.suppress -------------------------------------------------------------------------------


async def test_lead_stop_stops_cadences_cancels_touches_and_ends_timers(db, db_url):
    w = await world(db)
    sent = await factories.touch(db, w.account, w.ana, campaign_id=w.other, channel="sms", status="sent")
    await db.execute("insert into pending_cooldowns (lead_id, campaign_id, step, latest_touch_id, due_at)"
                     " values ($1, $2, 1, $3, now() + interval '1 hour')", w.ana, w.other, sent)
    text = f"deja de contactar al lead {w.ana} porque pidió que lo llamemos en enero"
    async with web_client(db_url) as client:
        status, preview = await post(client, {"text": text})
        assert status == 200 and preview["intent"] == "lead.stop"
        assert preview["args"] == {"lead_id": str(w.ana), "reason": "pidió que lo llamemos en enero"}
        p = preview["preview"]
        assert p["cadences_to_stop"] == 2 and p["touches_to_cancel"] == 2 and p["cooldown_timers_to_end"] == 1
        assert p["touches_to_cancel_by_channel"] == {"sms": 1, "email": 1}
        assert await statuses(db, w.ana_touch, w.other_touch) == ["queued", "queued"]
        assert await command_runs(db) == []
        status, done = await post(client, {**preview, "confirm": True, "text": text})
    assert status == 200, done
    assert done["result"]["cadences_stopped"] == 2 and done["result"]["touches_canceled"] == 2
    rows = await db.fetch("select status, stop_reason from campaign_leads where lead_id = $1", w.ana)
    assert {(r["status"], r["stop_reason"]) for r in rows} == {("stopped", "pidió que lo llamemos en enero")}
    assert await statuses(db, w.ana_touch, w.other_touch, w.bob_touch) == ["canceled", "canceled", "scheduled"]
    stopped = await db.fetch("select payload from core_memory_events where event_type = 'cadence_stopped'")
    assert len(stopped) == 2 and {e["payload"]["command_run_id"] for e in stopped} == {done["command_run_id"]}
    assert await db.fetchval("select count(*) from pending_cooldowns where lead_id = $1", w.ana) == 0
    assert await db.fetchval("select error from touch_runs where id = $1", w.ana_touch) == "canceled: lead_stopped"
    (run,) = await command_runs(db)
    assert run["intent"] == "lead.stop" and run["actor"] == "dashboard" and run["result"]["cadences_stopped"] == 2

    rc, doc, err = await cli_json(db_url, "lead", "stop", str(w.bob), "--reason", "wrong number")
    assert rc == 3 and doc["preview"]["touches_to_cancel"] == 1  # not confirmed
    assert await statuses(db, w.bob_touch) == ["scheduled"]
    rc, doc, err = await cli_json(db_url, "lead", "stop", str(w.bob), "--reason", "wrong number", "--yes")
    assert rc == 0 and doc["result"]["touches_canceled"] == 1 and doc["result"]["stop_reason"] == "wrong number"
    assert await statuses(db, w.bob_touch) == ["canceled"]
    async with web_client(db_url) as client:
        status, body = await post(client, {"intent": "lead.stop", "args": {"lead_id": str(uuid.uuid4()),
                                                                           "reason": "x"}})
    assert status == 404


async def test_lead_suppress_writes_do_not_contact_and_cancels_at_once(db, db_url):
    w = await world(db)
    async with web_client(db_url) as client:
        status, preview = await post(client, {"text": f"no contactar al lead {w.ana}"})
        assert status == 200 and preview["intent"] == "lead.suppress"
        p = preview["preview"]
        assert p["events_to_write"] == {"do_not_contact": 1} and p["touches_to_cancel"] == 2
        assert p["cadences_to_stop"] == 2 and p["already_do_not_contact"] is False
        assert await db.fetchval("select count(*) from core_memory_events where event_type = 'do_not_contact'") == 0
        status, done = await post(client, {**preview, "confirm": True})
    assert status == 200 and done["result"]["touches_canceled"] == 2 and done["result"]["cadences_stopped"] == 2
    event = await db.fetchrow("select * from core_memory_events where event_type = 'do_not_contact'")
    assert event["event_source"] == "command_os" and event["lead_id"] == w.ana
    assert event["payload"]["command_run_id"] == done["command_run_id"]
    assert await db.fetchval("select is_unsubscribed from lead_suppression_status_v1 where lead_id = $1", w.ana)
    assert await statuses(db, w.ana_touch, w.other_touch, w.bob_touch) == ["canceled", "canceled", "scheduled"]
    assert {r["stop_reason"] for r in await db.fetch("select stop_reason from campaign_leads where lead_id = $1",
                                                     w.ana)} == {"do_not_contact"}
    pool = await create_pool(db_url)
    try:  # the daemon's own reaction to the event finds nothing left to do
        stats = await drain_reactions(pool)
    finally:
        await pool.close()
    assert stats.touches_canceled == 0 and stats.cadences_stopped == 0

    rc, again, err = await cli_json(db_url, "lead", "suppress", str(w.ana), "--yes")
    assert rc == 0, err
    assert again["result"]["already_do_not_contact"] is True and again["result"]["event_id"] is None
    assert await db.fetchval("select count(*) from core_memory_events where event_type = 'do_not_contact'") == 1
    assert [(r["intent"], r["actor"]) for r in await command_runs(db)] == [("lead.suppress", "dashboard"),
                                                                          ("lead.suppress", "cli")]


# --- touch.cancel -------------------------------------------------------------------------------------------


async def test_touch_cancel_and_what_cannot_be_canceled(db, db_url):
    w = await world(db)
    sent = await factories.touch(db, w.account, w.bob, channel="sms", status="sent")
    async with web_client(db_url) as client:
        status, preview = await post(client, {"text": f"cancela el touch {w.ana_touch}"})
        assert status == 200 and preview["preview"]["status"] == {"from": "queued", "to": "canceled"}
        assert await statuses(db, w.ana_touch) == ["queued"]
        status, done = await post(client, {**preview, "confirm": True})
        assert status == 200 and done["result"]["touches_canceled"] == 1
        assert await statuses(db, w.ana_touch, w.bob_touch) == ["canceled", "scheduled"]
        event = await db.fetchrow("select * from core_memory_events where event_type = 'touch_canceled'")
        assert event["event_source"] == "command_os" and event["payload"]["reason"] == "command_os"
        assert event["payload"]["touch_run_id"] == str(w.ana_touch)

        status, body = await post(client, {"intent": "touch.cancel", "args": {"touch_id": str(w.ana_touch)}})
        assert status == 409 and body["status"] == "canceled"  # the preview already says so
        status, body = await post(client, {"intent": "touch.cancel", "args": {"touch_id": str(sent)},
                                           "confirm": True})
        assert status == 409 and body["status"] == "sent" and "sent" in body["error"]
        status, body = await post(client, {"intent": "touch.cancel", "args": {"touch_id": str(uuid.uuid4())}})
        assert status == 404
    runs = await command_runs(db)
    assert [(r["intent"], r["error"] is None) for r in runs] == [("touch.cancel", True), ("touch.cancel", False)]
    assert "is sent" in runs[1]["error"] and runs[1]["result"] is None

    rc, doc, err = await cli_json(db_url, "touch", "cancel", str(w.bob_touch), "--yes")
    assert rc == 0 and doc["result"]["status"] == {"from": "scheduled", "to": "canceled"}
    rc, doc, err = await cli_json(db_url, "touch", "cancel", str(sent), "--yes")
    assert rc == 1 and doc["status"] == "sent" and "is sent" in err


# --- reactions.retry ---------------------------------------------------------------------------------------


async def test_reactions_retry_as_the_cli_command_does(db, db_url):
    w = await world(db)
    events = [await factories.event(db, lead, "unsubscribe") for lead in (w.ana, w.bob)]
    await db.execute("update event_reactions set failed_at = now(), attempts = 5, error = 'RuntimeError: boom'"
                     " where event_id = any($1::uuid[])", events)
    async with web_client(db_url) as client:
        status, preview = await post(client, {"text": f"retry reaction {events[0]} {uuid.uuid4()}"})
        assert status == 200 and preview["intent"] == "reactions.retry"
        assert preview["preview"]["reactions_to_requeue"] == 1 and len(preview["preview"]["not_set_aside"]) == 1
        assert preview["preview"]["reactions"][0]["error"] == "RuntimeError: boom"
        assert await db.fetchval("select count(*) from event_reactions where failed_at is not null") == 2
        status, done = await post(client, {**preview, "confirm": True})
    assert status == 200 and done["result"]["event_ids"] == [str(events[0])]
    assert await db.fetchval("select failed_at is null from event_reactions where event_id = $1", events[0])

    rc, doc, err = await cli_json(db_url, "command", "reintenta las reacciones", "--yes")
    assert rc == 0 and doc["args"] == {"all": True} and doc["result"]["event_ids"] == [str(events[1])]
    assert await db.fetchval("select count(*) from event_reactions where failed_at is not null") == 0
    assert [r["actor"] for r in await command_runs(db)] == ["dashboard", "cli"]


# --- report.funnel and lead.enroll ---------------------------------------------------------------------------


async def test_report_funnel_by_name_through_the_api_and_the_cli(db, db_url):
    w = await world(db)
    await db.execute("update touch_runs set status = 'sent', sent_at = now() where id = $1", w.ana_touch)
    async with web_client(db_url) as client:
        status, api = await post(client, {"text": "embudo de la campaña Revisión gratuita últimos 7 días"})
    assert status == 200 and api["args"] == {"campaign_id": str(w.campaign), "days": 7}
    rc, doc, err = await cli_json(db_url, "report", "funnel", NAME, "--days", "7")
    assert rc == 0, err
    assert doc["args"] == api["args"]
    for key in ("campaign_id", "days", "rows", "steps", "totals"):
        assert doc["result"][key] == api["result"][key], key
    assert api["result"]["totals"]["sent"] == 1
    assert await command_runs(db) == []


async def test_lead_enroll_through_command_os_now_previews_first(db, db_url):
    w = await world(db)
    eva = await factories.lead(db, w.account, full_name="Eva", phone="+14155550199", email="eva@example.com")
    async with web_client(db_url) as client:
        status, preview = await post(client, {"text": f"inscribe al lead {eva} en la campaña Revisión gratuita"})
        assert status == 200 and preview["confirm_required"] is True
        assert preview["args"] == {"lead_id": str(eva), "campaign_id": str(w.campaign)}
        assert preview["preview"]["first_step"]["primary_channel"] == "sms"
        assert await db.fetchval("select count(*) from campaign_leads where lead_id = $1", eva) == 0
        status, done = await post(client, {**preview, "confirm": True})
        assert status == 200 and done["result"]["status"] == "active"
        status, body = await post(client, {**preview, "confirm": True})
        assert status == 409 and "already enrolled" in body["error"]
    assert [(r["intent"], r["error"] is None) for r in await command_runs(db)] == [("lead.enroll", True),
                                                                                 ("lead.enroll", False)]


async def test_hostile_arguments_are_a_422_or_a_record_never_a_500(db, db_url):
    w = await world(db)
    async with web_client(db_url) as client:
        for args in ({"lead_id": str(w.ana), "reason": "nul \u0000 here"}, {"lead_id": str(w.ana), "reason": "\ud800"},
                     {"lead_id": str(w.ana), "reason": "x" * 201}):
            status, body = await post(client, {"intent": "lead.stop", "args": args, "confirm": True})
            assert status == 422 and "reason" in body["error"], body
        for ref in ("\u0000", "a\ud800", "x" * 201, ["Spring"], {"name": "Spring"}):
            status, body = await post(client, {"intent": "campaign.pause", "args": {"campaign_id": ref}})
            assert status == 422, ref
        status, body = await post(client, {"intent": "touch.cancel", "args": {"touch_id": str(w.ana_touch)},
                                           "confirm": True, "text": "cancela\u0000 el \ud800 touch" + "!" * 5000})
        assert status == 200
    (run,) = await command_runs(db)
    assert run["text"].startswith("cancela el  touch!") and len(run["text"]) < 1000
    assert await statuses(db, w.ana_touch) == ["canceled"]
