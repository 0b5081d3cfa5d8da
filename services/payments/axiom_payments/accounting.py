"""What a payment's receipts add up to, in chain order: pure functions, no I/O.

DESIGN.md ("Receipts"): the status follows from the receipts taken in chain order (slot, then
position in the block). The payment is complete when their running sum first reaches the
price; the receipt that crossed the line is the one that paid it. A receipt counts towards
completion only while the payment could still be completed: its block time at most the
expiry plus the lookback in which late payments are honoured. Everything received beyond
the price, or everything when the payment is not completed (expired, failed), is owed back.

Because the sum does not depend on the order receipts are *delivered* in, webhooks,
reconcile and manual checks arriving in any order, any number of times, give one answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from axiom_payments.ledger import PaymentRow, ReceiptRow
from axiom_shared.schemas import PaymentStatus, RefundState

#: Completed: its money belongs to the merchant up to the price.
COMPLETED = frozenset({PaymentStatus.VERIFIED, PaymentStatus.PROVISIONED})


@dataclass(frozen=True)
class Settlement:
    received: int
    #: The receipt whose amount first brought the running sum to the price (in time).
    crossing: ReceiptRow | None


def settle(amount: int, receipts: Iterable[ReceiptRow], deadline: datetime) -> Settlement:
    received = 0
    crossing: ReceiptRow | None = None
    for receipt in sorted(receipts, key=lambda r: r.chain_order):
        received += receipt.amount_lamports
        if crossing is None and received >= amount and receipt.block_time <= deadline:
            crossing = receipt
    return Settlement(received, crossing)


def completion_deadline(row: PaymentRow, lookback: timedelta) -> datetime:
    """The latest block time at which a receipt can still complete the payment."""
    return row.expires_at + lookback


def refund_due(status: PaymentStatus, amount: int, received: int, refunded: int = 0) -> int:
    """Owed back: the excess of a completed payment; all of an expired or failed one's; none
    while a pending payment can still be topped up; less what refunds already gave back."""
    if status in COMPLETED:
        owed = max(received - amount, 0)
    elif status is PaymentStatus.PENDING:
        owed = 0
    else:
        owed = received
    return max(owed - refunded, 0)


def refund_state(due: int, refunded: int, requested: bool) -> RefundState | None:
    """refund_due → refund_requested → refunded, from the amounts and whether a request is
    open (None: nothing was ever owed)."""
    if requested:
        return RefundState.REFUND_REQUESTED
    if due > 0:
        return RefundState.REFUND_DUE
    if refunded > 0:
        return RefundState.REFUNDED
    return None
