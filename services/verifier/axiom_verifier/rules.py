"""DESIGN.md's receipt rules, as one pure function of a payment and a transaction fetched at
`finalized`. Nothing from a webhook body reaches here: amount, recipient and reference come
from our DB and the chain alone.

A transaction that carries the payment's reference is either a receipt (it paid) or an
observation (it did not, and says why); one that does not carry it says nothing about the
payment. Whoever reads a reference on chain can send the second kind, so it must never move
a status: that is the payments service's rule, these are only facts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from solders.pubkey import Pubkey

from axiom_shared.schemas import ObservationReason, PaymentView, RefundView
from axiom_shared.solana_rpc import FinalizedTransaction
from axiom_shared.spl_token import associated_token_address, token_changes


@dataclass(frozen=True)
class Credit:
    """What the transaction did for the merchant, and who paid it."""

    lamports: int
    payer: str | None


@dataclass(frozen=True)
class Judgement:
    #: None: a receipt of `credit.lamports`. Otherwise why it is not one.
    reason: ObservationReason | None
    credit: Credit | None = None


def merchant_credit(tx: FinalizedTransaction, merchant: str) -> Credit:
    """The merchant's balance delta (its own fee added back when it paid the fee) and the
    account that paid the most."""
    received = 0
    if merchant in tx.account_keys:
        index = tx.account_keys.index(merchant)
        received = tx.post_balances[index] - tx.pre_balances[index]
        if index == 0:
            # The merchant co-signed as fee payer: the fee is its own cost, not a shortfall.
            received += tx.fee
    payer, paid = None, 0
    for index, key in enumerate(tx.account_keys):
        if key == merchant:
            continue
        spent = tx.pre_balances[index] - tx.post_balances[index] - (tx.fee if index == 0 else 0)
        if spent > paid:
            payer, paid = key, spent
    if payer is None and tx.account_keys and tx.account_keys[0] != merchant:
        payer = tx.account_keys[0]
    return Credit(received, payer)


def merchant_token_credit(tx: FinalizedTransaction, merchant: str, mint: str) -> Credit:
    """What the transaction credited the merchant in `mint`: the rise of the merchant's
    associated token account for that mint (as `validateTransfer` with `splToken` reads it),
    owned by the merchant before and after. A look-alike mint, a token account of another
    owner, or SOL sent beside count nothing. The payer is the owner whose balance of the
    mint fell the most (where a refund goes)."""
    changes = token_changes(tx.pre_token_balances, tx.post_token_balances, mint)
    account = str(associated_token_address(Pubkey.from_string(merchant), Pubkey.from_string(mint)))
    received = 0
    if account in tx.account_keys:
        before, after, delta = changes.get(tx.account_keys.index(account), (None, None, 0))
        if after == merchant and before in (None, merchant):
            received = delta
    payer, paid = None, 0
    for before, after, delta in changes.values():
        owner = before or after
        if owner is not None and owner != merchant and -delta > paid:
            payer, paid = owner, -delta
    return Credit(received, payer)


def judge(
    payment: PaymentView,
    tx: FinalizedTransaction,
    *,
    block_time: datetime,
    other_references: int,
    clock_skew: timedelta,
) -> Judgement | None:
    """None when the transaction does not carry the payment's reference (it says nothing
    about it); else a receipt or an observation. `block_time` is the transaction's, resolved
    from its slot when the node had none; `other_references` counts the other payments of
    ours the transaction names."""
    if payment.reference not in tx.account_keys:
        return None
    if tx.err is not None:
        return Judgement(ObservationReason.TRANSACTION_FAILED)
    credit = (
        merchant_credit(tx, payment.recipient)
        if payment.mint is None
        else merchant_token_credit(tx, payment.recipient, payment.mint)
    )
    if other_references:
        # Two of our references in one transaction: it pays neither; its credit is owed back.
        return Judgement(ObservationReason.AMBIGUOUS, credit)
    if block_time < payment.created_at - clock_skew:
        # Older than the payment cannot have paid it (e.g. a reused reference).
        return Judgement(ObservationReason.PREDATES_PAYMENT, credit)
    if credit.lamports <= 0:
        # As Solana Pay's validateTransfer: the recipient's balance must rise.
        return Judgement(ObservationReason.NO_CREDIT, credit)
    return Judgement(None, credit)


def refund_landed(
    refund: RefundView, tx: FinalizedTransaction, *, block_time: datetime, clock_skew: timedelta
) -> bool:
    """A refund request's transfer: finalized without error, carrying the refund's reference,
    not older than the request, moving at least its amount (in its currency) out of the
    sender's account and into the recipient's. Anything else did not give the money back."""
    if refund.reference not in tx.account_keys or tx.err is not None:
        return False
    if block_time < refund.created_at - clock_skew:
        return False
    if refund.mint is None:
        got = merchant_credit(tx, refund.recipient).lamports
        gave = merchant_credit(tx, refund.sender).lamports
    else:
        got = merchant_token_credit(tx, refund.recipient, refund.mint).lamports
        gave = merchant_token_credit(tx, refund.sender, refund.mint).lamports
    return got >= refund.amount and gave <= -refund.amount
