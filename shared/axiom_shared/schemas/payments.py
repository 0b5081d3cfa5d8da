"""Payment messages: the status every client sees, the events, and the payments queries."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import Field, model_validator

from axiom_shared.schemas.base import (
    BaseUnits,
    Lamports,
    Message,
    Pubkey,
    StrictModel,
    TxSignature,
)
from axiom_shared.wire import (
    ORDER_ID_PATTERN,
    PAYMENT_ID_PATTERN,
    REFUND_ID_PATTERN,
    USER_ID_PATTERN,
)


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
    #: A transaction carrying the reference reached `confirmed` (display only, never a status).
    SEEN = "seen"


class SeenOutcome(StrEnum):
    """What became of the transaction shown as seen at `confirmed`, once it is known."""

    #: Never visible at `finalized` after the verifier's redeliveries: dropped or rolled back.
    NOT_FINALIZED = "not_finalized"
    #: Finalized, but not a receipt of this payment (failed, credits nothing, ambiguous...).
    NOT_A_RECEIPT = "not_a_receipt"
    #: Finalized and counted as a receipt (the amounts and the status say the rest).
    COUNTED = "counted"


PublicId = str


class RefundState(StrEnum):
    """A payment's refund, as every client sees it (`refund_status`)."""

    #: Money is owed back and no request for it is open.
    REFUND_DUE = "refund_due"
    #: A refund request is open (its transfer may land any moment).
    REFUND_REQUESTED = "refund_requested"
    #: Everything owed was given back.
    REFUNDED = "refunded"


class Currency(StrEnum):
    """What a payment is priced and paid in. SOL counts lamports; a token (USDC) counts its
    base units of the configured mint (`USDC_MINT`, `USDC_DECIMALS`)."""

    SOL = "SOL"
    USDC = "USDC"


#: Lamports per SOL: SOL's decimals.
SOL_DECIMALS = 9


class PaymentView(StrictModel):
    """What `check-status` returns and what each SSE event carries."""

    payment_id: PublicId
    status: PaymentStatus
    order_id: str
    #: The price in lamports; 0 for a payment priced in a token (see `currency`, `amount`).
    amount_lamports: Lamports
    #: Everything the payment's receipts credited the merchant, in all (lamports; 0 for a
    #: token payment, see `received`).
    received_lamports: Lamports = 0
    #: Money to give back: beyond the price, or all of it when the payment was not completed
    #: (expired or failed). Never lost, never silent. (Lamports; 0 for a token payment, see
    #: `refund_due`.)
    refund_due_lamports: Lamports = 0
    #: The payment's currency; every amount below is in its smallest unit.
    currency: Currency = Currency.SOL
    #: The SPL token's mint; None for SOL.
    mint: Pubkey | None = None
    #: Decimals of the currency (9 for SOL, 6 for USDC): amount / 10^decimals is the price.
    decimals: int = Field(default=SOL_DECIMALS, ge=0, le=18)
    #: The price, received and refund due in the currency's base units (for every currency).
    amount: BaseUnits = 0
    received: BaseUnits = 0
    refund_due: BaseUnits = 0
    #: Given back so far (refunds landed at finalized), in the currency's base units.
    refunded: BaseUnits = 0
    #: Where the money owed back stands: refund_due → refund_requested → refunded (None:
    #: nothing was ever owed).
    refund_status: RefundState | None = None
    recipient: Pubkey
    reference: Pubkey
    #: The receipt whose amount, in chain order, first brought the total to the price.
    tx_signature: TxSignature | None = None
    #: Known at creation when the merchant co-signs as fee payer (SOLANA_PRIVATE_KEY).
    expected_signature: TxSignature | None = None
    failure_reason: str | None = None
    #: The latest look at the chain that found nothing (e.g. `no_reference`), for support.
    last_check: str | None = None
    expires_at: datetime
    finalized_at: datetime | None = None
    #: The latest transaction carrying the reference that reached `confirmed` and looked like
    #: a receipt then, and when it was seen: shown to the buyer at once ("seen, waiting for
    #: finality"). Never a status: nothing is decided or fulfilled before `finalized`.
    seen_signature: TxSignature | None = None
    seen_at: datetime | None = None
    #: What became of it, once known: counted (a receipt at `finalized`), never finalized, or
    #: not a receipt. None while it waits for finality.
    seen_outcome: SeenOutcome | None = None
    created_at: datetime
    updated_at: datetime
    #: Increases by one with every change a client sees (status or amounts; the SSE `id:`).
    version: int = Field(ge=1)

    @model_validator(mode="before")
    @classmethod
    def _sol_amounts(cls, data: Any) -> Any:
        """A SOL payment's base units are its lamports: a view written before `amount` existed
        (an older event, a stored status) reads the same as a new one."""
        if isinstance(data, dict) and data.get("currency", Currency.SOL) == Currency.SOL:
            data = dict(data)
            for generic, lamports in (
                ("amount", "amount_lamports"),
                ("received", "received_lamports"),
                ("refund_due", "refund_due_lamports"),
            ):
                if data.get(generic) in (None, 0, "0") and lamports in data:
                    data[generic] = data[lamports]
        return data


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
    #: The price in lamports; 0 for a token payment (see `currency`, `amount`).
    amount_lamports: Lamports
    provisioned_at: datetime
    currency: Currency = Currency.SOL
    mint: Pubkey | None = None
    amount: BaseUnits = 0


