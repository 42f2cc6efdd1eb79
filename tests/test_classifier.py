"""The reply classifier (SPEC §12): every rule, and a table of real-style replies in English and Spanish."""

from __future__ import annotations

import pytest

from listener.inbound.classify import (
    HELP_KEYWORDS,
    NEGATIVE_PHRASES,
    OPT_IN_KEYWORDS,
    OPT_OUT_KEYWORDS,
    OPT_OUT_PHRASES,
    POSITIVE_PHRASES,
    classify,
    normalise,
)

REPLIES = [
    # opt-out keywords, as people type them
    ("STOP", "opt_out"), ("Stop.", "opt_out"), ("stop!!", "opt_out"), (" STOP ", "opt_out"), ("StopAll", "opt_out"),
    ("UNSUBSCRIBE", "opt_out"), ("cancel", "opt_out"), ("End", "opt_out"), ("QUIT.", "opt_out"),
    ("BAJA", "opt_out"), ("baja 🙏", "opt_out"), ("Alto", "opt_out"), ("PARAR", "opt_out"),
    ("Dame de baja por favor", "opt_out"), ("please stop texting me", "opt_out"), ("Remove me from your list", "opt_out"),
    ("No me escribas más", "opt_out"), ("no quiero recibir más mensajes", "opt_out"),
    # opt-in and help
    ("START", "opt_in"), ("unstop", "opt_in"), ("Alta", "opt_in"), ("HELP", "help"), ("ayuda?", "help"),
    ("Info", "help"),
    # negative (before positive: "no me interesa" contains "me interesa")
    ("no, gracias", "negative"), ("No gracias", "negative"), ("NO", "negative"), ("nope", "negative"),
    ("No me interesa", "negative"), ("no me interesa, gracias 🙂", "negative"), ("Not interested.", "negative"),
    ("I'm not interested", "negative"), ("no thanks", "negative"), ("No thank you!", "negative"),
    ("No estoy interesada", "negative"), ("ahora no, quizás el año que viene", "negative"),
    ("wrong number", "negative"), ("Número equivocado", "negative"), ("no necesito nada", "negative"),
    # positive
    ("Sí, me interesa 😊", "positive"), ("si", "positive"), ("SÍ", "positive"), ("sí!!", "positive"),
    ("yes, call me", "positive"), ("Yes please", "positive"), ("Interested", "positive"),
    ("Me interesa, llámame mañana", "positive"), ("Claro, hablemos", "positive"), ("Sure, tell me more", "positive"),
    ("Estoy interesado", "positive"), ("¿Cuándo podemos hablar?", "positive"), ("Let's talk", "positive"),
    ("Me gustaría más información", "positive"),
    # neutral
    ("¿quién es?", "neutral"), ("Who is this?", "neutral"), ("hola", "neutral"), ("👍", "neutral"), ("", "neutral"),
    ("ok", "neutral"), ("Estoy en una reunión", "neutral"), ("?", "neutral"), ("stopwatch", "neutral"),
    ("the end of the month works", "neutral"),
]


@pytest.mark.parametrize(("text", "expected"), REPLIES)
def test_real_style_replies(text, expected):
    assert classify(text) == expected


def test_the_table_is_big_enough_and_covers_every_class():
    assert len(REPLIES) >= 40
    assert {c for _, c in REPLIES} == {"opt_out", "opt_in", "help", "positive", "negative", "neutral"}


@pytest.mark.parametrize(("kind", "expected"), [("STOP", "opt_out"), ("START", "opt_in"), ("HELP", "help"),
                                                 ("stop", "opt_out"), ("", "positive"), (None, "positive")])
def test_twilio_opt_out_type_wins_over_the_text(kind, expected):
    assert classify("sí, me interesa", kind) == expected


def test_normalise_drops_accents_emoji_case_and_punctuation():
    assert normalise("¡SÍ, Llámame! 😊") == "si llamame"
    assert normalise("I’m not") == "im not"


@pytest.mark.parametrize("word", sorted(OPT_OUT_KEYWORDS))
def test_every_opt_out_keyword_alone(word):
    assert classify(word.upper() + ".") == "opt_out"


@pytest.mark.parametrize("word", sorted(OPT_IN_KEYWORDS | HELP_KEYWORDS))
def test_every_opt_in_and_help_keyword_alone(word):
    assert classify(word.capitalize()) == ("opt_in" if word in OPT_IN_KEYWORDS else "help")


def test_keywords_inside_a_longer_message_are_not_opt_outs():
    assert classify("I can't stop thinking about it, call me") == "positive"
    assert classify("cancel my 3pm, call me tomorrow") == "positive"


@pytest.mark.parametrize("phrase", OPT_OUT_PHRASES)
def test_every_opt_out_phrase(phrase):
    assert classify(f"Por favor {phrase} ya") == "opt_out"


@pytest.mark.parametrize("phrase", NEGATIVE_PHRASES)
def test_every_negative_phrase(phrase):
    assert classify(f"{phrase}") == "negative"


@pytest.mark.parametrize("phrase", POSITIVE_PHRASES)
def test_every_positive_phrase(phrase):
    assert classify(f"ok {phrase}") == "positive"
