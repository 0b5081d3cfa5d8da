"""The payments ledger: the one module that reads and writes the payments DB.

- Typed rows (`PaymentRow`, `ReceiptRow`): every amount is an `int` in the smallest unit of
  the payment's `currency` (lamports for SOL, base units for a token: the `*_lamports`
  columns kept their first names, migration 0006) and every status a `PaymentStatus`,
  checked by mypy, never a `dict[str, Any]`.
- `TRANSITIONS` is the lifecycle of DESIGN.md ("Payment lifecycle"), the only place a status
  can move; `record_change` refuses anything else.
- `record_change` is the one way a payment changes: the change as ONE conditional UPDATE
  (`WHERE id = ? AND status = ? AND version = ?`: two racing writers can never both win), with
  its audit row and its outbox event in the same batch, each guarded by `changes() = 1` so
  they exist exactly when the change happened. Creation goes through it too (an INSERT).
- `OPEN_SQL` is the one definition of "open" (still payable: pending, or expired within the
  lookback); `WATCHED_SQL` adds payments that finished within the lookback, whose late money
  must still be seen (and owed back) when its webhook is lost: what the reconcile loop scans.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from axiom_payments.events import OutgoingEvent, status_event
from axiom_shared.db import Database, ResultSet, Statement
from axiom_shared.schemas import (
    SOL_DECIMALS,
    ChangeSource,
    Currency,
    Observation,
    PaymentStatus,
    PaymentStatusChanged,
    PaymentView,
    Receipt,
    RefundMode,
    RefundState,
    RefundStatus,
    RefundView,
    SeenOutcome,
)
from axiom_shared.solana_pay import transfer_url
from axiom_shared.wire import stamp

P = PaymentStatus

#: Every status move there is (DESIGN.md's lifecycle diagram, edge by edge) and why it happens.
#: `None` is "no payment yet". A change that keeps the status (amounts, the paying signature)
#: is not a move and needs no entry.
TRANSITIONS: dict[tuple[PaymentStatus | None, PaymentStatus], str] = {
    (None, P.PENDING): "created",
    (P.PENDING, P.VERIFIED): "receipts at finalized sum to >= amount",
    (P.VERIFIED, P.PROVISIONED): "fulfilment done",
    (P.PENDING, P.EXPIRED): "expires_at passed, sum < amount",
    (P.EXPIRED, P.VERIFIED): "late receipts complete it, within lookback",
    (P.PENDING, P.FAILED): "operator cancels; fulfilment refused",
    (P.EXPIRED, P.FAILED): "operator cancels; fulfilment refused",
}

#: Open: still scanned on chain by the reconcile loop (pending, or expired within the lookback,
#: where late receipts may still complete it). Arguments: the lookback's cut-off time.
OPEN_SQL = "(status = 'pending' OR (status = 'expired' AND expires_at > ?))"
#: Open, or finished (verified, provisioned, failed) within the lookback, or with a refund
#: request open or closed within the lookback (its transfer must be seen landing). Arguments:
#: the lookback's cut-off time, three times.
WATCHED_SQL = (
    "(status = 'pending' OR (status = 'expired' AND expires_at > ?)"
    " OR (status IN ('verified', 'provisioned', 'failed') AND updated_at > ?)"
    " OR refund_status = 'refund_requested' OR (refund_status IS NOT NULL AND updated_at > ?))"
)


class IllegalTransition(RuntimeError):
    """A status move that TRANSITIONS does not allow: a bug, never a data condition."""


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@dataclass(frozen=True)
class PaymentRow:
    id: int
    public_id: str
    order_id: str
    user_id: str
    reference_key: str
    amount_lamports: int
    received_lamports: int
    refund_due_lamports: int
    recipient: str
    status: PaymentStatus
    tx_signature: str | None
    expected_signature: str | None
    failure_reason: str | None
    last_check: str | None
    version: int
    correlation_id: str | None
    expires_at: datetime
    finalized_at: datetime | None
    created_at: datetime
    updated_at: datetime
    scan_cursor: str | None
    scanned_at: datetime | None
    #: Display only (never decides anything): seen at `confirmed`, and what became of it.
    seen_signature: str | None = None
    seen_at: datetime | None = None
    seen_outcome: SeenOutcome | None = None
    #: What it is priced and paid in; the amounts above are in its smallest unit.
    currency: Currency = Currency.SOL
    #: The token's mint; None for SOL.
    mint: str | None = None
    decimals: int = SOL_DECIMALS
    #: Given back so far (refunds landed), and where its refund stands.
    refunded: int = 0
    refund_status: RefundState | None = None

    @property
    def refund_open(self) -> bool:
        """A refund request of it is open (may still land)."""
        return self.refund_status is RefundState.REFUND_REQUESTED

    @classmethod
    def from_db(cls, row: dict[str, Any]) -> PaymentRow:
        return cls(
            id=int(row["id"]),
            public_id=str(row["public_id"]),
            order_id=str(row["order_id"]),
            user_id=str(row["user_id"]),
            reference_key=str(row["reference_key"]),
            amount_lamports=int(row["amount_lamports"]),
            received_lamports=int(row["received_lamports"] or 0),
            refund_due_lamports=int(row["refund_due_lamports"]),
            recipient=str(row["recipient"]),
            status=PaymentStatus(row["status"]),
            tx_signature=row["tx_signature"],
            expected_signature=row["expected_signature"],
            failure_reason=row["failure_reason"],
            last_check=row["last_check"],
            version=int(row["version"]),
            correlation_id=row["correlation_id"],
            expires_at=datetime.fromisoformat(row["expires_at"]),
            finalized_at=_time(row["finalized_at"]),
            created_at=datetime.fromisoformat(row["created_at"]),
            updated_at=datetime.fromisoformat(row["updated_at"]),
            scan_cursor=row["scan_cursor"],
            scanned_at=_time(row["scanned_at"]),
            seen_signature=row["seen_signature"],
            seen_at=_time(row["seen_at"]),
            seen_outcome=SeenOutcome(row["seen_outcome"]) if row["seen_outcome"] else None,
            currency=Currency(row["currency"]),
            mint=row["mint"],
            decimals=int(row["decimals"]),
            refunded=int(row["refunded_lamports"]),
            refund_status=RefundState(row["refund_status"]) if row["refund_status"] else None,
        )

    @property
    def in_lamports(self) -> bool:
        return self.mint is None

    def view(self) -> PaymentView:
        # The `*_lamports` fields carry lamports only: a token payment shows 0 there, so no
        # client can read USDC base units as lamports.
        lamports = 1 if self.in_lamports else 0
        return PaymentView(
            payment_id=self.public_id,
            status=self.status,
            order_id=self.order_id,
            amount_lamports=self.amount_lamports * lamports,
            received_lamports=self.received_lamports * lamports,
            refund_due_lamports=self.refund_due_lamports * lamports,
            currency=self.currency,
            mint=self.mint,
            decimals=self.decimals,
            amount=self.amount_lamports,
            received=self.received_lamports,
            refund_due=self.refund_due_lamports,
            refunded=self.refunded,
            refund_status=self.refund_status,
            recipient=self.recipient,
            reference=self.reference_key,
            tx_signature=self.tx_signature,
            expected_signature=self.expected_signature,
            failure_reason=self.failure_reason,
            last_check=self.last_check,
            expires_at=self.expires_at,
            finalized_at=self.finalized_at,
            seen_signature=self.seen_signature,
            seen_at=self.seen_at,
            seen_outcome=self.seen_outcome,
            created_at=self.created_at,
            updated_at=self.updated_at,
            version=self.version,
        )


@dataclass(frozen=True)
class ReceiptRow:
    signature: str
    slot: int
    position: int
    amount_lamports: int
    payer: str | None
    block_time: datetime
    source: str

    @property
    def chain_order(self) -> tuple[int, int, str]:
        return (self.slot, self.position, self.signature)

    @classmethod
    def of(cls, receipt: Receipt, source: ChangeSource) -> ReceiptRow:
        """A receipt as the verifier found it, about to be stored."""
        return cls(
            signature=receipt.signature,
            slot=receipt.slot,
            position=receipt.position,
            amount_lamports=receipt.amount_lamports,
            payer=receipt.payer,
            block_time=receipt.block_time,
            source=source.value,
        )

    @classmethod
    def from_db(cls, row: dict[str, Any]) -> ReceiptRow:
        return cls(
            signature=str(row["signature"]),
            slot=int(row["slot"]),
            position=int(row["position"]),
            amount_lamports=int(row["amount_lamports"]),
            payer=row["payer"],
            block_time=datetime.fromisoformat(row["block_time"]),
            source=str(row["source"]),
        )


_PAYMENT_COLUMNS = (
    "id, public_id, order_id, user_id, reference_key, amount_lamports, received_lamports,"
    " refund_due_lamports, recipient, status, tx_signature, expected_signature, failure_reason,"
    " last_check, version, correlation_id, expires_at, finalized_at, created_at, updated_at,"
    " scan_cursor, scanned_at, seen_signature, seen_at, seen_outcome, currency, mint, decimals,"
    " refunded_lamports, refund_status"
)


@dataclass(frozen=True)
class RefundRow:
    """A refund request (amounts in its payment's currency's smallest unit)."""

    id: int
    public_id: str
    payment_row_id: int
    payment_public_id: str
    amount: int
    recipient: str
    sender: str
    reference_key: str
    status: RefundStatus
    mode: RefundMode
    signature: str | None
    expected_signature: str | None
    requested_by: str
    reason: str | None
    expires_at: datetime
    created_at: datetime
    updated_at: datetime
    refunded_at: datetime | None
    currency: Currency
    mint: str | None
    decimals: int

    @classmethod
    def from_db(cls, row: dict[str, Any]) -> RefundRow:
        return cls(
            id=int(row["id"]),
            public_id=str(row["public_id"]),
            payment_row_id=int(row["payment_id"]),
            payment_public_id=str(row["payment_public_id"]),
            amount=int(row["amount"]),
            recipient=str(row["recipient"]),
            sender=str(row["sender"]),
            reference_key=str(row["reference_key"]),
            status=RefundStatus(row["status"]),
            mode=RefundMode(row["mode"]),
            signature=row["signature"],
            expected_signature=row["expected_signature"],
            requested_by=str(row["requested_by"]),
            reason=row["reason"],
            expires_at=datetime.fromisoformat(row["expires_at"]),
            created_at=datetime.fromisoformat(row["created_at"]),
            updated_at=datetime.fromisoformat(row["updated_at"]),
            refunded_at=_time(row["refunded_at"]),
            currency=Currency(row["currency"]),
            mint=row["mint"],
            decimals=int(row["decimals"]),
        )

    def view(self) -> RefundView:
        return RefundView(
            refund_id=self.public_id,
            payment_id=self.payment_public_id,
            status=self.status,
            mode=self.mode,
            amount=self.amount,
            currency=self.currency,
            mint=self.mint,
            decimals=self.decimals,
            recipient=self.recipient,
            sender=self.sender,
            reference=self.reference_key,
            transfer_url=transfer_url(
                self.recipient,
                self.amount,
                self.reference_key,
                "Refund",
                f"Refund of payment {self.payment_public_id}",
                self.public_id,
                spl_token=self.mint,
                decimals=self.decimals,
            ),
            signature=self.signature,
            expected_signature=self.expected_signature,
            requested_by=self.requested_by,
            reason=self.reason,
            expires_at=self.expires_at,
            created_at=self.created_at,
            updated_at=self.updated_at,
            refunded_at=self.refunded_at,
        )


_REFUND_SELECT = (
    "SELECT r.id, r.public_id, r.payment_id, p.public_id AS payment_public_id, r.amount,"
    " r.recipient, r.sender, r.reference_key, r.status, r.mode, r.signature,"
    " r.expected_signature, r.requested_by, r.reason, r.expires_at, r.created_at,"
    " r.updated_at, r.refunded_at, p.currency, p.mint, p.decimals"
    " FROM refunds r JOIN payments p ON p.id = r.payment_id"
)
#: Refund requests still watched on chain: open, or expired within the lookback (a transfer
#: request has no expiry of its own: one paid late is still seen, and counted). Argument:
#: the lookback's cut-off time.
WATCHED_REFUNDS_SQL = "(r.status = 'requested' OR (r.status = 'expired' AND r.expires_at > ?))"


# --- reading -------------------------------------------------------------------------------


def _dicts(rs: ResultSet) -> list[dict[str, Any]]:
    return [dict(zip(rs.columns, row, strict=True)) for row in rs.rows]


async def get_payment(db: Database, public_id: str) -> PaymentRow | None:
    row = await db.fetch_one(
        f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE public_id = ?",  # noqa: S608
        [public_id],
    )
    return PaymentRow.from_db(row) if row else None


async def matching(
    db: Database, references: Sequence[str], open_since: datetime
) -> tuple[list[PaymentRow], list[RefundRow]]:
    """Our payments (any status) whose reference is one of `references`, then the payments of
    the watched refund requests whose reference is one (their landing), and those requests:
    read together (one snapshot, one trip)."""
    if not references:
        return [], []
    marks = ", ".join("?" for _ in references)
    by_payment, by_refund = await db.read_many(
        [
            (
                f"SELECT {_PAYMENT_COLUMNS} FROM payments"  # noqa: S608
                f" WHERE reference_key IN ({marks})",
                list(references),
            ),
            (
                f"{_REFUND_SELECT} WHERE r.reference_key IN ({marks}) AND {WATCHED_REFUNDS_SQL}",
                [*references, stamp(open_since)],
            ),
        ]
    )
    payments = [PaymentRow.from_db(row) for row in _dicts(by_payment)]
    refunds = [RefundRow.from_db(row) for row in _dicts(by_refund)]
    have = {payment.public_id for payment in payments}
    for public_id in dict.fromkeys(r.payment_public_id for r in refunds):
        if public_id not in have:
            payment = await get_payment(db, public_id)
            if payment is not None:
                payments.append(payment)
    return payments, refunds


async def get_refund(db: Database, public_id: str) -> RefundRow | None:
    row = await db.fetch_one(f"{_REFUND_SELECT} WHERE r.public_id = ?", [public_id])
    return RefundRow.from_db(row) if row else None


async def refunds_of(
    db: Database, payment_row_id: int, watched_since: datetime | None = None
) -> list[RefundRow]:
    """A payment's refund requests (only the watched ones with `watched_since`)."""
    where = "r.payment_id = ?"
    args: list[Any] = [payment_row_id]
    if watched_since is not None:
        where += f" AND {WATCHED_REFUNDS_SQL}"
        args.append(stamp(watched_since))
    rows = await db.fetch_all(f"{_REFUND_SELECT} WHERE {where} ORDER BY r.id", args)
    return [RefundRow.from_db(row) for row in rows]


