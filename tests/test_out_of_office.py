"""Out-of-office replies (SPEC §19), the pure part: which inbound texts are automatic absence notices, and the return
date read from them in the lead's zone and locale (listener/inbound/absence.py says where the line is drawn).

The table: real-style English and Spanish texts — auto-replies with and without a return date, Outlook's "Automatic
reply: Out of Office" and "Respuesta automática: Fuera de la oficina", WhatsApp Business away messages — and
look-alikes that are not out of office. Each row: the text, the class it truly is, and for a notice the return date
it names read on Thursday 2026-12-10 12:00 lead time (None: it names none, so the pause lasts 7 days), and the lead's
phone country. Rows the classifier gets wrong are in MISSES, each with why; they run as strict xfails, so fixing
one (or breaking another) shows."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from listener.inbound.absence import (
    date_order,
    is_out_of_office,
    out_of_office_payload,
    phone_country,
    read_return_date,
    signals,
)
from listener.inbound.classify import classify

NOW = datetime(2026, 12, 10, 12, 0)  # a Thursday, lead time
OOO = "out_of_office"

TABLE: list[tuple[str, str, date | None, str | None]] = [
    # --- Outlook / Gmail auto-replies, with a return date
    ("Automatic reply: Out of Office. I will be back on Monday.", OOO, date(2026, 12, 14), "US"),
    ("Respuesta automática: Fuera de la oficina. Regreso el 3/1. Para urgencias escribe a soporte@acme.mx",
     OOO, date(2027, 1, 3), "MX"),
    ("Auto-reply: I'm away, back on 3/1.", OOO, date(2027, 3, 1), "US"),  # en-US: month first
    ("Estoy de vacaciones hasta el 15 de enero. Responderé a tu mensaje a mi regreso.", OOO, date(2027, 1, 15), "ES"),
    ("I am out of the office until 12/15 with limited access to email. For urgent matters please contact "
     "ana@acme.com.", OOO, date(2026, 12, 15), "US"),
    ("Fuera de la oficina del 20 de diciembre al 6 de enero. Sin acceso al correo.", OOO, date(2027, 1, 6), "ES"),
    ("Out of office from Dec 20 to Jan 3. I will respond when I return.", OOO, date(2027, 1, 3), "GB"),
    ("Me encuentro de viaje hasta el 14 de diciembre con acceso limitado al correo.", OOO, date(2026, 12, 14), "CO"),
    ("Estaré fuera de la oficina hasta el próximo lunes. Gracias.", OOO, date(2026, 12, 14), "ES"),
    ("OOO until Jan. 18th — limited access to email.", OOO, date(2027, 1, 18), "US"),
    ("Estoy de baja por maternidad hasta el 1 de marzo. En mi ausencia, escribe a rrhh@empresa.es", OOO,
     date(2027, 3, 1), "ES"),
    ("Gracias por su mensaje. Me encuentro ausente hasta el día 8 de enero de 2027 y lo atenderé a mi regreso.", OOO,
     date(2027, 1, 8), "MX"),
    ("This is an automated message. I'm on annual leave until 4 January 2027 and will reply on my return.", OOO,
     date(2027, 1, 4), "GB"),
    ("Auto-reply: Thank you for your email. I am traveling through Friday and will respond upon my return.", OOO,
     date(2026, 12, 11), "US"),
    ("Respuesta automática: estoy fuera de la oficina y regresaré el 10/01.", OOO, date(2027, 1, 10), "ES"),
    ("Mensaje automático: No estoy disponible hasta el 22 de diciembre. Si es urgente, llama al 600 123 456.", OOO,
     date(2026, 12, 22), "ES"),
    ("I'm on vacation until the 20th with no access to email. Thanks for your message!", OOO, date(2026, 12, 20), "US"),
    ("Hola! Estoy de vacaciones hasta el 7 de enero 🌴 A la vuelta te respondo.", OOO, date(2027, 1, 7), "AR"),
    ("Out of Office: back on 1/5", OOO, date(2027, 1, 5), "US"),
    ("Estoy fuera del país hasta el 30 de diciembre. Gracias por su mensaje.", OOO, date(2026, 12, 30), "MX"),
    ("Hi! Thanks for your message. We are closed for the holidays and will reopen on January 4.", OOO,
     date(2027, 1, 4), "US"),
    ("Estoy fuera hasta el lunes", OOO, date(2026, 12, 14), "ES"),  # typed or not: it says when to come back
    # --- auto-replies without a return date (the pause lasts 7 days)
    ("Automatic reply: Out of Office", OOO, None, "US"),
    ("Respuesta automática: Fuera de la oficina", OOO, None, "ES"),
    ("I am currently out of the office with limited access to email. I will respond as soon as possible.", OOO, None,
     "US"),
    ("Estoy de vacaciones. Responderé a tu correo cuando vuelva. ¡Gracias!", OOO, None, "ES"),
    # --- WhatsApp Business away messages and help-desk "we are away"
    ("Gracias por tu mensaje. En este momento no estamos disponibles. Te responderemos lo antes posible.", OOO, None,
     "MX"),
    ("Thanks for contacting us! We're currently away. We'll get back to you as soon as we can.", OOO, None, "US"),
    ("Hola 👋 Gracias por comunicarte con Clínica Sonrisa. Nuestro horario de atención es de lunes a viernes de 9:00 "
     "a 18:00 h. Te responderemos en cuanto abramos.", OOO, None, "CO"),
    ("Hola, gracias por escribir 🙌 Ahora mismo no podemos atenderte, te contestamos mañana a primera hora.", OOO, None,
     "ES"),
    ("We're currently closed. Our business hours are Monday–Friday, 9am–5pm EST. We'll reply as soon as we're back!",
     OOO, None, "US"),
    ("Hello! Thank you for your message. We are away right now and will reply as soon as possible.", OOO, None, "GB"),
    ("Gracias por contactarnos. Estamos fuera de horario; nuestro equipo te responderá el lunes.", OOO, None, "MX"),
    # --- look-alikes that are NOT out of office: a person talking to us
    ("estoy fuera, llámame el lunes", "positive", None, "ES"),  # asks for a call: a person's reply
    ("Estoy fuera de la ciudad pero me interesa, escríbeme", "positive", None, "MX"),
    ("I'm away this week but interested — call me next week", "positive", None, "US"),
    ("Estoy de vacaciones hasta el lunes, pero sí, me interesa. Llámame el martes.", "positive", None, "ES"),
    ("On vacation until Monday!! 🏖️ call me Tuesday", "positive", None, "US"),
    ("I'll be out until 3, call me after", "positive", None, "US"),
    ("Back in the office, happy to talk — call me", "positive", None, "US"),
    ("Ya regresé de vacaciones, llámame mañana", "positive", None, "ES"),
    ("Thanks for your message, I'm in the office until 6pm today, call me", "positive", None, "US"),
    ("¿Hasta cuándo es válida la oferta?", "neutral", None, "ES"),
    ("Out of curiosity, who gave you my number?", "neutral", None, "US"),
    ("Estoy en una reunión, te llamo luego", "neutral", None, "ES"),
    ("Te respondo cuando regrese a la oficina", "neutral", None, "ES"),
    ("No gracias, estoy de vacaciones", "negative", None, "ES"),
    ("STOP", "opt_out", None, "US"),
    # --- the classifier's known misses (MISSES says why)
    ("Are you out of the office too? Call me when you're back.", "positive", None, "US"),
    ("no me llames hasta el lunes, estoy de vacaciones", OOO, date(2026, 12, 14), "ES"),
]

MISSES = {
    "Are you out of the office too? Call me when you're back.":
        "'out of the office' is an explicit automatic marker, and a marker wins over a question or a request: a person "
        "quoting the phrase reads as a notice (we pause 7 days instead of stopping for a positive reply)",
    "no me llames hasta el lunes, estoy de vacaciones":
        "'no me llames' is an opt-out phrase, and opt-outs are checked first (SPEC §12): the safe side, the lead is "
        "unsubscribed instead of paused until Monday",
}


def _cases() -> list:
    return [pytest.param(text, kind, until, country, id=f"{i:02d}-{kind}",
                         marks=[pytest.mark.xfail(strict=True, reason=MISSES[text])] if text in MISSES else [])
            for i, (text, kind, until, country) in enumerate(TABLE)]


@pytest.mark.parametrize(("text", "kind", "until", "country"), _cases())
def test_the_table(text, kind, until, country):
    assert classify(text) == kind
    if kind == OOO:
        found = signals(text)
        read = read_return_date(text, NOW, language=found.language, country=country)
        assert (read.until if read else None) == until


def test_the_table_is_big_enough_and_covers_each_kind():
    kinds = [kind for _, kind, _, _ in TABLE]
    assert len(TABLE) >= 40
    notices = [t for t, kind, _, _ in TABLE if kind == OOO]
    assert len(notices) >= 25 and len(TABLE) - len(notices) >= 15
    assert any(u is None for _, k, u, _ in TABLE if k == OOO) and any(u for _, k, u, _ in TABLE if k == OOO)
    assert {"positive", "neutral", "negative", "opt_out"} <= set(kinds)
    assert set(MISSES) <= {t for t, *_ in TABLE}


@pytest.mark.parametrize(("text", "country", "expected"), [
    ("Regreso el 3/1", "MX", date(2027, 1, 3)),   # es-MX: day first
    ("Regreso el 3/1", "US", date(2027, 1, 3)),   # es-US too (CLDR): the language decides with the country
    ("Back on 3/1", "US", date(2027, 3, 1)),      # en-US: month first
    ("Back on 3/1", "GB", date(2027, 1, 3)),      # en-GB: day first
    ("Back on 3/1", None, date(2027, 3, 1)),      # English without a country: en (US)
    ("Regreso el 3/1", None, date(2027, 1, 3)),   # Spanish without a country: es (Spain)
    ("until 12/15", "US", date(2026, 12, 15)),    # 15 is no month: read either way
    ("until 12/15", "GB", date(2026, 12, 15)),
])
def test_the_lead_locale_decides_day_and_month(text, country, expected):
    language = signals(text).language if signals(text).notice else "es"
    assert read_return_date(text, NOW, language=language, country=country).until == expected


def test_date_order_comes_from_the_locale_data():
    assert date_order("es", "MX") == date_order("es", "US") == date_order("es", None) == "DMY"
    assert date_order("en", "US") == date_order("en", None) == "MDY"
    assert date_order("en", "GB") == date_order("en", "AU") == "DMY"
    assert phone_country("+525512345678") == "MX" and phone_country("+14155550123") == "US"
    assert phone_country("whatever") is None and phone_country(None) is None


@pytest.mark.parametrize(("text", "now", "expected"), [
    ("hasta el 15", datetime(2026, 12, 10, 12), date(2026, 12, 15)),   # this month
    ("hasta el 5", datetime(2026, 12, 10, 12), date(2027, 1, 5)),      # the 5th is past: next month
    ("back on Monday", datetime(2026, 12, 12, 9), date(2026, 12, 14)),  # relative to the lead's today
    ("hasta mañana", datetime(2026, 12, 31, 20), date(2027, 1, 1)),
    ("until 12/15/2025", datetime(2026, 12, 10, 12), None),            # a stale notice: no return date
    ("until June 30", datetime(2026, 12, 10, 12), None),               # more than 180 days ahead
    ("until further notice", datetime(2026, 12, 10, 12), None),
    ("hasta el 15.01.", datetime(2026, 12, 10, 12), date(2027, 1, 15)),  # a dotted date, not 15:01
    ("Estaré fuera hasta la próxima semana", datetime(2026, 12, 10, 12), date(2026, 12, 17)),
])
def test_return_dates_relative_to_the_lead_today(text, now, expected):
    read = read_return_date(text, now, language="es" if "hasta" in text else "en", country=None)
    assert (read.until if read else None) == expected


def test_the_payload_uses_the_lead_zone_and_resumes_at_nine_the_day_after():
    # 23:30 UTC on 14 December is already the 15th in Madrid: "hasta el 15" names today there
    arrived = datetime(2026, 12, 14, 23, 30, tzinfo=UTC)
    madrid = out_of_office_payload("Fuera de la oficina hasta el 15", arrived, lead_timezone="Europe/Madrid",
                                   enriched_timezone=None, phone="+34600123456", default_timezone="UTC")
    assert madrid["until"] == "2026-12-15" and madrid["until_source"] == "text"
    assert madrid["resume_at"] == datetime(2026, 12, 16, 9, tzinfo=ZoneInfo("Europe/Madrid")).astimezone(UTC).isoformat()
    assert madrid["lead_timezone"] == "Europe/Madrid" and madrid["date_text"] == "hasta el 15"
    assert madrid["date_order"] == "DMY" and madrid["language"] == "es"
    # in Los Angeles it is still the 14th: the 15th is tomorrow
    la = out_of_office_payload("Fuera de la oficina hasta el 15", arrived, lead_timezone=None, enriched_timezone=None,
                               phone="+14155550123", default_timezone="UTC")
    assert la["lead_timezone"] == "America/Los_Angeles" and la["until"] == "2026-12-15"
    assert la["resume_at"] == "2026-12-16T17:00:00+00:00"
    # no date: 7 days after the lead's today, resuming the morning after
    plain = out_of_office_payload("Automatic reply: Out of Office", arrived, lead_timezone="Europe/Madrid",
                                  enriched_timezone=None, phone=None, default_timezone="UTC")
    assert plain["until"] == "2026-12-22" and plain["until_source"] == "default" and "date_text" not in plain
    assert plain["resume_at"] == "2026-12-23T08:00:00+00:00"


def test_a_person_is_never_an_automatic_notice_without_one_of_its_marks():
    assert not is_out_of_office("estoy fuera")
    assert not is_out_of_office("hasta el lunes")
    assert not is_out_of_office("")
    assert not is_out_of_office(None)
    assert is_out_of_office("Estoy fuera hasta el lunes. Para urgencias llámame al 600 123 456")  # urgent redirection
