"""Property: whatever the order of verdicts, redeliveries and sweeper expiry, one payment ends
in a state the money rules allow, through the REAL `Lifecycle` on a real libSQL file.

Each example is one payment (created already past its expiry, so the sweeper may expire it at
any point) and a small pool of transactions touching it, each with the one outcome the chain
gives it (a transaction's verdict is deterministic): verified (paid in full or more),
underpaid, wrong recipient, informational (no reference, failed, not found, predates), or
verified but already bound to another payment. Hypothesis picks the order in which verdicts for
these transactions arrive, with any number of redeliveries, sweeper runs in between, and
sometimes all of them at once (racing deliveries). The relay is never started: status events
accumulate in the outbox, where they are counted.

What must hold (DESIGN.md, "Payment lifecycle"; the first decisive verdict by *apply* order
legitimately decides between verified and failed when both kinds arrive, so the invariants are
stated over the multiset):
- at most one entitlement ever, and one exactly when the payment is provisioned;
- provisioned ⇒ `tx_signature` is a transaction whose verdict is verified (≥ the amount);
- failed ⇒ `failure_reason` is underpaid or wrong_recipient and `tx_signature` is such a
  transaction; never provisioned from underpaid / wrong recipient alone;
- no decisive verdict ⇒ pending or expired (expired only if the sweeper ran); a signature
  already used by another payment never decides this one;
- only verified verdicts ⇒ provisioned; only failing ones ⇒ failed (whatever the order);
- applied one after another, the first decisive verdict decides;
- redelivering every applied verdict again, in any order, changes nothing (status, version,
  signature, entitlements, events);
- version = 1 + the status events in the outbox, which carry versions 2, 3, ... in order, each
  one's previous status being the status of the one before; one `provisioned` event exactly
  when there is an entitlement.
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

from axiom_payments import store
from axiom_payments.app import payments_migrations
from axiom_payments.catalog import load_catalog
from axiom_payments.lifecycle import Lifecycle
from axiom_payments.outbox import OutboxRelay
from axiom_payments.scheduler import Scheduler
from axiom_shared.db import Database, open_database
from axiom_shared.migrations import migrate
from axiom_shared.schemas import (
    ChangeSource,
    PaymentStatus,
    PaymentVerdict,
    PaymentView,
    VerdictOutcome,
)

EXAMPLES = 400
ORDER = "axiomid-pro-monthly"
PRICE = 100_000_000
INFORMATIONAL = (
    VerdictOutcome.NO_REFERENCE,
    VerdictOutcome.TRANSACTION_FAILED,
    VerdictOutcome.TRANSACTION_NOT_FOUND,
    VerdictOutcome.PREDATES_PAYMENT,
)
FAILING = (VerdictOutcome.UNDERPAID, VerdictOutcome.WRONG_RECIPIENT)
FOREIGN = "foreign"  # verified, but its signature already paid another payment


@dataclass(frozen=True)
class Tx:
    kind: str  # a VerdictOutcome value, or FOREIGN
    signature: str | None
    received: int | None

    @property
    def decisive(self) -> bool:
        return self.kind in (VerdictOutcome.VERIFIED, *FAILING)


@dataclass
class Harness:
    loop: asyncio.AbstractEventLoop
    db: Database
    lifecycle: Lifecycle
    scheduler: Scheduler
    foreign_signature: str

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)


def new_signature() -> str:
    return str(Signature(secrets.token_bytes(64)))


def view(status: PaymentStatus = PaymentStatus.PENDING) -> PaymentView:
    now = datetime.now(UTC)
    return PaymentView(
        payment_id="pay_" + secrets.token_urlsafe(18),
        status=status,
        order_id=ORDER,
        amount_lamports=PRICE,
        recipient=str(Pubkey.new_unique()),
        reference=str(Pubkey.new_unique()),
        # Already due: the sweeper may expire it whenever the example runs it.
        expires_at=now - timedelta(seconds=1),
        created_at=now - timedelta(minutes=16),
        updated_at=now,
        version=1,
    )


def verdict(payment_id: str, tx: Tx) -> PaymentVerdict:
    outcome = VerdictOutcome.VERIFIED if tx.kind == FOREIGN else VerdictOutcome(tx.kind)
    return PaymentVerdict(
        payment_id=payment_id,
        outcome=outcome,
        source=ChangeSource.WEBHOOK,
        signature=tx.signature,
        received_lamports=tx.received,
        observed_at=datetime.now(UTC),
    )


async def create(db: Database) -> str:
    payment = view()
    await db.execute(*store.insert_payment(payment, "prop-user", None))
    return payment.payment_id


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    loop = asyncio.new_event_loop()
    try:
        db = loop.run_until_complete(open_database(f"file:{tmp_path / 'payments.db'}"))
        loop.run_until_complete(migrate(db, payments_migrations()))
        # Never started: the outbox rows stay where the test can count them.
        relay = OutboxRelay(db, cast(JetStreamContext, None))
        lifecycle = Lifecycle(db=db, relay=relay, catalog=load_catalog(None))
        scheduler = Scheduler(
            lifecycle,
            cast(JetStreamContext, None),
            interval=1.0,
            expired_lookback=timedelta(hours=1),
        )
        # Another payment, paid by the transaction that a FOREIGN verdict names.
        other = loop.run_until_complete(create(db))
        foreign = new_signature()
        paid = Tx(VerdictOutcome.VERIFIED, foreign, PRICE)
        loop.run_until_complete(lifecycle.on_verdict(verdict(other, paid), cast(Msg, None)))
        yield Harness(loop, db, lifecycle, scheduler, foreign)
        loop.run_until_complete(db.close())
    finally:
        loop.close()


# --- the examples ---------------------------------------------------------------------------


@st.composite
def transactions(draw: st.DrawFn) -> Tx:
    kind = str(draw(st.sampled_from([VerdictOutcome.VERIFIED, *FAILING, *INFORMATIONAL, FOREIGN])))
    if kind == VerdictOutcome.VERIFIED:
        return Tx(kind, new_signature(), draw(st.integers(PRICE, PRICE * 3)))
    if kind == VerdictOutcome.UNDERPAID:
        return Tx(kind, new_signature(), draw(st.integers(0, PRICE - 1)))
    if kind == VerdictOutcome.WRONG_RECIPIENT:
        return Tx(kind, new_signature(), 0)
    if kind == FOREIGN:
        return Tx(kind, None, PRICE)  # the signature is the harness's, set when applied
    return Tx(kind, draw(st.one_of(st.none(), st.just(new_signature()))), None)


EXPIRE = -1  # a sweeper run, in a schedule of transaction indices


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Tx], list[int], bool]:
    pool = draw(st.lists(transactions(), min_size=1, max_size=4))
    # Every transaction at least once, then redeliveries and sweeper runs, in any order.
    extra = draw(st.lists(st.integers(EXPIRE, len(pool) - 1), max_size=8))
    schedule = draw(st.permutations([*range(len(pool)), *extra]))
    return pool, schedule, draw(st.booleans())


async def apply(harness: Harness, payment_id: str, tx: Tx) -> None:
    if tx.kind == FOREIGN:
        tx = Tx(FOREIGN, harness.foreign_signature, tx.received)
    for attempt in range(5):
        try:
            await harness.lifecycle.on_verdict(verdict(payment_id, tx), cast(Msg, None))
            return
        except RuntimeError:
            # "kept changing": the consumer would redeliver it; so do we.
            if attempt == 4:
                raise


async def step(harness: Harness, payment_id: str, pool: list[Tx], index: int) -> None:
    if index == EXPIRE:
        await harness.scheduler.expire(datetime.now(UTC))
    else:
        await apply(harness, payment_id, pool[index])


async def snapshot(db: Database, payment_id: str) -> dict[str, Any]:
    row = await db.fetch_one(
        "SELECT id, status, version, tx_signature, failure_reason, received_lamports"
        " FROM payments WHERE public_id = ?",
        [payment_id],
    )
    assert row is not None
    entitlements = await db.fetch_all(
        "SELECT id FROM entitlements WHERE payment_id = ?", [row["id"]]
    )
    events = await db.fetch_all(
        "SELECT msg_id, payload FROM outbox WHERE msg_id LIKE ? ORDER BY id",
        [f"status:{payment_id}:%"],
    )
    provisioned = await db.fetch_all(
        "SELECT id FROM outbox WHERE msg_id = ?", [f"provisioned:{payment_id}"]
    )
    return {
        **row,
        "entitlements": len(entitlements),
        "events": [json.loads(e["payload"]) for e in events],
        "provisioned_events": len(provisioned),
    }


def check(harness: Harness, scenario: tuple[list[Tx], list[int], bool]) -> str:
    """Play one scenario on a new payment, check every invariant; returns its final state."""
    pool, schedule, at_once = scenario
    payment_id = harness.run(create(harness.db))

    async def play() -> None:
        if at_once:
            await asyncio.gather(*(step(harness, payment_id, pool, i) for i in schedule))
        else:
            for index in schedule:
                await step(harness, payment_id, pool, index)

    harness.run(play())
    state = harness.run(snapshot(harness.db, payment_id))
    status = PaymentStatus(state["status"])

    by_signature = {tx.signature: tx for tx in pool if tx.signature and tx.kind != FOREIGN}
    decisive = [tx for tx in pool if tx.decisive]
    winner = by_signature.get(state["tx_signature"])

    # At most one entitlement, and one exactly when provisioned (with its one event).
    assert state["entitlements"] == (1 if status == PaymentStatus.PROVISIONED else 0)
    assert state["provisioned_events"] == state["entitlements"]
    if status == PaymentStatus.PROVISIONED:
        assert winner is not None
        assert winner.kind == VerdictOutcome.VERIFIED
        assert winner.received is not None
        assert winner.received >= PRICE
    elif status == PaymentStatus.FAILED:
        assert winner is not None
        assert winner.kind in FAILING
        assert state["failure_reason"] == winner.kind
    else:
        assert status in (PaymentStatus.PENDING, PaymentStatus.EXPIRED)
        assert not decisive
        assert state["tx_signature"] is None
        assert status == PaymentStatus.PENDING or EXPIRE in schedule
    assert state["tx_signature"] != harness.foreign_signature
    if decisive and all(tx.kind == VerdictOutcome.VERIFIED for tx in decisive):
        assert status == PaymentStatus.PROVISIONED
    if decisive and all(tx.kind in FAILING for tx in decisive):
        assert status == PaymentStatus.FAILED
    if not at_once and decisive:
        first = next(pool[i] for i in schedule if i != EXPIRE and pool[i].decisive)
        assert winner == first

    # Version and events: one event per change, versions 2.. in order, a consistent chain.
    events = state["events"]
    assert state["version"] == 1 + len(events)
    assert [e["payment"]["version"] for e in events] == list(range(2, state["version"] + 1))
    previous = PaymentStatus.PENDING.value
    for event in events:
        assert event["previous_status"] == previous
        previous = event["payment"]["status"]
    assert previous == status.value

    # Redelivering everything again, at once and in another order, changes nothing.
    again = [i for i in reversed(schedule) if i != EXPIRE]

    async def redeliver() -> None:
        await asyncio.gather(*(apply(harness, payment_id, pool[i]) for i in again))

    harness.run(redeliver())
    if EXPIRE in schedule:
        harness.run(harness.scheduler.expire(datetime.now(UTC)))
    assert harness.run(snapshot(harness.db, payment_id)) == state
    return f"{status.value}{' (raced)' if at_once else ''}"


def test_any_order_of_verdicts_keeps_the_money_rules(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    outcomes: Counter[str] = Counter()

    @settings(max_examples=EXAMPLES, deadline=None, database=None)
    @given(scenario=scenarios())
    def one(scenario: tuple[list[Tx], list[int], bool]) -> None:
        outcomes[check(harness, scenario)] += 1

    one()
    with capsys.disabled():
        print(
            f"\npayment state machine: {outcomes.total()} examples, "
            f"final states {dict(sorted(outcomes.items()))}"
        )
