"""Payment messages: the status every client sees, the events, and the payments queries."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar

from pydantic import Field

from axiom_shared.schemas.base import Lamports, Message, Pubkey, StrictModel, TxSignature


class PaymentStatus(StrEnum):
    PENDING = "pending"
    VERIFIED = "verified"
    PROVISIONED = "provisioned"
    FAILED = "failed"
    EXPIRED = "expired"


#: Statuses after which nothing changes any more (an expired payment can still be paid late).
FINAL_STATUSES = frozenset({PaymentStatus.PROVISIONED, PaymentStatus.FAILED})


class ChangeSource(StrEnum):
    """Where the fact behind a status change came from (kept in the audit trail)."""

    CREATION = "creation"
    WEBHOOK = "webhook"
    MANUAL = "manual"
    RECONCILE = "reconcile"
    SWEEPER = "sweeper"
    FULFILMENT = "fulfilment"
    OPERATOR = "operator"


PublicId = str


class PaymentView(StrictModel):
    """What `check-status` returns and what each SSE event carries."""

    payment_id: PublicId
    status: PaymentStatus
    order_id: str
    amount_lamports: Lamports
    received_lamports: Lamports | None = None
    recipient: Pubkey
    reference: Pubkey
    tx_signature: TxSignature | None = None
    failure_reason: str | None = None
    expires_at: datetime
    finalized_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    #: Increases by one with every status change of this payment (the SSE `id:`).
    version: int = Field(ge=1)


class PaymentStatusChanged(Message):
    SCHEMA: ClassVar[str] = "payments.status_changed/1"
    payment: PaymentView
    previous_status: PaymentStatus | None
    source: ChangeSource
    reason: str | None = None


class PaymentProvisioned(Message):
    SCHEMA: ClassVar[str] = "payments.provisioned/1"
    payment_id: PublicId
    order_id: str
    user_id: str
    entitlement_id: int
    tx_signature: TxSignature | None
    amount_lamports: Lamports
    provisioned_at: datetime


class GetPaymentInput(Message):
    SCHEMA: ClassVar[str] = "payments.get.input/1"
    payment_id: PublicId = Field(min_length=1, max_length=64)


class GetPaymentResult(Message):
    SCHEMA: ClassVar[str] = "payments.get.result/1"
    payment: PaymentView