async def list_refunds(db: Database, status: str | None, limit: int) -> list[RefundRow]:
    where, args = ("r.status = ?", [status]) if status else ("1 = 1", [])
    rows = await db.fetch_all(
        f"{_REFUND_SELECT} WHERE {where} ORDER BY r.id DESC LIMIT ?",
        [*args, limit],
    )
    return [RefundRow.from_db(row) for row in rows]


async def refunds_past_expiry(db: Database, now: datetime, limit: int) -> list[RefundRow]:
    rows = await db.fetch_all(
        f"{_REFUND_SELECT} WHERE r.status = 'requested' AND r.expires_at < ? LIMIT ?",
        [stamp(now), limit],
    )
    return [RefundRow.from_db(row) for row in rows]


_HOT_WALLET_SPENT = (
    "SELECT coalesce(sum(r.amount), 0) FROM refunds r"
    " JOIN payments p ON p.id = r.payment_id WHERE r.mode = 'hot_wallet'"
    " AND r.status IN ('requested', 'refunded') AND p.currency = ? AND r.created_at >= ?"
)


def hot_wallet_cap_check(currency: Currency, since: datetime, per_day: int) -> list[Statement]:
    """After a hot-wallet refund's insert, in the same batch: fails it (IntegrityError) when
    the hot-wallet refunds of the last day, this one included, pass `per_day`. Atomic, so two
    requests on two replicas cannot both fit under the cap they share."""
    return [
        (
            f"INSERT INTO refund_cap_checks (over) SELECT ({_HOT_WALLET_SPENT}) > ?",
            [currency.value, stamp(since), per_day],
        ),
        ("DELETE FROM refund_cap_checks", []),
    ]


