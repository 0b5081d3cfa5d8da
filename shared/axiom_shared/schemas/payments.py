"""Payment messages: the status every client sees, the events, and the payments queries."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

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
    #: Known at creation when the merchant co-signs as fee payer (SOLANA_PRIVATE_KEY).
    expected_signature: TxSignature | None = None
    failure_reason: str | None = None
    #: The latest check that changed nothing (e.g. `no_reference`), for people and support.
    last_check: str | None = None
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
    tx_signature: TxSignature
    amount_lamports: Lamports
    provisioned_at: datetime


class GetPaymentInput(Message):
    SCHEMA: ClassVar[str] = "payments.get.input/1"
    payment_id: PublicId = Field(min_length=1, max_length=64)


class GetPaymentResult(Message):
    SCHEMA: ClassVar[str] = "payments.get.result/1"
    payment: PaymentView
    #: The correlation id of the request that created the payment: work done later for this
    #: payment (verification, provisioning) logs under it, so one id follows a payment.
    correlation_id: str | None = None


OrderId = str
ORDER_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
USER_ID_PATTERN = r"^[A-Za-z0-9_.:@|-]{1,128}$"


class CatalogItem(StrictModel):
    """Something that can be bought; the server alone sets its price."""

    order_id: OrderId = Field(pattern=ORDER_ID_PATTERN)
    label: str = Field(min_length=1, max_length=120)
    icon: str = Field(min_length=1, max_length=512)
    amount_lamports: Lamports = Field(gt=0)


class GetCatalogInput(Message):
    SCHEMA: ClassVar[str] = "payments.catalog.input/1"


class GetCatalogResult(Message):
    SCHEMA: ClassVar[str] = "payments.catalog.result/1"
    items: list[CatalogItem]


class CreatePaymentInput(Message):
    SCHEMA: ClassVar[str] = "payments.create.input/1"
    order_id: OrderId = Field(pattern=ORDER_ID_PATTERN)
    user_id: str = Field(default="anonymous", pattern=USER_ID_PATTERN)
    #: The payer's wallet: when given, a transaction for it to sign is built.
    account: Pubkey | None = None
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)


class CreatePaymentResult(Message):
    SCHEMA: ClassVar[str] = "payments.create.result/1"
    payment_id: PublicId
    reference: Pubkey
    recipient: Pubkey
    amount_lamports: Lamports
    transfer_url: str
    expires_at: datetime
    message: str
    #: Base64 serialized transaction, present when `account` was given.
    transaction: str | None = None
    #: True when this answer replays the first answer for the same Idempotency-Key.
    replayed: bool = False


# --- verification --------------------------------------------------------------------------


class VerdictOutcome(StrEnum):
    """What the chain says about one transaction for one payment."""

    #: Finalized, no error, references the payment, merchant credited at least the amount.
    VERIFIED = "verified"
    #: Merchant credited less than the amount: the payment fails and needs a refund.
    UNDERPAID = "underpaid"
    #: References the payment but does not credit the merchant.
    WRONG_RECIPIENT = "wrong_recipient"
    # The rest change no status; they are recorded as the payment's last check.
    NO_REFERENCE = "no_reference"
    TRANSACTION_FAILED = "transaction_failed"
    TRANSACTION_NOT_FOUND = "transaction_not_found"
    PREDATES_PAYMENT = "predates_payment"


#: Outcomes that decide a payment (the others leave it pending).
DECISIVE_OUTCOMES = frozenset(
    {VerdictOutcome.VERIFIED, VerdictOutcome.UNDERPAID, VerdictOutcome.WRONG_RECIPIENT}
)


class VerificationRequested(Message):
    """A hint to look at the chain for a payment (manual or reconcile), optionally at one
    transaction. Hints are never trusted: the verifier decides from the chain alone."""

    SCHEMA: ClassVar[str] = "verify.candidate/1"
    source: ChangeSource
    payment_id: PublicId = Field(min_length=1, max_length=64)
    signature: TxSignature | None = None


class HeliusItemReceived(Message):
    """One item of a Helius webhook batch, stored before the webhook is answered. Only the
    signature is used; the rest is kept for the record and never trusted."""

    SCHEMA: ClassVar[str] = "webhooks.helius_item/1"
    signature: TxSignature
    webhook_type: str = Field(pattern=r"^(enhanced|raw)$")
    received_at: datetime
    item: dict[str, Any]


class PaymentVerdict(Message):
    SCHEMA: ClassVar[str] = "verify.verdict/1"
    payment_id: PublicId
    outcome: VerdictOutcome
    source: ChangeSource
    signature: TxSignature | None = None
    received_lamports: Lamports | None = None
    slot: int | None = None
    block_time: datetime | None = None
    #: When the verifier saw the transaction at `finalized` commitment.
    observed_at: datetime
    #: When the candidate that led here arrived (webhook in), for the delay metric.
    candidate_at: datetime | None = None


class MatchPaymentsInput(Message):
    """Which open payments (pending, or expired within the last hour) use these references?"""

    SCHEMA: ClassVar[str] = "payments.match.input/1"
    references: list[Pubkey] = Field(min_length=1, max_length=256)


class MatchPaymentsResult(Message):
    SCHEMA: ClassVar[str] = "payments.match.result/1"
    payments: list[PaymentView]
    #: payment id → the correlation id it was created under (see GetPaymentResult).
    correlation_ids: dict[str, str] = {}
