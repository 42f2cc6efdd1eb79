"""SPEC §10: settings from the environment, by their SPEC names; one clear error line; secrets stay secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from listener.settings import Settings, SettingsError, load_settings

ENV_NAMES = [
    "DATABASE_URL", "REVENUE_ASI_HOME", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_BASE_URL",
    "ELASTICEMAIL_API_KEY", "ELASTICEMAIL_BASE_URL", "QA_SINK_PHONE", "QA_SINK_EMAIL", "DRY_RUN",
    "REVENUE_ASI_SWEEP_INTERVAL_S", "REVENUE_ASI_ORCHESTRATOR_INTERVAL_S", "REVENUE_ASI_REACTIVATION_INTERVAL_S",
    "REVENUE_ASI_LEASE_S", "REVENUE_ASI_CONCURRENCY",
]

TOKEN = "tw-auth-0123456789abcdef"
API_KEY = "ee-key-fedcba9876543210"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    # Run where no .env or other stray file could feed values in.
    return monkeypatch


def test_defaults():
    s = load_settings()
    assert s.sweep_interval_s == 5
    assert s.orchestrator_interval_s == 300
    assert s.reactivation_interval_s == 1800
    assert s.lease_s == 120
    assert s.database_url is None
    assert s.home == Path(".revenue-asi")
    assert s.dry_run is False
    assert s.qa_sink_phone is None and s.qa_sink_email is None
    assert s.twilio_auth_token is None and s.elasticemail_api_key is None
    assert s.concurrency >= 1
    assert s.twilio_configured is False and s.elasticemail_configured is False


def test_environment_is_read_by_spec_names(monkeypatch):
    env = {
        "DATABASE_URL": "postgresql://u@db.internal:5432/revenue",
        "REVENUE_ASI_HOME": "/var/lib/revenue-asi",
        "TWILIO_ACCOUNT_SID": "AC0123",
        "TWILIO_AUTH_TOKEN": TOKEN,
        "TWILIO_BASE_URL": "http://127.0.0.1:9001",
        "ELASTICEMAIL_API_KEY": API_KEY,
        "ELASTICEMAIL_BASE_URL": "http://127.0.0.1:9002",
        "QA_SINK_PHONE": "+34612345678",
        "QA_SINK_EMAIL": "qa@acme.test",
        "DRY_RUN": "true",
        "REVENUE_ASI_SWEEP_INTERVAL_S": "0.5",
        "REVENUE_ASI_ORCHESTRATOR_INTERVAL_S": "60",
        "REVENUE_ASI_REACTIVATION_INTERVAL_S": "900",
        "REVENUE_ASI_LEASE_S": "30",
        "REVENUE_ASI_CONCURRENCY": "7",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = load_settings()
    assert s.database_url == env["DATABASE_URL"]
    assert s.home == Path("/var/lib/revenue-asi")
    assert s.twilio_account_sid == "AC0123"
    assert s.twilio_auth_token.get_secret_value() == TOKEN
    assert s.twilio_base_url == "http://127.0.0.1:9001"
    assert s.elasticemail_api_key.get_secret_value() == API_KEY
    assert s.elasticemail_base_url == "http://127.0.0.1:9002"
    assert s.qa_sink_phone == "+34612345678"
    assert s.qa_sink_email == "qa@acme.test"
    assert s.dry_run is True
    assert s.sweep_interval_s == 0.5
    assert s.orchestrator_interval_s == 60
    assert s.reactivation_interval_s == 900
    assert s.lease_s == 30
    assert s.concurrency == 7
    assert s.twilio_configured and s.elasticemail_configured


@pytest.mark.parametrize("value", ["false", "0", "no"])
def test_dry_run_false_values(monkeypatch, value):
    monkeypatch.setenv("DRY_RUN", value)
    assert load_settings().dry_run is False


def test_overrides_by_field_name_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("REVENUE_ASI_LEASE_S", "30")
    assert load_settings(lease_s=2).lease_s == 2


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REVENUE_ASI_SWEEP_INTERVAL_S", "soon"),
        ("REVENUE_ASI_SWEEP_INTERVAL_S", "0"),
        ("REVENUE_ASI_ORCHESTRATOR_INTERVAL_S", "-5"),
        ("REVENUE_ASI_REACTIVATION_INTERVAL_S", "half an hour"),
        ("REVENUE_ASI_LEASE_S", "abc"),
        ("REVENUE_ASI_CONCURRENCY", "many"),
        ("REVENUE_ASI_CONCURRENCY", "0"),
        ("DRY_RUN", "perhaps"),
        ("QA_SINK_EMAIL", "not-an-email"),
    ],
)
def test_bad_value_names_the_variable_in_one_line(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert name in message
    assert "\n" not in message


def test_non_numeric_sweep_interval(monkeypatch):
    monkeypatch.setenv("REVENUE_ASI_SWEEP_INTERVAL_S", "five")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "REVENUE_ASI_SWEEP_INTERVAL_S" in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("value", ["12", "+1 555", "hello", "0034 612"])
def test_invalid_qa_sink_phone(monkeypatch, value):
    monkeypatch.setenv("QA_SINK_PHONE", value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "QA_SINK_PHONE" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("value", "e164"),
    [("+34 612 34 56 78", "+34612345678"), ("+1 (415) 555-2671", "+14155552671"), ("+44 20 7946 0958", "+442079460958")],
)
def test_valid_qa_sink_phone_is_normalised_to_e164(monkeypatch, value, e164):
    monkeypatch.setenv("QA_SINK_PHONE", value)
    assert load_settings().qa_sink_phone == e164


def test_blank_qa_sinks_mean_unset(monkeypatch):
    monkeypatch.setenv("QA_SINK_PHONE", "  ")
    monkeypatch.setenv("QA_SINK_EMAIL", "")
    s = load_settings()
    assert s.qa_sink_phone is None and s.qa_sink_email is None


def test_secrets_are_secretstr_and_never_in_repr(monkeypatch):
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("ELASTICEMAIL_API_KEY", API_KEY)
    s = load_settings()
    assert isinstance(s.twilio_auth_token, SecretStr)
    assert isinstance(s.elasticemail_api_key, SecretStr)
    for text in (repr(s), str(s), repr(s.model_dump()), s.model_dump_json()):
        assert TOKEN not in text and API_KEY not in text
    assert sorted(s.secrets()) == sorted([TOKEN, API_KEY])
    assert Settings.model_fields["twilio_auth_token"].annotation == SecretStr | None


def test_secrets_never_in_the_error_for_a_bad_value(monkeypatch):
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("ELASTICEMAIL_API_KEY", API_KEY)
    monkeypatch.setenv("REVENUE_ASI_LEASE_S", "abc")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "REVENUE_ASI_LEASE_S" in str(info.value)
    assert TOKEN not in str(info.value) and API_KEY not in str(info.value)


@pytest.mark.parametrize(("field", "env_name"),
                         [("twilio_auth_token", "TWILIO_AUTH_TOKEN"), ("elasticemail_api_key", "ELASTICEMAIL_API_KEY")])
def test_a_bad_secret_is_named_but_not_shown(field, env_name):
    secret_value = ["s3cr3t-" + env_name]  # not a string: refused
    with pytest.raises(SettingsError) as info:
        load_settings(**{field: secret_value})
    message = str(info.value)
    assert env_name in message
    assert secret_value[0] not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
