"""Candidates in, verdicts out. Stateless: replicas share the work queues, and whatever they
publish twice is dropped by JetStream (`Nats-Msg-Id`) or by the payments service's
conditional UPDATEs.

- A webhook item names a signature: fetch it at `finalized`, ask payments which open payments
  its account keys reference, and judge each.
- A manual or reconcile candidate names a payment (and maybe a signature): look at that
  signature, or at every finalized signature touching the payment's reference key.
- Not at `finalized` yet → raise, so JetStream redelivers with backoff; RPC trouble → raise
  too. Neither ever becomes a verdict, except that a manual signature still unknown on the
  last delivery is reported as `transaction_not_found`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from axiom_shared.errors import ApiError
from axiom_shared.logging import bind_correlation_id, current_correlation_id, get_logger
from axiom_shared.metrics import VERIFICATION_SECONDS
from axiom_shared.nats import PermanentError, publish_event, request
from axiom_shared.schemas import (
    DECISIVE_OUTCOMES,
    FINAL_STATUSES,
    ChangeSource,
    GetPaymentInput,
    GetPaymentResult,
    HeliusItemReceived,
    MatchPaymentsInput,
    MatchPaymentsResult,
    PaymentVerdict,
    PaymentView,
    VerdictOutcome,
    VerificationRequested,
)
from axiom_shared.topology import (
    PAYMENTS_GET,
    PAYMENTS_MATCH,
    VERDICT_SUBJECT,
    VERIFIER_CANDIDATES,
    VERIFIER_WEBHOOKS,
)
from axiom_verifier.rpc import FinalizedTransaction, SolanaRpc
from axiom_verifier.rules import evaluate

log = get_logger(__name__)


class NotFinalizedYet(Exception):
    """The transaction is not visible at `finalized` (yet): look again later."""


class Verifier:
    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        rpc: SolanaRpc,
        *,
        clock_skew: timedelta,
        request_timeout: float,
    ) -> None:
        self._nc = nc
        self._js = js
        self._rpc = rpc
        self._skew = clock_skew
        self._timeout = request_timeout

    async def on_candidate(self, candidate: VerificationRequested, msg: Msg) -> None:
        started = time.perf_counter()
        last_try = msg.metadata.num_delivered >= VERIFIER_CANDIDATES.max_deliver
        arrived = msg.metadata.timestamp
        payment, payment_cid = await self._payment(candidate.payment_id)
        # From here the work is the payment's: log and publish under its correlation id.
        bind_correlation_id(payment_cid or current_correlation_id())
        if payment.status in FINAL_STATUSES:
            return
        if candidate.signature is not None:
            tx = await self._rpc.transaction(candidate.signature)
            if tx is None:
                if not last_try:
                    raise NotFinalizedYet(candidate.signature)
                await self._publish(
                    payment,
                    VerdictOutcome.TRANSACTION_NOT_FOUND,
                    candidate.source,
                    signature=candidate.signature,
                    candidate_at=arrived,
                )
                return
            await self._judge(payment, tx, candidate.source, arrived)
        else:
            await self._scan(payment, candidate.source, arrived)
        VERIFICATION_SECONDS.labels(source=candidate.source.value).observe(
            time.perf_counter() - started
        )

    async def on_webhook_item(self, item: HeliusItemReceived, msg: Msg) -> None:
        started = time.perf_counter()
        tx = await self._rpc.transaction(item.signature)
        if tx is None:
            if msg.metadata.num_delivered < VERIFIER_WEBHOOKS.max_deliver:
                raise NotFinalizedYet(item.signature)
            # Helius named a transaction the chain never finalized: nothing to decide. The
            # reconcile loop still watches every open payment.
            log.warning("webhook transaction never finalized", signature=item.signature)
            return
        matches = await request(
            self._nc,
            PAYMENTS_MATCH,
            MatchPaymentsInput(references=tx.account_keys[:256]),
            MatchPaymentsResult,
            timeout=self._timeout,
        )
        webhook_cid = current_correlation_id()
        for payment in matches.payments:
            # The webhook names a transaction; the work is each payment's own.
            bind_correlation_id(matches.correlation_ids.get(payment.payment_id) or webhook_cid)
            await self._judge(payment, tx, ChangeSource.WEBHOOK, item.received_at)
        bind_correlation_id(webhook_cid)
        VERIFICATION_SECONDS.labels(source="webhook").observe(time.perf_counter() - started)

    async def _scan(self, payment: PaymentView, source: ChangeSource, arrived: datetime) -> None:
        """Every finalized transaction touching the reference, oldest first (findReference)."""
        infos = await self._rpc.signatures_for(payment.reference)
        for info in infos:
            tx = await self._rpc.transaction(info.signature)
            if tx is None:
                raise NotFinalizedYet(info.signature)
            finding = evaluate(payment, tx, self._skew)
            if finding.outcome in DECISIVE_OUTCOMES:
                await self._publish(
                    payment,
                    finding.outcome,
                    source,
                    tx=tx,
                    received=finding.received_lamports,
                    candidate_at=arrived,
                )
                return
        if source == ChangeSource.MANUAL:
            await self._publish(
                payment, VerdictOutcome.TRANSACTION_NOT_FOUND, source, candidate_at=arrived
            )

    async def _judge(
        self,
        payment: PaymentView,
        tx: FinalizedTransaction,
        source: ChangeSource,
        arrived: datetime,
    ) -> None:
        finding = evaluate(payment, tx, self._skew)
        await self._publish(
            payment,
            finding.outcome,
            source,
            tx=tx,
            received=finding.received_lamports,
            candidate_at=arrived,
        )

    async def _payment(self, payment_id: str) -> tuple[PaymentView, str | None]:
        try:
            result = await request(
                self._nc,
                PAYMENTS_GET,
                GetPaymentInput(payment_id=payment_id),
                GetPaymentResult,
                timeout=self._timeout,
            )
        except ApiError as err:
            if err.status == 404:
                raise PermanentError(f"no payment {payment_id}") from None
            raise
        return result.payment, result.correlation_id

    async def _publish(
        self,
        payment: PaymentView,
        outcome: VerdictOutcome,
        source: ChangeSource,
        *,
        tx: FinalizedTransaction | None = None,
        signature: str | None = None,
        received: int | None = None,
        candidate_at: datetime | None = None,
    ) -> None:
        signature = tx.signature if tx is not None else signature
        verdict = PaymentVerdict(
            payment_id=payment.payment_id,
            outcome=outcome,
            source=source,
            signature=signature,
            received_lamports=received,
            slot=tx.slot if tx else None,
            block_time=(
                datetime.fromtimestamp(tx.block_time, UTC)
                if tx is not None and tx.block_time is not None
                else None
            ),
            observed_at=datetime.now(UTC),
            candidate_at=candidate_at,
        )
        await publish_event(
            self._js,
            VERDICT_SUBJECT.format(payment_id=payment.payment_id),
            verdict,
            msg_id=f"verdict:{payment.payment_id}:{signature}:{outcome.value}",
        )
        log.info(
            "verdict",
            payment_id=payment.payment_id,
            outcome=outcome.value,
            signature=signature,
            source=source.value,
        )
