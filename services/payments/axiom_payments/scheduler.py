"""Periodic work of the payments service, safe with any number of replicas:

- expiry sweeper: pending payments past `expires_at` → `expired` (a conditional UPDATE each);
- reconcile: every pending payment, and every payment expired within the lookback, is handed
  to the verifier to scan its reference on chain. Helius drops events after a few retries;
  this loop is what guarantees that nothing paid is missed. Candidates carry a msg id per
  payment and interval, so replicas scheduling the same scan publish it once;
- fulfilment catch-up: a payment left `verified` (the service died between the two steps)
  is provisioned.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

from nats.js import JetStreamContext

from axiom_payments import store
from axiom_payments.lifecycle import Lifecycle
from axiom_shared.logging import get_logger
from axiom_shared.nats import publish_event
from axiom_shared.schemas import ChangeSource, PaymentStatus, VerificationRequested
from axiom_shared.topology import VERIFY_CANDIDATE_SUBJECT

log = get_logger(__name__)

BATCH = 1000


class Scheduler:
    def __init__(
        self,
        lifecycle: Lifecycle,
        js: JetStreamContext,
        *,
        interval: float,
        expired_lookback: timedelta,
        stuck_after: timedelta = timedelta(seconds=10),
    ) -> None:
        self._lifecycle = lifecycle
        self._db = lifecycle.db
        self._js = js
        self._interval = interval
        self._lookback = expired_lookback
        self._stuck_after = stuck_after
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="payments-scheduler")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.tick()
            except Exception as exc:
                # The DB or NATS is away: the next tick tries again; nothing is lost.
                log.warning("scheduler tick failed", error=repr(exc)[:200])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)

    async def tick(self) -> None:
        now = datetime.now(UTC)
        await self.expire(now)
        await self.catch_up(now)
        await self.reconcile(now)

    async def expire(self, now: datetime) -> int:
        due = await store.public_ids(
            self._db, "status = 'pending' AND expires_at < ?", [store.iso(now)], BATCH
        )
        expired = 0
        for public_id in due:
            view = await self._lifecycle.transition(
                public_id,
                allowed=frozenset({PaymentStatus.PENDING}),
                to=PaymentStatus.EXPIRED,
                source=ChangeSource.SWEEPER,
                reason="expired",
            )
            expired += view is not None
        return expired

    async def catch_up(self, now: datetime) -> None:
        stuck = await store.public_ids(
            self._db,
            "status = 'verified' AND updated_at < ?",
            [store.iso(now - self._stuck_after)],
            BATCH,
        )
        for public_id in stuck:
            await self._lifecycle.provision(public_id, ChangeSource.SWEEPER)

    async def reconcile(self, now: datetime) -> int:
        open_ids = await store.public_ids(
            self._db,
            "status = 'pending' OR (status = 'expired' AND expires_at > ?)",
            [store.iso(now - self._lookback)],
            BATCH,
        )
        bucket = int(now.timestamp() // self._interval)
        for public_id in open_ids:
            await publish_event(
                self._js,
                VERIFY_CANDIDATE_SUBJECT.format(source="reconcile", payment_id=public_id),
                VerificationRequested(source=ChangeSource.RECONCILE, payment_id=public_id),
                msg_id=f"reconcile:{public_id}:{bucket}",
            )
        return len(open_ids)
