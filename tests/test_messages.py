"""Message text (SPEC §5): precedence, templates, safe rendering; never sends a literal placeholder."""

from __future__ import annotations

from typing import Any

import pytest

from listener.rules.errors import TouchFailure
from listener.rules.messages import RenderedMessage, Template, render_message, render_text, template_key_for
from listener.rules.payload import TouchPayload, parse_payload

LEAD_VARS: dict[str, object] = {"first_name": "Ana", "full_name": "Ana Díaz", "company_name": "Acme"}

TEMPLATES = {
    ("intro", "es"): Template("intro", "es", None, "Hola {first_name}", "Hola {first_name}, de {company_name}"),
    ("intro", "en"): Template("intro", "en", None, "Hi {first_name}", "Hi {first_name} from {company_name}"),
    ("wa_intro", "es"): Template("wa_intro", "es", "whatsapp", None, "WA: hola {first_name}"),
    ("mail_intro", "es"): Template("mail_intro", "es", "email", "Propuesta para {company_name}", "Cuerpo {first_name}"),
}


def payload(**fields: Any) -> TouchPayload:
    return parse_payload(fields)


def render(p: TouchPayload, channel: str = "sms", variables: dict[str, object] | None = None) -> RenderedMessage:
    return render_message(p, channel, TEMPLATES, LEAD_VARS if variables is None else variables)


# --- render_text ---------------------------------------------------------------------------------


def test_render_text_substitutes_names() -> None:
    assert render_text("Hola {first_name} ({company_name})", {"first_name": "Ana", "company_name": "Acme"}) == (
        "Hola Ana (Acme)"
    )


def test_render_text_stringifies_values_and_keeps_them_literal() -> None:
    # A value that looks like a placeholder is not rendered again; backslashes are not regex escapes.
    out = render_text("{a}|{b}|{c}", {"a": 3, "b": "{c}", "c": r"\1 \g<0>"})
    assert out == r"3|{c}|\1 \g<0>"


@pytest.mark.parametrize(
    "text",
    ["{first_name.__class__}", "{first_name.__class__.__mro__}", "{0}", "{first_name[0]}", "{!r}", "{}",
     "{first_name!r}", "{first_name:>10}", "{ first_name }", "{first-name}", "{1abc}"],
)
def test_render_text_never_evaluates_format_syntax(text: str) -> None:
    assert render_text(text, {"first_name": "Ana"}) == text


def test_render_text_double_braces_are_not_escapes() -> None:
    # `{{` / `}}` are left as they are, but a name inside them is still a placeholder: an unresolved
    # `{name}` can never reach a lead.
    assert render_text("{{first_name}} {{ x }}", {"first_name": "Ana"}) == "{Ana} {{ x }}"
    with pytest.raises(TouchFailure):
        render_text("{{literal}}", {"first_name": "Ana"})


def test_missing_variable_fails_permanently() -> None:
    with pytest.raises(TouchFailure) as info:
        render_text("Hola {first_name}", {})
    assert (info.value.error_code, info.value.failure_class) == ("missing_variable", "permanent")
    assert info.value.error == "template needs {first_name} but delivery.variables has no first_name"


def test_null_variable_counts_as_missing() -> None:
    with pytest.raises(TouchFailure) as info:
        render_text("Hola {first_name}", {"first_name": None})
    assert info.value.error_code == "missing_variable"


# --- template_key_for --------------------------------------------------------------------------------


def test_template_key_uses_template_key_and_default_language() -> None:
    assert template_key_for(payload(delivery={"template_key": "intro"}), "sms") == ("intro", "es")


def test_template_key_language_from_delivery() -> None:
    assert template_key_for(payload(delivery={"template_key": "intro", "language": "en"}), "sms") == ("intro", "en")


def test_template_key_channel_override_wins_for_its_channel_only() -> None:
    p = payload(delivery={"template_key": "intro", "channel_overrides": {"whatsapp": {"template_name": "wa_intro"}}})
    assert template_key_for(p, "whatsapp") == ("wa_intro", "es")
    assert template_key_for(p, "sms") == ("intro", "es")


def test_channel_override_without_template_name_falls_back() -> None:
    p = payload(delivery={"template_key": "intro", "channel_overrides": {"email": {"subject": "S"}}})
    assert template_key_for(p, "email") == ("intro", "es")


@pytest.mark.parametrize(
    "fields",
    [
        {"message": "hi", "delivery": {"template_key": "intro"}},
        {"body": "hi", "delivery": {"template_key": "intro"}},
        {"delivery": {"template_key": "intro", "body": "hi"}},
        {"delivery": {"language": "es"}},
        {},
    ],
)
def test_template_key_none_with_literal_text_or_no_template(fields: dict[str, Any]) -> None:
    assert template_key_for(payload(**fields), "sms") is None


# --- render_message ----------------------------------------------------------------------------------


def test_text_precedence_message_first() -> None:
    p = payload(message="M {first_name}", body="B", delivery={"body": "D", "template_key": "intro"})
    assert render(p).body == "M Ana"


