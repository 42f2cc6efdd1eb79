"""Every environment variable the daemon reads, in one place (SPEC §10)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import phonenumbers
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(ValueError):
    """A bad environment value; the message is one line naming the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    database_url: str | None = Field(None, repr=False, validation_alias=AliasChoices("DATABASE_URL"))
    home: Path = Field(Path(".revenue-asi"), validation_alias=AliasChoices("REVENUE_ASI_HOME"))

    twilio_account_sid: str | None = Field(None, validation_alias=AliasChoices("TWILIO_ACCOUNT_SID"))
    twilio_auth_token: SecretStr | None = Field(None, validation_alias=AliasChoices("TWILIO_AUTH_TOKEN"))
    twilio_base_url: str = Field("https://api.twilio.com", validation_alias=AliasChoices("TWILIO_BASE_URL"))
    elasticemail_api_key: SecretStr | None = Field(None, validation_alias=AliasChoices("ELASTICEMAIL_API_KEY"))
    elasticemail_base_url: str = Field(
        "https://api.elasticemail.com", validation_alias=AliasChoices("ELASTICEMAIL_BASE_URL")
    )

    qa_sink_phone: str | None = Field(None, validation_alias=AliasChoices("QA_SINK_PHONE"))
    qa_sink_email: str | None = Field(None, validation_alias=AliasChoices("QA_SINK_EMAIL"))
    dry_run: bool = Field(False, validation_alias=AliasChoices("DRY_RUN"))

    sweep_interval_s: float = Field(5.0, gt=0, validation_alias=AliasChoices("REVENUE_ASI_SWEEP_INTERVAL_S"))
    orchestrator_interval_s: float = Field(
        300.0, gt=0, validation_alias=AliasChoices("REVENUE_ASI_ORCHESTRATOR_INTERVAL_S")
    )
    reactivation_interval_s: float = Field(
        1800.0, gt=0, validation_alias=AliasChoices("REVENUE_ASI_REACTIVATION_INTERVAL_S")
    )
    lease_s: float = Field(120.0, gt=0, validation_alias=AliasChoices("REVENUE_ASI_LEASE_S"))
    concurrency: int = Field(32, ge=1, le=1024, validation_alias=AliasChoices("REVENUE_ASI_CONCURRENCY"))
    claim_batch: int = Field(64, ge=1, le=5000, validation_alias=AliasChoices("REVENUE_ASI_CLAIM_BATCH"))
    default_region: str = Field("US", min_length=2, max_length=2, validation_alias=AliasChoices("REVENUE_ASI_DEFAULT_REGION"))
    provider_timeout_s: float = Field(15.0, gt=0, validation_alias=AliasChoices("REVENUE_ASI_PROVIDER_TIMEOUT_S"))
    # SPEC §16: a 429 halves its sender's rate for 60 s. Off only for fault-injection runs whose 429s are random
    # per request (bench chaos faults / fault_mix, SPEC §11), where slowing the sender cannot make them stop.
    provider_pushback: bool = Field(True, validation_alias=AliasChoices("REVENUE_ASI_PROVIDER_PUSHBACK"))
    shutdown_grace_s: float = Field(10.0, ge=0, validation_alias=AliasChoices("REVENUE_ASI_SHUTDOWN_GRACE_S"))
    worker_id: str | None = Field(None, validation_alias=AliasChoices("REVENUE_ASI_WORKER_ID"))
    metrics_port: int | None = Field(None, ge=1, le=65535, validation_alias=AliasChoices("REVENUE_ASI_METRICS_PORT"))
    log_level: str = Field("INFO", validation_alias=AliasChoices("REVENUE_ASI_LOG_LEVEL"))

    reconcile_interval_s: float = Field(30.0, gt=0, validation_alias=AliasChoices("REVENUE_ASI_RECONCILE_INTERVAL_S"))
    event_loop: Literal["uvloop", "asyncio"] = Field("uvloop", validation_alias=AliasChoices("REVENUE_ASI_EVENT_LOOP"))
    # Part two (SPEC §11–§15)
    statement_timeout_ms: int = Field(30_000, ge=0, validation_alias=AliasChoices("REVENUE_ASI_STATEMENT_TIMEOUT_MS"))
    lock_timeout_ms: int = Field(5_000, ge=0, validation_alias=AliasChoices("REVENUE_ASI_LOCK_TIMEOUT_MS"))
    idle_in_transaction_timeout_ms: int = Field(
        60_000, ge=0, validation_alias=AliasChoices("REVENUE_ASI_IDLE_IN_TRANSACTION_TIMEOUT_MS"))
    http_host: str = Field("127.0.0.1", validation_alias=AliasChoices("REVENUE_ASI_HTTP_HOST"))
    http_port: int = Field(8080, ge=0, le=65535, validation_alias=AliasChoices("PORT"))
    public_url: str | None = Field(None, validation_alias=AliasChoices("REVENUE_ASI_PUBLIC_URL"))
    elasticemail_webhook_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("ELASTICEMAIL_WEBHOOK_TOKEN"))
    dashboard_token: SecretStr | None = Field(None, validation_alias=AliasChoices("REVENUE_ASI_DASHBOARD_TOKEN"))
    # SPEC §19: signs the one-click unsubscribe links (HMAC-SHA256); required with REVENUE_ASI_PUBLIC_URL
    unsubscribe_secret: SecretStr | None = Field(
        None, validation_alias=AliasChoices("REVENUE_ASI_UNSUBSCRIBE_SECRET"))
    default_timezone: str = Field("UTC", validation_alias=AliasChoices("REVENUE_ASI_DEFAULT_TIMEZONE"))
    quiet_hours: str = Field("21:00-08:00", validation_alias=AliasChoices("REVENUE_ASI_QUIET_HOURS"))
    appointment_reminders: str = Field("1440,60", validation_alias=AliasChoices("REVENUE_ASI_APPOINTMENT_REMINDERS"))
    appointment_channel: str = Field("whatsapp", validation_alias=AliasChoices("REVENUE_ASI_APPOINTMENT_CHANNEL"))
    # Part three (SPEC §18): the optional model behind Command OS's resolver, asked only when the rules find nothing —
    # an OpenAI-compatible chat completions endpoint (the full …/v1/chat/completions URL or its base …/v1).
    llm_url: str | None = Field(None, repr=False, validation_alias=AliasChoices("REVENUE_ASI_LLM_URL"))
    llm_model: str | None = Field(None, validation_alias=AliasChoices("REVENUE_ASI_LLM_MODEL"))
    llm_api_key: SecretStr | None = Field(None, validation_alias=AliasChoices("REVENUE_ASI_LLM_API_KEY"))
    llm_timeout_s: float = Field(5.0, gt=0, le=60, validation_alias=AliasChoices("REVENUE_ASI_LLM_TIMEOUT_S"))

    @field_validator("qa_sink_phone")
    @classmethod
    def _qa_sink_phone_is_e164(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        try:
            parsed = phonenumbers.parse(value, None)
        except phonenumbers.NumberParseException as exc:
            raise ValueError(f"not a phone number in E.164 form (+<country><number>): {exc}") from None
        if not phonenumbers.is_valid_number(parsed):
            raise ValueError("not a valid phone number in E.164 form")
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)

    @field_validator("qa_sink_email")
    @classmethod
    def _qa_sink_email_has_at(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        value = value.strip()
        local, _, domain = value.partition("@")
        if not local or "." not in domain:
            raise ValueError("not an email address")
        return value

    @field_validator("llm_url")
    @classmethod
    def _llm_url_is_http(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        value = value.strip()
        if not value.lower().startswith(("http://", "https://")):
            raise ValueError("an http:// or https:// URL (…/v1 or …/v1/chat/completions)")
        return value

    @field_validator("llm_model")
    @classmethod
    def _blank_model_is_unset(cls, value: str | None) -> str | None:
        return None if value is None or value.strip() == "" else value.strip()

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours_parse(cls, value: str) -> str:
        from listener.rules.sendrules import parse_quiet_hours  # §13; sendrules imports nothing from here

        parse_quiet_hours(value)
        return value.strip()

    @field_validator("default_timezone")
    @classmethod
    def _default_timezone_known(cls, value: str) -> str:
        from listener.rules.sendrules import valid_zone

        if not valid_zone(value):
            raise ValueError("not a known IANA time zone (e.g. UTC, America/New_York)")
        return value.strip()

    @field_validator("unsubscribe_secret")
    @classmethod
    def _unsubscribe_secret_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        if len(value.get_secret_value()) < MIN_UNSUBSCRIBE_SECRET:
            raise ValueError(f"must be at least {MIN_UNSUBSCRIBE_SECRET} characters (a long random value, e.g. "
                             "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
        return value

    @field_validator("default_region")
    @classmethod
    def _region_upper(cls, value: str) -> str:
        return value.upper()

    @field_validator("appointment_reminders")
    @classmethod
    def _reminder_minutes(cls, value: str) -> str:
        """Minutes before an appointment, comma-separated (`1440,60`); `off` or empty: no reminders. Normalised to
        distinct integers, largest first."""
        text = value.strip().lower()
        if text in ("", "off", "none"):
            return ""
        minutes: set[int] = set()
        for part in text.split(","):
            part = part.strip()
            if not part.isdigit() or not 1 <= int(part) <= 525_600:
                raise ValueError("a comma-separated list of whole minutes between 1 and 525600 (e.g. 1440,60), "
                                 "or off")
            minutes.add(int(part))
        return ",".join(str(m) for m in sorted(minutes, reverse=True))

    @field_validator("appointment_channel")
    @classmethod
    def _appointment_channel(cls, value: str) -> str:
        channel = value.strip().lower()
        if channel not in ("voice", "whatsapp", "sms", "email"):
            raise ValueError("one of whatsapp, sms, voice, email")
        return channel

    @property
    def appointment_reminder_minutes(self) -> tuple[int, ...]:
        return tuple(int(m) for m in self.appointment_reminders.split(",") if m)

    @property
    def twilio_configured(self) -> bool:
        return bool(self.twilio_account_sid and self.twilio_auth_token)

    @property
    def elasticemail_configured(self) -> bool:
        return bool(self.elasticemail_api_key)

    def secrets(self) -> list[str]:
        """Secret values, for scrubbing anything that leaves the process."""
        return [s.get_secret_value() for s in (self.twilio_auth_token, self.elasticemail_api_key,
                                               self.elasticemail_webhook_token, self.dashboard_token,
                                               self.unsubscribe_secret, self.llm_api_key) if s]

    @property
    def one_click_unsubscribe(self) -> bool:
        """SPEC §19: e-mails carry List-Unsubscribe headers (and templates get {unsubscribe_url})."""
        return bool(self.public_url and self.unsubscribe_secret)

    def check_unsubscribe_secret(self) -> None:
        """The daemon and the web application refuse to start with a public URL and no unsubscribe secret (SPEC
        §19): every e-mail would go out without its one-click link, or with links nobody can verify."""
        if self.public_url and self.unsubscribe_secret is None:
            raise SettingsError("REVENUE_ASI_UNSUBSCRIBE_SECRET is required when REVENUE_ASI_PUBLIC_URL is set (it signs "
                                "the one-click unsubscribe links of every e-mail); set it to a long random value")


MIN_UNSUBSCRIBE_SECRET = 16
SECRET_ENV_NAMES = ("TWILIO_AUTH_TOKEN", "ELASTICEMAIL_API_KEY", "ELASTICEMAIL_WEBHOOK_TOKEN", "REVENUE_ASI_DASHBOARD_TOKEN",
                    "REVENUE_ASI_UNSUBSCRIBE_SECRET", "REVENUE_ASI_LLM_API_KEY", "REVENUE_ASI_LLM_URL")

_ENV_NAMES: dict[str, str] = {
    name: (str(field.validation_alias.choices[0]) if isinstance(field.validation_alias, AliasChoices) else name)
    for name, field in Settings.model_fields.items()
}


def load_settings(**overrides: Any) -> Settings:
    """Read the environment; a bad value raises SettingsError with one line naming the variable.

    Overrides (tests, the demo, the bench) are given by field name, e.g. ``load_settings(lease_s=2)``.
    """
    by_env_name = {_ENV_NAMES.get(key, key): value for key, value in overrides.items()}
    try:
        return Settings(**by_env_name)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        env_name = _ENV_NAMES.get(field, field.upper())
        given = first.get("input")
        shown = "" if isinstance(given, dict) or env_name in SECRET_ENV_NAMES else f" (got {given!r})"
        raise SettingsError(f"invalid {env_name}: {first['msg']}{shown}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
