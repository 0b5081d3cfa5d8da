"""Settings: from the environment at start-up, secrets from `*_FILE`, never shown."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from axiom_amadeus_proxy.settings import AmadeusProxySettings
from axiom_gateway.settings import GatewaySettings
from axiom_payments.settings import DEV_MERCHANT_WALLET, PaymentsSettings
from axiom_shared.service import settings_problem, tune_gc


def test_defaults_work_with_nothing_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("NATS_URL", "REDIS_URL", "PORT", "GATEWAY_PORT", "PAYMENTS_PORT"):
        monkeypatch.delenv(var, raising=False)
    assert GatewaySettings.load().port == 8080
    payments = PaymentsSettings.load()
    assert payments.port == 8082
    assert payments.nats_url == "nats://127.0.0.1:4222"
    assert payments.turso_db_url == "file:var/payments.db"


def test_service_port_and_generic_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "9001")
    assert GatewaySettings.load().port == 9001
    monkeypatch.delenv("GATEWAY_PORT")
    monkeypatch.setenv("PORT", "9002")
    assert GatewaySettings.load().port == 9002


def test_secret_from_file_and_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text("file-secret-value\n")
    monkeypatch.delenv("TURSO_DB_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("TURSO_DB_AUTH_TOKEN_FILE", str(secret_file))
    settings = PaymentsSettings.load()
    assert settings.turso_db_auth_token is not None
    assert settings.turso_db_auth_token.get_secret_value() == "file-secret-value"
    assert "file-secret-value" not in repr(settings)
    assert "file-secret-value" not in str(settings.model_dump())


def test_environment_value_wins_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text("from-file")
    monkeypatch.setenv("BOOKINGS_DB_AUTH_TOKEN", "from-env")
    monkeypatch.setenv("BOOKINGS_DB_AUTH_TOKEN_FILE", str(secret_file))
    token = AmadeusProxySettings.load().bookings_db_auth_token
    assert token is not None
    assert token.get_secret_value() == "from-env"


def test_bad_values_fail_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "70000")
    with pytest.raises(ValueError, match="GATEWAY_PORT"):
        GatewaySettings.load()


def test_outside_development_a_merchant_wallet_is_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MERCHANT_WALLET", raising=False)
    monkeypatch.setenv("ENVIRONMENT", "production")
    with pytest.raises(ValidationError) as refused:
        PaymentsSettings.load()
    assert settings_problem(refused.value).startswith("MERCHANT_WALLET must be set")
    monkeypatch.setenv("MERCHANT_WALLET", "")  # declared but empty (compose, k8s): still unset
    with pytest.raises(ValidationError):
        PaymentsSettings.load()
    wallet = "4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D4xWLs4gDB4T"
    monkeypatch.setenv("MERCHANT_WALLET", wallet)
    assert PaymentsSettings.load().merchant(None) == wallet
    monkeypatch.delenv("MERCHANT_WALLET")
    monkeypatch.setenv("ENVIRONMENT", "development")
    assert PaymentsSettings.load().merchant(None) == DEV_MERCHANT_WALLET


def test_a_bad_setting_is_one_line_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYMENT_TTL_SECONDS", "soon")
    with pytest.raises(ValidationError) as refused:
        PaymentsSettings.load()
    line = settings_problem(refused.value)
    assert line.startswith("PAYMENT_TTL_SECONDS: ")
    assert "\n" not in line
    monkeypatch.delenv("PAYMENT_TTL_SECONDS")
    monkeypatch.delenv("TURSO_DB_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("TURSO_DB_AUTH_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValidationError) as refused:
        PaymentsSettings.load()
    assert settings_problem(refused.value).startswith("TURSO_DB_AUTH_TOKEN_FILE: cannot read")


def test_nats_login_is_the_service_user_with_a_password_from_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NATS_USER", raising=False)
    monkeypatch.delenv("NATS_PASSWORD", raising=False)
    assert PaymentsSettings.load().nats_login == (None, None)
    secret = tmp_path / "nats-password"
    secret.write_text("n4ts-pw\n")
    monkeypatch.setenv("NATS_PASSWORD_FILE", str(secret))
    settings = PaymentsSettings.load()
    assert settings.nats_login == ("payments", "n4ts-pw")
    assert "n4ts-pw" not in repr(settings)
    monkeypatch.setenv("NATS_USER", "axiom-ops")
    assert PaymentsSettings.load().nats_login == ("axiom-ops", "n4ts-pw")


def test_urls_that_may_carry_credentials_come_from_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOLANA_RPC_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    (tmp_path / "rpc").write_text("https://rpc.example/?api-key=k3y\n")
    (tmp_path / "redis").write_text("rediss://default:pw@cache.example:6379/0\n")
    (tmp_path / "redis-password").write_text("r3dis\n")
    monkeypatch.setenv("SOLANA_RPC_URL_FILE", str(tmp_path / "rpc"))
    monkeypatch.setenv("REDIS_URL_FILE", str(tmp_path / "redis"))
    monkeypatch.setenv("REDIS_PASSWORD_FILE", str(tmp_path / "redis-password"))
    settings = PaymentsSettings.load()
    assert settings.solana_rpc_url == "https://rpc.example/?api-key=k3y"
    assert settings.redis_url == "rediss://default:pw@cache.example:6379/0"
    assert settings.redis_password is not None
    assert settings.redis_password.get_secret_value() == "r3dis"


@pytest.fixture
def gc_state() -> Iterator[None]:
    """The process's collector as it was, whatever the test does to it."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("gc_state")
def test_once_started_start_up_is_frozen_and_young_objects_collected_less_often() -> None:
    """`GC_THRESHOLD` (default 10,000): what start-up built is out of every later collection
    (a full one no longer walks it), and the youngest generation waits for that many new
    objects; 0 keeps Python's thresholds (still freezing)."""
    assert GatewaySettings.load().gc_threshold == 10_000
    before = gc.get_threshold()
    tune_gc(0)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() > 1000  # the modules, classes and schemas loaded so far
    gc.unfreeze()
    tune_gc(10_000)
    assert gc.get_threshold() == (10_000, before[1], before[2])
    assert gc.get_freeze_count() > 0
    with pytest.raises(ValidationError):
        GatewaySettings(gc_threshold=-1)