def test_text_precedence_delivery_body_second() -> None:
    p = payload(body="B", delivery={"body": "D {first_name}", "template_key": "intro"})
    assert render(p).body == "D Ana"


def test_text_precedence_payload_body_third() -> None:
    p = payload(body="B {company_name}", delivery={"template_key": "intro"})
    assert render(p).body == "B Acme"


def test_blank_literal_text_falls_through() -> None:
    p = payload(message="  ", body="", delivery={"body": None, "template_key": "intro"})
    assert render(p).body == "Hola Ana, de Acme"


def test_template_rendered_with_lead_variables() -> None:
    rendered = render(payload(delivery={"template_key": "intro"}), "email")
    assert rendered == RenderedMessage(subject="Hola Ana", body="Hola Ana, de Acme", language="es")


def test_delivery_variables_override_lead_variables() -> None:
    p = payload(delivery={"template_key": "intro", "variables": {"first_name": "Anita", "company_name": None}})
    assert render(p).body == "Hola Anita, de Acme"


def test_language_fallback_is_es() -> None:
    assert render(payload(delivery={"template_key": "intro"})).language == "es"
    assert render(payload(delivery={"template_key": "intro", "language": ""})).language == "es"
    assert render(payload(message="x")).language == "es"


def test_language_picks_the_template() -> None:
    rendered = render(payload(delivery={"template_key": "intro", "language": "en"}))
    assert (rendered.body, rendered.language) == ("Hi Ana from Acme", "en")


def test_missing_language_row_is_template_not_found() -> None:
    with pytest.raises(TouchFailure) as info:
        render(payload(delivery={"template_key": "wa_intro", "language": "en"}), "whatsapp")
    assert (info.value.error_code, info.value.failure_class) == ("template_not_found", "permanent")
    assert info.value.error == "no message_templates row for (wa_intro, en)"


def test_unknown_template_is_template_not_found() -> None:
    with pytest.raises(TouchFailure) as info:
        render(payload(delivery={"template_key": "nope"}))
    assert info.value.error_code == "template_not_found"


def test_channel_override_template() -> None:
    p = payload(delivery={"template_key": "intro", "channel_overrides": {"whatsapp": {"template_name": "wa_intro"}}})
    assert render(p, "whatsapp").body == "WA: hola Ana"
    assert render(p, "sms").body == "Hola Ana, de Acme"


def test_subject_override_beats_template_subject_and_is_rendered() -> None:
    p = payload(
        delivery={
            "template_key": "intro",
            "channel_overrides": {"email": {"subject": "Para {company_name}", "template_name": "mail_intro"}},
        }
    )
    rendered = render(p, "email")
    assert (rendered.subject, rendered.body) == ("Para Acme", "Cuerpo Ana")


def test_subject_from_template_then_none() -> None:
    assert render(payload(delivery={"template_key": "mail_intro"}), "email").subject == "Propuesta para Acme"
    assert render(payload(delivery={"template_key": "wa_intro"}), "email").subject is None
    assert render(payload(message="x"), "email").subject is None


def test_subject_override_with_literal_body() -> None:
    p = payload(delivery={"body": "Hola", "channel_overrides": {"email": {"subject": "Asunto {first_name}"}}})
    assert render(p, "email").subject == "Asunto Ana"


def test_no_text_and_no_template_is_no_message() -> None:
    with pytest.raises(TouchFailure) as info:
        render(payload(delivery={"language": "es"}))
    assert (info.value.error_code, info.value.failure_class) == ("no_message", "permanent")


def test_body_empty_after_rendering_is_no_message() -> None:
    templates = {("blank", "es"): Template("blank", "es", None, None, "{x}")}
    with pytest.raises(TouchFailure) as info:
        render_message(payload(delivery={"template_key": "blank", "variables": {"x": "  "}}), "sms", templates, {})
    assert info.value.error_code == "no_message"


@pytest.mark.parametrize(
    "fields",
    [
        {"delivery": {"template_key": "intro"}},
        {"message": "Hola {first_name}"},
        {"delivery": {"body": "x", "channel_overrides": {"email": {"subject": "Hi {first_name}"}}}},
    ],
)
def test_missing_variable_never_sends_placeholder(fields: dict[str, Any]) -> None:
    with pytest.raises(TouchFailure) as info:
        render(payload(**fields), "email", variables={"company_name": "Acme"})
    assert info.value.error_code == "missing_variable"
    assert "{first_name}" in info.value.error


def test_template_injection_is_not_evaluated() -> None:
    templates = {("evil", "es"): Template("evil", "es", None, "{first_name.__class__}", "{first_name.__init__.__globals__} {0} {first_name}")}
    rendered = render_message(payload(delivery={"template_key": "evil"}), "email", templates, LEAD_VARS)
    assert rendered.body == "{first_name.__init__.__globals__} {0} Ana"
    assert rendered.subject == "{first_name.__class__}"


def test_variable_values_are_not_rendered_again() -> None:
    p = payload(message="Hola {first_name}", delivery={"variables": {"first_name": "{company_name.__class__}"}})
    assert render(p).body == "Hola {company_name.__class__}"