async def hot_wallet_spent(db: Database, currency: Currency, since: datetime) -> int:
    """Hot-wallet refunds in `currency` asked for since `since` that did or may still move
    money (requested or refunded): what counts against the daily cap."""
    row = await db.fetch_one(
        f"SELECT ({_HOT_WALLET_SPENT}) AS spent", [currency.value, stamp(since)]
    )
    return int(row["spent"]) if row else 0


_RECEIPT_COLUMNS = "signature, slot, position, amount_lamports, payer, block_time, source"


async def receipts_of(db: Database, payment_row_id: int) -> list[ReceiptRow]:
    rows = await db.fetch_all(
        f"SELECT {_RECEIPT_COLUMNS} FROM receipts WHERE payment_id = ?"  # noqa: S608
        " ORDER BY slot, position, signature",
        [payment_row_id],
    )
    return [ReceiptRow.from_db(row) for row in rows]


async def findings_context(
    db: Database, public_id: str, signatures: Sequence[str]
) -> tuple[PaymentRow | None, list[ReceiptRow], dict[str, str]]:
    """What judging new findings needs, read together (one snapshot, one trip): the payment,
    its receipts, and which of `signatures` are already a receipt of some payment (signature
    → that payment's public id)."""
    statements: list[Statement] = [
        (f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE public_id = ?", [public_id]),  # noqa: S608
        (
            f"SELECT {_RECEIPT_COLUMNS} FROM receipts WHERE payment_id ="  # noqa: S608
            " (SELECT id FROM payments WHERE public_id = ?) ORDER BY slot, position, signature",
            [public_id],
        ),
    ]
    if signatures:
        marks = ", ".join("?" for _ in signatures)
        statements.append(
            (
                "SELECT r.signature, p.public_id FROM receipts r"  # noqa: S608 - placeholders only
                f" JOIN payments p ON p.id = r.payment_id WHERE r.signature IN ({marks})",
                list(signatures),
            )
        )
    results = await db.read_many(statements)
    payment = _dicts(results[0])
    if not payment:
        return None, [], {}
    receipts = [ReceiptRow.from_db(row) for row in _dicts(results[1])]
    owners = (
        {str(r["signature"]): str(r["public_id"]) for r in _dicts(results[2])} if signatures else {}
    )
    return PaymentRow.from_db(payment[0]), receipts, owners


async def observations_of(db: Database, payment_row_id: int) -> list[dict[str, Any]]:
    return await db.fetch_all(
        "SELECT signature, reason, slot, amount_lamports, payer, source, recorded_at"
        " FROM observations WHERE payment_id = ? ORDER BY id",
        [payment_row_id],
    )


async def public_ids(db: Database, where: str, args: list[Any], limit: int) -> list[str]:
    rows = await db.fetch_all(
        f"SELECT public_id FROM payments WHERE {where} ORDER BY id LIMIT ?",  # noqa: S608
        [*args, limit],
    )
    return [str(r["public_id"]) for r in rows]


async def due_for_expiry(db: Database, now: datetime, limit: int) -> list[str]:
    return await public_ids(db, "status = 'pending' AND expires_at < ?", [stamp(now)], limit)


async def stuck_verified(db: Database, before: datetime, limit: int) -> list[str]:
    return await public_ids(db, "status = 'verified' AND updated_at < ?", [stamp(before)], limit)


async def claim_for_scan(
    db: Database, open_since: datetime, requested_before: datetime, limit: int, now: datetime
) -> list[str]:
    """The watched payments whose scan was asked for longest ago (never first), marked as
    asked for now: a round-robin over all of them, however many there are (no first-N)."""
    rows = await db.fetch_all(
        f"UPDATE payments SET scan_requested_at = ? WHERE id IN ("  # noqa: S608
        f" SELECT id FROM payments WHERE {WATCHED_SQL}"
        "  AND (scan_requested_at IS NULL OR scan_requested_at < ?)"
        "  ORDER BY scan_requested_at IS NOT NULL, scan_requested_at, id LIMIT ?)"
        " RETURNING public_id",
        [
            stamp(now),
            stamp(open_since),
            stamp(open_since),
            stamp(open_since),
            stamp(requested_before),
            limit,
        ],
    )
    return [str(r["public_id"]) for r in rows]


async def oldest_unscanned(db: Database, open_since: datetime) -> datetime | None:
    """Of every open payment, the oldest moment since which it has not been scanned (its last
    complete scan, else its creation): what the reconcile lag is measured from."""
    row = await db.fetch_one(
        f"SELECT min(coalesce(scanned_at, created_at)) AS oldest FROM payments"  # noqa: S608
        f" WHERE {OPEN_SQL}",
        [stamp(open_since)],
    )
    return _time(row["oldest"]) if row else None


async def refunds_due(db: Database, limit: int) -> list[dict[str, Any]]:
    """Payments owing money back, with the receipts that brought it in."""
    payments = await db.fetch_all(
        "SELECT id, public_id, status, order_id, amount_lamports, received_lamports,"
        " refund_due_lamports, tx_signature, updated_at, currency, mint FROM payments"
        " WHERE refund_due_lamports > 0 ORDER BY updated_at LIMIT ?",
        [limit],
    )
    owed: list[dict[str, Any]] = []
    for payment in payments:
        receipts = await receipts_of(db, int(payment["id"]))
        owed.append(
            {
                "payment_id": payment["public_id"],
                "status": payment["status"],
                "order_id": payment["order_id"],
                # Amounts in the currency's smallest unit (lamports for SOL).
                "currency": payment["currency"],
                "mint": payment["mint"],
                "amount_lamports": str(payment["amount_lamports"]),
                "received_lamports": str(payment["received_lamports"]),
                "refund_due_lamports": str(payment["refund_due_lamports"]),
                "paid_by": payment["tx_signature"],
                "receipts": [
                    {
                        "signature": r.signature,
                        "slot": r.slot,
                        "amount_lamports": str(r.amount_lamports),
                        "payer": r.payer,
                        "counted": r.signature == payment["tx_signature"],
                    }
                    for r in receipts
                ],
            }
        )
    return owed


async def ambiguous_credits(db: Database, limit: int) -> list[dict[str, Any]]:
    """Transactions that named two or more of our payments: they paid none of them, and what
    they credited is owed back once (one line per signature, whatever it named)."""
    rows = await db.fetch_all(
        "SELECT o.signature, max(o.amount_lamports) AS amount_lamports, max(o.payer) AS payer,"
        " group_concat(p.public_id) AS payments FROM observations o"
        " JOIN payments p ON p.id = o.payment_id"
        " WHERE o.reason = 'ambiguous' AND o.amount_lamports > 0"
        " GROUP BY o.signature ORDER BY min(o.id) LIMIT ?",
        [limit],
    )
    return [
        {
            "signature": row["signature"],
            "amount_lamports": str(row["amount_lamports"]),
            "payer": row["payer"],
            "payments": sorted(str(row["payments"]).split(",")),
        }
        for row in rows
    ]


async def audit_trail(db: Database, public_id: str) -> list[dict[str, Any]]:
    return await db.fetch_all(
        "SELECT e.from_status, e.to_status, e.version, e.reason, e.source, e.correlation_id,"
        " e.created_at FROM payment_events e JOIN payments p ON p.id = e.payment_id"
        " WHERE p.public_id = ? ORDER BY e.id",
        [public_id],
    )


async def get_idempotency_record(db: Database, scope: str, key: str) -> dict[str, Any] | None:
    return await db.fetch_one(
        "SELECT request_hash, response FROM idempotency_keys"
        " WHERE user_id = ? AND idempotency_key = ?",
        [scope, key],
    )


# --- writing -------------------------------------------------------------------------------


def _guarded(sql_head: str, values: str, args: list[Any], guard: bool) -> Statement:
    """`INSERT ... VALUES (...)`, or with `guard` `INSERT ... SELECT ... WHERE changes() = 1`:
    it then runs only when the statement before it (the conditional UPDATE, or a guarded
    insert) changed a row."""
    if guard:
        return (f"{sql_head} SELECT {values} WHERE changes() = 1", args)
    return (f"{sql_head} VALUES ({values})", args)


def outbox_insert(outgoing: OutgoingEvent, correlation_id: str | None, guard: bool) -> Statement:
    """Queue `outgoing` for the relay; put it in the same batch as the change it announces."""
    return _guarded(
        "INSERT INTO outbox (subject, msg_id, payload, correlation_id, created_at)",
        "?, ?, ?, ?, ?",
        [
            outgoing.subject,
            outgoing.msg_id,
            outgoing.payload.decode(),
            correlation_id,
            stamp(datetime.now(UTC)),
        ],
        guard,
    )


def _audit_insert(
    public_id: str,
    from_status: PaymentStatus | None,
    to_status: PaymentStatus,
    version: int,
    reason: str | None,
    source: ChangeSource,
    correlation_id: str | None,
    at: datetime,
) -> Statement:
    return _guarded(
        "INSERT INTO payment_events (payment_id, from_status, to_status, version, reason,"
        " source, correlation_id, created_at)",
        "(SELECT id FROM payments WHERE public_id = ?), ?, ?, ?, ?, ?, ?, ?",
        [
            public_id,
            from_status.value if from_status else None,
            to_status.value,
            version,
            reason,
            source.value,
            correlation_id,
            stamp(at),
        ],
        True,
    )


def _insert_payment(new: PaymentRow) -> Statement:
    return (
        "INSERT INTO payments (public_id, order_id, user_id, reference_key, amount_lamports,"
        " received_lamports, refund_due_lamports, recipient, status, expected_signature,"
        " version, expires_at, created_at, updated_at, correlation_id, currency, mint,"
        " decimals) VALUES (?, ?, ?, ?, ?, 0, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            new.public_id,
            new.order_id,
            new.user_id,
            new.reference_key,
            new.amount_lamports,
            new.recipient,
            new.status.value,
            new.expected_signature,
            new.version,
            stamp(new.expires_at),
            stamp(new.created_at),
            stamp(new.updated_at),
            new.correlation_id,
            new.currency.value,
            new.mint,
            new.decimals,
        ],
    )


