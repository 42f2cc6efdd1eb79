"""The optional model behind Command OS's resolver (SPEC §18). Asked only when the deterministic rules find nothing
(NoMatch) and REVENUE_ASI_LLM_URL is set: one OpenAI-compatible chat completion that must answer with one JSON object
`{"intent": "<name>", "args": {…}}` (or `{"intent": null}`). Its answer is checked exactly as a typed command is —
an unknown intent, garbage, or arguments the intent's pydantic schema refuses are a CommandError (422) — and
`run_command` never executes a write without the same confirmation: a write chosen by the model always comes back as
a preview (the API answers `resolved_by: "model"`, and the console confirms with the previewed intent and args).

No answer within REVENUE_ASI_LLM_TIMEOUT_S (5 s) — or no answer at all: unreachable, HTTP error — is
ModelUnavailable (503, with the deterministic examples). The key (REVENUE_ASI_LLM_API_KEY) goes only into the
request's Authorization header: never into a log line, an error or an answer (nor the URL, which may carry
credentials).

Plain httpx, not the `openai` package: httpx is already a dependency (SPEC §2), the protocol here is one POST of one
JSON document, and the openai client would add a dependency with its own retries and timeouts to switch off to keep
the 5 s budget exact."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import httpx

from listener.intents.errors import CommandError, ModelUnavailable, NoMatch
from listener.intents.registry import EXAMPLES, INTENTS, Resolved, check_args
from listener.rules import safejson
from listener.settings import Settings

log = logging.getLogger(__name__)
MAX_ANSWER_BYTES = 256 * 1024
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)


def chat_url(url: str) -> str:
    """REVENUE_ASI_LLM_URL as the chat completions endpoint: the full URL as given, or its base (…/v1) + path."""
    url = url.strip().rstrip("/")
    return url if url.endswith("/chat/completions") else url + "/chat/completions"


def _arguments(name: str) -> str:
    schema = INTENTS[name].schema.model_json_schema()
    properties = schema.get("properties", {})
    if not properties:
        return "{}"
    required = set(schema.get("required", []))
    parts = []
    for field, spec in properties.items():
        kind = spec.get("format") or spec.get("type") or "|".join(
            str(s.get("format") or s.get("type")) for s in spec.get("anyOf", []))
        note = spec.get("description")
        parts.append(f'"{field}": {kind}{"" if field in required else " (optional)"}{f" — {note}" if note else ""}')
    return "{" + ", ".join(parts) + "}"


def instructions() -> str:
    """The system message: every intent with its arguments and an example in each language."""
    lines = ["You turn an operator's request to Revenue ASI (an outreach system: campaigns, leads, touches) into one "
             "command. Answer with one JSON object and nothing else: "
             '{"intent": "<one of the names below>", "args": {...}}, or {"intent": null} when no command fits. '
             "Ids are UUIDs copied from the request; never invent one. A campaign may be named by its id or its name. "
             "Commands:"]
    for name, intent in INTENTS.items():
        examples = " / ".join(EXAMPLES.get(name, ()))
        lines.append(f"- {name}: {intent.summary}. args {_arguments(name)}. e.g. {examples}")
    return "\n".join(lines)


async def ask_model(text: str, settings: Settings) -> Resolved:
    """Ask the model which intent `text` is; its answer checked by the intent's schema (CommandError when it cannot
    be used, NoMatch when it says none fits, ModelUnavailable when it does not answer in time)."""
    assert settings.llm_url is not None
    timeout = settings.llm_timeout_s
    body: dict[str, Any] = {"temperature": 0, "messages": [{"role": "system", "content": instructions()},
                                                           {"role": "user", "content": text}]}
    if settings.llm_model:
        body["model"] = settings.llm_model
    headers = {"Accept": "application/json"}
    if settings.llm_api_key is not None:
        headers["Authorization"] = f"Bearer {settings.llm_api_key.get_secret_value()}"
    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            # the whole exchange within the budget: httpx's own timeout is per phase (connect, each read)
            response = await asyncio.wait_for(client.post(chat_url(settings.llm_url), json=body, headers=headers),
                                              timeout)
    except (TimeoutError, httpx.TimeoutException):
        log.warning("Command OS: the model did not answer within %g s", timeout)
        raise ModelUnavailable(f"the model did not answer within {timeout:g} s") from None
    except httpx.HTTPError as exc:
        log.warning("Command OS: the model could not be reached (%s)", type(exc).__name__)
        raise ModelUnavailable(f"the model could not be reached ({type(exc).__name__})") from None
    if response.status_code != 200:
        log.warning("Command OS: the model answered HTTP %d", response.status_code)
        raise ModelUnavailable(f"the model answered HTTP {response.status_code}")
    choice = _choice(response.content)
    intent = choice.get("intent")
    if intent is None:
        raise NoMatch("no known intent matches this text (nor did the model find one)")
    if not isinstance(intent, str) or intent not in INTENTS:
        raise CommandError(f"the model chose an unknown intent {str(intent)[:60]!r}")
    args = choice.get("args")
    args = {} if args is None else args
    check_args(intent, args)  # the same check as a typed command: CommandError (422) before anything runs
    log.info("Command OS: the model chose %s", intent)
    return Resolved(intent, dict(args), by="model")


def _choice(raw: bytes) -> dict[str, Any]:
    """The JSON object in the completion's first message, or CommandError."""
    if len(raw) > MAX_ANSWER_BYTES:
        raise CommandError("the model's answer is too long")
    try:
        completion = safejson.loads(raw)
        content = completion["choices"][0]["message"]["content"]
    except (safejson.UnsafeJson, KeyError, IndexError, TypeError):
        raise CommandError("the model's answer is not a chat completion") from None
    if not isinstance(content, str):
        raise CommandError("the model's answer has no text")
    content = _FENCE.sub("", content.strip())
    start, end = content.find("{"), content.rfind("}")
    if start < 0 or end < start:
        raise CommandError("the model did not answer with a JSON object")
    try:
        choice = safejson.loads(content[start:end + 1])
    except safejson.UnsafeJson:
        raise CommandError("the model did not answer with a JSON object") from None
    if not isinstance(choice, dict):
        raise CommandError("the model did not answer with a JSON object")
    return choice


__all__ = ["ask_model", "chat_url", "instructions"]
