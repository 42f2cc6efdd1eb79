"""The Command OS text resolver (SPEC §14): deterministic English and Spanish phrasings → intent and arguments;
anything else is refused (the API answers 422 with the known intents)."""

from __future__ import annotations

import pytest

from listener.intents.command_os import KNOWN_INTENTS, CommandError, check_args, resolve

LEAD = "6f1c2a3b-1111-4a2b-9c3d-0123456789ab"
CAMP = "0a9b8c7d-2222-4e5f-8a7b-ba9876543210"

STATUS = [
    "system status", "status", "System Status?", "What's the system status?", "show me the status",
    "how is the system doing?", "health check", "give me an overview", "queue status please",
    "estado del sistema", "¿Cuál es el estado del sistema?", "dame el estado", "¿Cómo está el sistema?",
    "¿cómo va la cola?", "salud del sistema", "resumen del sistema", "Estado, por favor",
]
INSPECT = [
    f"inspect lead {LEAD}", f"show lead {LEAD}", f"lead {LEAD}", f"What about lead {LEAD}?",
    f"details for lead {LEAD}", f"look up lead {LEAD}", f"status of lead {LEAD}", f"Inspect lead {LEAD.upper()}",
    f"inspecciona el lead {LEAD}", f"muéstrame el lead {LEAD}", f"ver lead {LEAD}",
    f"información del prospecto {LEAD}", f"¿qué pasa con el cliente {LEAD}?", f"consulta el lead {LEAD}",
    f"estado del lead {LEAD}",
]
ENROLL = [
    f"enroll lead {LEAD} in campaign {CAMP}", f"enrol {LEAD} into {CAMP}", f"add lead {LEAD} to campaign {CAMP}",
    f"put lead {LEAD} in campaign {CAMP}", f"Enroll in campaign {CAMP} the lead {LEAD}",
    f"inscribe al lead {LEAD} en la campaña {CAMP}", f"inscribir lead {LEAD} en campaña {CAMP}",
    f"agrega al lead {LEAD} a la campaña {CAMP}", f"añade el prospecto {LEAD} a la campaña {CAMP}",
    f"mete al cliente {LEAD} en la campaña {CAMP}", f"en la campaña {CAMP} inscribe al lead {LEAD}",
    f"Inscribe al lead {LEAD} en la campaña {CAMP}, por favor",
]
UNKNOWN = [
    "hello", "borra todo", f"delete lead {LEAD}", "", "   ", f"send a message to lead {LEAD}",
    f"cancel campaign {CAMP}", f"inspect lead {LEAD} and lead {CAMP}", "dame un café", f"status {LEAD} {CAMP}",
]


def test_at_least_thirty_phrasings_are_covered() -> None:
    assert len(STATUS) + len(INSPECT) + len(ENROLL) >= 30


@pytest.mark.parametrize("text", STATUS)
def test_status_phrasings(text: str) -> None:
    resolved = resolve(text)
    assert (resolved.intent, resolved.args) == ("system.status", {})


@pytest.mark.parametrize("text", INSPECT)
def test_inspect_phrasings(text: str) -> None:
    resolved = resolve(text)
    assert (resolved.intent, resolved.args) == ("lead.inspect", {"lead_id": LEAD})


@pytest.mark.parametrize("text", ENROLL)
def test_enroll_phrasings(text: str) -> None:
    resolved = resolve(text)
    assert (resolved.intent, resolved.args) == ("lead.enroll", {"lead_id": LEAD, "campaign_id": CAMP})


@pytest.mark.parametrize("text", UNKNOWN)
def test_unknown_text_is_refused(text: str) -> None:
    with pytest.raises(CommandError):
        resolve(text)


def test_enroll_without_the_campaign_says_what_is_missing() -> None:
    with pytest.raises(CommandError, match="needs a lead id and a campaign id"):
        resolve(f"inscribe al lead {LEAD} en la campaña")


def test_resolution_is_deterministic() -> None:
    text = f"inscribe al lead {LEAD} en la campaña {CAMP}"
    assert len({(r.intent, tuple(sorted(r.args.items()))) for r in (resolve(text) for _ in range(20))}) == 1


def test_check_args() -> None:
    assert check_args("system.status", None) == {}
    assert str(check_args("lead.inspect", {"lead_id": LEAD})["lead_id"]) == LEAD
    for name, args, message in [("lead.inspect", {}, "needs lead_id"),
                                ("lead.inspect", {"lead_id": "nope"}, "must be a uuid"),
                                ("lead.enroll", {"lead_id": LEAD}, "needs campaign_id"),
                                ("system.status", {"x": 1}, "takes no argument"),
                                ("lead.inspect", [LEAD], "must be an object"),
                                ("lead.delete", {}, "unknown intent")]:
        with pytest.raises(CommandError, match=message):
            check_args(name, args)
    assert KNOWN_INTENTS[:3] == ("system.status", "lead.inspect", "lead.enroll")  # v1's, then §18's eight
    assert len(KNOWN_INTENTS) == 11
