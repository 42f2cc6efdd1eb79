"""Message text for a touch (SPEC §5): literal text first, else a rendered message template."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from listener.rules.errors import TouchFailure
from listener.rules.payload import TouchPayload

DEFAULT_LANGUAGE = "es"

# Only bare identifiers are placeholders: `{0}`, `{x.__class__}` or `{x[0]}` are plain text, never evaluated.
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class Template:
    """One ``message_templates`` row."""

    template_name: str
    language: str
    channel: str | None
    subject: str | None
    body: str


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    subject: str | None
    body: str
    language: str


def _text(value: str | None) -> str | None:
    # A blank string is "no text here", so the next source in the precedence applies.
    return value if value is not None and value.strip() else None


def literal_text(payload: TouchPayload) -> str | None:
    """payload.message, else delivery.body, else payload.body (blank counts as absent)."""
    delivery_body = payload.delivery.body if payload.delivery is not None else None
    return _text(payload.message) or _text(delivery_body) or _text(payload.body)


def language_of(payload: TouchPayload) -> str:
    language = payload.delivery.language if payload.delivery is not None else None
    return (language or "").strip() or DEFAULT_LANGUAGE


def template_key_for(payload: TouchPayload, channel: str) -> tuple[str, str] | None:
    """The (template_name, language) the message needs, or None when literal text applies or no
    template is named."""
    if literal_text(payload) is not None or payload.delivery is None:
        return None
    delivery = payload.delivery
    override = delivery.channel_overrides.get(channel)
    name = (override.template_name if override is not None else None) or delivery.template_key
    if not name:
        return None
    return name, language_of(payload)


def render_text(text: str, variables: Mapping[str, object]) -> str:
    """Replace each ``{name}`` with ``variables[name]``; a missing (or null) variable fails the touch."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        value = variables.get(name)
        if value is None:
            if name == "unsubscribe_url":  # the daemon's own (SPEC §19), only with a public URL
                raise TouchFailure("missing_variable", "template needs {unsubscribe_url}, which exists only when "
                                   "REVENUE_ASI_PUBLIC_URL (and REVENUE_ASI_UNSUBSCRIBE_SECRET) are set")
            raise TouchFailure(
                "missing_variable", f"template needs {{{name}}} but delivery.variables has no {name}"
            )
        return str(value)

    return _PLACEHOLDER.sub(substitute, text)


def render_message(
    payload: TouchPayload,
    channel: str,
    templates: Mapping[tuple[str, str], Template],
    base_variables: Mapping[str, object],
    system_variables: Mapping[str, object] | None = None,
) -> RenderedMessage:
    """The subject (email) and body to send on ``channel``, or a permanent TouchFailure. ``system_variables``
    (``{unsubscribe_url}``, SPEC §19) are the daemon's own and win over ``delivery.variables``."""
    language = language_of(payload)
    delivery = payload.delivery
    override = delivery.channel_overrides.get(channel) if delivery is not None else None

    subject: str | None = override.subject if override is not None else None
    body = literal_text(payload)
    if body is None:
        key = template_key_for(payload, channel)
        if key is None:
            raise TouchFailure(
                "no_message", "payload has no message, delivery.body, body or template for channel " + channel
            )
        template = templates.get(key)
        if template is None:
            raise TouchFailure("template_not_found", f"no message_templates row for ({key[0]}, {key[1]})")
        body = template.body
        subject = subject or template.subject

    variables = {k: v for k, v in base_variables.items() if v is not None}
    if delivery is not None:
        variables.update({k: v for k, v in delivery.variables.items() if v is not None})
    variables.update({k: v for k, v in (system_variables or {}).items() if v is not None})

    rendered_body = render_text(body, variables)
    if not rendered_body.strip():
        raise TouchFailure("no_message", "message body is empty after rendering")
    rendered_subject = render_text(subject, variables) if subject else None
    return RenderedMessage(subject=rendered_subject, body=rendered_body, language=language)
