"""Which voice speaks a ``<Say>`` (SPEC §11): one that speaks the touch's language.

Twilio's default voice ``man`` speaks only en, en-gb, es, fr, de (twiml_say.json); ``<Say language="es-ES">``
with no voice was read by it. So every ``<Say>`` names a voice: a per-locale default Amazon Polly voice (Twilio's
``Polly.<Name>`` voices, each speaking one locale — Amazon Polly's published voice list), overridable per account
with ``account_provider_settings.config.voice`` (``Polly.<Name>``, ``Polly.<Name>-Neural``, ``Google.<ll-RR>-…``,
or ``man`` / ``woman`` / ``alice``). A Google voice names its own locale, which then becomes the language.
"""

from __future__ import annotations

import re

# The language a bare code means, and the default Polly voice per locale (standard voices: no premium price).
DEFAULT_LOCALE = {"es": "es-ES", "en": "en-US", "pt": "pt-BR", "fr": "fr-FR", "de": "de-DE", "it": "it-IT"}
DEFAULT_VOICE = {
    "es-ES": "Polly.Lucia",
    "es-MX": "Polly.Mia",
    "es-US": "Polly.Lupe",
    "en-US": "Polly.Joanna",
    "en-GB": "Polly.Amy",
    "en-AU": "Polly.Nicole",
    "en-IN": "Polly.Raveena",
    "pt-BR": "Polly.Camila",
    "pt-PT": "Polly.Ines",
    "fr-FR": "Polly.Celine",
    "fr-CA": "Polly.Chantal",
    "de-DE": "Polly.Marlene",
    "it-IT": "Polly.Carla",
}
# A locale without a default voice of its own: the language's default locale and voice.
_VOICE_OVERRIDE = re.compile(r"^(man|woman|alice|Polly\.[A-Za-z]+(-Neural|-Generative)?|Google\.[a-z]{2,3}-[A-Z]{2}-[A-Za-z0-9-]+)$")
_GOOGLE_LOCALE = re.compile(r"^Google\.([a-z]{2,3}-[A-Z]{2})-")


def say_locale(language: str) -> str:
    """``es`` → ``es-ES``; ``es_mx`` / ``es-mx`` → ``es-MX``; an unknown bare code stays as it is."""
    value = (language or "es").strip().replace("_", "-")
    lang, _, region = value.partition("-")
    if region:
        return f"{lang.lower()}-{region.upper()}"
    return DEFAULT_LOCALE.get(lang.lower(), lang.lower())


def say_voice(language: str, override: str | None = None) -> tuple[str | None, str]:
    """The ``(voice, language)`` attributes of a ``<Say>``. ``override`` (config.voice) wins when it is a voice
    name Twilio knows the shape of; otherwise the locale's default Polly voice, else the language's default locale
    and its voice (a locale we have no voice for is spoken in its language's main locale), else no voice."""
    locale = say_locale(language)
    if override is not None and _VOICE_OVERRIDE.match(override.strip()):
        voice = override.strip()
        google = _GOOGLE_LOCALE.match(voice)
        return voice, google.group(1) if google else locale
    if locale in DEFAULT_VOICE:
        return DEFAULT_VOICE[locale], locale
    main = DEFAULT_LOCALE.get(locale.partition("-")[0])
    if main is not None:
        return DEFAULT_VOICE[main], main
    return None, locale
