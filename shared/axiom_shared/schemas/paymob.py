"""Legacy Paymob card callbacks: the fact the gateway stores once a callback is authentic."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import Field

from axiom_shared.schemas.base import Message

#: Paymob's transaction and order ids are integers; the pattern also keeps them safe as a
#: NATS subject token and a `Nats-Msg-Id` part (no `.`, `*`, `>` or spaces).
PAYMOB_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class PaymobTransactionState(StrEnum):
    """What one Paymob callback says about its transaction."""

    SUCCESS = "success"
    DECLINED = "declined"
    PENDING = "pending"
    REFUNDED = "refunded"
    VOIDED = "voided"


def paymob_transaction_state(
    *, success: bool, pending: bool, is_refunded: bool, is_voided: bool
) -> PaymobTransactionState:
    # A refunded or voided transaction keeps `success: true`: those flags decide first.
    if is_voided:
        return PaymobTransactionState.VOIDED
    if is_refunded:
        return PaymobTransactionState.REFUNDED
    if pending:
        return PaymobTransactionState.PENDING
    if success:
        return PaymobTransactionState.SUCCESS
    return PaymobTransactionState.DECLINED


class PaymobTransactionReceived(Message):
    """One authentic Paymob transaction callback (POST) or redirect (GET), stored before it is
    answered. The HMAC covered every field below except `via`, `received_at` and the parts of
    `obj` outside Paymob's signed field list (kept for the record, never acted on)."""

    SCHEMA: ClassVar[str] = "webhooks.paymob_transaction/1"
    transaction_id: str = Field(pattern=PAYMOB_ID_PATTERN)
    order_id: str = Field(pattern=PAYMOB_ID_PATTERN)
    state: PaymobTransactionState
    success: bool
    pending: bool
    is_refunded: bool
    is_voided: bool
    amount_cents: int = Field(ge=0)
    currency: str = Field(min_length=1, max_length=8)
    via: Literal["callback", "redirect"]
    received_at: datetime
    #: The callback's `obj` (POST), or the redirect's query keys without `hmac` (GET).
    obj: dict[str, Any]

    def message_id(self) -> str:
        """`Nats-Msg-Id`: the same fact about a transaction (a retried callback, or the
        redirect after the callback) is stored once; a later refund or void of the same
        transaction is another state, hence another fact."""
        return f"paymob:{self.transaction_id}:{self.state.value}"
