"""The bookings audit trail: every booking state and payment status change is recorded by
the database itself, in the same transaction, and the records cannot be rewritten."""

from __future__ import annotations

from pathlib import Path

import pytest

from axiom_amadeus_proxy.app import bookings_migrations
from axiom_shared.db import IntegrityError, open_database
from axiom_shared.migrations import migrate, migrate_down

pytestmark = pytest.mark.connected

NOW = "2026-01-01T00:00:00Z"


async def test_booking_changes_are_recorded_and_append_only(tmp_path: Path) -> None:
    db = await open_database(f"file:{tmp_path / 'bookings.db'}")
    try:
        await migrate(db, bookings_migrations())
        await db.execute(
            "INSERT INTO agent_transactions (id, agent_id, kind, status, created_at,"
            " idempotency_key, booking_state) VALUES ('b1', 'agent', 'flight', 'pending', ?,"
            " 'key-1', 'in_flight')",
            [NOW],
        )
        for state in ("booking_sent", "completed", "completed"):
            await db.execute(
                "UPDATE agent_transactions SET booking_state = ? WHERE id = 'b1'", [state]
            )
        await db.execute("UPDATE agent_transactions SET payment_status = 'paid' WHERE id = 'b1'")
        await db.execute("UPDATE agent_transactions SET status = 'x' WHERE id = 'b1'")
        events = await db.fetch_all(
            "SELECT field, from_value, to_value FROM booking_events WHERE booking_id = 'b1'"
            " ORDER BY id"
        )
        assert events == [
            {"field": "booking_state", "from_value": None, "to_value": "in_flight"},
            {"field": "booking_state", "from_value": "in_flight", "to_value": "booking_sent"},
            {"field": "booking_state", "from_value": "booking_sent", "to_value": "completed"},
            {"field": "payment_status", "from_value": None, "to_value": "paid"},
        ]
        # A change that fails leaves no record either: the trigger is in its transaction.
        with pytest.raises(IntegrityError):
            await db.execute(
                "UPDATE agent_transactions SET booking_state = 'nonsense' WHERE id = 'b1'"
            )
        assert len(await db.fetch_all("SELECT id FROM booking_events")) == 4
        with pytest.raises(IntegrityError, match="append-only"):
            await db.execute("UPDATE booking_events SET to_value = 'forged'")
        with pytest.raises(IntegrityError, match="append-only"):
            await db.execute("DELETE FROM booking_events")
        await db.execute(
            "INSERT INTO paymob_callbacks (transaction_id, order_id, state, amount_cents,"
            " currency, raw, received_at, recorded_at, applied, via)"
            " VALUES ('t1', 'o1', 'success', 100, 'EGP', '{}', ?, ?, 0, 'callback')",
            [NOW, NOW],
        )
        with pytest.raises(IntegrityError, match="append-only"):
            await db.execute("UPDATE paymob_callbacks SET state = 'declined'")
        with pytest.raises(IntegrityError, match="append-only"):
            await db.execute("DELETE FROM paymob_callbacks")
        # Released claims (deleted rows) are recorded too.
        await db.execute("DELETE FROM agent_transactions WHERE id = 'b1'")
        last = await db.fetch_one("SELECT field FROM booking_events ORDER BY id DESC LIMIT 1")
        assert last == {"field": "deleted"}
        assert await migrate_down(db, bookings_migrations(), target=4) == [5]
        await db.execute("UPDATE paymob_callbacks SET state = 'declined'")  # triggers gone
    finally:
        await db.close()
