"""The Command OS v2 resolver (SPEC §18): a table of real-style English and Spanish phrasings (accents optional) →
intent and arguments, campaigns by name or id; and the phrasings it must refuse — a destructive verb, an intent
without what it needs, "cancel everything" — as a CommandError that never reaches the model (only NoMatch does)."""

from __future__ import annotations

import pytest

from listener.intents.command_os import KNOWN_INTENTS, CommandError, NoMatch, check_args, resolve

LEAD = "6f1c2a3b-1111-4a2b-9c3d-0123456789ab"
CAMP = "0a9b8c7d-2222-4e5f-8a7b-ba9876543210"
TOUCH = "5e4d3c2b-3333-4c1d-8e2f-0123456789cd"
EVENT = "9a8b7c6d-4444-4f3e-9d2c-fedcba987654"
EVENT2 = "1b2c3d4e-5555-4a6b-8c7d-0a1b2c3d4e5f"

PHRASINGS: list[tuple[str, str, dict]] = [
    # campaign.list
    ("list campaigns", "campaign.list", {}),
    ("show me all the campaigns", "campaign.list", {}),
    ("which campaigns do we have?", "campaign.list", {}),
    ("lista las campañas", "campaign.list", {}),
    ("¿Qué campañas hay?", "campaign.list", {}),
    ("muestra las campanas activas", "campaign.list", {}),
    # campaign.pause — by name (as written) or id
    ("pause campaign Free check-up", "campaign.pause", {"campaign_id": "Free check-up"}),
    ("Please pause the Free check-up campaign", "campaign.pause", {"campaign_id": "Free check-up"}),
    ('stop campaign "Last chance"', "campaign.pause", {"campaign_id": "Last chance"}),
    (f"pause campaign {CAMP}", "campaign.pause", {"campaign_id": CAMP}),
    ("pausa la campaña Revisión gratuita", "campaign.pause", {"campaign_id": "Revisión gratuita"}),
    ("pausa la campana revision gratuita", "campaign.pause", {"campaign_id": "revision gratuita"}),
    ("Suspende la campaña Revisión gratuita, por favor", "campaign.pause", {"campaign_id": "Revisión gratuita"}),
    ("detén la campaña llamada Black Friday", "campaign.pause", {"campaign_id": "Black Friday"}),
    # campaign.resume
    ("resume campaign Free check-up", "campaign.resume", {"campaign_id": "Free check-up"}),
    ("unpause the Spring campaign", "campaign.resume", {"campaign_id": "Spring"}),
    (f"reactivate campaign {CAMP}", "campaign.resume", {"campaign_id": CAMP}),
    ("reanuda la campaña Revisión gratuita", "campaign.resume", {"campaign_id": "Revisión gratuita"}),
    ("reanudar campana revision gratuita", "campaign.resume", {"campaign_id": "revision gratuita"}),
    ("Activa de nuevo la campaña Black Friday", "campaign.resume", {"campaign_id": "Black Friday"}),
    # lead.stop — the reason as written, or command_os when none is given
    (f"stop lead {LEAD} because they asked us to call next year", "lead.stop",
     {"lead_id": LEAD, "reason": "they asked us to call next year"}),
    (f"Stop contacting lead {LEAD}, reason: wrong number", "lead.stop", {"lead_id": LEAD, "reason": "wrong number"}),
    (f"halt lead {LEAD}", "lead.stop", {"lead_id": LEAD, "reason": "command_os"}),
    (f"deja de contactar al lead {LEAD}", "lead.stop", {"lead_id": LEAD, "reason": "command_os"}),
    (f"deja de contactar al lead {LEAD} porque ya compró", "lead.stop", {"lead_id": LEAD, "reason": "ya compró"}),
    (f"detén al prospecto {LEAD}, motivo: pidió una pausa", "lead.stop",
     {"lead_id": LEAD, "reason": "pidió una pausa"}),
    (f"para al lead {LEAD} porque está de baja médica", "lead.stop",
     {"lead_id": LEAD, "reason": "está de baja médica"}),
    # lead.suppress
    (f"do not contact lead {LEAD}", "lead.suppress", {"lead_id": LEAD}),
    (f"Don't contact {LEAD} ever again", "lead.suppress", {"lead_id": LEAD}),
    (f"suppress lead {LEAD}", "lead.suppress", {"lead_id": LEAD}),
    (f"no contactar al lead {LEAD}", "lead.suppress", {"lead_id": LEAD}),
    (f"No volver a contactar al cliente {LEAD}", "lead.suppress", {"lead_id": LEAD}),
    (f"da de baja al lead {LEAD}", "lead.suppress", {"lead_id": LEAD}),
    # touch.cancel
    (f"cancel touch {TOUCH}", "touch.cancel", {"touch_id": TOUCH}),
    (f"cancel the scheduled message {TOUCH}", "touch.cancel", {"touch_id": TOUCH}),
    (f"cancela el touch {TOUCH}", "touch.cancel", {"touch_id": TOUCH}),
    (f"anula el envío {TOUCH}", "touch.cancel", {"touch_id": TOUCH}),
    (f"Cancela el toque {TOUCH.upper()} por favor", "touch.cancel", {"touch_id": TOUCH}),
    # reactions.retry
    ("retry reactions", "reactions.retry", {"all": True}),
    ("retry all the set-aside reactions", "reactions.retry", {"all": True}),
    (f"retry reactions {EVENT} {EVENT2}", "reactions.retry", {"event_ids": [EVENT, EVENT2]}),
    ("reintenta las reacciones", "reactions.retry", {"all": True}),
    (f"reintentar la reacción {EVENT}", "reactions.retry", {"event_ids": [EVENT]}),
    # report.funnel
    ("funnel for campaign Free check-up", "report.funnel", {"campaign_id": "Free check-up"}),
    ("what's the funnel of the Spring campaign for the last 90 days?", "report.funnel",
     {"campaign_id": "Spring", "days": 90}),
    (f"conversion report for campaign {CAMP} past week", "report.funnel", {"campaign_id": CAMP, "days": 7}),
    ("embudo de la campaña Revisión gratuita últimos 7 días", "report.funnel",
     {"campaign_id": "Revisión gratuita", "days": 7}),
    ("embudo de la campana revision gratuita en los ultimos 14 dias", "report.funnel",
     {"campaign_id": "revision gratuita", "days": 14}),
    ("Muéstrame el informe de la campaña Black Friday del último mes", "report.funnel",
     {"campaign_id": "Black Friday", "days": 30}),
    # lead.enroll, now with a campaign's name too (in the lead's account)
    (f"inscribe al lead {LEAD} en la campaña Revisión gratuita", "lead.enroll",
     {"lead_id": LEAD, "campaign_id": "Revisión gratuita"}),
    (f"enroll lead {LEAD} in campaign Free check-up", "lead.enroll", {"lead_id": LEAD, "campaign_id": "Free check-up"}),
    # v1 still resolves as before
    ("estado del sistema", "system.status", {}),
    (f"inspect lead {LEAD}", "lead.inspect", {"lead_id": LEAD}),
    (f"enroll lead {LEAD} in campaign {CAMP}", "lead.enroll", {"lead_id": LEAD, "campaign_id": CAMP}),
]

