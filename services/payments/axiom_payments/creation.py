"""Creating a payment: a fresh reference key, an unguessable public id, the catalogue price,
and, when the payer's wallet is known, the Solana Pay transfer transaction for it to sign.

When the merchant co-signs as fee payer (SOLANA_PRIVATE_KEY), its key must never sign a
transaction that moves the merchant's own money or that can only fail (DESIGN.md,
"Transaction requests and the merchant's fee-payer key"):
- an `account` that is the fee payer, the merchant wallet or any key the service holds is
  refused: with the fee payer as `account`, its one signature would also authorise the
  transfer, and the order would be paid with the merchant's own money;
- the transaction is simulated before it is signed and returned: one that would fail (no
  funds, no account) is refused, so nobody can make the merchant pay fees for failures.
Nothing is stored for a refused request.
"""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from solders.hash import Hash
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.transaction import Transaction

from axiom_payments import ledger
from axiom_payments.catalog import Catalog
from axiom_payments.ledger import PaymentRow
from axiom_payments.outbox import OutboxRelay
from axiom_payments.solana_pay import (
    as_versioned,
    co_sign,
    encoded,
    token_transfer_transaction,
    transfer_transaction,
)
from axiom_shared.db import Database, IntegrityError
from axiom_shared.errors import ApiError, ErrorDetail, not_found, unavailable
from axiom_shared.idempotency import fingerprint
from axiom_shared.logging import current_correlation_id, get_logger
from axiom_shared.schemas import (
    SOL_DECIMALS,
    CatalogItem,
    ChangeSource,
    CreatePaymentInput,
    CreatePaymentResult,
    Currency,
    PaymentStatus,
)
from axiom_shared.solana_pay import transfer_url
from axiom_shared.solana_rpc import RecentBlockhash, RpcUnavailable, SolanaRpc

log = get_logger(__name__)


