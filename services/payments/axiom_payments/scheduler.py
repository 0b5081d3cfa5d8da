"""Periodic work of the payments service, safe with any number of replicas:

- expiry sweeper: pending payments past `expires_at` → `expired` (a conditional UPDATE each),
  and refund requests past theirs → `expired` (the money is due again);
- reconcile: every open payment, and every one that finished within the lookback
  (`ledger.WATCHED_SQL`: money sent after the end must be seen too), is handed to the verifier
  to scan its reference on chain. Helius drops events after a few retries; this loop is what
  guarantees that nothing paid is missed. It is a round robin over all of them (the payments
  whose scan was asked for longest ago go first), not a first-N window: no number of unpaid
  payments can keep a paid one from being scanned. Candidates carry a msg id per payment and
  interval, so replicas scheduling the same scan publish it once. They are published
  `PUBLISH_CHUNK` at a time (acks awaited together) spread over most of the interval
  (`SPREAD`): a tick's 500 in one burst took a core for about 100 ms every 5 s, a latency
  spike every request on the host felt (check-status p99 8 -> 12-14 ms beside 6,400 open
  payments);
- fulfilment catch-up: a payment left `verified` (the service died between the two steps)
  is provisioned;
- the reconcile lag: of every open payment, the longest time since its last complete scan
  (`axiom_reconcile_lag_seconds`, alerted on in deploy/prometheus/alerts.yml).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

from nats.js import JetStreamContext

from axiom_payments import ledger
from axiom_payments.lifecycle import Lifecycle
from axiom_payments.refunds import Refunder
from axiom_shared.logging import get_logger
from axiom_shared.metrics import RECONCILE_LAG_SECONDS
from axiom_shared.nats import publish_event
from axiom_shared.schemas import ChangeSource, VerificationRequested
from axiom_shared.topology import VERIFY_CANDIDATE_SUBJECT

log = get_logger(__name__)

#: Most payments expired or provisioned per tick (the next tick takes the rest).
BATCH = 1000
#: Reconcile candidates published together, their acks awaited together.
PUBLISH_CHUNK = 20
#: The part of the interval a tick's reconcile candidates are spread over.
SPREAD = 0.8


class Scheduler:
    def __init__(
        self,
        lifecycle: Lifecycle,
        js: JetStreamContext,
        *,
        interval: float,
        expired_lookback: timedelta,
        reconcile_batch: int = 500,
        stuck_after: timedelta = timedelta(seconds=10),
        refunder: Refunder | None = None,
    ) -> None:
        self._refunder = refunder
        self._lifecycle = lifecycle
        self._db = lifecycle.db
        self._js = js
        self._interval = interval
        self._lookback = expired_lookback
        self._reconcile_batch = reconcile_batch
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
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            started = loop.time()
            try:
                await self.tick()
            except Exception as exc:
                # The DB or NATS is away: the next tick tries again; nothing is lost.
                log.warning("scheduler tick failed", error=repr(exc)[:200])
            # One tick per interval, however long the tick's spread publishing took.
            await self._pause(self._interval - (loop.time() - started))

    async def _pause(self, seconds: float) -> None:
        """Sleep `seconds`, or less when stopping."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), seconds)

    async def tick(self) -> None:
        now = datetime.now(UTC)
        await self.expire(now)
        if self._refunder is not None:
            # Refund requests that never landed: the money is due again (ask again).
            await self._refunder.expire_due(now)
        await self.catch_up(now)
        await self.reconcile(now)
        # Measured when the reconcile's spread publishing is done, not when the tick began.
        await self.measure_lag(datetime.now(UTC))

    async def expire(self, now: datetime) -> int:
        expired = 0
        for public_id in await ledger.due_for_expiry(self._db, now, BATCH):
            row = await self._lifecycle.expire(public_id, ChangeSource.SWEEPER, "expired")
            expired += row is not None
        return expired

    async def catch_up(self, now: datetime) -> None:
        for public_id in await ledger.stuck_verified(self._db, now - self._stuck_after, BATCH):
            await self._lifecycle.provision(public_id)

    async def reconcile(self, now: datetime) -> int:
        # Each open payment at most once per interval; those asked for longest ago first.
        due = await ledger.claim_for_scan(
            self._db,
            open_since=now - self._lookback,
            requested_before=now - timedelta(seconds=self._interval * 0.9),
            limit=self._reconcile_batch,
            now=now,
        )
        bucket = int(now.timestamp() // self._interval)
        chunks = [due[i : i + PUBLISH_CHUNK] for i in range(0, len(due), PUBLISH_CHUNK)]
        gap = self._interval * SPREAD / len(chunks) if len(chunks) > 1 else 0.0
        for index, chunk in enumerate(chunks):
            if index:
                # Claimed, so published even when stopping: only the pause is cut short.
                await self._pause(gap)
            published = await asyncio.gather(
                *(
                    publish_event(
                        self._js,
                        VERIFY_CANDIDATE_SUBJECT.format(source="reconcile", payment_id=public_id),
                        VerificationRequested(source=ChangeSource.RECONCILE, payment_id=public_id),
                        msg_id=f"reconcile:{public_id}:{bucket}",
                    )
                    for public_id in chunk
                ),
                return_exceptions=True,
            )
            failed = [result for result in published if isinstance(result, BaseException)]
            if failed:
                # The rest of this tick's are claimed but unpublished: claimed again once the
                # interval has passed (`requested_before`), by this replica or another.
                raise failed[0]
        return len(due)

    async def measure_lag(self, now: datetime) -> float:
        oldest = await ledger.oldest_unscanned(self._db, now - self._lookback)
        lag = max((now - oldest).total_seconds(), 0.0) if oldest else 0.0
        RECONCILE_LAG_SECONDS.set(lag)
        return lag
