"""DESIGN.md's verification rules, as one pure function of a payment and a transaction
fetched at `finalized`. Nothing from a webhook body reaches here: amount, recipient and
status come from our DB and the chain alone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from axiom_shared.schemas import PaymentView, VerdictOutcome
from axiom_verifier.rpc import FinalizedTransaction


@dataclass(frozen=True)
class Finding:
    outcome: VerdictOutcome
    received_lamports: int | None = None


def evaluate(payment: PaymentView, tx: FinalizedTransaction, clock_skew: timedelta) -> Finding:
    if tx.err is not None:
        return Finding(VerdictOutcome.TRANSACTION_FAILED)
    if payment.reference not in tx.account_keys:
        return Finding(VerdictOutcome.NO_REFERENCE)
    if tx.block_time is not None:
        block_time = datetime.fromtimestamp(tx.block_time, UTC)
        # A transaction older than the payment cannot have paid it (e.g. a reused reference).
        if block_time < payment.created_at - clock_skew:
            return Finding(VerdictOutcome.PREDATES_PAYMENT)
    if payment.recipient not in tx.account_keys:
        return Finding(VerdictOutcome.WRONG_RECIPIENT, 0)
    index = tx.account_keys.index(payment.recipient)
    received = tx.post_balances[index] - tx.pre_balances[index]
    if index == 0:
        # The merchant co-signed as fee payer: the fee is its own cost, not a shortfall.
        received += tx.fee
    # As Solana Pay's validateTransfer: the recipient's balance must rise by the amount.
    if received <= 0:
        return Finding(VerdictOutcome.WRONG_RECIPIENT, 0)
    if received < payment.amount_lamports:
        return Finding(VerdictOutcome.UNDERPAID, received)
    return Finding(VerdictOutcome.VERIFIED, received)
