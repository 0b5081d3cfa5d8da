"""The payment state machine: findings in, status changes and provisioning out.

Money rules enforced here (the SQL is in `ledger`, the arithmetic in `accounting`):
- a status follows from receipts only, in chain order; an observation (a transaction that
  carries the reference but is not a receipt) never moves one, so whoever reads a reference
  on chain cannot fail or hold up someone else's payment;
- a receipt is stored once (`receipts.signature` UNIQUE across payments): one transaction
  counts once, for one payment, whatever is redelivered or raced;
- every change is one conditional UPDATE with its audit row and outbox event
  (`ledger.record_change`); a writer that lost a race re-reads and decides again;
- provisioning inserts the entitlement (UNIQUE per payment) in the same batch as the change
  to `provisioned`: done twice is impossible. The receipt that verifies a payment and its
  provisioning are one transaction (two changes, two status events): one commit and one relay
  round fewer on the path from webhook to fulfilment, and no window in which the payment
  waits verified (the scheduler still provisions any that do, e.g. from before this rule);
- a transaction seen at `confirmed` (`seen.py`) is display only: findings at `finalized` say
  what became of it (`seen_outcome`) and never take it as a receipt on its own word.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from nats.aio.msg import Msg

from axiom_payments import ledger
from axiom_payments.accounting import (
    COMPLETED,
    completion_deadline,
    refund_due,
    refund_state,
    settle,
)
from axiom_payments.catalog import Catalog
from axiom_payments.events import provisioned_event
from axiom_payments.ledger import PaymentRow, ReceiptRow
from axiom_payments.outbox import OutboxRelay
from axiom_shared.db import Database, IntegrityError, Statement
from axiom_shared.logging import get_logger
from axiom_shared.metrics import (
    PAYMENT_OBSERVATIONS,
    PAYMENT_OUTCOMES,
    PAYMENT_RECEIPTS,
    WEBHOOK_DELAY_SECONDS,
)
from axiom_shared.nats import PermanentError
from axiom_shared.schemas import (
    ChangeSource,
    CheckOutcome,
    Observation,
    ObservationReason,
    PaymentFindings,
    PaymentProvisioned,
    PaymentStatus,
    RefundLanding,
    RefundStatus,
    SeenOutcome,
)

log = get_logger(__name__)

P = PaymentStatus
ATTEMPTS = 10
#: Statuses a look at the chain may still change (its outcome is kept as `last_check`).
OPEN = frozenset({P.PENDING, P.EXPIRED})

Make = Callable[[PaymentRow, datetime], PaymentRow | None]
Extra = Callable[[PaymentRow, PaymentRow, datetime], list[Statement]]


@dataclass(frozen=True)
class Followup:
    """A second change committed with the first (and only with it)."""

    row: PaymentRow
    source: ChangeSource
    extra: list[Statement]


@dataclass
class Lifecycle:
    db: Database
    relay: OutboxRelay
    catalog: Catalog
    #: Late receipts still complete an expired payment this long after its expiry.
    lookback: timedelta

    async def commit(
        self,
        old: PaymentRow,
        new: PaymentRow,
        *,
        source: ChangeSource,
        reason: str | None = None,
        extra: Sequence[Statement] = (),
        after: Sequence[Statement] = (),
        then: Followup | None = None,
    ) -> bool:
        """Write one change (and `after`, statements that belong with it but outside the
        guarded chain; and `then`, a second change that applies only with the first); False
        when another writer changed the payment first."""
        statements = ledger.record_change(old, new, source=source, reason=reason, extra=extra)
        if then is not None:
            statements += ledger.record_change(
                new, then.row, source=then.source, extra=then.extra, chained=True
            )
        results = await self.db.batch([*statements, *after])
        if results[0].rows_affected != 1:
            return False
        self.relay.kick()
        self._changed(old, new, source, reason)
        if then is not None:
            self._changed(new, then.row, then.source, None)
        return True

    @staticmethod
    def _changed(
        old: PaymentRow, new: PaymentRow, source: ChangeSource, reason: str | None
    ) -> None:
        if new.status != old.status:
            log.info(
                "payment status changed",
                payment_id=new.public_id,
                from_status=old.status.value,
                to_status=new.status.value,
                source=source.value,
                reason=reason,
            )
            if new.status in (P.PROVISIONED, P.FAILED, P.EXPIRED):
                PAYMENT_OUTCOMES.labels(outcome=new.status.value, reason=reason or "").inc()

    async def move(
        self,
        public_id: str,
        *,
        allowed: frozenset[PaymentStatus],
        source: ChangeSource,
        reason: str | None,
        make: Make,
        extra: Extra | None = None,
    ) -> PaymentRow | None:
        """Change the payment with `make` if it is in `allowed`; None when it is not (any
        more), or when `make` finds nothing to change."""
        for _ in range(ATTEMPTS):
            row = await ledger.get_payment(self.db, public_id)
            if row is None or row.status not in allowed:
                return None
            now = datetime.now(UTC)
            new = make(row, now)
            if new is None:
                return None
            statements = extra(row, new, now) if extra else []
            if await self.commit(row, new, source=source, reason=reason, extra=statements):
                return new
            # Someone changed it between our read and our write: read again and re-decide.
        raise RuntimeError(f"payment {public_id} kept changing; will retry")

    # --- findings from the chain ---------------------------------------------------------

    async def on_findings(self, findings: PaymentFindings, _msg: Msg) -> None:
        for _ in range(ATTEMPTS):
            row, existing, owners = await ledger.findings_context(
                self.db, findings.payment_id, [r.signature for r in findings.receipts]
            )
            if row is None:
                raise PermanentError(f"findings for unknown payment {findings.payment_id}")
            try:
                status = await self._apply(row, findings, existing, owners)
            except IntegrityError:
                # A receipt was counted meanwhile, here (a racing delivery) or for another
                # payment: read again; the next pass sees where it belongs.
                continue
            if status is not None:
                break
        else:
            raise RuntimeError(f"payment {findings.payment_id} kept changing; will retry")
        if status is P.VERIFIED:
            await self.provision(findings.payment_id)
        for landing in findings.refund_landings:
            await self.close_refund(
                findings.payment_id, landing.refund_id, landing, findings.source
            )
        if findings.source == ChangeSource.WEBHOOK and findings.candidate_at is not None:
            delay = (datetime.now(UTC) - findings.candidate_at).total_seconds()
            WEBHOOK_DELAY_SECONDS.labels(provider="helius").observe(max(delay, 0.0))

    async def _apply(
        self,
        row: PaymentRow,
        findings: PaymentFindings,
        existing: list[ReceiptRow],
        counted: dict[str, str],
    ) -> PaymentStatus | None:
        """Count what is new (`existing`: the payment's receipts; `counted`: the findings'
        signatures already a receipt of some payment, read with it); the payment's status
        afterwards, None when another writer changed it first."""
        now = datetime.now(UTC)
        known = {receipt.signature for receipt in existing}
        offered = {r.signature: r for r in findings.receipts if r.signature not in known}
        owners = {sig: owner for sig, owner in counted.items() if sig in offered}
        if row.public_id in owners.values():
            # A racing delivery counted one of them for this payment since we read it: read
            # again (it is ours, not a signature counted elsewhere).
            return None
        observations = list(findings.observations)
        fresh: list[ReceiptRow] = []
        for signature, receipt in offered.items():
            if signature in owners:
                # Already counted for another payment: it cannot pay this one too.
                observations.append(
                    Observation(
                        signature=signature,
                        reason=ObservationReason.SIGNATURE_ALREADY_COUNTED,
                        slot=receipt.slot,
                        amount_lamports=receipt.amount_lamports,
                        payer=receipt.payer,
                    )
                )
                continue
            fresh.append(ReceiptRow.of(receipt, findings.source))
        after: list[Statement] = [
            ledger.observation_insert(row.id, obs, findings.source, now) for obs in observations
        ]
        if findings.scan_complete:
            after.append(ledger.scan_recorded(row.id, findings.scanned_through, now))
        if findings.check is not None:
            after.append(
                ledger.check_recorded(row.public_id, findings.check.value, now, only_open=True)
            )
        seen_outcome = _seen_outcome(
            row, findings, observations, known | {receipt.signature for receipt in fresh}
        )
        if not fresh:
            check = findings.check.value if findings.check is not None else None
            changes: dict[str, object] = {}
            reasons: list[str] = []
            if check is not None and check != row.last_check and row.status in OPEN:
                # What a look at the chain found is part of what check-status and the stream
                # show (they read the status bucket): a new finding is a change, with its event.
                changes["last_check"] = check
                reasons.append(f"check: {check}")
            if seen_outcome is not None:
                # What became of the transaction shown as seen: the buyer is told (a version).
                changes["seen_outcome"] = seen_outcome
                reasons.append(f"seen transaction {row.seen_signature}: {seen_outcome.value}")
            if changes:
                marked = ledger.changed(row, now, **changes)
                if not await self.commit(
                    row, marked, source=findings.source, reason="; ".join(reasons), after=after
                ):
                    return None
            elif after:
                await self.db.batch(after)
            self._count(observations, [])
            return row.status
        new = self._counted(row, [*existing, *fresh], now, findings.observed_at)
        if seen_outcome is not None:
            new = replace(new, seen_outcome=seen_outcome)
        unit = "lamports" if row.in_lamports else f"{row.currency.value} base units"
        reason = f"{len(fresh)} receipt(s): +{sum(r.amount_lamports for r in fresh)} {unit}"
        extra = [ledger.receipt_insert(row.id, receipt, now) for receipt in fresh]
        then = None
        if new.status is P.VERIFIED and row.status is not P.VERIFIED:
            provisioned = ledger.changed(new, now, status=P.PROVISIONED)
            then = Followup(provisioned, ChangeSource.FULFILMENT, _grant(new, provisioned, now))
        if not await self.commit(
            row, new, source=findings.source, reason=reason, extra=extra, after=after, then=then
        ):
            return None
        if then is not None:
            new = then.row
        self._count(observations, fresh)
        log.info(
            "receipts counted",
            payment_id=row.public_id,
            receipts=[r.signature for r in fresh],
            received_lamports=new.received_lamports,
            refund_due_lamports=new.refund_due_lamports,
            status=new.status.value,
        )
        return new.status

    def _counted(
        self, row: PaymentRow, receipts: list[ReceiptRow], now: datetime, observed_at: datetime
    ) -> PaymentRow:
        """The payment once these are its receipts: what chain order says it is."""
        settlement = settle(row.amount_lamports, receipts, completion_deadline(row, self.lookback))
        status, paid_by = row.status, row.tx_signature
        failure, finalized_at = row.failure_reason, row.finalized_at
        crossing = settlement.crossing
        if crossing is not None and status is P.EXPIRED and (row.refund_open or row.refunded):
            # Its money is being (or was) given back: a late top-up cannot complete it any
            # more (the buyer would get the item and the refund), it is owed back too.
            crossing = None
        if crossing is not None and status in (P.PENDING, P.EXPIRED):
            if self.catalog.get(row.order_id) is None:
                # Paid for something no longer sold: refused, and every lamport owed back.
                status, failure = P.FAILED, "fulfilment_refused"
            else:
                status, paid_by, finalized_at = P.VERIFIED, crossing.signature, observed_at
        elif crossing is not None and status in COMPLETED:
            # A receipt earlier in chain order, delivered late, is the one that paid.
            paid_by = crossing.signature
        due = refund_due(status, row.amount_lamports, settlement.received, row.refunded)
        return ledger.changed(
            row,
            now,
            status=status,
            tx_signature=paid_by,
            failure_reason=failure,
            finalized_at=finalized_at,
            received_lamports=settlement.received,
            refund_due_lamports=due,
            refund_status=refund_state(due, row.refunded, row.refund_open),
            last_check=None if status != row.status else row.last_check,
        )

    @staticmethod
    def _count(observations: list[Observation], receipts: list[ReceiptRow]) -> None:
        for observation in observations:
            PAYMENT_OBSERVATIONS.labels(reason=observation.reason.value).inc()
        if receipts:
            PAYMENT_RECEIPTS.inc(len(receipts))

    # --- refunds -------------------------------------------------------------------------------

    async def close_refund(
        self,
        payment_id: str,
        refund_id: str,
        landing: RefundLanding | None,
        source: ChangeSource,
    ) -> bool:
        """Land (`landing` given) or expire (None) one refund request, once: the refund's status
        and the payment's amounts and refund status change in one batch, conditional on both."""
        for _ in range(ATTEMPTS):
            row = await ledger.get_payment(self.db, payment_id)
            refund = await ledger.get_refund(self.db, refund_id)
            if row is None or refund is None or refund.payment_row_id != row.id:
                return False
            if refund.status is RefundStatus.REFUNDED:
                return False  # landed already: a redelivery, a second source, a replay
            if landing is None and refund.status is not RefundStatus.REQUESTED:
                return False
            now = datetime.now(UTC)
            # Open afterwards: another request of the payment (this one was expired) is open.
            still_open = row.refund_open and refund.status is not RefundStatus.REQUESTED
            refunded = row.refunded + (refund.amount if landing else 0)
            due = refund_due(row.status, row.amount_lamports, row.received_lamports, refunded)
            new = ledger.changed(
                row,
                now,
                refunded=refunded,
                refund_due_lamports=due,
                refund_status=refund_state(due, refunded, still_open),
            )
            if landing is None:
                reason = f"refund {refund_id} expired: never landed, {due} due again"
                closing = ledger.refund_closed(refund, RefundStatus.EXPIRED, now)
            else:
                reason = f"refund {refund_id} landed: {landing.signature}"
                closing = ledger.refund_closed(
                    refund, RefundStatus.REFUNDED, now, landing.signature, landing.slot
                )
            try:
                committed = await self.commit(
                    row, new, source=source, reason=reason, extra=[closing]
                )
            except IntegrityError:
                # The signature already landed another refund: one transaction refunds once.
                log.warning(
                    "refund landing refused", refund_id=refund_id, reason="signature reused"
                )
                return False
            if committed:
                log.info("refund closed", refund_id=refund_id, payment_id=payment_id, reason=reason)
                return True
        raise RuntimeError(f"payment {payment_id} kept changing; will retry")

    # --- the other moves ---------------------------------------------------------------------

    async def provision(self, public_id: str) -> None:
        """verified → provisioned: grant the item (one entitlement, ever) and say so. (A
        payment verified by its findings is provisioned in the same transaction; this is for
        one left verified, found by the scheduler.)"""
        await self.move(
            public_id,
            allowed=frozenset({P.VERIFIED}),
            source=ChangeSource.FULFILMENT,
            reason=None,
            make=lambda row, now: ledger.changed(row, now, status=P.PROVISIONED),
            extra=_grant,
        )

    async def expire(self, public_id: str, source: ChangeSource, reason: str) -> PaymentRow | None:
        """pending → expired: what it received so far is owed back (unless late receipts
        complete it within the lookback)."""
        return await self.move(
            public_id,
            allowed=frozenset({P.PENDING}),
            source=source,
            reason=reason,
            make=lambda row, now: _with_refund_due(row, now, P.EXPIRED),
        )

    async def cancel(self, public_id: str, reason: str) -> PaymentRow | None:
        """pending|expired → failed, by an operator: never fulfilled, all it received owed."""
        return await self.move(
            public_id,
            allowed=frozenset({P.PENDING, P.EXPIRED}),
            source=ChangeSource.OPERATOR,
            reason=reason,
            make=lambda row, now: _with_refund_due(row, now, P.FAILED, failure_reason="cancelled"),
        )


