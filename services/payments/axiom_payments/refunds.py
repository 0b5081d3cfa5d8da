"""Refunds: giving back what a payment has due, with no key that can move the merchant's money
in the service by default.

An operator asks for a refund of all or part of what a payment has due (never more). The
service creates a *refund request*: a Solana Pay transfer request from the merchant wallet to
the account that paid (taken from the payment's receipts), with its own fresh reference,
shown as a URL/QR and as a transaction for the merchant's own wallet to sign. The receipts
machinery (webhook, manual check, reconcile: the verifier at `finalized`) sees it land and
the payment's refund moves `refund_due → refund_requested → refunded` once: the refund's
status change is conditional, and every change is a payment change (one version, one audit
row, one status event; `ledger.record_change`). A request that never lands expires (the
sweeper) and can be asked again; one paid after its expiry is still seen within the lookback
and counted.

Hot-wallet mode (off by default): with REFUND_PRIVATE_KEY set and `hot_wallet` asked for, the
service signs and sends the transfer itself from that key's wallet, within a per-refund and a
per-day cap per currency. The request (with the signed transaction's signature) is committed
before anything is sent: a crash in between leaves a request that never lands and expires.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.transaction import Transaction

from axiom_payments import ledger
from axiom_payments.ledger import PaymentRow, ReceiptRow, RefundRow
from axiom_payments.lifecycle import ATTEMPTS, Lifecycle
from axiom_payments.solana_pay import as_versioned, token_transfer_transaction, transfer_transaction
from axiom_shared.db import Database, IntegrityError
from axiom_shared.errors import ApiError, ErrorDetail, not_found, unavailable
from axiom_shared.logging import get_logger
from axiom_shared.schemas import (
    ChangeSource,
    Currency,
    RefundMode,
    RefundResult,
    RefundState,
    RefundStatus,
    RequestRefundInput,
)
from axiom_shared.solana_rpc import RecentBlockhash, RpcUnavailable, SolanaRpc

log = get_logger(__name__)


@dataclass(frozen=True)
class RefundCaps:
    """Hot-wallet limits for one currency, in its base units."""

    per_refund: int
    per_day: int


@dataclass
class Refunder:
    lifecycle: Lifecycle
    rpc: SolanaRpc
    blockhashes: RecentBlockhash
    merchant_wallet: Pubkey
    #: REFUND_PRIVATE_KEY: None (the default) means no refund is ever signed here.
    hot_wallet: Keypair | None
    caps: dict[Currency, RefundCaps]
    ttl: timedelta
    #: Expired requests are still watched (and counted if paid) this long.
    lookback: timedelta

    @property
    def db(self) -> Database:
        return self.lifecycle.db

    # --- asking ------------------------------------------------------------------------------

    async def request(self, ask: RequestRefundInput) -> RefundResult:
        for _ in range(ATTEMPTS):
            row = await ledger.get_payment(self.db, ask.payment_id)
            if row is None:
                raise not_found("payment")
            refund, signed = await self._prepare(row, ask)
            now = refund.created_at
            new = ledger.changed(row, now, refund_status=RefundState.REFUND_REQUESTED)
            reason = (
                f"refund {refund.public_id} requested ({refund.mode.value}):"
                f" {refund.amount} of {row.refund_due_lamports} due, to {refund.recipient}"
            )
            after = []
            if refund.mode is RefundMode.HOT_WALLET:
                caps = self.caps[row.currency]
                after = ledger.hot_wallet_cap_check(row.currency, _day_before(now), caps.per_day)
            try:
                committed = await self.lifecycle.commit(
                    row,
                    new,
                    source=ChangeSource.OPERATOR,
                    reason=reason,
                    extra=[ledger.refund_insert(row, refund)],
                    after=after,
                )
            except IntegrityError:
                # Nothing was written: another request of this payment won the race (the
                # one-open-request index), or hot-wallet refunds asked meanwhile filled the
                # day's cap.
                latest = await ledger.get_payment(self.db, ask.payment_id)
                if latest is not None and latest.refund_open:
                    raise _already_requested() from None
                raise _cap_exceeded("other hot-wallet refunds filled the day's cap") from None
            if not committed:
                continue  # the payment changed meanwhile: decide again on what it is now
            log.info(
                "refund requested",
                refund_id=refund.public_id,
                payment_id=row.public_id,
                mode=refund.mode.value,
                amount=refund.amount,
                currency=row.currency.value,
            )
            if signed is not None:
                await self._send(refund, signed)
            stored = await ledger.get_refund(self.db, refund.public_id)
            assert stored is not None
            return await self.result(stored)
        raise unavailable("the payment kept changing; ask again")

    async def _prepare(
        self, row: PaymentRow, ask: RequestRefundInput
    ) -> tuple[RefundRow, Transaction | None]:
        """The refund to insert (and, in hot-wallet mode, its signed transaction), or the
        4xx that says why there is none."""
        if row.refund_open:
            raise _already_requested()
        due = row.refund_due_lamports
        if due <= 0:
            raise ApiError(
                422,
                "nothing_due",
                "this payment has nothing to give back",
                [ErrorDetail(field="payment_id", problem="refund_due is 0")],
            )
        amount = due if ask.amount is None else ask.amount
        if amount <= 0 or amount > due:
            raise ApiError(
                422,
                "refund_exceeds_due",
                f"a refund can be at most what is due ({due} base units of {row.currency.value})",
                [ErrorDetail(field="amount", problem=f"more than the {due} due")],
            )
        paid_by = payers(await ledger.receipts_of(self.db, row.id))
        for refund in await ledger.refunds_of(self.db, row.id):
            if refund.status is RefundStatus.REFUNDED and refund.recipient in paid_by:
                paid_by[refund.recipient] -= refund.amount
        recipient = ask.recipient or max(paid_by, key=lambda k: paid_by[k], default=None)
        if recipient is None or recipient not in paid_by:
            raise ApiError(
                422,
                "payer_unknown",
                "a refund goes to an account that paid this payment (from its receipts)",
                [ErrorDetail(field="recipient", problem="not a payer of this payment")],
            )
        if amount > paid_by[recipient]:
            # Nobody gets back more than they paid, whoever else paid the same payment.
            raise ApiError(
                422,
                "refund_exceeds_due",
                f"{recipient} paid this payment only {max(paid_by[recipient], 0)} base units"
                " not refunded yet",
                [ErrorDetail(field="amount", problem="more than this payer paid")],
            )
        mode = RefundMode.HOT_WALLET if ask.hot_wallet else RefundMode.WALLET
        sender = self.merchant_wallet
        if mode is RefundMode.HOT_WALLET:
            sender = await self._hot_wallet_allows(row, amount)
        now = datetime.now(UTC)
        refund = RefundRow(
            id=0,
            public_id="rf_" + secrets.token_urlsafe(18),
            payment_row_id=row.id,
            payment_public_id=row.public_id,
            amount=amount,
            recipient=recipient,
            sender=str(sender),
            reference_key=str(Keypair().pubkey()),  # a fresh reference, like a payment's
            status=RefundStatus.REQUESTED,
            mode=mode,
            signature=None,
            expected_signature=None,
            requested_by=ask.requested_by,
            reason=ask.reason,
            expires_at=now + self.ttl,
            created_at=now,
            updated_at=now,
            refunded_at=None,
            currency=row.currency,
            mint=row.mint,
            decimals=row.decimals,
        )
        if mode is RefundMode.WALLET:
            return refund, None
        assert self.hot_wallet is not None
        tx = await self._transaction(refund)
        tx.sign([self.hot_wallet], tx.message.recent_blockhash)
        return _with_expected(refund, str(tx.signatures[0])), tx

    async def _hot_wallet_allows(self, row: PaymentRow, amount: int) -> Pubkey:
        if self.hot_wallet is None:
            raise ApiError(
                422,
                "hot_wallet_disabled",
                "hot-wallet refunds are off (no REFUND_PRIVATE_KEY): ask for a refund request"
                " for the merchant's wallet to sign",
                [ErrorDetail(field="hot_wallet", problem="not configured")],
            )
        caps = self.caps[row.currency]
        if amount > caps.per_refund:
            raise _cap_exceeded(f"more than the per-refund cap of {caps.per_refund}")
        spent = await ledger.hot_wallet_spent(self.db, row.currency, _day_before(datetime.now(UTC)))
        if spent + amount > caps.per_day:
            raise _cap_exceeded(
                f"{spent} already refunded in the last 24 h; the cap is {caps.per_day}"
            )
        return self.hot_wallet.pubkey()

    async def _send(self, refund: RefundRow, tx: Transaction) -> None:
        try:
            signature = await self.rpc.send(as_versioned(tx))
        except RpcUnavailable as exc:
            # Committed and not sent (or sent and not answered): the reconcile loop watches
            # its reference either way; one that never lands expires and can be asked again.
            log.warning("refund not sent", refund_id=refund.public_id, error=str(exc)[:200])
            return
        log.info("refund sent", refund_id=refund.public_id, signature=signature)

    # --- showing -----------------------------------------------------------------------------

    async def get(self, refund_id: str) -> RefundResult:
        refund = await ledger.get_refund(self.db, refund_id)
        if refund is None:
            raise not_found("refund")
        return await self.result(refund)

    async def result(self, refund: RefundRow) -> RefundResult:
        """The refund, and while it is open in wallet mode, a transaction for the sender's
        wallet to sign (built now: a fresh blockhash)."""
        transaction = None
        if refund.status is RefundStatus.REQUESTED and refund.mode is RefundMode.WALLET:
            try:
                tx = await self._transaction(refund)
                transaction = base64.b64encode(bytes(tx)).decode()
            except ApiError:
                # No blockhash now (RPC away): the refund stands, its transfer URL works, and
                # `refunds show` builds the transaction later.
                log.warning("refund transaction not built", refund_id=refund.public_id)
        return RefundResult(refund=refund.view(), transaction=transaction)

    async def _transaction(self, refund: RefundRow) -> Transaction:
        try:
            blockhash = await self.blockhashes.get()
        except RpcUnavailable as exc:
            raise unavailable("the Solana RPC is unavailable, try again shortly") from exc
        sender, recipient = Pubkey.from_string(refund.sender), Pubkey.from_string(refund.recipient)
        reference = Pubkey.from_string(refund.reference_key)
        if refund.mint is None:
            return transfer_transaction(
                payer=sender,
                recipient=recipient,
                lamports=refund.amount,
                reference=reference,
                memo=refund.public_id,
                blockhash=blockhash,
            )
        return token_transfer_transaction(
            payer=sender,
            recipient=recipient,
            mint=Pubkey.from_string(refund.mint),
            decimals=refund.decimals,
            amount=refund.amount,
            reference=reference,
            memo=refund.public_id,
            blockhash=blockhash,
        )

    # --- landing and expiry ------------------------------------------------------------------

    async def expire_due(self, now: datetime, limit: int = 1000) -> int:
        """Requests past their expiry that never landed: the payment owes it again."""
        expired = 0
        for refund in await ledger.refunds_past_expiry(self.db, now, limit):
            expired += await self.lifecycle.close_refund(
                refund.payment_public_id, refund.public_id, None, ChangeSource.SWEEPER
            )
        return expired


def payers(receipts: Sequence[ReceiptRow]) -> dict[str, int]:
    """Who paid a payment, and how much each (from its receipts): where refunds may go. The
    default recipient is the one who paid the most, so a stranger's dust sent to the payment
    never redirects the buyer's refund."""
    paid: dict[str, int] = {}
    for receipt in receipts:
        if receipt.payer:
            paid[receipt.payer] = paid.get(receipt.payer, 0) + receipt.amount_lamports
    return paid


def _day_before(now: datetime) -> datetime:
    """The start of the window the daily cap counts (24 h)."""
    return now - timedelta(days=1)


def _with_expected(refund: RefundRow, signature: str) -> RefundRow:
    return replace(refund, expected_signature=signature)


def _already_requested() -> ApiError:
    return ApiError(
        409,
        "refund_already_requested",
        "a refund request of this payment is open: wait for it to land or expire",
        [ErrorDetail(field="payment_id", problem="refund_requested")],
    )


def _cap_exceeded(problem: str) -> ApiError:
    return ApiError(
        422,
        "refund_cap_exceeded",
        "this refund is over the hot wallet's caps: ask for a refund request for the"
        " merchant's wallet to sign instead",
        [ErrorDetail(field="amount", problem=problem)],
    )