_UPDATE = (
    "UPDATE payments SET status = ?, version = ?, updated_at = ?, received_lamports = ?,"
    " refund_due_lamports = ?, tx_signature = ?, failure_reason = ?, finalized_at = ?,"
    " last_check = ?, seen_signature = ?, seen_at = ?, seen_outcome = ?,"
    " refunded_lamports = ?, refund_status = ?"
    " WHERE id = ? AND status = ? AND version = ?"
)
_UPDATE_CHAINED = (
    "UPDATE payments SET status = ?, version = ?, updated_at = ?, received_lamports = ?,"
    " refund_due_lamports = ?, tx_signature = ?, failure_reason = ?, finalized_at = ?,"
    " last_check = ?, seen_signature = ?, seen_at = ?, seen_outcome = ?,"
    " refunded_lamports = ?, refund_status = ?"
    " WHERE id = ? AND status = ? AND version = ? AND changes() = 1"
)


def _update_payment(old: PaymentRow, new: PaymentRow, chained: bool = False) -> Statement:
    # The money rule of every change: it applies only to the row as it was read. A racing
    # writer that got there first leaves this UPDATE with 0 rows, and the caller re-reads.
    # `chained`: the second change of one batch, which runs only if the first one did (the
    # statement before it, the first change's guarded audit insert, wrote a row).
    return (
        _UPDATE_CHAINED if chained else _UPDATE,
        [
            new.status.value,
            new.version,
            stamp(new.updated_at),
            new.received_lamports,
            new.refund_due_lamports,
            new.tx_signature,
            new.failure_reason,
            stamp(new.finalized_at) if new.finalized_at else None,
            new.last_check,
            new.seen_signature,
            stamp(new.seen_at) if new.seen_at else None,
            new.seen_outcome.value if new.seen_outcome else None,
            new.refunded,
            new.refund_status.value if new.refund_status else None,
            old.id,
            old.status.value,
            old.version,
        ],
    )


