"""The public HTTP bodies of the gateway (what /openapi.json documents)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from axiom_shared.schemas import Lamports, Pubkey, StrictModel, TxSignature
from axiom_shared.schemas.payments import USER_ID_PATTERN


class CatalogEntry(StrictModel):
    order_id: str
    label: str
    amount_lamports: Lamports


class TransactionRequestInfo(StrictModel):
    """Solana Pay transaction request, GET: what the wallet shows before it asks to pay."""

    label: str
    icon: str


class PayRequestBody(StrictModel):
    """Solana Pay transaction request, POST: `account` is the payer's wallet."""

    account: Pubkey | None = None
    user_id: str | None = Field(default=None, pattern=USER_ID_PATTERN)


class PaymentCreated(StrictModel):
    payment_id: str
    reference: Pubkey
    recipient: Pubkey
    amount_lamports: Lamports
    transfer_url: str
    expires_at: datetime
    message: str
    transaction: str | None = None


class VerifyRequestBody(StrictModel):
    payment_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    #: A transaction to look at; without it, every finalized one touching the reference.
    signature: TxSignature | None = None
