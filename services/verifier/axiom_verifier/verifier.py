"""Candidates in, findings out. Stateless: replicas share the work queues, and whatever they
publish twice is dropped by JetStream (`Nats-Msg-Id`) or changes nothing when applied again
(receipts are stored once by signature).

- A webhook item names a signature: fetch it at `finalized`, ask payments which of our
  payments (any status) its account keys reference, and judge it for each.
- A manual candidate may name a signature: judge that one transaction.
- A reconcile (or manual) candidate without one scans the reference: every finalized
  signature touching it, paged back to the payment's creation (or to the previous scan's
  newest), so no number of junk transactions can hide the one that paid.
- Not at `finalized` yet, no block time yet, RPC trouble → raise, so JetStream redelivers with
  backoff. None of these ever becomes a finding, except that a manual signature still unknown
  on the last delivery is reported as `transaction_not_found`.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from datetime import UTC, datetime, timedelta

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from axiom_shared.errors import ApiError
from axiom_shared.logging import bind_correlation_id, current_correlation_id, get_logger
from axiom_shared.metrics import VERIFICATION_SECONDS
from axiom_shared.nats import PermanentError, publish_event
from axiom_shared.payments_client import PaymentsClient
from axiom_shared.schemas import (
    ChangeSource,
    CheckOutcome,
    GetPaymentResult,
    HeliusItemReceived,
    MatchPaymentsResult,
    Observation,
    ObservationReason,
    PaymentFindings,
    PaymentView,
    Receipt,
    RefundLanding,
    RefundStatus,
    RefundView,
    VerificationRequested,
)
from axiom_shared.solana_rpc import FinalizedTransaction, SignatureInfo, SolanaRpc
from axiom_shared.topology import (
    FINDINGS_SUBJECT,
    VERIFIER_CANDIDATES,
    VERIFIER_WEBHOOKS,
)
from axiom_verifier.rules import judge, refund_landed

log = get_logger(__name__)

#: Blocks whose transaction order is remembered (a receipt's position within its slot).
BLOCK_CACHE = 512


class NotFinalizedYet(Exception):
    """The transaction (or its block) is not visible at `finalized` (yet): look again later."""


class Verifier:
    def __init__(
        self,
        payments: PaymentsClient,
        js: JetStreamContext,
        rpc: SolanaRpc,
        *,
        clock_skew: timedelta,
    ) -> None:
        self._payments = payments
        self._js = js
        self._rpc = rpc
        self._skew = clock_skew
        self._blocks: OrderedDict[int, asyncio.Future[dict[str, int]]] = OrderedDict()

    async def on_candidate(self, candidate: VerificationRequested, msg: Msg) -> None:
        started = time.perf_counter()
        last_try = msg.metadata.num_delivered >= VERIFIER_CANDIDATES.max_deliver
        arrived = msg.metadata.timestamp
        msg_id = f"findings:{msg.metadata.stream}:{msg.metadata.sequence.stream}"
        found, payment_cid = await self._payment(candidate.payment_id)
        payment = found.payment
        # From here the work is the payment's: log and publish under its correlation id.
        bind_correlation_id(payment_cid or current_correlation_id())
        findings = _Findings(payment.payment_id, candidate.source, arrived)
        findings.checked_signature = candidate.signature
        if candidate.signature is not None:
            tx = await self._rpc.transaction(candidate.signature)
            if tx is None:
                if not last_try:
                    raise NotFinalizedYet(candidate.signature)
                findings.check = CheckOutcome.TRANSACTION_NOT_FOUND
            else:
                paid = await self._judge(payment, tx, findings)
                refunded = await self._judge_refunds(found.refunds, tx, findings)
                if not paid and not refunded:
                    findings.check = CheckOutcome.NO_REFERENCE
        else:
            await self._scan(payment, found.scan_cursor, findings)
            for refund in found.refunds:
                await self._scan_refund(refund, findings)
        await self._publish(findings.done(), msg_id)
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
        ours = await self._ours(tx)
        webhook_cid = current_correlation_id()
        for payment in ours.payments:
            # The webhook names a transaction; the work is each payment's own.
            bind_correlation_id(ours.correlation_ids.get(payment.payment_id) or webhook_cid)
            findings = _Findings(payment.payment_id, ChangeSource.WEBHOOK, item.received_at)
            await self._judge(payment, tx, findings, ours)
            refunds = [r for r in ours.refunds if r.payment_id == payment.payment_id]
            await self._judge_refunds(refunds, tx, findings)
            await self._publish(
                findings.done(),
                f"findings:{payment.payment_id}:{msg.metadata.sequence.stream}",
            )
        bind_correlation_id(webhook_cid)
        VERIFICATION_SECONDS.labels(source="webhook").observe(time.perf_counter() - started)

    async def _scan(self, payment: PaymentView, cursor: str | None, findings: _Findings) -> None:
        """Every finalized transaction touching the reference since the last scan, in chain
        order (findReference, without stopping at the first one)."""
        not_before = int((payment.created_at - self._skew).timestamp())
        infos = await self._rpc.signatures_for(
            payment.reference, until=cursor, not_before=None if cursor else not_before
        )
        for info in infos:
            await self._judge_listed(payment, info, findings)
        findings.scan_complete = True
        findings.scanned_through = infos[-1].signature if infos else None

    async def _scan_refund(self, refund: RefundView, findings: _Findings) -> None:
        """Every finalized transaction touching a watched refund request's reference (back to
        its creation): has it landed?"""
        if refund.status is RefundStatus.REFUNDED:
            return
        not_before = int((refund.created_at - self._skew).timestamp())
        for info in await self._rpc.signatures_for(refund.reference, not_before=not_before):
            if info.err is not None:
                continue
            tx = await self._rpc.transaction(info.signature)
            if tx is None:
                raise NotFinalizedYet(info.signature)
            await self._judge_refunds([refund], tx, findings)

    async def _judge_refunds(
        self, refunds: list[RefundView], tx: FinalizedTransaction, found: _Findings
    ) -> bool:
        """Add the refund requests `tx` lands to `found`; True when it carries the reference
        of one of them."""
        carried = False
        for refund in refunds:
            if refund.reference not in tx.account_keys:
                continue
            carried = True
            block_time = await self._block_time(tx)
            if refund_landed(refund, tx, block_time=block_time, clock_skew=self._skew):
                found.refund_landings.append(
                    RefundLanding(
                        refund_id=refund.refund_id,
                        signature=tx.signature,
                        slot=tx.slot,
                        block_time=block_time,
                    )
                )
            else:
                log.info(
                    "carries a refund reference without landing it",
                    refund_id=refund.refund_id,
                    signature=tx.signature,
                )
        return carried

    async def _judge_listed(
        self, payment: PaymentView, info: SignatureInfo, found: _Findings
    ) -> None:
        if info.err is not None:
            # Failed transactions move nothing: no need to fetch them (cheap junk stays cheap).
            found.observations.append(
                Observation(
                    signature=info.signature,
                    reason=ObservationReason.TRANSACTION_FAILED,
                    slot=info.slot,
                )
            )
            return
        tx = await self._rpc.transaction(info.signature)
        if tx is None:
            raise NotFinalizedYet(info.signature)
        await self._judge(payment, tx, found)

    async def _judge(
        self,
        payment: PaymentView,
        tx: FinalizedTransaction,
        found: _Findings,
        ours: MatchPaymentsResult | None = None,
    ) -> bool:
        """Add what `tx` is for `payment` to `found`; False when it does not carry the
        reference at all."""
        if payment.reference not in tx.account_keys:
            return False
        if ours is None:
            ours = await self._ours(tx)
        # Other payments whose own reference it carries (a refund request's reference names
        # its payment in `ours` too, without making a transaction ambiguous).
        others = sum(
            1
            for p in ours.payments
            if p.payment_id != payment.payment_id and p.reference in tx.account_keys
        )
        block_time = await self._block_time(tx)
        judgement = judge(
            payment, tx, block_time=block_time, other_references=others, clock_skew=self._skew
        )
        if judgement is None:
            return False
        credit = judgement.credit
        if judgement.reason is None and credit is not None:
            found.receipts.append(
                Receipt(
                    signature=tx.signature,
                    slot=tx.slot,
                    position=await self._position(tx),
                    amount_lamports=credit.lamports,
                    payer=credit.payer,
                    block_time=block_time,
                )
            )
        else:
            assert judgement.reason is not None
            found.observations.append(
                Observation(
                    signature=tx.signature,
                    reason=judgement.reason,
                    slot=tx.slot,
                    amount_lamports=max(credit.lamports, 0) if credit else None,
                    payer=credit.payer if credit else None,
                )
            )
        return True

    async def _block_time(self, tx: FinalizedTransaction) -> datetime:
        """The transaction's block time; the slot's when the node had none for it. Never
        skipped: a payment's age rule needs it."""
        seconds = tx.block_time
        if seconds is None:
            seconds = await self._rpc.block_time(tx.slot)
        if seconds is None:
            raise NotFinalizedYet(f"no block time for slot {tx.slot} yet")
        return datetime.fromtimestamp(seconds, UTC)

    async def _position(self, tx: FinalizedTransaction) -> int:
        """The transaction's index in its block (chain order within a slot)."""
        future = self._blocks.get(tx.slot)
        if future is None or (future.done() and future.exception() is not None):
            future = asyncio.ensure_future(self._block_order(tx.slot))
            self._blocks[tx.slot] = future
            while len(self._blocks) > BLOCK_CACHE:
                self._blocks.popitem(last=False)
        else:
            self._blocks.move_to_end(tx.slot)
        order = await asyncio.shield(future)
        if tx.signature not in order:
            raise NotFinalizedYet(f"{tx.signature} not in block {tx.slot}")
        return order[tx.signature]

    async def _block_order(self, slot: int) -> dict[str, int]:
        signatures = await self._rpc.block_signatures(slot)
        if signatures is None:
            raise NotFinalizedYet(f"block {slot} not available")
        return {signature: index for index, signature in enumerate(signatures)}

    async def _ours(self, tx: FinalizedTransaction) -> MatchPaymentsResult:
        """Our payments (any status) whose reference this transaction names."""
        return await self._payments.match(list(dict.fromkeys(tx.account_keys))[:256])

    async def _payment(self, payment_id: str) -> tuple[GetPaymentResult, str | None]:
        try:
            result = await self._payments.get(payment_id)
        except ApiError as err:
            if err.status == 404:
                raise PermanentError(f"no payment {payment_id}") from None
            raise
        return result, result.correlation_id

    async def _publish(self, findings: PaymentFindings, msg_id: str) -> None:
        await publish_event(
            self._js,
            FINDINGS_SUBJECT.format(payment_id=findings.payment_id),
            findings,
            msg_id=msg_id,
        )
        log.info(
            "findings",
            payment_id=findings.payment_id,
            receipts=[r.signature for r in findings.receipts],
            observations=[(o.signature, o.reason.value) for o in findings.observations],
            check=findings.check.value if findings.check else None,
            scan=findings.scan_complete,
            source=findings.source.value,
        )


class _Findings:
    """Findings being gathered for one payment (the message is frozen once done)."""

    def __init__(self, payment_id: str, source: ChangeSource, candidate_at: datetime) -> None:
        self.payment_id = payment_id
        self.source = source
        self.candidate_at = candidate_at
        self.receipts: list[Receipt] = []
        self.observations: list[Observation] = []
        self.check: CheckOutcome | None = None
        self.scanned_through: str | None = None
        self.scan_complete = False
        self.checked_signature: str | None = None
        self.refund_landings: list[RefundLanding] = []

    def done(self) -> PaymentFindings:
        return PaymentFindings(
            payment_id=self.payment_id,
            source=self.source,
            receipts=self.receipts,
            observations=self.observations,
            check=self.check,
            scanned_through=self.scanned_through,
            scan_complete=self.scan_complete,
            observed_at=datetime.now(UTC),
            candidate_at=self.candidate_at,
            checked_signature=self.checked_signature,
            refund_landings=self.refund_landings,
        )
