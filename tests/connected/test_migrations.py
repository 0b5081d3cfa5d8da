"""Migrations: idempotent, reversible, and every constraint of DESIGN.md holds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from solders.keypair import Keypair

from axiom_amadeus_proxy.app import bookings_migrations
from axiom_payments.app import payments_migrations
from axiom_shared.db import Database, IntegrityError, open_database
from axiom_shared.migrations import (
    Migration,
    MigrationError,
    applied_versions,
    migrate,
    migrate_down,
    split_sql,
)

NOW = "2026-01-01T00:00:00+00:00"

pytestmark = pytest.mark.connected

PAYMENTS_VERSIONS = [m.version for m in payments_migrations()]
BOOKINGS_VERSIONS = [m.version for m in bookings_migrations()]


async def insert_payment(db: Database, n: int, **overrides: object) -> None:
    row: dict[str, object] = {
        "public_id": f"pay_{n:020d}",
        "order_id": "pro-monthly",
        "reference_key": f"ref{n}",
        "amount_lamports": 1000,
        "recipient": "merchant",
        "status": "pending",
        "tx_signature": None,
        "failure_reason": None,
        "expires_at": NOW,
        "created_at": NOW,
        "updated_at": NOW,
    }
    row.update(overrides)
    cols = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    await db.execute(f"INSERT INTO payments ({cols}) VALUES ({marks})", list(row.values()))  # noqa: S608


async def table_names(db: Database) -> set[str]:
    rows = await db.fetch_all("SELECT name FROM sqlite_master WHERE type = 'table'")
    return {str(r["name"]) for r in rows}


async def test_applying_twice_changes_nothing(payments_db: Database) -> None:
    before = await payments_db.fetch_all("SELECT sql FROM sqlite_master ORDER BY name")
    assert await migrate(payments_db, payments_migrations()) == []
    after = await payments_db.fetch_all("SELECT sql FROM sqlite_master ORDER BY name")
    assert before == after
    assert list(await applied_versions(payments_db)) == PAYMENTS_VERSIONS


async def test_down_then_up_round_trips(payments_db: Database) -> None:
    schema = await payments_db.fetch_all("SELECT type, name, sql FROM sqlite_master ORDER BY name")
    assert await migrate_down(payments_db, payments_migrations()) == PAYMENTS_VERSIONS[::-1]
    assert {"payments", "entitlements"} & await table_names(payments_db) == set()
    assert await migrate(payments_db, payments_migrations()) == PAYMENTS_VERSIONS
    again = await payments_db.fetch_all("SELECT type, name, sql FROM sqlite_master ORDER BY name")
    assert again == schema


async def test_concurrent_migrators_apply_once(tmp_path: Path) -> None:
    url = f"file:{tmp_path / 'race.db'}"
    first, second = await open_database(url), await open_database(url)
    try:
        results = await asyncio.gather(
            migrate(first, payments_migrations()), migrate(second, payments_migrations())
        )
        assert sorted(v for r in results for v in r) == PAYMENTS_VERSIONS
        assert list(await applied_versions(first)) == PAYMENTS_VERSIONS
    finally:
        await first.close()
        await second.close()


async def test_an_edited_applied_migration_is_refused(payments_db: Database) -> None:
    original = payments_migrations()[0]
    edited = Migration(1, original.name, original.up_sql + "\n-- edited", original.down_sql)
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(payments_db, [edited])


async def test_a_failing_migration_leaves_nothing_half_applied(payments_db: Database) -> None:
    broken = Migration(
        9999,
        "broken",
        "CREATE TABLE half (a INTEGER);\nINSERT INTO nowhere VALUES (1);",
        "SELECT 1;",
    )
    with pytest.raises(Exception, match="nowhere"):
        await migrate(payments_db, [*payments_migrations(), broken])
    assert "half" not in await table_names(payments_db)
    assert list(await applied_versions(payments_db)) == PAYMENTS_VERSIONS


def test_split_sql_keeps_statements_whole() -> None:
    script = (
        "-- c\nCREATE TABLE a (x TEXT DEFAULT ';');\n\n"
        "CREATE TRIGGER t AFTER INSERT ON a BEGIN\n  SELECT 1; SELECT 2;\nEND;\n"
    )
    statements = split_sql(script)
    assert len(statements) == 2
    assert statements[1].startswith("CREATE TRIGGER")
    assert statements[1].endswith("END;")


async def test_status_must_be_a_lifecycle_state(payments_db: Database) -> None:
    with pytest.raises(IntegrityError, match="CHECK"):
        await insert_payment(payments_db, 1, status="refunded")
    await insert_payment(payments_db, 1)
    with pytest.raises(IntegrityError, match="CHECK"):
        await payments_db.execute(
            "UPDATE payments SET status = 'paid' WHERE reference_key = 'ref1'"
        )


async def test_reference_key_is_unique_and_required(payments_db: Database) -> None:
    await insert_payment(payments_db, 1, reference_key="same")
    with pytest.raises(IntegrityError, match="UNIQUE"):
        await insert_payment(payments_db, 2, reference_key="same")
    with pytest.raises(IntegrityError, match="NOT NULL"):
        await insert_payment(payments_db, 3, reference_key=None)


async def test_signature_is_nullable_but_unique(payments_db: Database) -> None:
    # Many pending payments have no signature yet...
    await insert_payment(payments_db, 1)
    await insert_payment(payments_db, 2)
    # ...but one transaction can never pay two payments.
    await insert_payment(payments_db, 3, status="verified", tx_signature="sigA")
    with pytest.raises(IntegrityError, match="UNIQUE"):
        await insert_payment(payments_db, 4, status="verified", tx_signature="sigA")
    with pytest.raises(IntegrityError, match="UNIQUE"):
        await payments_db.execute(
            "UPDATE payments SET tx_signature = 'sigA' WHERE reference_key = 'ref1'"
        )


@pytest.mark.parametrize("amount", [0, -1, 1.5, "abc", None])
async def test_amount_must_be_a_positive_integer(payments_db: Database, amount: object) -> None:
    with pytest.raises(IntegrityError, match=r"CHECK|NOT NULL"):
        await insert_payment(payments_db, 1, amount_lamports=amount)


async def test_verified_needs_a_signature_and_failed_a_reason(payments_db: Database) -> None:
    with pytest.raises(IntegrityError, match="CHECK"):
        await insert_payment(payments_db, 1, status="verified")
    with pytest.raises(IntegrityError, match="CHECK"):
        await insert_payment(payments_db, 2, status="failed")
    await insert_payment(payments_db, 3, status="failed", failure_reason="underpaid")


async def test_one_entitlement_per_payment(payments_db: Database) -> None:
    await insert_payment(payments_db, 1, status="verified", tx_signature="sig1")
    grant = (
        "INSERT INTO entitlements (payment_id, user_id, order_id, granted_at)"
        " SELECT id, user_id, order_id, ? FROM payments WHERE reference_key = 'ref1'"
    )
    await payments_db.execute(grant, [NOW])
    with pytest.raises(IntegrityError, match="UNIQUE"):
        await payments_db.execute(grant, [NOW])


LEGACY_TABLE = """
CREATE TABLE agent_transactions (
    id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    user_id TEXT,
    kind TEXT NOT NULL,
    amount_cents INTEGER,
    currency TEXT,
    status TEXT NOT NULL,
    details TEXT,
    created_at TEXT NOT NULL
)
"""


async def legacy_rows(db: Database) -> list[dict[str, object]]:
    return await db.fetch_all(
        "SELECT id, agent_id, user_id, kind, amount_cents, currency, status, details, created_at"
        " FROM agent_transactions ORDER BY id"
    )


async def test_bookings_migration_keeps_legacy_rows(tmp_path: Path) -> None:
    db = await open_database(f"file:{tmp_path / 'legacy.db'}")
    try:
        await db.execute(LEGACY_TABLE)
        for i in range(3):
            await db.execute(
                "INSERT INTO agent_transactions"
                " VALUES (?, 'agent', 'u', 'flight', ?, 'EGP', 'paid', '{}', ?)",
                [f"tx{i}", 1000 * i, NOW],
            )
        original = await legacy_rows(db)
        migrations = bookings_migrations()

        assert await migrate(db, migrations) == BOOKINGS_VERSIONS
        assert await legacy_rows(db) == original
        providers = await db.fetch_all(
            "SELECT payment_provider, idempotency_key FROM agent_transactions"
        )
        assert providers == [{"payment_provider": "solana", "idempotency_key": None}] * 3

        assert await migrate_down(db, migrations) == BOOKINGS_VERSIONS[::-1]
        assert await legacy_rows(db) == original
        columns = {r["name"] for r in await db.fetch_all("PRAGMA table_info(agent_transactions)")}
        assert {"idempotency_key", "paymob_order_id", "payment_status"} & columns == set()
        assert "paymob_callbacks" not in await table_names(db)

        assert await migrate(db, migrations) == BOOKINGS_VERSIONS
        assert await legacy_rows(db) == original

        await db.execute("UPDATE agent_transactions SET idempotency_key = 'k1' WHERE id = 'tx0'")
        with pytest.raises(IntegrityError, match="UNIQUE"):
            await db.execute(
                "UPDATE agent_transactions SET idempotency_key = 'k1' WHERE id = 'tx1'"
            )
        # One booking per Paymob order.
        await db.execute("UPDATE agent_transactions SET paymob_order_id = '7' WHERE id = 'tx0'")
        with pytest.raises(IntegrityError, match="UNIQUE"):
            await db.execute("UPDATE agent_transactions SET paymob_order_id = '7' WHERE id = 'tx1'")
    finally:
        await db.close()


async def test_receipts_migration_gives_counted_payments_their_receipt(tmp_path: Path) -> None:
    """0005: payments counted before receipts existed get a receipt from `tx_signature`;
    money owed back shows as `refund_due_lamports`; a failed payment's counted transaction
    becomes a receipt (owed back), and the way down puts it back."""
    db = await open_database(f"file:{tmp_path / 'payments.db'}")
    try:
        await migrate(db, payments_migrations(), target=4)
        await insert_payment(
            db, 1, status="provisioned", tx_signature="sig-1", received_lamports=1500
        )
        await insert_payment(db, 2, status="verified", tx_signature="sig-2", received_lamports=1000)
        await insert_payment(
            db, 3, status="failed", tx_signature="sig-3", received_lamports=400,
            failure_reason="underpaid",
        )  # fmt: skip
        await insert_payment(db, 4, status="failed", failure_reason="wrong_recipient",
                             tx_signature="sig-4", received_lamports=0)  # fmt: skip
        await insert_payment(db, 5)
        assert await migrate(db, payments_migrations(), target=5) == [5]
        receipts = await db.fetch_all(
            "SELECT p.public_id, r.signature, r.amount_lamports FROM receipts r"
            " JOIN payments p ON p.id = r.payment_id ORDER BY p.id"
        )
        assert [(r["signature"], r["amount_lamports"]) for r in receipts] == [
            ("sig-1", 1500),
            ("sig-2", 1000),
            ("sig-3", 400),
        ]
        rows = await db.fetch_all(
            "SELECT status, tx_signature, received_lamports, refund_due_lamports FROM payments"
            " ORDER BY id"
        )
        assert [tuple(r.values()) for r in rows] == [
            ("provisioned", "sig-1", 1500, 500),
            ("verified", "sig-2", 1000, 0),
            ("failed", None, 400, 400),
            ("failed", None, 0, 0),
            ("pending", None, 0, 0),
        ]
        # One transaction counts once, for one payment.
        with pytest.raises(IntegrityError):
            await db.execute(
                "INSERT INTO receipts (payment_id, signature, slot, position, amount_lamports,"
                " block_time, source, recorded_at) VALUES (5, 'sig-1', 1, 0, 1, ?, 'test', ?)",
                [NOW, NOW],
            )
        assert await migrate_down(db, payments_migrations(), target=4) == [5]
        rows = await db.fetch_all("SELECT tx_signature FROM payments ORDER BY id")
        assert [r["tx_signature"] for r in rows] == ["sig-1", "sig-2", "sig-3", None, None]
    finally:
        await db.close()


async def test_currency_and_refunds_migrations_go_up_and_back(tmp_path: Path) -> None:
    """0006: every payment so far is in SOL; the way down refuses while a token payment
    exists (its amounts would read as lamports). 0007: what was owed shows as refund_due;
    the way down owes again what was refunded."""
    db = await open_database(f"file:{tmp_path / 'payments.db'}")
    try:
        await migrate(db, payments_migrations(), target=5)
        await insert_payment(db, 1, status="provisioned", tx_signature="sig-1",
                             received_lamports=1500)  # fmt: skip
        await db.execute("UPDATE payments SET refund_due_lamports = 500 WHERE id = 1")
        assert await migrate(db, payments_migrations(), target=7) == [6, 7]
        row = await db.fetch_one(
            "SELECT currency, mint, decimals, refunded_lamports, refund_status FROM payments"
        )
        assert row == {
            "currency": "SOL",
            "mint": None,
            "decimals": 9,
            "refunded_lamports": 0,
            "refund_status": "refund_due",
        }
        with pytest.raises(IntegrityError):  # a token payment names its mint
            await db.execute("UPDATE payments SET currency = 'USDC' WHERE id = 1")
        await db.execute(
            "UPDATE payments SET refunded_lamports = 500, refund_due_lamports = 0,"
            " refund_status = 'refunded' WHERE id = 1"
        )
        assert await migrate_down(db, payments_migrations(), target=6) == [7]
        row = await db.fetch_one("SELECT refund_due_lamports FROM payments")
        assert row == {"refund_due_lamports": 500}
        await db.execute(
            "UPDATE payments SET currency = 'USDC', mint = ?", [str(Keypair().pubkey())]
        )
        with pytest.raises(IntegrityError):
            await migrate_down(db, payments_migrations(), target=5)
        await db.execute("UPDATE payments SET currency = 'SOL', mint = NULL")
        assert await migrate_down(db, payments_migrations(), target=5) == [6]
    finally:
        await db.close()


async def test_seen_columns_hold_only_known_outcomes_and_go_back(tmp_path: Path) -> None:
    """0008: a payment shows a transaction seen at confirmed (display only) and what became of
    it; the way down drops the columns and nothing else."""
    db = await open_database(f"file:{tmp_path / 'payments.db'}")
    try:
        await migrate(db, payments_migrations())
        await insert_payment(
            db, 1, seen_signature="sig-1", seen_at=NOW, seen_outcome="not_finalized"
        )
        for outcome in ("not_a_receipt", "counted", None):
            await db.execute("UPDATE payments SET seen_outcome = ? WHERE id = 1", [outcome])
        with pytest.raises(IntegrityError):
            await db.execute("UPDATE payments SET seen_outcome = 'paid' WHERE id = 1")
        assert await migrate_down(db, payments_migrations(), target=7) == [8]
        rows = await db.fetch_all("SELECT public_id, status FROM payments")
        assert [tuple(r.values()) for r in rows] == [(f"pay_{1:020d}", "pending")]
        assert await migrate(db, payments_migrations()) == [8]
    finally:
        await db.close()
