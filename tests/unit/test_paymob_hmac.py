"""Paymob's transaction HMAC against the reference test vector (shared/reference/paymob.md)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from axiom_gateway.paymob_hmac import (
    PAYMOB_HMAC_FIELDS,
    SignedValue,
    hmac_matches,
    hmac_text,
    paymob_hmac,
    signed_string,
)
from axiom_shared.schemas.paymob import PaymobTransactionState, paymob_transaction_state

SECRET = "dummy_hmac"
EXPECTED = (
    "51860052ecc6d9f08ac30a549359019e2eee837913b5673094c242c817ddf57c"
    "055ba5e3e9c0894b1171e62c2d37cd55ff98a46a0e28e1ccf2e4a907e6683aa5"
)
#: The vector's values, typed as a POST callback carries them (JSON booleans and numbers).
VECTOR: dict[str, SignedValue] = dict(
    zip(
        PAYMOB_HMAC_FIELDS,
        [
            111111,
            "2025-04-01T17:29:16.967925",
            "EGP",
            False,
            False,
            "dummy_id",
            1234,
            True,
            False,
            False,
            False,
            True,
            False,
            123,
            12,
            False,
            "1111",
            "Visa",
            "card",
            True,
        ],
        strict=True,
    )
)


def test_the_reference_vector_verifies() -> None:
    assert paymob_hmac(VECTOR, SECRET) == EXPECTED
    assert hmac_matches(EXPECTED, VECTOR, [SECRET])


def test_the_vector_as_query_text_verifies_too() -> None:
    # A GET redirect carries the same values as text: the signed string is the same.
    as_text: dict[str, SignedValue] = {k: hmac_text(v) for k, v in VECTOR.items()}
    assert paymob_hmac(as_text, SECRET) == EXPECTED


def test_the_signed_string_is_the_values_in_paymobs_order() -> None:
    assert signed_string(VECTOR) == (
        "1111112025-04-01T17:29:16.967925EGPfalsefalsedummy_id1234truefalsefalsefalsetrue"
        "false12312false1111Visacardtrue"
    )


def _changed(value: SignedValue) -> SignedValue:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    return value + "x"


@pytest.mark.parametrize("field", PAYMOB_HMAC_FIELDS)
def test_changing_any_one_field_fails(field: str) -> None:
    tampered = {**VECTOR, field: _changed(VECTOR[field])}
    assert paymob_hmac(tampered, SECRET) != EXPECTED
    assert not hmac_matches(EXPECTED, tampered, [SECRET])


@pytest.mark.parametrize("secret", ["dummy_hmac2", "Dummy_hmac", "", "dummy_hma"])
def test_another_secret_fails(secret: str) -> None:
    assert not hmac_matches(EXPECTED, VECTOR, [secret])


def test_either_of_two_secrets_verifies_during_a_rotation() -> None:
    assert hmac_matches(EXPECTED, VECTOR, ["new-secret", SECRET])
    assert hmac_matches(EXPECTED, VECTOR, [SECRET, "new-secret"])
    assert not hmac_matches(EXPECTED, VECTOR, ["new-secret", "other"])


def test_booleans_written_the_python_way_fail() -> None:
    assert hmac_text(True) == "true"
    assert hmac_text(False) == "false"
    python_str = "".join(str(VECTOR[name]) for name in PAYMOB_HMAC_FIELDS)
    assert "True" in python_str
    wrong = hmac.new(SECRET.encode(), python_str.encode(), hashlib.sha512).hexdigest()
    assert wrong != EXPECTED
    assert not hmac_matches(wrong, VECTOR, [SECRET])


@pytest.mark.parametrize(
    "given",
    [None, "", EXPECTED[:-1], EXPECTED + "0", "zz" + EXPECTED[2:], " " + EXPECTED[1:]],
)
def test_a_missing_or_malformed_hmac_never_matches(given: str | None) -> None:
    assert not hmac_matches(given, VECTOR, [SECRET])


def test_an_uppercase_hex_hmac_is_the_same_digest() -> None:
    assert hmac_matches(EXPECTED.upper(), VECTOR, [SECRET])


def test_a_non_ascii_hmac_is_refused_not_an_error() -> None:
    assert not hmac_matches("é" * 128, VECTOR, [SECRET])


@pytest.mark.parametrize(
    ("flags", "state"),
    [
        ({"success": True}, PaymobTransactionState.SUCCESS),
        ({}, PaymobTransactionState.DECLINED),
        ({"pending": True}, PaymobTransactionState.PENDING),
        ({"success": True, "is_refunded": True}, PaymobTransactionState.REFUNDED),
        ({"success": True, "is_voided": True}, PaymobTransactionState.VOIDED),
    ],
)
def test_transaction_state(flags: dict[str, bool], state: PaymobTransactionState) -> None:
    values = {"success": False, "pending": False, "is_refunded": False, "is_voided": False}
    assert paymob_transaction_state(**{**values, **flags}) is state
