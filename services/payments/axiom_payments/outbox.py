"""The transactional outbox: events are rows written with the change they announce, and this
relay publishes them to JetStream and deletes them once JetStream has stored them.

A crash after the DB commit and before the publish loses nothing (the row is still there and
the relay publishes it on restart); a crash after the publish and before the delete publishes
again with the same `Nats-Msg-Id`, which JetStream drops. Rows are published in id order, so
a payment's changes go out in the order they happened.

Every payments replica (and `axiom-ops`) runs a relay over the same table, so two relays often
publish the same row (JetStream keeps one). A relay deletes what it published by `msg_id`,
never by row id: row ids are reused (`ledger.delete_events`), and deleting by id, a relay
late with a row another relay had already sent and deleted could delete the newer,
unpublished event that took the same id.
"""

from __future__ import annotations

import asyncio
import contextlib

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from axiom_payments import ledger
from axiom_payments.events import KnownRevisions, OutgoingEvent, deliver
from axiom_shared.db import Database
from axiom_shared.logging import get_logger
from axiom_shared.topology import PAYMENT_STATUS_BUCKET

log = get_logger(__name__)

#: Rows read (and published) per round.
BATCH = 1000


class OutboxRelay:
    def __init__(self, db: Database, js: JetStreamContext, poll_interval: float = 1.0) -> None:
        self._db = db
        self._js = js
        self._poll = poll_interval
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: The payment-status bucket, looked up once (each lookup is a round trip).
        self._status_kv: KeyValue | None = None
        self._known = KnownRevisions()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    def kick(self) -> None:
        """Publish now rather than at the next poll (called after each committed change)."""
        self._wake.set()

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            await self._task

    async def flush(self) -> int:
        """Publish every queued row; returns how many were published."""
        published = 0
        while True:
            rows = await ledger.queued_events(self._db, BATCH)
            if not rows:
                return published
            # Subjects are per payment: one payment's events go out in order, payments in
            # parallel. A row is deleted only after JetStream acknowledged it, by its msg id:
            # every replica relays, and a row id can be reused (`ledger.delete_events`).
            by_subject: dict[str, list[dict[str, object]]] = {}
            for row in rows:
                by_subject.setdefault(str(row["subject"]), []).append(row)
            if self._status_kv is None:
                self._status_kv = await self._js.key_value(PAYMENT_STATUS_BUCKET)
            done: list[str] = []
            results = await asyncio.gather(
                *(self._publish_in_order(g, done) for g in by_subject.values()),
                return_exceptions=True,
            )
            if done:
                await ledger.delete_events(self._db, done)
                published += len(done)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]

    async def _publish_in_order(self, group: list[dict[str, object]], done: list[str]) -> None:
        """One subject's rows, in order (`events.deliver`)."""
        outgoing = [
            OutgoingEvent.from_outbox(
                str(row["subject"]),
                str(row["msg_id"]),
                str(row["payload"]).encode(),
                cid if isinstance(cid := row["correlation_id"], str) else None,
            )
            for row in group
        ]
        await deliver(
            self._js,
            *outgoing,
            status_kv=self._status_kv,
            known=self._known,
            published=lambda event: done.append(event.msg_id),
        )

    async def _run(self) -> None:
        while not self._stopping.is_set():
            # Cleared before the rows are read, never after: a change committed (and kicked)
            # after the read began is found by the next round at once, not a poll later.
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:
                # NATS or the DB is away: the rows stay queued and go out when it is back.
                log.warning("outbox relay paused", error=repr(exc)[:200])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)
        with contextlib.suppress(Exception):
            await self.flush()
