"""The reconcile loop of the payments service, against real NATS (JetStream) and a real libSQL
file: every open payment a tick claims is handed to the verifier (this loop is what finds a
payment whose webhook was lost), in chunks spread over the interval rather than in one burst
that takes a core from every other process on the host, and a stop in the middle of the spread
still hands over every payment the tick claimed (claimed ones are not claimed again for an
interval)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from axiom_payments import ledger
from axiom_payments.catalog import load_catalog
from axiom_payments.lifecycle import Lifecycle
from axiom_payments.outbox import OutboxRelay
from axiom_payments.scheduler import PUBLISH_CHUNK, SPREAD, Scheduler
from axiom_shared.db import Database
from axiom_shared.metrics import RECONCILE_LAG_SECONDS
from axiom_shared.schemas import ChangeSource, PaymentStatus
from tests.fixtures.infra import wait_for
from tests.unit.test_lifecycle import row

INTERVAL = 2.0
LOOKBACK = timedelta(days=1)
OPEN = 2 * PUBLISH_CHUNK + 20


async def open_payments(db: Database, count: int) -> set[str]:
    """`count` pending payments, none scanned yet."""
    ids = set()
    for _ in range(count):
        payment = replace(row(PaymentStatus.PENDING), public_id="pay_" + secrets.token_urlsafe(18))
        await db.batch(ledger.record_change(None, payment, source=ChangeSource.CREATION))
        ids.add(payment.public_id)
    return ids


def scheduler(db: Database, nc: NATS) -> Scheduler:
    js = nc.jetstream()
    lifecycle = Lifecycle(
        db=db, relay=OutboxRelay(db, js), catalog=load_catalog(None), lookback=LOOKBACK
    )
    return Scheduler(
        lifecycle, js, interval=INTERVAL, expired_lookback=LOOKBACK, reconcile_batch=OPEN
    )


async def candidates(nc: NATS) -> list[tuple[float, str]]:
    """What reaches the verifier from reconcile, as (arrival, payment id), from now on."""
    seen: list[tuple[float, str]] = []
    loop = asyncio.get_running_loop()

    async def on_candidate(msg: Msg) -> None:
        seen.append((loop.time(), msg.subject.rsplit(".", 1)[1]))

    await nc.subscribe("verify.candidates.reconcile.>", cb=on_candidate)
    await nc.flush()
    return seen


async def test_reconcile_hands_every_open_payment_over_spread_across_the_interval(
    payments_db: Database, nats_client: NATS
) -> None:
    payments = await open_payments(payments_db, OPEN)
    seen = await candidates(nats_client)

    claimed = await scheduler(payments_db, nats_client).reconcile(datetime.now(UTC))

    assert claimed == OPEN
    await wait_for(lambda: len(seen) >= OPEN)
    assert sorted(payment for _, payment in seen) == sorted(payments)  # each once
    # Three chunks, the two pauses between them sharing SPREAD of the interval.
    arrivals = sorted(at for at, _ in seen)
    assert arrivals[-1] - arrivals[0] >= 0.9 * INTERVAL * SPREAD * 2 / 3
    for start in arrivals:
        assert sum(1 for at in arrivals if start <= at < start + 0.1) <= PUBLISH_CHUNK


async def test_a_stop_in_the_middle_of_the_spread_still_hands_over_every_claimed_payment(
    payments_db: Database, nats_client: NATS
) -> None:
    payments = await open_payments(payments_db, OPEN)
    seen = await candidates(nats_client)
    running = scheduler(payments_db, nats_client)

    running.start()
    await wait_for(lambda: len(seen) >= 1)
    assert len(seen) < OPEN  # stopped while the tick still had chunks to publish
    await running.stop()

    await wait_for(lambda: len(seen) >= OPEN)
    assert sorted(payment for _, payment in seen) == sorted(payments)
    # Nothing is left unclaimed, and none is claimed again within the interval.
    again = await scheduler(payments_db, nats_client).reconcile(datetime.now(UTC))
    assert again == 0


async def test_a_replica_killed_in_the_middle_of_the_spread_loses_no_payment(
    payments_db: Database, nats_client: NATS
) -> None:
    """A kill (no stop: the task is cancelled between two chunks) leaves payments claimed but
    not handed over; the next tick once the interval has passed, here another replica's, hands
    them over. A delay of one interval, never a payment left unscanned."""
    payments = await open_payments(payments_db, OPEN)
    seen = await candidates(nats_client)
    claimed_at = datetime.now(UTC)
    killed = asyncio.create_task(scheduler(payments_db, nats_client).reconcile(claimed_at))
    await wait_for(lambda: len(seen) >= 1)
    killed.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await killed
    await asyncio.sleep(0.2)
    handed_over = {payment for _, payment in seen}
    assert handed_over < payments  # some claimed payments were never handed over

    # Within the interval nobody claims them again (the round robin's promise)...
    other = scheduler(payments_db, nats_client)
    assert await other.reconcile(claimed_at + timedelta(seconds=INTERVAL / 2)) == 0
    # ...once it has passed, the next tick hands over the rest.
    assert await other.reconcile(claimed_at + timedelta(seconds=INTERVAL)) == OPEN
    await wait_for(lambda: {payment for _, payment in seen} == payments)


async def test_the_reconcile_lag_is_measured_when_the_tick_ends(
    payments_db: Database, nats_client: NATS
) -> None:
    """The lag gauge says how long the oldest open payment has gone unscanned at the moment it
    is set: a tick spends most of the interval handing candidates over, and a lag measured
    from the tick's start would be that much too small."""
    created = datetime.now(UTC)
    await open_payments(payments_db, OPEN)

    await scheduler(payments_db, nats_client).tick()

    ended = datetime.now(UTC)
    lag: float = RECONCILE_LAG_SECONDS._value.get()
    assert (ended - created).total_seconds() >= INTERVAL * SPREAD * 2 / 3  # the spread ran
    assert lag >= (ended - created).total_seconds() - 0.3
