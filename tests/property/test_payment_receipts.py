"""Property: however findings arrive — in any order, any number of times, racing each other,
with the expiry sweeper running in between — a payment ends exactly where its receipts in
chain order put it, through the REAL `Lifecycle` and ledger on a real libSQL file.

Each example is one payment (already past its expiry, so the sweeper may expire it at any
point) and a pool of transactions touching its reference, each what the chain makes it:
- honest receipts: partial or full payments, some landing after the completion deadline
  (expiry + lookback) where they no longer complete the payment but are still owed back;
- junk: transactions that are observations (failed, credit nothing, too old, ambiguous);
- a receipt whose signature is already counted for another payment.
Deliveries are findings messages carrying any subset of the pool; every transaction is
delivered at least once. The relay is never started: events stay in the outbox, counted.

What must hold (DESIGN.md, "Payment lifecycle" and "Receipts"):
- status, `received_lamports`, `refund_due_lamports` and the paying signature are what chain
  order gives: the running sum of the receipts by (slot, position), the first receipt that
  brings it to the price before the deadline pays it;
- provisioned exactly when such a receipt exists (one entitlement, one provisioned event);
  otherwise pending, or expired when the sweeper ran; junk never changes a thing;
- the receipts table holds each delivered receipt once, and never the foreign signature;
- version = the status events in the outbox (creation's too), versions 1, 2, ... each
  chained to the one before;
- delivering everything again, at once, changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from solders.pubkey import Pubkey
from solders.signature import Signature

from axiom_payments import ledger
from axiom_payments.app import payments_migrations
from axiom_payments.catalog import load_catalog
from axiom_payments.ledger import PaymentRow
from axiom_payments.lifecycle import Lifecycle
from axiom_payments.outbox import OutboxRelay
from axiom_payments.scheduler import Scheduler
from axiom_shared.db import Database, open_database
from axiom_shared.migrations import migrate
from axiom_shared.schemas import (
    ChangeSource,
    Observation,
    ObservationReason,
    PaymentFindings,
    PaymentStatus,
    Receipt,
)

EXAMPLES = 300
ORDER = "axiomid-pro-monthly"
PRICE = 100_000_000
LOOKBACK = timedelta(seconds=30)
SLOT_SECONDS = 2
#: Slots 1..60; block time = EPOCH + slot * 2 s; the payment expires at slot 30, so with the
#: 30 s lookback a receipt after slot 45 is too late to complete it.
SLOTS = 60
JUNK = (
    ObservationReason.TRANSACTION_FAILED,
    ObservationReason.NO_CREDIT,
    ObservationReason.PREDATES_PAYMENT,
    ObservationReason.AMBIGUOUS,
)


def new_signature() -> str:
    return str(Signature(secrets.token_bytes(64)))


@dataclass(frozen=True)
class Tx:
    signature: str
    kind: str  # "receipt", "foreign" (already counted elsewhere), or a junk reason
    slot: int
    position: int
    amount: int

    def block_time(self, epoch: datetime) -> datetime:
        return epoch + timedelta(seconds=self.slot * SLOT_SECONDS)


@dataclass
class Harness:
    loop: asyncio.AbstractEventLoop
    db: Database
    lifecycle: Lifecycle
    scheduler: Scheduler
    foreign_signature: str

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)


async def create(db: Database) -> tuple[str, datetime]:
    """A pending payment already past its expiry; returns it and its chain epoch (slot 0)."""
    now = datetime.now(UTC)
    expires_at = now - timedelta(seconds=1)
    epoch = expires_at - timedelta(seconds=30 * SLOT_SECONDS)
    row = PaymentRow(
        id=0,
        public_id="pay_" + secrets.token_urlsafe(18),
        order_id=ORDER,
        user_id="prop-user",
        reference_key=str(Pubkey.new_unique()),
        amount_lamports=PRICE,
        received_lamports=0,
        refund_due_lamports=0,
        recipient=str(Pubkey.new_unique()),
        status=PaymentStatus.PENDING,
        tx_signature=None,
        expected_signature=None,
        failure_reason=None,
        last_check=None,
        version=1,
        correlation_id=None,
        expires_at=expires_at,
        finalized_at=None,
        created_at=epoch - timedelta(minutes=5),
        updated_at=now,
        scan_cursor=None,
        scanned_at=None,
    )
    await db.batch(ledger.record_change(None, row, source=ChangeSource.CREATION))
    return row.public_id, epoch


def findings(payment_id: str, txs: list[Tx], epoch: datetime, scan: bool) -> PaymentFindings:
    receipts = [
        Receipt(
            signature=tx.signature,
            slot=tx.slot,
            position=tx.position,
            amount_lamports=tx.amount,
            block_time=tx.block_time(epoch),
        )
        for tx in txs
        if tx.kind in ("receipt", "foreign")
    ]
    observations = [
        Observation(signature=tx.signature, reason=ObservationReason(tx.kind), slot=tx.slot)
        for tx in txs
        if tx.kind not in ("receipt", "foreign")
    ]
    return PaymentFindings(
        payment_id=payment_id,
        source=ChangeSource.RECONCILE if scan else ChangeSource.WEBHOOK,
        receipts=receipts,
        observations=observations,
        scan_complete=scan,
        observed_at=datetime.now(UTC),
    )


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    loop = asyncio.new_event_loop()
    try:
        db = loop.run_until_complete(open_database(f"file:{tmp_path / 'payments.db'}"))
        loop.run_until_complete(migrate(db, payments_migrations()))
        # Never started: the outbox rows stay where the test can count them.
        relay = OutboxRelay(db, cast(JetStreamContext, None))
        lifecycle = Lifecycle(db=db, relay=relay, catalog=load_catalog(None), lookback=LOOKBACK)
        scheduler = Scheduler(
            lifecycle, cast(JetStreamContext, None), interval=1.0, expired_lookback=LOOKBACK
        )
        # Another payment, paid by the transaction that a "foreign" receipt names.
        other, epoch = loop.run_until_complete(create(db))
        foreign = new_signature()
        paid = Tx(foreign, "receipt", 10, 0, PRICE)
        loop.run_until_complete(
            lifecycle.on_findings(findings(other, [paid], epoch, False), cast(Msg, None))
        )
        yield Harness(loop, db, lifecycle, scheduler, foreign)
        loop.run_until_complete(db.close())
    finally:
        loop.close()


# --- the examples ---------------------------------------------------------------------------


@st.composite
def transactions(draw: st.DrawFn) -> Tx:
    kind = draw(st.sampled_from(["receipt", "receipt", "receipt", "foreign", *JUNK]))
    slot = draw(st.integers(1, SLOTS))
    position = draw(st.integers(0, 3))
    if kind == "receipt":
        amount = draw(
            st.one_of(st.integers(1, PRICE - 1), st.integers(PRICE, 2 * PRICE), st.just(PRICE // 2))
        )
        return Tx(new_signature(), kind, slot, position, amount)
    if kind == "foreign":
        return Tx("", kind, slot, position, PRICE)  # the harness's signature, set when played
    return Tx(new_signature(), str(kind), slot, position, 0)


EXPIRE = "expire"
Step = tuple[int, ...] | str  # a delivery (pool indices, as one findings message) or a sweep


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Tx], list[Step], bool, list[bool]]:
    pool = draw(st.lists(transactions(), min_size=1, max_size=6))
    indices = st.integers(0, len(pool) - 1)
    # Every transaction at least once (one at a time), then any redeliveries in any groups,
    # and sweeper runs, all in any order.
    singles: list[Step] = [(i,) for i in range(len(pool))]
    groups: list[Step] = [
        tuple(group)
        for group in draw(st.lists(st.lists(indices, min_size=1, max_size=4), max_size=4))
    ]
    sweeps: list[Step] = [EXPIRE] * draw(st.integers(0, 2))
    schedule = draw(st.permutations([*singles, *groups, *sweeps]))
    scans = [draw(st.booleans()) for _ in schedule]
    return pool, schedule, draw(st.booleans()), scans


async def apply(harness: Harness, message: PaymentFindings) -> None:
    for attempt in range(8):
        try:
            await harness.lifecycle.on_findings(message, cast(Msg, None))
            return
        except RuntimeError:
            # "kept changing": the consumer would redeliver it; so do we.
            if attempt == 7:
                raise


async def snapshot(db: Database, payment_id: str) -> dict[str, Any]:
    row = await ledger.get_payment(db, payment_id)
    assert row is not None
    receipts = await ledger.receipts_of(db, row.id)
    entitlements = await db.fetch_all("SELECT id FROM entitlements WHERE payment_id = ?", [row.id])
    events = await db.fetch_all(
        "SELECT payload FROM outbox WHERE msg_id LIKE ? ORDER BY id", [f"status:{payment_id}:%"]
    )
    provisioned = await db.fetch_all(
        "SELECT id FROM outbox WHERE msg_id = ?", [f"provisioned:{payment_id}"]
    )
    observed = await ledger.observations_of(db, row.id)
    return {
        "status": row.status,
        "version": row.version,
        "received": row.received_lamports,
        "refund_due": row.refund_due_lamports,
        "paid_by": row.tx_signature,
        "receipts": sorted(r.signature for r in receipts),
        "observations": sorted((o["signature"], o["reason"]) for o in observed),
        "entitlements": len(entitlements),
        "events": [json.loads(e["payload"]) for e in events],
        "provisioned_events": len(provisioned),
    }


def chain_order(pool: list[Tx], epoch: datetime, deadline: datetime) -> dict[str, Any]:
    """What the chain says, computed plainly: the model the ledger must agree with."""
    receipts = sorted(
        {tx.signature: tx for tx in pool if tx.kind == "receipt"}.values(),
        key=lambda tx: (tx.slot, tx.position, tx.signature),
    )
    total, paid_by = 0, None
    for tx in receipts:
        total += tx.amount
        if paid_by is None and total >= PRICE and tx.block_time(epoch) <= deadline:
            paid_by = tx.signature
    return {
        "received": total,
        "paid_by": paid_by,
        "receipts": sorted(t.signature for t in receipts),
    }


def check(harness: Harness, scenario: tuple[list[Tx], list[Step], bool, list[bool]]) -> str:
    """Play one scenario on a new payment, check every invariant; returns its final state."""
    pool, schedule, at_once, scans = scenario
    payment_id, epoch = harness.run(create(harness.db))
    pool = [
        Tx(harness.foreign_signature, tx.kind, tx.slot, tx.position, tx.amount)
        if tx.kind == "foreign"
        else tx
        for tx in pool
    ]

    async def step(item: Step, scan: bool) -> None:
        if item == EXPIRE:
            await harness.scheduler.expire(datetime.now(UTC))
        else:
            assert isinstance(item, tuple)
            await apply(harness, findings(payment_id, [pool[i] for i in item], epoch, scan))

    async def play() -> None:
        if at_once:
            await asyncio.gather(
                *(step(item, scan) for item, scan in zip(schedule, scans, strict=True))
            )
        else:
            for item, scan in zip(schedule, scans, strict=True):
                await step(item, scan)

    harness.run(play())
    state = harness.run(snapshot(harness.db, payment_id))
    expires_at = epoch + timedelta(seconds=30 * SLOT_SECONDS)
    expected = chain_order(pool, epoch, expires_at + LOOKBACK)
    swept = EXPIRE in schedule

    # Amounts and the paying signature: what chain order gives.
    assert state["received"] == expected["received"]
    assert state["receipts"] == expected["receipts"]
    assert harness.foreign_signature not in state["receipts"]
    if expected["paid_by"] is not None:
        assert state["status"] == PaymentStatus.PROVISIONED
        assert state["paid_by"] == expected["paid_by"]
        assert state["refund_due"] == expected["received"] - PRICE
    else:
        assert state["paid_by"] is None
        assert state["status"] == (PaymentStatus.EXPIRED if swept else PaymentStatus.PENDING)
        assert state["refund_due"] == (expected["received"] if swept else 0)
    # Junk is recorded, and only as observations.
    junk = {(tx.signature, tx.kind) for tx in pool if tx.kind not in ("receipt", "foreign")}
    if any(tx.kind == "foreign" for tx in pool):
        junk.add((harness.foreign_signature, ObservationReason.SIGNATURE_ALREADY_COUNTED.value))
    assert set(state["observations"]) == junk

    # Provisioning at most once: one entitlement and one event exactly when provisioned.
    assert state["entitlements"] == (1 if state["status"] == PaymentStatus.PROVISIONED else 0)
    assert state["provisioned_events"] == state["entitlements"]

    # Version and events: one event per change (creation too), versions 1.. in order, each
    # chained to the one before.
    events = state["events"]
    assert state["version"] == len(events)
    assert [e["payment"]["version"] for e in events] == list(range(1, state["version"] + 1))
    previous = None
    for event in events:
        assert event["previous_status"] == previous
        now = event["payment"]["status"]
        if now != previous:  # every move is one of the table's (DESIGN.md's diagram)
            moved = (PaymentStatus(previous) if previous else None, PaymentStatus(now))
            assert moved in ledger.TRANSITIONS, moved
        previous = now
    assert previous == state["status"].value

    # Delivering everything again, at once, changes nothing.
    async def redeliver() -> None:
        everything = findings(payment_id, pool, epoch, True)
        await asyncio.gather(apply(harness, everything), apply(harness, everything))

    harness.run(redeliver())
    if swept:
        harness.run(harness.scheduler.expire(datetime.now(UTC)))
    assert harness.run(snapshot(harness.db, payment_id)) == state
    return f"{state['status'].value}{' (raced)' if at_once else ''}"


def test_any_delivery_of_receipts_and_junk_ends_where_chain_order_says(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    outcomes: Counter[str] = Counter()

    @settings(max_examples=EXAMPLES, deadline=None, database=None)
    @given(scenario=scenarios())
    def one(scenario: tuple[list[Tx], list[Step], bool, list[bool]]) -> None:
        outcomes[check(harness, scenario)] += 1

    one()
    with capsys.disabled():
        print(
            f"\npayment receipts: {outcomes.total()} examples, "
            f"final states {dict(sorted(outcomes.items()))}"
        )