def _grant(old: PaymentRow, new: PaymentRow, now: datetime) -> list[Statement]:
    """What provisioning writes with the change to `provisioned`: the entitlement (UNIQUE
    per payment: granted once, ever) and the provisioned event."""
    assert new.tx_signature is not None  # verified: the schema's CHECK holds it too
    provisioned = PaymentProvisioned(
        payment_id=new.public_id,
        order_id=new.order_id,
        user_id=new.user_id,
        tx_signature=new.tx_signature,
        amount_lamports=new.amount_lamports if new.in_lamports else 0,
        provisioned_at=now,
        currency=new.currency,
        mint=new.mint,
        amount=new.amount_lamports,
    )
    return [
        ledger.entitlement_insert(new, now),
        ledger.outbox_insert(provisioned_event(provisioned), new.correlation_id, guard=True),
    ]


def _seen_outcome(
    row: PaymentRow,
    findings: PaymentFindings,
    observations: list[Observation],
    counted: set[str],
) -> SeenOutcome | None:
    """What these findings say of the transaction shown as seen (None: nothing new).
    `counted`: the payment's receipts, with these findings'."""
    seen = row.seen_signature
    if seen is None or row.seen_outcome is not None:
        return None
    if seen in counted:
        # Also when it was counted before the marker arrived (a race of the two paths).
        return SeenOutcome.COUNTED
    if any(o.signature == seen for o in observations):
        return SeenOutcome.NOT_A_RECEIPT
    if findings.check is CheckOutcome.TRANSACTION_NOT_FOUND and findings.checked_signature == seen:
        return SeenOutcome.NOT_FINALIZED
    return None


def _with_refund_due(
    row: PaymentRow, now: datetime, status: PaymentStatus, **changes: str
) -> PaymentRow:
    """`row` moved to `status`, with what it then owes back (less what was refunded)."""
    due = refund_due(status, row.amount_lamports, row.received_lamports, row.refunded)
    return ledger.changed(
        row,
        now,
        status=status,
        refund_due_lamports=due,
        refund_status=refund_state(due, row.refunded, row.refund_open),
        **changes,
    )