class RefundStatus(StrEnum):
    """One refund request's own status."""

    REQUESTED = "requested"
    REFUNDED = "refunded"
    #: Never landed before its expiry: the payment's money is owed again (ask again).
    EXPIRED = "expired"


class RefundMode(StrEnum):
    #: A transfer request the merchant's own wallet signs (no key in the service).
    WALLET = "wallet"
    #: Signed and sent by the payments service with REFUND_PRIVATE_KEY, within its caps.
    HOT_WALLET = "hot_wallet"


class RefundView(StrictModel):
    """A refund request: a Solana Pay transfer request from `sender` to `recipient` (the
    account that paid) with its own fresh `reference`."""

    refund_id: PublicId
    payment_id: PublicId
    status: RefundStatus
    mode: RefundMode
    amount: BaseUnits = Field(gt=0)
    currency: Currency
    mint: Pubkey | None = None
    decimals: int = Field(ge=0, le=18)
    recipient: Pubkey
    sender: Pubkey
    reference: Pubkey
    #: `solana:<recipient>?amount=...&reference=...` for the sender's wallet (URL or QR).
    transfer_url: str
    #: The transaction that landed it (set once refunded).
    signature: TxSignature | None = None
    expected_signature: TxSignature | None = None
    requested_by: str
    reason: str | None = None
    expires_at: datetime
    created_at: datetime
    updated_at: datetime
    refunded_at: datetime | None = None


class GetPaymentInput(Message):
    SCHEMA: ClassVar[str] = "payments.get.input/1"
    payment_id: PublicId = Field(pattern=PAYMENT_ID_PATTERN)


class GetPaymentResult(Message):
    SCHEMA: ClassVar[str] = "payments.get.result/1"
    payment: PaymentView
    #: The correlation id of the request that created the payment: work done later for this
    #: payment (verification, provisioning) logs under it, so one id follows a payment.
    correlation_id: str | None = None
    #: The newest signature the last complete scan of its reference saw (the verifier reads
    #: only what is newer).
    scan_cursor: TxSignature | None = None
    #: Its refund requests still watched on chain (requested, or expired within the
    #: lookback): the verifier scans their references too.
    refunds: list[RefundView] = Field(default_factory=list)


OrderId = str


class CatalogItem(StrictModel):
    """Something that can be bought; the server alone sets its price: `amount_lamports` for
    an item priced in SOL, or `currency` USDC and `amount` (the token's base units)."""

    order_id: OrderId = Field(pattern=ORDER_ID_PATTERN)
    label: str = Field(min_length=1, max_length=120)
    icon: str = Field(min_length=1, max_length=512)
    currency: Currency = Currency.SOL
    #: The SOL price; 0 (or absent) for a token-priced item.
    amount_lamports: Lamports = 0
    #: The price in the currency's base units (filled from `amount_lamports` for SOL).
    amount: BaseUnits = 0
    #: The currency's decimals and mint (None for SOL), as the payments service configures
    #: them (USDC_MINT, USDC_DECIMALS); set when it serves the catalogue, not in the file.
    decimals: int | None = Field(default=None, ge=0, le=18)
    mint: Pubkey | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_price(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        currency = data.get("currency", Currency.SOL)
        lamports, amount = data.get("amount_lamports"), data.get("amount")
        if currency == Currency.SOL:
            if lamports is None or (amount is not None and str(amount) != str(lamports)):
                raise ValueError("a SOL item needs amount_lamports (and amount, if given, equal)")
            return {**data, "amount": lamports}
        if amount is None or str(lamports or 0) != "0":
            raise ValueError("a token item needs amount (base units) and no amount_lamports")
        return {**data, "amount_lamports": 0}

    @model_validator(mode="after")
    def _positive(self) -> CatalogItem:
        if self.amount <= 0:
            raise ValueError("the price must be more than 0")
        return self


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
    #: An existing pending payment of this order to build the transaction for (a transaction
    #: request URL names it): nothing new is created.
    payment_id: PublicId | None = Field(default=None, pattern=PAYMENT_ID_PATTERN)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)
    #: Who sent the key (the gateway's client identity: the trusted proxy's user, else the
    #: client's address): a key is that caller's alone, never a value from the body.
    idempotency_scope: str = Field(default="anonymous", min_length=1, max_length=300)


