"""The optional model behind Command OS (SPEC §18), against a loopback fake of the OpenAI chat completions protocol
(an aiohttp server on 127.0.0.1 in the test; no network, no real model): asked only when the rules find nothing;
its answer checked by the intent's schema (garbage, an unknown intent, bad arguments → 422); a write it chooses is
never run without the confirmation (always a preview); no answer in time → 503 with the examples; the key goes only
into the Authorization header — never into a log line or an answer."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from listener.intents.llm import chat_url
from tests import factories
from tests.cli_runner import cli, cli_env
from tests.test_orchestrators import campaign, step_payload
from tests.web_harness import web_client

KEY = "sk-test-" + uuid.uuid4().hex  # must never leave in a log line or an answer
MODEL = "fake-model-1"


@dataclass
class FakeModel:
    """Answers each chat completion with `reply(request body)`: a dict (the message's JSON), a str (the message's
    text as is), or a web.Response; `hang` makes it never answer until the test ends."""

    reply: Callable[[dict[str, Any]], Any] = lambda body: {"intent": None}
    hang: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({"path": request.path, "authorization": request.headers.get("Authorization"),
                              "body": body})
        if self.hang:
            await self.released.wait()  # the client gives up first (its timeout), then the test releases it
        answer = self.reply(body)
        if isinstance(answer, web.StreamResponse):
            return answer
        content = answer if isinstance(answer, str) else json.dumps(answer)
        return web.json_response({"id": "chatcmpl-1", "object": "chat.completion", "model": body.get("model"),
                                  "choices": [{"index": 0, "finish_reason": "stop",
                                               "message": {"role": "assistant", "content": content}}]})


@asynccontextmanager
async def fake_model(**kwargs: Any) -> AsyncIterator[FakeModel]:
    fake = FakeModel(**kwargs)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield fake
    finally:
        fake.released.set()
        await runner.cleanup()


def model_settings(fake: FakeModel, **extra: Any) -> dict[str, Any]:
    return {"llm_url": fake.url, "llm_model": MODEL, "llm_api_key": KEY, "llm_timeout_s": 2.0, **extra}


async def post(client: Any, body: dict[str, Any]) -> tuple[int, dict[str, Any], str]:
    response = await client.post("/api/command-os", json=body)
    text = await response.text()
    return response.status, json.loads(text), text


def test_the_url_may_be_the_base_or_the_full_endpoint() -> None:
    assert chat_url("http://127.0.0.1:1/v1") == "http://127.0.0.1:1/v1/chat/completions"
    assert chat_url("http://127.0.0.1:1/v1/") == "http://127.0.0.1:1/v1/chat/completions"
    assert chat_url("https://x.example/v1/chat/completions") == "https://x.example/v1/chat/completions"


async def test_a_read_the_model_chooses_runs_and_the_key_stays_in_the_header(db, db_url, caplog):
    caplog.set_level(logging.DEBUG)
    account = await factories.account(db)
    await campaign(db, account, name="Spring")
    async with fake_model(reply=lambda body: {"intent": "campaign.list", "args": {}}) as fake:
        async with web_client(db_url, **model_settings(fake)) as client:
            status, body, raw = await post(client, {"text": "what are we running at the moment?"})
            assert status == 200 and body["intent"] == "campaign.list" and body["resolved_by"] == "model"
            assert [c["name"] for c in body["result"]["campaigns"]] == ["Spring"]
            # the rules first: text they place never reaches the model, nor text they refuse
            status, body2, raw2 = await post(client, {"text": "estado del sistema"})
            assert status == 200 and body2["resolved_by"] == "rules"
            status, body3, raw3 = await post(client, {"text": "borra todo"})
            assert status == 422
    (asked,) = fake.requests
    assert asked["path"] == "/v1/chat/completions" and asked["authorization"] == f"Bearer {KEY}"
    assert asked["body"]["model"] == MODEL and asked["body"]["temperature"] == 0
    system, user = asked["body"]["messages"]
    assert user == {"role": "user", "content": "what are we running at the moment?"}
    assert "campaign.pause" in system["content"] and KEY not in system["content"]
    for text in (raw, raw2, raw3, caplog.text):
        assert KEY not in text


async def test_a_write_the_model_chooses_is_only_previewed_even_with_confirm(db, db_url):
    account = await factories.account(db)
    spring = await campaign(db, account, name="Spring", steps=[(0, step_payload("sms"))])
    async with fake_model(reply=lambda body: {"intent": "campaign.pause", "args": {"campaign_id": "spring"}}) as fake:
        async with web_client(db_url, **model_settings(fake)) as client:
            text = "could you put Spring on ice for a bit"
            status, body, _ = await post(client, {"text": text, "confirm": True})
            assert status == 200 and body["confirm_required"] is True and body["resolved_by"] == "model"
            assert body["intent"] == "campaign.pause" and body["args"] == {"campaign_id": str(spring)}
            assert await db.fetchval("select status from campaigns where id = $1", spring) == "active"
            assert await db.fetchval("select count(*) from command_runs") == 0
            status, done, _ = await post(client, {"intent": body["intent"], "args": body["args"], "confirm": True,
                                                  "text": text})
            assert status == 200 and "result" in done
    assert await db.fetchval("select status from campaigns where id = $1", spring) == "paused"
    run = await db.fetchrow("select actor, text, intent from command_runs")
    assert tuple(run) == ("dashboard", text, "campaign.pause")
    assert len(fake.requests) == 1  # the confirmation named the intent: the model was not asked again


@pytest.mark.parametrize(("reply", "why"), [
    ("Sure! You probably want to pause that campaign.", "JSON object"),
    ("```json\n[\"campaign.pause\"]\n```", "JSON object"),
    ({"intent": "campaign.delete", "args": {"campaign_id": "Spring"}}, "unknown intent"),
    ({"intent": "touch.cancel", "args": {"touch_id": "the last one"}}, "touch_id must be a uuid"),
    ({"intent": "lead.stop", "args": {"lead_id": str(uuid.uuid4()), "reason": "x", "force": True}}, "force"),
    ({"intent": None}, "no known intent"),
    (lambda: web.Response(text="<html>oops</html>", content_type="text/html"), "not a chat completion"),
], ids=["prose", "array", "unknown-intent", "bad-args", "extra-arg", "none", "not-json"])
async def test_an_answer_that_cannot_be_used_is_a_422(db_url, reply, why):
    answer = reply if not callable(reply) else None
    async with fake_model(reply=(lambda body: reply()) if callable(reply) else (lambda body: answer)) as fake:
        async with web_client(db_url, **model_settings(fake)) as client:
            status, body, raw = await post(client, {"text": "do the thing with the stuff"})
    assert status == 422 and why in body["error"], body
    assert len(body["known_intents"]) == 11 and "campaign.pause" in body["examples"]
    assert len(fake.requests) == 1 and KEY not in raw


async def test_no_answer_in_time_is_a_503_with_the_examples(db_url, caplog):
    caplog.set_level(logging.DEBUG)
    async with fake_model(hang=True) as fake:
        async with web_client(db_url, **model_settings(fake, llm_timeout_s=0.2)) as client:
            status, body, raw = await post(client, {"text": "do the thing with the stuff"})
    assert status == 503 and "did not answer within 0.2 s" in body["error"]
    assert body["examples"]["lead.stop"] == ["stop lead <lead id> because <reason>",
                                             "deja de contactar al lead <lead id> porque <motivo>"]
    assert KEY not in raw and KEY not in caplog.text and fake.url not in raw


async def test_an_unreachable_model_is_a_503(db_url):
    async with fake_model() as fake:
        url = fake.url
    async with web_client(db_url, llm_url=url, llm_api_key=KEY) as client:  # the port is closed now
        status, body, raw = await post(client, {"text": "do the thing with the stuff"})
    assert status == 503 and "could not be reached" in body["error"] and KEY not in raw


async def test_without_a_model_the_rules_alone_answer_422(db_url):
    async with web_client(db_url) as client:
        status, body, _ = await post(client, {"text": "do the thing with the stuff"})
    assert status == 422 and body["error"] == "no known intent matches this text"


async def test_the_cli_asks_the_model_and_never_runs_its_write_unseen(db, db_url):
    account = await factories.account(db)
    spring = await campaign(db, account, name="Spring")
    async with fake_model(reply=lambda body: {"intent": "campaign.pause", "args": {"campaign_id": "Spring"}}) as fake:
        env = cli_env(db_url, REVENUE_ASI_LLM_URL=fake.url + "/chat/completions", REVENUE_ASI_LLM_API_KEY=KEY,
                      REVENUE_ASI_LLM_MODEL=MODEL)
        result = await cli("command", "put", "Spring", "on", "ice", "--yes", "--json", env=env)
        assert result.rc == 3, result.err  # --yes does not cover a write the model chose
        preview = json.loads(result.out)
        assert preview["resolved_by"] == "model" and preview["confirm_required"] is True
        assert preview["args"] == {"campaign_id": str(spring)}
        assert KEY not in result.out and KEY not in result.err
        fake.hang = True
        slow = await cli("command", "put", "Spring", "on", "ice", env={**env, "REVENUE_ASI_LLM_TIMEOUT_S": "0.2"})
        assert slow.rc == 1 and "did not answer within 0.2 s" in slow.err and "pausa la campaña" in slow.err
    assert fake.requests[0]["authorization"] == f"Bearer {KEY}"
    assert await db.fetchval("select status from campaigns where id = $1", spring) == "active"
    assert await db.fetchval("select count(*) from command_runs") == 0