def record_change(
    old: PaymentRow | None,
    new: PaymentRow,
    *,
    source: ChangeSource,
    reason: str | None = None,
    extra: Sequence[Statement] = (),
    chained: bool = False,
) -> list[Statement]:
    """The batch that moves a payment from `old` (None: creating it) to `new`: the write,
    then `extra` (guarded inserts that belong to the change, e.g. receipts, an entitlement),
    the status event and the audit row. Run it with `Database.batch`; the change happened
    exactly when the first result's `rows_affected` is 1.

    `chained`: these statements follow another change of the same payment in one batch and
    apply only if it did (e.g. verified, then provisioned, in one transaction)."""
    before = old.status if old else None
    if before != new.status and (before, new.status) not in TRANSITIONS:
        raise IllegalTransition(f"{before} -> {new.status} is not a payment transition")
    if old is not None and new.version != old.version + 1:
        raise IllegalTransition("a change takes the version one step up")
    event = PaymentStatusChanged(
        payment=new.view(), previous_status=before, source=source, reason=reason
    )
    statements: list[Statement] = [
        _insert_payment(new) if old is None else _update_payment(old, new, chained),
        *extra,
        outbox_insert(status_event(event), new.correlation_id, guard=True),
        _audit_insert(
            new.public_id,
            before,
            new.status,
            new.version,
            reason,
            source,
            new.correlation_id,
            new.updated_at,
        ),
    ]
    return statements