class PaymentCreated(StrictModel):
    """A created payment, as its creator sees it (the body of `POST /api/pay/req/{order_id}`)."""

    payment_id: PublicId
    reference: Pubkey
    recipient: Pubkey
    #: The price in lamports; 0 for a token payment (see `currency`, `amount`).
    amount_lamports: Lamports
    transfer_url: str
    expires_at: datetime
    message: str
    #: Base64 serialized transaction, present when `account` was given.
    transaction: str | None = None
    #: The Solana Pay transaction request URL of this payment (`solana:<https URL>`), set by
    #: the gateway when it has a public https origin (wallets fetch transaction requests over
    #: https only); the transfer URL is the fallback.
    transaction_request_url: str | None = None
    currency: Currency = Currency.SOL
    #: The SPL token's mint (the transfer URL's `spl-token`); None for SOL.
    mint: Pubkey | None = None
    decimals: int = Field(default=SOL_DECIMALS, ge=0, le=18)
    #: The price in the currency's base units.
    amount: BaseUnits = 0


class CreatePaymentResult(PaymentCreated, Message):
    SCHEMA: ClassVar[str] = "payments.create.result/1"
    #: True when this answer replays the first answer for the same Idempotency-Key.
    replayed: bool = False

    def created(self) -> PaymentCreated:
        """The payment alone, without the message's envelope."""
        return PaymentCreated.model_validate(
            {name: getattr(self, name) for name in PaymentCreated.model_fields}
        )


# --- verification: receipts and observations ------------------------------------------------


class ObservationReason(StrEnum):
    """Why a transaction carrying a payment's reference is not a receipt of it. An observation
    is recorded for people and metrics; it never moves a status (whoever sees a reference could
    send one)."""

    #: Landed with `meta.err` set: nothing moved.
    TRANSACTION_FAILED = "transaction_failed"
    #: Credits the merchant wallet nothing (pays someone else, or nobody).
    NO_CREDIT = "no_credit"
    #: Older than the payment (block time, or the slot's time, minus the clock skew).
    PREDATES_PAYMENT = "predates_payment"
    #: Names the reference of another payment of ours too: it pays neither; its credit is owed
    #: back once (listed with the refunds).
    AMBIGUOUS = "ambiguous"
    #: Its signature is already a receipt of another payment.
    SIGNATURE_ALREADY_COUNTED = "signature_already_counted"


class RequestRefundInput(Message):
    """An operator asks to give back what a payment has due (all of it, or `amount`)."""

    SCHEMA: ClassVar[str] = "payments.refunds.request.input/1"
    payment_id: PublicId = Field(pattern=PAYMENT_ID_PATTERN)
    #: Base units of the payment's currency; None: everything due. Never more than due.
    amount: BaseUnits | None = None
    #: Who gets it: one of the accounts that paid the payment (its receipts' payers); None:
    #: the one who paid the most. Never more than that account paid.
    recipient: Pubkey | None = None
    #: Hot-wallet mode (REFUND_PRIVATE_KEY, within its caps); else a request to sign.
    hot_wallet: bool = False
    requested_by: str = Field(min_length=1, max_length=120)
    reason: str | None = Field(default=None, max_length=500)


class RefundResult(Message):
    SCHEMA: ClassVar[str] = "payments.refunds.result/1"
    refund: RefundView
    #: Base64 unsigned transaction for the sender's wallet to sign (a fresh blockhash: sign it
    #: within a minute; `refunds show` builds another). None once the refund is closed.
    transaction: str | None = None


class GetRefundInput(Message):
    SCHEMA: ClassVar[str] = "payments.refunds.get.input/1"
    refund_id: PublicId = Field(pattern=REFUND_ID_PATTERN)


class CheckOutcome(StrEnum):
    """A look at the chain that found nothing about the payment (kept as its `last_check`)."""

    #: The transaction asked about does not carry the payment's reference.
    NO_REFERENCE = "no_reference"
    #: The transaction asked about was never seen at `finalized`.
    TRANSACTION_NOT_FOUND = "transaction_not_found"