# recognised and refused (CommandError, never the model)
REFUSED = [
    "borra todo", f"delete lead {LEAD}", "elimina la campaña Revisión gratuita", "drop all campaigns", "pausa",
    "pause", "cancel everything", "cancela todo", f"cancel campaign {CAMP}", "cancela la campaña Revisión gratuita",
    f"cancel lead {LEAD}", "stop everything", "para todo", "reanuda", "funnel", "embudo", "pausa las campañas",
    f"cancel touches {TOUCH} {EVENT}", "do not contact anyone", "no contactar", f"stop lead {LEAD} and lead {CAMP}",
    "resume all campaigns", f"inscribe al lead {LEAD} en la campaña",
]
# nothing a rule places: the only texts the model (when configured) is asked about
NO_MATCH = ["hello", "dame un café", "what's the weather like", f"send a message to lead {LEAD}",
            "how many leads replied yesterday", f"inspect lead {LEAD} and lead {CAMP}"]


def test_every_v2_intent_has_at_least_four_phrasings_in_both_languages() -> None:
    by_intent: dict[str, int] = {}
    for _, intent, _ in PHRASINGS:
        by_intent[intent] = by_intent.get(intent, 0) + 1
    v2 = set(KNOWN_INTENTS) - {"system.status", "lead.inspect", "lead.enroll"}
    assert v2 == {"campaign.list", "campaign.pause", "campaign.resume", "lead.stop", "lead.suppress", "touch.cancel",
                  "reactions.retry", "report.funnel"}
    assert all(by_intent.get(name, 0) >= 4 for name in v2), by_intent