def changed(old: PaymentRow, now: datetime, **changes: Any) -> PaymentRow:
    """`old` with `changes`, one version up, updated now."""
    return replace(old, **changes, version=old.version + 1, updated_at=now)


def receipt_insert(payment_row_id: int, receipt: ReceiptRow, recorded_at: datetime) -> Statement:
    """Guarded: part of the change that counts it. UNIQUE(signature) refuses a second count."""
    return _guarded(
        "INSERT INTO receipts (payment_id, signature, slot, position, amount_lamports, payer,"
        " block_time, source, recorded_at)",
        "?, ?, ?, ?, ?, ?, ?, ?, ?",
        [
            payment_row_id,
            receipt.signature,
            receipt.slot,
            receipt.position,
            receipt.amount_lamports,
            receipt.payer,
            stamp(receipt.block_time),
            receipt.source,
            stamp(recorded_at),
        ],
        True,
    )


def observation_insert(
    payment_row_id: int, observation: Observation, source: ChangeSource, recorded_at: datetime
) -> Statement:
    """Not guarded and idempotent: an observation changes no status and is recorded once."""
    return (
        "INSERT INTO observations (payment_id, signature, reason, slot, amount_lamports, payer,"
        " source, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (payment_id, signature) DO NOTHING",
        [
            payment_row_id,
            observation.signature,
            observation.reason.value,
            observation.slot,
            observation.amount_lamports,
            observation.payer,
            source.value,
            stamp(recorded_at),
        ],
    )


