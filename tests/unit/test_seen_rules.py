"""Issue 18's small rules: what becomes of a transaction shown as seen, where the verifier's
`confirmed` watch connects, and which transaction request URL a payment gets."""

from __future__ import annotations

import dataclasses
from urllib.parse import unquote

import pytest
from solders.signature import Signature

from axiom_payments.ledger import PaymentRow
from axiom_payments.lifecycle import _seen_outcome
from axiom_shared.schemas import (
    ChangeSource,
    CheckOutcome,
    Observation,
    ObservationReason,
    PaymentFindings,
    PaymentStatus,
    SeenOutcome,
    utcnow,
)
from axiom_shared.settings import DEV_MERCHANT_WALLET
from axiom_shared.solana_pay import transaction_request_url
from axiom_verifier.settings import VerifierSettings
from tests.unit.test_lifecycle import row

SEEN = str(Signature.new_unique())
OTHER = str(Signature.new_unique())


def seen_row(outcome: SeenOutcome | None = None) -> PaymentRow:
    return dataclasses.replace(
        row(PaymentStatus.PENDING), seen_signature=SEEN, seen_at=utcnow(), seen_outcome=outcome
    )


def findings(**fields: object) -> PaymentFindings:
    return PaymentFindings.model_validate(
        {"payment_id": "pay_" + "x" * 20, "source": ChangeSource.SEEN, "observed_at": utcnow()}
        | fields
    )


def observation(signature: str) -> Observation:
    return Observation(signature=signature, reason=ObservationReason.NO_CREDIT)


def test_a_seen_transaction_ends_counted_not_a_receipt_or_not_finalized() -> None:
    assert _seen_outcome(seen_row(), findings(), [], {SEEN}) is SeenOutcome.COUNTED
    assert (
        _seen_outcome(seen_row(), findings(), [observation(SEEN)], set())
        is SeenOutcome.NOT_A_RECEIPT
    )
    lost = findings(check=CheckOutcome.TRANSACTION_NOT_FOUND, checked_signature=SEEN)
    assert _seen_outcome(seen_row(), lost, [], set()) is SeenOutcome.NOT_FINALIZED


def test_news_of_other_transactions_says_nothing_of_the_seen_one() -> None:
    other_lost = findings(check=CheckOutcome.TRANSACTION_NOT_FOUND, checked_signature=OTHER)
    assert _seen_outcome(seen_row(), other_lost, [observation(OTHER)], {OTHER}) is None
    # A scan that found nothing names no signature: "not found" is about one signature only.
    scan = findings(check=CheckOutcome.TRANSACTION_NOT_FOUND)
    assert _seen_outcome(seen_row(), scan, [], set()) is None
    # Nothing seen, or already settled: nothing new.
    assert _seen_outcome(row(PaymentStatus.PENDING), findings(), [], {SEEN}) is None
    assert _seen_outcome(seen_row(SeenOutcome.NOT_FINALIZED), findings(), [], {SEEN}) is None


@pytest.mark.parametrize(
    ("rpc", "ws"),
    [
        ("http://127.0.0.1:8899", "ws://127.0.0.1:8900/"),
        ("https://rpc.example.com/?api-key=k", "wss://rpc.example.com/?api-key=k"),
        ("https://rpc.example.com:8443/solana", "wss://rpc.example.com:8444/solana"),
    ],
)
def test_the_watch_finds_the_pubsub_socket_as_web3js_does(rpc: str, ws: str) -> None:
    assert VerifierSettings.load(solana_rpc_url=rpc).pubsub_url() == ws
    explicit = VerifierSettings.load(solana_rpc_url=rpc, solana_ws_url="ws://node:9000")
    assert explicit.pubsub_url() == "ws://node:9000"


def test_the_watch_follows_the_merchant_wallet_and_no_default_outside_development() -> None:
    wallet = "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin"
    assert VerifierSettings.load(merchant_wallet=wallet).watched_wallet() == wallet
    dev = VerifierSettings.load(environment="development", merchant_wallet="")
    assert dev.watched_wallet() == DEV_MERCHANT_WALLET
    assert VerifierSettings.load(environment="production").watched_wallet() is None


def test_transaction_request_urls_are_https_only_and_encoded_whole() -> None:
    assert transaction_request_url("http://127.0.0.1:8080/", "o", "pay_x") is None
    url = transaction_request_url("https://pay.example.com/", "axiomid-pro-monthly", "pay_x")
    assert url is not None
    assert url.startswith("solana:https%3A%2F%2Fpay.example.com%2F")
    assert "?" not in url  # the query is part of the encoded link
    assert unquote(url.removeprefix("solana:")) == (
        "https://pay.example.com/api/pay/req/axiomid-pro-monthly?payment=pay_x"
    )
