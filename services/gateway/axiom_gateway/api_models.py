"""The public HTTP bodies of the gateway (what /openapi.json documents)."""

from __future__ import annotations

from pydantic import Field

from axiom_shared.schemas import BaseUnits, Currency, Lamports, Pubkey, StrictModel, TxSignature
from axiom_shared.wire import PAYMENT_ID_PATTERN, USER_ID_PATTERN


class CatalogEntry(StrictModel):
    order_id: str
    label: str
    #: The SOL price; 0 for an item priced in a token.
    amount_lamports: Lamports
    currency: Currency = Currency.SOL
    #: The price in the currency's base units, its decimals, and the token's mint (None: SOL).
    amount: BaseUnits
    decimals: int
    mint: Pubkey | None = None


class TransactionRequestInfo(StrictModel):
    """Solana Pay transaction request, GET: what the wallet shows before it asks to pay."""

    label: str
    icon: str


class PayRequestBody(StrictModel):
    """Solana Pay transaction request, POST: `account` is the payer's wallet."""

    account: Pubkey | None = None
    user_id: str | None = Field(default=None, pattern=USER_ID_PATTERN)


class VerifyRequestBody(StrictModel):
    payment_id: str = Field(pattern=PAYMENT_ID_PATTERN)
    #: A transaction to look at; without it, every finalized one touching the reference.
    signature: TxSignature | None = None


class RefundTransaction(StrictModel):
    """Solana Pay transaction request, POST answer: the refund's transaction (base64, unsigned)
    for the merchant wallet to sign."""

    transaction: str
    message: str