def scan_recorded(payment_row_id: int, cursor: str | None, at: datetime) -> Statement:
    """A complete scan of the reference: the reconcile lag restarts, the next scan reads only
    what is newer than `cursor`. No version: nothing a client sees changed."""
    return (
        "UPDATE payments SET scanned_at = ?, scan_cursor = coalesce(?, scan_cursor) WHERE id = ?",
        [stamp(at), cursor, payment_row_id],
    )


def check_recorded(public_id: str, check: str, at: datetime, only_open: bool) -> Statement:
    """A look at the chain that found nothing (no version, no event)."""
    condition = " AND status IN ('pending', 'expired')" if only_open else ""
    return (
        "UPDATE payments SET last_check = ?, last_checked_at = ?"  # noqa: S608
        f" WHERE public_id = ?{condition}",
        [check, stamp(at), public_id],
    )


def refund_insert(payment: PaymentRow, refund: RefundRow) -> Statement:
    """Guarded: part of the payment's change to `refund_requested` (one open per payment)."""
    return _guarded(
        "INSERT INTO refunds (public_id, payment_id, amount, recipient, sender, reference_key,"
        " status, mode, expected_signature, requested_by, reason, expires_at, created_at,"
        " updated_at)",
        "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?",
        [
            refund.public_id,
            payment.id,
            refund.amount,
            refund.recipient,
            refund.sender,
            refund.reference_key,
            refund.status.value,
            refund.mode.value,
            refund.expected_signature,
            refund.requested_by,
            refund.reason,
            stamp(refund.expires_at),
            stamp(refund.created_at),
            stamp(refund.updated_at),
        ],
        True,
    )


