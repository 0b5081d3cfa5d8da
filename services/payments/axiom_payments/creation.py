"""Creating a payment: a fresh reference key, an unguessable public id, the catalogue price,
and, when the payer's wallet is known, the Solana Pay transfer transaction for it to sign."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Finalized
from solders.hash import Hash
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from axiom_payments import store
from axiom_payments.catalog import Catalog
from axiom_payments.events import status_event
from axiom_payments.outbox import OutboxRelay, outbox_insert
from axiom_payments.solana_pay import transfer_transaction, transfer_url
from axiom_shared.db import Database, IntegrityError
from axiom_shared.errors import ApiError, ErrorDetail, not_found, unavailable
from axiom_shared.logging import current_correlation_id, get_logger
from axiom_shared.schemas import (
    ChangeSource,
    CreatePaymentInput,
    CreatePaymentResult,
    PaymentStatus,
    PaymentStatusChanged,
    PaymentView,
)

log = get_logger(__name__)


@dataclass
class Creator:
    db: Database
    catalog: Catalog
    rpc: AsyncClient
    relay: OutboxRelay
    merchant_wallet: Pubkey
    fee_payer: Keypair | None
    payment_ttl: timedelta

    async def create(self, request: CreatePaymentInput) -> CreatePaymentResult:
        item = self.catalog.get(request.order_id)
        if item is None:
            raise not_found(f"order {request.order_id!r}")
        request_hash = _request_hash(request)
        if request.idempotency_key:
            replay = await self._replay(request, request_hash)
            if replay is not None:
                return replay

        public_id = "pay_" + secrets.token_urlsafe(18)
        reference = Keypair().pubkey()  # only its public key is ever needed
        now = datetime.now(UTC)
        message = f"{item.label} (payment {public_id})"
        transaction: str | None = None
        expected_signature: str | None = None
        if request.account is not None:
            blockhash = await self._recent_blockhash()
            transaction, signature = transfer_transaction(
                payer=Pubkey.from_string(request.account),
                recipient=self.merchant_wallet,
                lamports=item.amount_lamports,
                reference=reference,
                memo=public_id,
                blockhash=blockhash,
                fee_payer=self.fee_payer,
            )
            expected_signature = str(signature) if signature else None

        view = PaymentView(
            payment_id=public_id,
            status=PaymentStatus.PENDING,
            order_id=item.order_id,
            amount_lamports=item.amount_lamports,
            recipient=str(self.merchant_wallet),
            reference=str(reference),
            expected_signature=expected_signature,
            expires_at=now + self.payment_ttl,
            created_at=now,
            updated_at=now,
            version=1,
        )
        result = CreatePaymentResult(
            payment_id=public_id,
            reference=view.reference,
            recipient=view.recipient,
            amount_lamports=view.amount_lamports,
            transfer_url=transfer_url(
                view.recipient, item.amount_lamports, view.reference, item.label, message, public_id
            ),
            expires_at=view.expires_at,
            message=message,
            transaction=transaction,
        )
        created = PaymentStatusChanged(
            payment=view, previous_status=None, source=ChangeSource.CREATION
        )
        statements = [store.insert_payment(view, request.user_id, current_correlation_id())]
        if request.idempotency_key:
            statements.append(
                store.insert_idempotency_record(
                    request.user_id,
                    request.idempotency_key,
                    request_hash,
                    public_id,
                    result.model_dump_json(by_alias=True),
                    now,
                )
            )
        statements.append(outbox_insert(status_event(created)))
        statements.append(
            store.audit_insert(
                public_id,
                None,
                PaymentStatus.PENDING.value,
                1,
                None,
                ChangeSource.CREATION.value,
                current_correlation_id(),
                now,
            )
        )
        try:
            # The payment, its idempotency record and its first status event: all or nothing.
            await self.db.batch(statements)
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

    async def _replay(
        self, request: CreatePaymentInput, request_hash: str
    ) -> CreatePaymentResult | None:
        assert request.idempotency_key is not None
        record = await store.get_idempotency_record(
            self.db, request.user_id, request.idempotency_key
        )
        if record is None:
            return None
        if record["request_hash"] != request_hash:
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
            answer = await self.rpc.get_latest_blockhash(commitment=Finalized)
        except (SolanaRpcException, OSError, TimeoutError) as exc:
            log.warning("solana rpc unavailable", error=type(exc).__name__)
            raise unavailable("the Solana RPC is unavailable, try again shortly") from exc
        return answer.value.blockhash


def _request_hash(request: CreatePaymentInput) -> str:
    canonical = json.dumps(
        {"order_id": request.order_id, "account": request.account}, sort_keys=True
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
