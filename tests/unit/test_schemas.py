"""The wire models: versioned, strict, amounts as decimal strings, keys validated."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError
from solders.pubkey import Pubkey as SoldersPubkey

from axiom_shared.schemas import (
    ChangeSource,
    GetPaymentInput,
    PaymentStatus,
    PaymentStatusChanged,
    PaymentView,
)
from axiom_shared.schemas.base import U64_MAX

PUBKEY = "4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D4xWLs4gDB4T"
SIG = "5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnbJLgp8uirBgmQpjKhoR4tjF3ZpRzrFmBV6UjKdiSZkQUW"


def view(**overrides: object) -> PaymentView:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    fields: dict[str, object] = {
        "payment_id": "p_" + "a" * 22,
        "status": PaymentStatus.PENDING,
        "order_id": "pro-monthly",
        "amount_lamports": 10**18,
        "recipient": PUBKEY,
        "reference": PUBKEY,
        "expires_at": now + timedelta(minutes=15),
        "created_at": now,
        "updated_at": now,
        "version": 1,
    }
    fields.update(overrides)
    return PaymentView.model_validate(fields)


def test_event_round_trips_with_schema_and_string_amounts() -> None:
    event = PaymentStatusChanged(payment=view(), previous_status=None, source=ChangeSource.CREATION)
    wire = json.loads(event.to_bytes())
    assert wire["schema"] == "payments.status_changed/1"
    # Lamports exceed 2^53: they travel as decimal strings, never as JSON numbers.
    assert wire["payment"]["amount_lamports"] == "1000000000000000000"
    assert PaymentStatusChanged.from_bytes(event.to_bytes()) == event


def test_a_message_of_another_schema_is_refused() -> None:
    wire = json.loads(GetPaymentInput(payment_id="abc").to_bytes())
    wire["schema"] = "payments.get.input/2"
    with pytest.raises(ValidationError, match="unexpected schema"):
        GetPaymentInput.from_bytes(json.dumps(wire).encode())


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        GetPaymentInput.from_bytes(b'{"schema": "payments.get.input/1", "payment_id": "x", "y": 1}')


@pytest.mark.parametrize(
    "amount", ["-1", "1.5", "1e3", "", " 1", str(U64_MAX + 1), True, -5, "abc"]
)
def test_bad_amounts_are_refused(amount: object) -> None:
    with pytest.raises(ValidationError):
        view(amount_lamports=amount)


def test_largest_u64_amount_is_kept_exactly() -> None:
    assert view(amount_lamports=str(U64_MAX)).amount_lamports == U64_MAX


@pytest.mark.parametrize(
    "key", ["", "0OIl" * 11, PUBKEY[:-2], PUBKEY + "1", "'; DROP TABLE payments; --", SIG]
)
def test_bad_public_keys_are_refused(key: str) -> None:
    with pytest.raises(ValidationError):
        view(recipient=key)


def test_signature_and_pubkey_lengths() -> None:
    assert len(bytes(SoldersPubkey.from_string(PUBKEY))) == 32
    assert view(tx_signature=SIG, status="verified").tx_signature == SIG
    with pytest.raises(ValidationError):
        view(tx_signature=PUBKEY)


def test_the_schema_field_is_required_on_the_wire() -> None:
    with pytest.raises(ValidationError, match="schema is required"):
        GetPaymentInput.from_bytes(b'{"payment_id": "abc"}')
    assert GetPaymentInput(payment_id="abc").schema_ == "payments.get.input/1"