class RefundLanding(StrictModel):
    """A refund request's transfer, found at `finalized`: error-free, carrying the refund's
    reference, moving at least its amount from its sender to its recipient."""

    refund_id: PublicId
    signature: TxSignature
    slot: int = Field(ge=0)
    block_time: datetime


class Receipt(StrictModel):
    """A finalized, error-free transaction carrying the payment's reference (and no other
    payment's) that credits the merchant wallet `amount_lamports` > 0. For a token payment
    the amount is the rise of the merchant's token account for the payment's mint, in base
    units (the field keeps its first name: additive changes only)."""

    signature: TxSignature
    slot: int = Field(ge=0)
    #: Index of the transaction within its block: with the slot, the chain order.
    position: int = Field(ge=0)
    amount_lamports: Lamports = Field(gt=0)
    #: The account whose balance paid it (where a refund goes).
    payer: Pubkey | None = None
    block_time: datetime


class Observation(StrictModel):
    """A transaction carrying the payment's reference that is not a receipt of it."""

    signature: TxSignature
    reason: ObservationReason
    slot: int | None = Field(default=None, ge=0)
    #: What it credited the merchant (an ambiguous transaction's credit is owed back), in the
    #: payment's currency's base units.
    amount_lamports: Lamports | None = None
    payer: Pubkey | None = None


class VerificationRequested(Message):
    """A hint to look at the chain for a payment (manual or reconcile), optionally at one
    transaction. Hints are never trusted: the verifier decides from the chain alone."""

    SCHEMA: ClassVar[str] = "verify.candidate/1"
    source: ChangeSource
    payment_id: PublicId = Field(pattern=PAYMENT_ID_PATTERN)
    signature: TxSignature | None = None


class HeliusItemReceived(Message):
    """One item of a Helius webhook batch, stored before the webhook is answered. Only the
    signature is used; the rest is kept for the record and never trusted."""

    SCHEMA: ClassVar[str] = "webhooks.helius_item/1"
    signature: TxSignature
    webhook_type: str = Field(pattern=r"^(enhanced|raw)$")
    received_at: datetime
    item: dict[str, Any]


class PaymentFindings(Message):
    """What the chain, read at `finalized`, says about one payment: its receipts and
    observations from one look (a webhook's transaction, a manual check or a reconcile scan).
    The payments service alone turns receipts into a status, in chain order; findings are
    facts, applying them twice changes nothing."""

    SCHEMA: ClassVar[str] = "verify.findings/1"
    payment_id: PublicId
    source: ChangeSource
    receipts: list[Receipt] = Field(default_factory=list, max_length=10_000)
    observations: list[Observation] = Field(default_factory=list, max_length=10_000)
    #: A look that found nothing about the payment (kept as its `last_check`).
    check: CheckOutcome | None = None
    #: Set when this is a complete scan of the reference: the newest signature it saw (the
    #: next scan reads only what is newer) and when it was read.
    scanned_through: TxSignature | None = None
    scan_complete: bool = False
    #: When the verifier read the chain.
    observed_at: datetime
    #: When the candidate that led here arrived (webhook in), for the delay metric.
    candidate_at: datetime | None = None
    #: The one signature the candidate asked about, if any (what `check` is about).
    checked_signature: TxSignature | None = None
    #: Refund requests of this payment seen landed (additive; applying twice changes nothing).
    refund_landings: list[RefundLanding] = Field(default_factory=list, max_length=1000)


class PaymentSeen(Message):
    """A transaction carrying the payment's reference reached `confirmed` and, read then,
    looks like a receipt. Display only: the payments service shows it (`seen_signature`) and
    has it checked at `finalized`; it never moves a status or counts money, so a forged or
    rolled-back one costs nothing but a message saying so."""

    SCHEMA: ClassVar[str] = "verify.seen/1"
    payment_id: PublicId = Field(pattern=PAYMENT_ID_PATTERN)
    signature: TxSignature
    slot: int = Field(ge=0)
    seen_at: datetime


class MatchPaymentsInput(Message):
    """Which of our payments (any status) use these keys as their reference, or as the
    reference of one of their watched refund requests?"""

    SCHEMA: ClassVar[str] = "payments.match.input/1"
    references: list[Pubkey] = Field(min_length=1, max_length=256)


class MatchPaymentsResult(Message):
    SCHEMA: ClassVar[str] = "payments.match.result/1"
    payments: list[PaymentView]
    #: payment id → the correlation id it was created under (see GetPaymentResult).
    correlation_ids: dict[str, str] = {}
    #: Watched refund requests whose reference is among the keys (their payments are listed).
    refunds: list[RefundView] = Field(default_factory=list)
