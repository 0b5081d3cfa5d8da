"""The payments DB: rows in, `PaymentView`s out. Only this module writes SQL for payments."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from axiom_shared.db import Database, Statement
from axiom_shared.schemas import PaymentView


def iso(moment: datetime) -> str:
    """One text form for every stored time, so that SQL compares them in time order."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


_COLUMNS = (
    "id, public_id, order_id, user_id, reference_key, amount_lamports, received_lamports,"
    " recipient, status, tx_signature, expected_signature, failure_reason, last_check, version,"
    " correlation_id,"
    " expires_at, finalized_at, created_at, updated_at"
)


def to_view(row: dict[str, Any]) -> PaymentView:
    return PaymentView(
        payment_id=row["public_id"],
        status=row["status"],
        order_id=row["order_id"],
        amount_lamports=row["amount_lamports"],
        received_lamports=row["received_lamports"],
        recipient=row["recipient"],
        reference=row["reference_key"],
        tx_signature=row["tx_signature"],
        expected_signature=row["expected_signature"],
        failure_reason=row["failure_reason"],
        last_check=row["last_check"],
        expires_at=datetime.fromisoformat(row["expires_at"]),
        finalized_at=datetime.fromisoformat(row["finalized_at"]) if row["finalized_at"] else None,
        created_at=datetime.fromisoformat(row["created_at"]),
        updated_at=datetime.fromisoformat(row["updated_at"]),
        version=row["version"],
    )


def insert_payment(view: PaymentView, user_id: str, correlation_id: str | None) -> Statement:
    return (
        "INSERT INTO payments (public_id, order_id, user_id, reference_key, amount_lamports,"
        " recipient, status, expected_signature, version, expires_at, created_at, updated_at,"
        " correlation_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            view.payment_id,
            view.order_id,
            user_id,
            view.reference,
            view.amount_lamports,
            view.recipient,
            view.status.value,
            view.expected_signature,
            view.version,
            iso(view.expires_at),
            iso(view.created_at),
            iso(view.updated_at),
            correlation_id,
        ],
    )


def insert_idempotency_record(
    user_id: str, key: str, request_hash: str, public_id: str, response: str, at: datetime
) -> Statement:
    return (
        "INSERT INTO idempotency_keys"
        " (user_id, idempotency_key, request_hash, payment_id, response, created_at)"
        " SELECT ?, ?, ?, id, ?, ? FROM payments WHERE public_id = ?",
        [user_id, key, request_hash, response, iso(at), public_id],
    )


async def get_payment(db: Database, public_id: str) -> dict[str, Any] | None:
    return await db.fetch_one(
        f"SELECT {_COLUMNS} FROM payments WHERE public_id = ?",  # noqa: S608 - fixed columns
        [public_id],
    )


async def get_idempotency_record(db: Database, user_id: str, key: str) -> dict[str, Any] | None:
    return await db.fetch_one(
        "SELECT request_hash, response FROM idempotency_keys"
        " WHERE user_id = ? AND idempotency_key = ?",
        [user_id, key],
    )


async def open_payments_by_reference(
    db: Database, references: list[str], expired_since: datetime
) -> list[dict[str, Any]]:
    """Payments still open to a verdict: pending or verified, or expired recently."""
    marks = ", ".join("?" for _ in references)
    return await db.fetch_all(
        f"SELECT {_COLUMNS} FROM payments WHERE reference_key IN ({marks})"  # noqa: S608
        " AND (status IN ('pending', 'verified') OR (status = 'expired' AND expires_at > ?))",
        [*references, iso(expired_since)],
    )


async def public_ids(db: Database, where: str, args: list[Any], limit: int) -> list[str]:
    rows = await db.fetch_all(
        f"SELECT public_id FROM payments WHERE {where} ORDER BY id LIMIT ?",  # noqa: S608
        [*args, limit],
    )
    return [str(r["public_id"]) for r in rows]


def audit_insert(
    public_id: str,
    from_status: str | None,
    to_status: str,
    version: int,
    reason: str | None,
    source: str,
    correlation_id: str | None,
    at: datetime,
) -> Statement:
    """One row of the audit trail; put it in the same batch as the change it records."""
    return (
        "INSERT INTO payment_events (payment_id, from_status, to_status, version, reason,"
        " source, correlation_id, created_at)"
        " VALUES ((SELECT id FROM payments WHERE public_id = ?), ?, ?, ?, ?, ?, ?, ?)",
        [public_id, from_status, to_status, version, reason, source, correlation_id, iso(at)],
    )


async def audit_trail(db: Database, public_id: str) -> list[dict[str, Any]]:
    return await db.fetch_all(
        "SELECT e.from_status, e.to_status, e.version, e.reason, e.source, e.correlation_id,"
        " e.created_at FROM payment_events e JOIN payments p ON p.id = e.payment_id"
        " WHERE p.public_id = ? ORDER BY e.id",
        [public_id],
    )
