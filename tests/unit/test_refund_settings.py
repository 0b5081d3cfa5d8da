"""Hot-wallet refunds are off unless a key is given, from the environment or a file, and the
key never shows: not in the settings' repr, not in the error a bad key raises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from solders.keypair import Keypair

from axiom_payments.app import refund_key
from axiom_payments.settings import PaymentsSettings


def test_hot_wallet_mode_is_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REFUND_PRIVATE_KEY", raising=False)
    monkeypatch.delenv("REFUND_PRIVATE_KEY_FILE", raising=False)
    settings = PaymentsSettings.load(environment="development")
    assert settings.refund_private_key is None
    assert refund_key(settings) is None


def test_the_key_comes_from_a_file_and_is_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = Keypair()
    path = tmp_path / "refund-key.json"
    path.write_text(json.dumps(list(bytes(key))))
    monkeypatch.delenv("REFUND_PRIVATE_KEY", raising=False)
    monkeypatch.setenv("REFUND_PRIVATE_KEY_FILE", str(path))
    settings = PaymentsSettings.load(environment="development")
    assert refund_key(settings) == key
    assert str(list(bytes(key))[:8])[1:-1] not in repr(settings)


def test_a_bad_key_is_refused_without_being_named(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "not-a-key-but-still-secret-4f9a"
    monkeypatch.setenv("REFUND_PRIVATE_KEY", secret)
    settings = PaymentsSettings.load(environment="development")
    with pytest.raises(ValueError, match="REFUND_PRIVATE_KEY") as caught:
        refund_key(settings)
    assert secret not in str(caught.value)
    assert caught.value.__cause__ is None