@pytest.mark.parametrize(("text", "intent", "args"), PHRASINGS, ids=[p[0][:60] for p in PHRASINGS])
def test_phrasing(text: str, intent: str, args: dict) -> None:
    resolved = resolve(text)
    assert (resolved.intent, resolved.args, resolved.by) == (intent, args, "rules")
    check_args(resolved.intent, resolved.args)  # what the rules give always passes the intent's schema


@pytest.mark.parametrize("text", REFUSED)
def test_refused(text: str) -> None:
    with pytest.raises(CommandError) as info:
        resolve(text)
    assert not isinstance(info.value, NoMatch), "a refusal must not be handed to the model"


@pytest.mark.parametrize("text", NO_MATCH)
def test_no_match(text: str) -> None:
    with pytest.raises(NoMatch):
        resolve(text)


def test_refusals_say_what_would_work() -> None:
    for text, hint in [("pausa", "pause campaign"), ("cancel everything", "cancel touch <touch id>"),
                       (f"cancel campaign {CAMP}", "paused, not canceled"), ("borra todo", "deletes nothing"),
                       ("funnel", "report.funnel needs a campaign")]:
        with pytest.raises(CommandError, match=hint):
            resolve(text)


def test_a_campaign_name_that_looks_like_a_command_word_can_be_quoted() -> None:
    assert resolve('pausa la campaña "Alta conversión"').args == {"campaign_id": "Alta conversión"}
    assert resolve("pausa la campaña Alta conversión").intent == "campaign.pause"  # 'alta' here is no enrolment
    assert resolve('funnel for campaign "Last 7 days promo"').args == {"campaign_id": "Last 7 days promo"}


def test_v2_arguments_are_checked_by_the_intent_schema() -> None:
    assert check_args("report.funnel", {"campaign_id": "Spring"}) == {"campaign_id": "Spring", "days": 30}
    assert check_args("reactions.retry", {"all": True}) == {"all": True}
    for name, args, message in [
        ("campaign.pause", {}, "campaign.pause needs campaign_id"),
        ("campaign.pause", {"campaign_id": ""}, "campaign_id"),
        ("campaign.pause", {"campaign_id": 5}, "campaign_id"),
        ("lead.stop", {"lead_id": LEAD}, "lead.stop needs reason"),
        ("lead.stop", {"lead_id": LEAD, "reason": "  "}, "reason"),
        ("touch.cancel", {"touch_id": "nope"}, "touch_id must be a uuid"),
        ("reactions.retry", {}, "event_ids .* or \"all\": true"),
        ("reactions.retry", {"all": True, "event_ids": [EVENT]}, "not both"),
        ("reactions.retry", {"all": "yes"}, "all"),
        ("reactions.retry", {"event_ids": ["x"]}, "event_ids.0 must be a uuid"),
        ("report.funnel", {"campaign_id": "x", "days": 0}, "days"),
        ("report.funnel", {"campaign_id": "x", "days": True}, "days"),
        ("report.funnel", {"campaign_id": "x", "days": 367}, "days"),
        ("campaign.list", {"status": "active"}, "campaign.list takes no argument 'status'"),
    ]:
        with pytest.raises(CommandError, match=message):
            check_args(name, args)


def test_resolution_is_deterministic() -> None:
    for text, _, _ in PHRASINGS:
        assert len({repr(resolve(text)) for _ in range(5)}) == 1