def refund_closed(
    refund: RefundRow,
    status: RefundStatus,
    now: datetime,
    signature: str | None = None,
    slot: int | None = None,
) -> Statement:
    """Guarded by the payment's change before it (`changes() = 1`), and conditional on the
    refund's own status: a refund lands or expires once. The statements after it in the batch
    are guarded by this one."""
    return (
        "UPDATE refunds SET status = ?, signature = coalesce(?, signature), slot = ?,"
        " refunded_at = ?, updated_at = ?"
        " WHERE id = ? AND status = ? AND (SELECT changes()) = 1",
        [
            status.value,
            signature,
            slot,
            stamp(now) if status is RefundStatus.REFUNDED else None,
            stamp(now),
            refund.id,
            refund.status.value,
        ],
    )


def entitlement_insert(row: PaymentRow, now: datetime) -> Statement:
    """Guarded: one entitlement per payment, ever (UNIQUE payment_id)."""
    return _guarded(
        "INSERT INTO entitlements (payment_id, user_id, order_id, granted_at)",
        "?, ?, ?, ?",
        [row.id, row.user_id, row.order_id, stamp(now)],
        True,
    )


def idempotency_insert(
    scope: str, key: str, request_hash: str, public_id: str, response: str, at: datetime
) -> Statement:
    return (
        "INSERT INTO idempotency_keys"
        " (user_id, idempotency_key, request_hash, payment_id, response, created_at)"
        " SELECT ?, ?, ?, id, ?, ? FROM payments WHERE public_id = ?",
        [scope, key, request_hash, response, stamp(at), public_id],
    )


async def operator_action(
    db: Database,
    action: str,
    target: str | None,
    details: dict[str, Any],
    actor: str,
    correlation_id: str | None,
) -> None:
    await db.execute(
        "INSERT INTO operator_actions (action, target, details, actor, correlation_id,"
        " created_at) VALUES (?, ?, ?, ?, ?, ?)",
        [
            action,
            target,
            json.dumps(details, default=str),
            actor,
            correlation_id,
            stamp(datetime.now(UTC)),
        ],
    )


# --- the outbox ----------------------------------------------------------------------------


async def queued_events(db: Database, limit: int) -> list[dict[str, Any]]:
    return await db.fetch_all(
        "SELECT id, subject, msg_id, payload, correlation_id FROM outbox ORDER BY id LIMIT ?",
        [limit],
    )


async def delete_events(db: Database, msg_ids: Sequence[str]) -> None:
    """Remove relayed rows, named by their `msg_id` (one event, never written twice), not by
    `id`: `id` is a rowid, which SQLite hands out again once the largest row is gone (an
    emptied outbox starts over at 1). Deleting by `id`, a relay that published a row another
    relay had already published and deleted would delete the newer, unpublished event that
    took its id: a status change committed and never announced."""
    marks = ", ".join("?" for _ in msg_ids)
    await db.execute(f"DELETE FROM outbox WHERE msg_id IN ({marks})", list(msg_ids))  # noqa: S608