@dataclass
class Creator:
    db: Database
    catalog: Catalog
    rpc: SolanaRpc
    blockhashes: RecentBlockhash
    relay: OutboxRelay
    merchant_wallet: Pubkey
    fee_payer: Keypair | None
    payment_ttl: timedelta
    #: Currency → (mint, decimals) of each token sold (USDC_MINT, USDC_DECIMALS).
    tokens: dict[Currency, tuple[Pubkey, int]]
    #: The hot-wallet refund key's wallet (REFUND_PRIVATE_KEY), when there is one.
    refund_wallet: Pubkey | None = None

    def priced_items(self) -> list[CatalogItem]:
        """The catalogue with each item's currency spelled out (mint, decimals)."""
        items = []
        for item in self.catalog.items:
            mint, decimals = self._mint(item)
            items.append(
                item.model_copy(update={"mint": str(mint) if mint else None, "decimals": decimals})
            )
        return items

    def _mint(self, item: CatalogItem) -> tuple[Pubkey | None, int]:
        """The item's mint (None for SOL) and decimals."""
        if item.currency is Currency.SOL:
            return None, SOL_DECIMALS
        return self.tokens[item.currency]

    @functools.cached_property
    def held_keys(self) -> frozenset[str]:
        """Every key this service holds or is paid to: never accepted as a payer's `account`."""
        keys = {str(self.merchant_wallet)}
        if self.fee_payer is not None:
            keys.add(str(self.fee_payer.pubkey()))
        if self.refund_wallet is not None:
            keys.add(str(self.refund_wallet))
        return frozenset(keys)

    async def create(self, request: CreatePaymentInput) -> CreatePaymentResult:
        item = self.catalog.get(request.order_id)
        if item is None:
            raise not_found(f"order {request.order_id!r}")
        if request.account is not None and request.account in self.held_keys:
            raise ApiError(
                422,
                "account_not_allowed",
                "this account cannot pay: it belongs to the merchant",
                [ErrorDetail(field="account", problem="a key the merchant holds or is paid to")],
            )
        if request.payment_id is not None:
            return await self._for_existing(request, item)
        request_hash = _request_hash(request) if request.idempotency_key else ""
        if request.idempotency_key:
            replay = await self._replay(request, request_hash)
            if replay is not None:
                return replay

        public_id = "pay_" + secrets.token_urlsafe(18)
        # A reference is any fresh, unguessable 32 bytes (Solana Pay: a unique read-only key;
        # no one ever signs with it). Random bytes, not a generated keypair: the ed25519
        # key generation was a quarter of this method's time and its secret was thrown away.
        reference = Pubkey(secrets.token_bytes(32))
        now = datetime.now(UTC)
        message = _message(item.label, public_id)
        mint, decimals = self._mint(item)
        transaction: str | None = None
        expected_signature: str | None = None
        if request.account is not None:
            transaction, expected_signature = await self._transaction(
                request.account, item.amount, reference, public_id, mint, decimals
            )

        row = PaymentRow(
            id=0,
            public_id=public_id,
            order_id=item.order_id,
            user_id=request.user_id,
            reference_key=str(reference),
            # In the item's currency's smallest unit (the column's first name, see ledger).
            amount_lamports=item.amount,
            received_lamports=0,
            refund_due_lamports=0,
            recipient=str(self.merchant_wallet),
            status=PaymentStatus.PENDING,
            tx_signature=None,
            expected_signature=expected_signature,
            failure_reason=None,
            last_check=None,
            version=1,
            correlation_id=current_correlation_id(),
            expires_at=now + self.payment_ttl,
            finalized_at=None,
            created_at=now,
            updated_at=now,
            scan_cursor=None,
            scanned_at=None,
            currency=item.currency,
            mint=str(mint) if mint else None,
            decimals=decimals,
        )
        result = CreatePaymentResult(
            payment_id=public_id,
            reference=row.reference_key,
            recipient=row.recipient,
            amount_lamports=item.amount_lamports,
            transfer_url=transfer_url(
                row.recipient,
                item.amount,
                row.reference_key,
                item.label,
                message,
                public_id,
                spl_token=row.mint,
                decimals=decimals,
            ),
            expires_at=row.expires_at,
            message=message,
            transaction=transaction,
            currency=item.currency,
            mint=row.mint,
            decimals=decimals,
            amount=item.amount,
        )
        extra = []
        if request.idempotency_key:
            extra.append(
                ledger.idempotency_insert(
                    request.idempotency_scope,
                    request.idempotency_key,
                    request_hash,
                    public_id,
                    result.model_dump_json(by_alias=True),
                    now,
                )
            )
        try:
            # The payment, its idempotency record, its first status event and its audit row:
            # all or nothing.
            await self.db.batch(
                ledger.record_change(None, row, source=ChangeSource.CREATION, extra=extra)
            )
        except IntegrityError:
            if request.idempotency_key:
                # A concurrent request with the same key won the race: answer as it did.
                replay = await self._replay(request, request_hash)
                if replay is not None:
                    return replay
            raise
        self.relay.kick()
        log.info("payment created", payment_id=public_id, order_id=item.order_id)
        return result

    async def _transaction(
        self,
        account: str,
        amount: int,
        reference: Pubkey,
        public_id: str,
        mint: Pubkey | None,
        decimals: int,
    ) -> tuple[str, str | None]:
        """The transfer for `account` to sign (base64): lamports, or with a `mint` its token
        base units as a TransferChecked to the merchant's token account; and its signature
        when the merchant co-signed it as fee payer."""
        blockhash = await self._recent_blockhash()
        fee_payer = self.fee_payer.pubkey() if self.fee_payer else None
        payer = Pubkey.from_string(account)
        if mint is None:
            tx = transfer_transaction(
                payer=payer,
                recipient=self.merchant_wallet,
                lamports=amount,
                reference=reference,
                memo=public_id,
                blockhash=blockhash,
                fee_payer=fee_payer,
            )
        else:
            tx = token_transfer_transaction(
                payer=payer,
                recipient=self.merchant_wallet,
                mint=mint,
                decimals=decimals,
                amount=amount,
                reference=reference,
                memo=public_id,
                blockhash=blockhash,
                fee_payer=fee_payer,
            )
        expected_signature: str | None = None
        if self.fee_payer is not None:
            # Simulated unsigned: a transaction that would fail is never signed.
            await self._must_succeed(tx)
            expected_signature = str(co_sign(tx, self.fee_payer))
        return encoded(tx), expected_signature

    async def _for_existing(
        self, request: CreatePaymentInput, item: CatalogItem
    ) -> CreatePaymentResult:
        """A transaction request for a payment that exists (its URL names it): the transfer
        for `account`, with the payment's own reference and price. Nothing is stored: the
        payment is paid by whichever transaction lands first, and all of them are receipts
        of it (anything beyond the price is owed back)."""
        assert request.payment_id is not None
        row = await ledger.get_payment(self.db, request.payment_id)
        if row is None or row.order_id != request.order_id:
            raise not_found("payment")
        if row.status is not PaymentStatus.PENDING or row.expires_at <= datetime.now(UTC):
            raise ApiError(
                409,
                "payment_not_payable",
                f"this payment is {_state(row)}: start a new one",
            )
        mint = Pubkey.from_string(row.mint) if row.mint else None
        transaction: str | None = None
        if request.account is not None:
            transaction, _ = await self._transaction(
                request.account,
                row.amount_lamports,
                Pubkey.from_string(row.reference_key),
                row.public_id,
                mint,
                row.decimals,
            )
        message = _message(item.label, row.public_id)
        return CreatePaymentResult(
            payment_id=row.public_id,
            reference=row.reference_key,
            recipient=row.recipient,
            # In the payment's currency's smallest unit; "0" lamports for a token payment.
            amount_lamports=row.amount_lamports if mint is None else 0,
            transfer_url=transfer_url(
                row.recipient,
                row.amount_lamports,
                row.reference_key,
                item.label,
                message,
                row.public_id,
                spl_token=row.mint,
                decimals=row.decimals,
            ),
            expires_at=row.expires_at,
            message=message,
            transaction=transaction,
            currency=row.currency,
            mint=row.mint,
            decimals=row.decimals,
            amount=row.amount_lamports,
        )

    async def _replay(
        self, request: CreatePaymentInput, request_hash: str
    ) -> CreatePaymentResult | None:
        assert request.idempotency_key is not None
        record = await ledger.get_idempotency_record(
            self.db, request.idempotency_scope, request.idempotency_key
        )
        if record is None:
            return None
        if record["request_hash"] not in (request_hash, _first_form_hash(request)):
            raise ApiError(
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request",
                [ErrorDetail(field="Idempotency-Key", problem="reused with another body")],
            )
        first = CreatePaymentResult.model_validate_json(str(record["response"]))
        return first.model_copy(update={"replayed": True})

    async def _recent_blockhash(self) -> Hash:
        try:
            # A finalized blockhash passes a wallet's preflight at any commitment it uses.
            return await self.blockhashes.get()
        except RpcUnavailable as exc:
            log.warning("solana rpc unavailable", error=str(exc)[:200])
            raise unavailable("the Solana RPC is unavailable, try again shortly") from exc

    async def _must_succeed(self, tx: Transaction) -> None:
        try:
            answer = await self.rpc.simulate(as_versioned(tx), "confirmed")
        except RpcUnavailable as exc:
            log.warning("solana rpc unavailable", error=str(exc)[:200])
            raise unavailable("the Solana RPC is unavailable, try again shortly") from exc
        err = answer.err
        if err is None:
            return
        logs = " ".join(answer.logs)
        problem = (
            "the account cannot pay the price"
            if "insufficient" in logs.lower() or "Insufficient" in str(err)
            else f"the transaction would fail on chain ({str(err)[:120]})"
        )
        log.info("transaction request refused by simulation", error=str(err)[:200])
        raise ApiError(
            422,
            "transaction_would_fail",
            "this account cannot pay for this order: the transaction would fail",
            [ErrorDetail(field="account", problem=problem)],
        )


def _state(row: PaymentRow) -> str:
    return "expired" if row.status is PaymentStatus.PENDING else row.status.value


def _message(label: str, public_id: str) -> str:
    return f"{label} (payment {public_id})"


def _request_hash(request: CreatePaymentInput) -> str:
    return fingerprint({"order_id": request.order_id, "account": request.account})


def _first_form_hash(request: CreatePaymentInput) -> str:
    """How records stored before the shared fingerprint were hashed (`json.dumps` with its
    default separators): a retry of such a request is still recognised as the same one."""
    canonical = json.dumps(
        {"order_id": request.order_id, "account": request.account}, sort_keys=True
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
