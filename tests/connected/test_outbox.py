"""Two outbox relays on one payments DB (two payments replicas, or a replica and `axiom-ops`),
over real JetStream and libSQL: every event they find is published, none is dropped unsent."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any, cast

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from axiom_payments import ledger
from axiom_payments.app import payments_migrations
from axiom_payments.events import status_event
from axiom_payments.outbox import OutboxRelay
from axiom_shared.db import open_database
from axiom_shared.migrations import migrate
from axiom_shared.schemas import PaymentStatus, PaymentStatusChanged
from axiom_shared.topology import PAYMENT_EVENTS, PAYMENT_STATUS_BUCKET
from tests.connected.test_events import status_event as change

pytestmark = pytest.mark.connected


class HeldJetStream:
    """A relay's JetStream whose publishes wait at a gate: a replica slow (or paused by the
    scheduler) between reading its rows and publishing them."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self.reached = asyncio.Event()
        self.gate = asyncio.Event()

    async def key_value(self, bucket: str) -> KeyValue:
        return await self._js.key_value(bucket)

    async def publish(self, *args: Any, **kwargs: Any) -> Any:
        self.reached.set()
        await self.gate.wait()
        return await self._js.publish(*args, **kwargs)


async def test_a_late_relay_never_deletes_a_newer_event_that_reused_the_row_id(
    nats_client: NATS, tmp_path: Path
) -> None:
    """Relay A reads version 1's row and stalls before publishing; relay B publishes and
    deletes it; the outbox is empty, so version 2's row gets the same rowid. A then publishes
    its (duplicate) version 1 and deletes what it relayed: version 2 must survive and go out.
    Deleting by row id, it did not: the payment changed in the DB and nobody was told."""
    js = nats_client.jetstream()
    db = await open_database(f"file:{tmp_path / 'payments.db'}")
    try:
        await migrate(db, payments_migrations())
        held = HeldJetStream(js)
        slow = OutboxRelay(db, cast(JetStreamContext, held))
        fast = OutboxRelay(db, js)
        payment_id = f"pay_{uuid.uuid4().hex}"

        await db.batch(
            [
                ledger.outbox_insert(
                    status_event(change(payment_id, PaymentStatus.PENDING, 1)), None, False
                )
            ]
        )
        (first,) = await ledger.queued_events(db, 10)
        slow_flush = asyncio.create_task(slow.flush())
        await asyncio.wait_for(held.reached.wait(), 5)
        assert await fast.flush() == 1  # version 1 out and its row deleted

        await db.batch(
            [
                ledger.outbox_insert(
                    status_event(change(payment_id, PaymentStatus.VERIFIED, 2)), None, False
                )
            ]
        )
        (second,) = await ledger.queued_events(db, 10)
        assert second["id"] == first["id"]  # the rowid is handed out again
        held.gate.set()
        await asyncio.wait_for(slow_flush, 10)
        await fast.flush()

        assert await ledger.queued_events(db, 10) == []
        kv = await js.key_value(PAYMENT_STATUS_BUCKET)
        entry = await kv.get(payment_id)
        assert entry.value is not None
        assert PaymentStatusChanged.from_bytes(entry.value).payment.version == 2
        last = await js.get_last_msg(PAYMENT_EVENTS.name, str(second["subject"]))
        assert last.data is not None
        assert PaymentStatusChanged.from_bytes(last.data).payment.version == 2
    finally:
        await db.close()


async def test_a_change_committed_while_the_relay_reads_goes_out_at_once(
    nats_client: NATS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change is committed (and the relay kicked) just after the relay's read of the outbox
    began, so that read does not see it. It still goes out at once, not a poll later: the
    relay forgot such a kick when it went back to sleep, and the event (and every SSE stream
    and check-status after it) waited up to a second, the poll interval."""
    js = nats_client.jetstream()
    db = await open_database(f"file:{tmp_path / 'payments.db'}")
    relay = OutboxRelay(db, js, poll_interval=60.0)
    try:
        await migrate(db, payments_migrations())
        read_began, finish_read = asyncio.Event(), asyncio.Event()
        hold = False
        real_read = ledger.queued_events

        async def read(*args: Any) -> list[dict[str, object]]:
            nonlocal hold
            rows = await real_read(*args)
            if hold:  # this read's snapshot is taken: hold it here, once
                hold = False
                read_began.set()
                await finish_read.wait()
            return rows

        monkeypatch.setattr(ledger, "queued_events", read)
        relay.start()
        await asyncio.sleep(0.2)  # the first round found nothing; the relay sleeps
        hold = True
        relay.kick()
        await asyncio.wait_for(read_began.wait(), 5)
        payment_id = f"pay_{uuid.uuid4().hex}"
        await db.batch(
            [
                ledger.outbox_insert(
                    status_event(change(payment_id, PaymentStatus.PENDING, 1)), None, False
                )
            ]
        )
        relay.kick()  # as the service does after each commit
        finish_read.set()

        kv = await js.key_value(PAYMENT_STATUS_BUCKET)

        async def published() -> bool:
            return await real_read(db, 10) == [] and (await kv.get(payment_id)).value is not None

        for _ in range(100):
            if await published():
                break
            await asyncio.sleep(0.05)
        assert await published(), "the change waited for the next poll"
    finally:
        await relay.stop()
        await db.close()
