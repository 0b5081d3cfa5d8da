"""Seen at `confirmed`: the buyer hears of a payment within a second, long before it counts.

A `PaymentSeen` marker (from the verifier's `confirmed` watch) is shown on the payment
(`seen_signature`, `seen_at`, one version up) and nothing else: no status moves and no money
is counted until the transaction is read again at `finalized` (DESIGN.md: a rolled-back
payment must never be credited). Every marker is handed back to the verifier as a candidate
naming its signature, so each one ends either as a receipt (the status follows, as always) or
as `seen_outcome` (`not_a_receipt`, `not_finalized`): a forged or dropped one is shown as such.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from axiom_payments import ledger
from axiom_payments.ledger import PaymentRow
from axiom_payments.lifecycle import Lifecycle
from axiom_shared.logging import get_logger
from axiom_shared.nats import PermanentError, publish_event
from axiom_shared.schemas import (
    ChangeSource,
    PaymentSeen,
    PaymentStatus,
    VerificationRequested,
)
from axiom_shared.topology import VERIFY_CANDIDATE_SUBJECT

log = get_logger(__name__)

#: Only a payment that can still be paid shows a transaction as seen.
PAYABLE = frozenset({PaymentStatus.PENDING, PaymentStatus.EXPIRED})


@dataclass
class SeenMarkers:
    lifecycle: Lifecycle
    js: JetStreamContext

    async def on_seen(self, seen: PaymentSeen, _msg: Msg) -> None:
        db = self.lifecycle.db
        row = await ledger.get_payment(db, seen.payment_id)
        if row is None:
            raise PermanentError(f"seen marker for unknown payment {seen.payment_id}")
        if row.status not in PAYABLE:
            return
        counted = {receipt.signature for receipt in await ledger.receipts_of(db, row.id)}
        if seen.signature in counted:
            return  # already read at finalized: the receipt says more than the marker

        def mark(current: PaymentRow, now: datetime) -> PaymentRow | None:
            if current.seen_signature == seen.signature:
                return None  # a redelivery
            return ledger.changed(
                current,
                now,
                seen_signature=seen.signature,
                seen_at=seen.seen_at,
                seen_outcome=None,
            )

        marked = await self.lifecycle.move(
            seen.payment_id,
            allowed=PAYABLE,
            source=ChangeSource.SEEN,
            reason=f"seen at confirmed: {seen.signature}",
            make=mark,
        )
        if marked is not None:
            log.info("payment seen", payment_id=seen.payment_id, signature=seen.signature)
        # Whatever the marker claims, the chain at `finalized` decides: the verifier reads this
        # signature until it is final (a receipt counts) or given up (`not_finalized`).
        await publish_event(
            self.js,
            VERIFY_CANDIDATE_SUBJECT.format(source="seen", payment_id=seen.payment_id),
            VerificationRequested(
                source=ChangeSource.SEEN, payment_id=seen.payment_id, signature=seen.signature
            ),
            msg_id=f"seen-check:{seen.payment_id}:{seen.signature}",
        )
