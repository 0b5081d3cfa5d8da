"""The payment state machine: verdicts in, status changes and provisioning out.

Money rules enforced here:
- every status change is ONE conditional UPDATE (`WHERE id = ? AND status = ? AND version =
  ?`), so two racing deliveries can never both win; the loser re-reads and usually finds
  nothing left to do;
- the status event (and the `provisioned` event) is written to the outbox in the same
  transaction, guarded by `changes() = 1`: an event exists exactly when its change happened;
- provisioning inserts the entitlement (UNIQUE per payment) in that same transaction: done
  twice is impossible, whatever is redelivered or retried;
- `tx_signature` is UNIQUE: one transaction can pay one payment only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nats.aio.msg import Msg

from axiom_payments import store
from axiom_payments.catalog import Catalog
from axiom_payments.events import provisioned_event, status_event
from axiom_payments.outbox import OutboxRelay, outbox_insert
from axiom_shared.db import Database, IntegrityError, Statement
from axiom_shared.logging import current_correlation_id, get_logger
from axiom_shared.metrics import PAYMENT_OUTCOMES, WEBHOOK_DELAY_SECONDS
from axiom_shared.nats import PermanentError
from axiom_shared.schemas import (
    ChangeSource,
    PaymentProvisioned,
    PaymentStatus,
    PaymentStatusChanged,
    PaymentVerdict,
    PaymentView,
    VerdictOutcome,
)

log = get_logger(__name__)

OPEN = frozenset({PaymentStatus.PENDING, PaymentStatus.EXPIRED})
ExtraStatements = Callable[[dict[str, Any], PaymentView, datetime], list[Statement]]


def guarded(stmt: Statement) -> Statement:
    """`INSERT ... VALUES (...)` → `INSERT ... SELECT ... WHERE changes() = 1`: runs only when
    the statement before it (the conditional UPDATE, or a guarded insert) changed a row."""
    assert not isinstance(stmt, str)
    sql, args = stmt
    head, _, values = sql.partition(" VALUES ")
    values = values.split(" ON CONFLICT")[0].strip()
    if not (values.startswith("(") and values.endswith(")")):
        raise ValueError(f"not a single-row INSERT ... VALUES: {sql}")
    return (f"{head} SELECT {values[1:-1]} WHERE changes() = 1", args)


@dataclass
class Lifecycle:
    db: Database
    relay: OutboxRelay
    catalog: Catalog

    async def transition(
        self,
        public_id: str,
        *,
        allowed: frozenset[PaymentStatus],
        to: PaymentStatus,
        source: ChangeSource,
        reason: str | None = None,
        fields: dict[str, Any] | None = None,
        extra: ExtraStatements | None = None,
    ) -> PaymentView | None:
        """Move the payment to `to` if it is in `allowed`; None when it is not (any more)."""
        fields = fields or {}
        for _ in range(10):
            row = await store.get_payment(self.db, public_id)
            if row is None or row["status"] not in allowed:
                return None
            now = datetime.now(UTC)
            version = int(row["version"])
            new_row = {**row, **fields, "status": to.value, "version": version + 1}
            new_row["updated_at"] = store.iso(now)
            view = store.to_view(new_row)
            event = PaymentStatusChanged(
                payment=view,
                previous_status=PaymentStatus(row["status"]),
                source=source,
                reason=reason,
            )
            assignments = "".join(f", {column} = ?" for column in fields)
            statements: list[Statement] = [
                (
                    f"UPDATE payments SET status = ?, version = ?, updated_at = ?{assignments}"  # noqa: S608
                    " WHERE id = ? AND status = ? AND version = ?",
                    [
                        to.value,
                        version + 1,
                        store.iso(now),
                        *fields.values(),
                        row["id"],
                        row["status"],
                        version,
                    ],
                )
            ]
            statements += [guarded(s) for s in (extra(row, view, now) if extra else [])]
            statements.append(guarded(outbox_insert(status_event(event))))
            statements.append(
                guarded(
                    store.audit_insert(
                        public_id,
                        row["status"],
                        to.value,
                        version + 1,
                        reason,
                        source.value,
                        current_correlation_id(),
                        now,
                    )
                )
            )
            results = await self.db.batch(statements)
            if results[0].rows_affected == 1:
                self.relay.kick()
                log.info(
                    "payment status changed",
                    payment_id=public_id,
                    from_status=row["status"],
                    to_status=to.value,
                    source=source.value,
                    reason=reason,
                )
                if to in (PaymentStatus.PROVISIONED, PaymentStatus.FAILED, PaymentStatus.EXPIRED):
                    PAYMENT_OUTCOMES.labels(outcome=to.value, reason=reason or "").inc()
                return view
            # Someone changed it between our read and our write: read again and re-decide.
        raise RuntimeError(f"payment {public_id} kept changing; will retry")

    async def on_verdict(self, verdict: PaymentVerdict, _msg: Msg) -> None:
        row = await store.get_payment(self.db, verdict.payment_id)
        if row is None:
            raise PermanentError(f"verdict for unknown payment {verdict.payment_id}")
        status = PaymentStatus(row["status"])
        outcome = verdict.outcome
        if outcome == VerdictOutcome.VERIFIED and not _pays_in_full(verdict, row):
            # The verifier decides, but money moves only on a verdict that shows it: a
            # signature and at least the amount asked. Anything else is a bug or a forgery.
            raise PermanentError(
                f"verified verdict without a signature paying {row['amount_lamports']} lamports"
            )
        if outcome == VerdictOutcome.VERIFIED:
            if status in OPEN:
                await self._verified(verdict)
            elif verdict.signature != row["tx_signature"]:
                # Paid again (or paid after failing): money to give back, never a second grant.
                await self.note(verdict.payment_id, "additional_payment", any_status=True)
            await self.provision(verdict.payment_id, verdict.source)
        elif outcome in (VerdictOutcome.UNDERPAID, VerdictOutcome.WRONG_RECIPIENT):
            try:
                await self.transition(
                    verdict.payment_id,
                    allowed=OPEN,
                    to=PaymentStatus.FAILED,
                    source=verdict.source,
                    reason=outcome.value,
                    fields={
                        "failure_reason": outcome.value,
                        "tx_signature": verdict.signature,
                        "received_lamports": verdict.received_lamports,
                        "finalized_at": store.iso(verdict.observed_at),
                    },
                )
            except IntegrityError:
                await self.note(verdict.payment_id, "signature_already_used")
        else:
            await self.note(verdict.payment_id, outcome.value)
        if verdict.source == ChangeSource.WEBHOOK and verdict.candidate_at is not None:
            delay = (datetime.now(UTC) - verdict.candidate_at).total_seconds()
            WEBHOOK_DELAY_SECONDS.labels(provider="helius").observe(max(delay, 0.0))

    async def _verified(self, verdict: PaymentVerdict) -> None:
        try:
            await self.transition(
                verdict.payment_id,
                allowed=OPEN,
                to=PaymentStatus.VERIFIED,
                source=verdict.source,
                fields={
                    "tx_signature": verdict.signature,
                    "received_lamports": verdict.received_lamports,
                    "finalized_at": store.iso(verdict.observed_at),
                    "last_check": None,
                },
            )
        except IntegrityError:
            # This transaction already paid another payment (two references in one
            # transaction, or a signature offered twice): it cannot pay this one too.
            await self.note(verdict.payment_id, "signature_already_used")

    async def provision(self, public_id: str, source: ChangeSource) -> None:
        """verified → provisioned: grant the item (one entitlement, ever) and say so."""
        row = await store.get_payment(self.db, public_id)
        if row is None or row["status"] != PaymentStatus.VERIFIED:
            return
        if self.catalog.get(row["order_id"]) is None:
            await self.transition(
                public_id,
                allowed=frozenset({PaymentStatus.VERIFIED}),
                to=PaymentStatus.FAILED,
                source=ChangeSource.FULFILMENT,
                reason="fulfilment_refused",
                fields={"failure_reason": "fulfilment_refused"},
            )
            return

        def grant(row: dict[str, Any], view: PaymentView, now: datetime) -> list[Statement]:
            provisioned = PaymentProvisioned(
                payment_id=view.payment_id,
                order_id=view.order_id,
                user_id=row["user_id"],
                tx_signature=row["tx_signature"],
                amount_lamports=view.amount_lamports,
                provisioned_at=now,
            )
            return [
                (
                    "INSERT INTO entitlements (payment_id, user_id, order_id, granted_at)"
                    " VALUES (?, ?, ?, ?)",
                    [row["id"], row["user_id"], row["order_id"], store.iso(now)],
                ),
                outbox_insert(provisioned_event(provisioned)),
            ]

        await self.transition(
            public_id,
            allowed=frozenset({PaymentStatus.VERIFIED}),
            to=PaymentStatus.PROVISIONED,
            source=ChangeSource.FULFILMENT,
            extra=grant,
        )

    async def note(self, public_id: str, check: str, *, any_status: bool = False) -> None:
        """Record a check that changes no status (no version, no event)."""
        condition = "" if any_status else " AND status IN ('pending', 'expired')"
        await self.db.execute(
            f"UPDATE payments SET last_check = ?, last_checked_at = ?"  # noqa: S608
            f" WHERE public_id = ?{condition}",
            [check, store.iso(datetime.now(UTC)), public_id],
        )
        log.info("payment checked", payment_id=public_id, check=check)


def _pays_in_full(verdict: PaymentVerdict, row: dict[str, Any]) -> bool:
    received = verdict.received_lamports
    return (
        verdict.signature is not None
        and received is not None
        and received >= int(row["amount_lamports"])
    )
