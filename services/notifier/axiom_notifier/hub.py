"""In-process fan-out of payment status changes to the streams that watch each payment, and
the one heartbeat clock every open stream shares.

The cost of a change is proportional to the streams watching *its* payment, not to all open
streams; an open stream costs one small `Watcher` (a bounded deque and, while it waits, one
future) and one place on the heartbeat wheel, no task of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable

from axiom_shared.logging import get_logger
from axiom_shared.schemas import PaymentStatusChanged

log = get_logger(__name__)


class Watcher:
    """One stream's inbox: the changes of its payment not yet sent, at most `capacity`. A
    watcher too slow to keep up is closed rather than letting memory grow: its client
    reconnects with Last-Event-ID and resumes from the latest status."""

    __slots__ = ("_changes", "_waiter", "capacity", "closed", "payment_id")

    def __init__(self, payment_id: str, capacity: int) -> None:
        self.payment_id = payment_id
        self.capacity = capacity
        self.closed = False
        self._changes: deque[PaymentStatusChanged] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def offer(self, event: PaymentStatusChanged) -> bool:
        """Queue a change; False (and closed) when the watcher is already `capacity` behind."""
        if self.closed:
            return False
        if len(self._changes) >= self.capacity:
            self.close()
            return False
        self._changes.append(event)
        self._wake()
        return True

    def close(self) -> None:
        """No more changes: the stream ends once it wakes (shutdown, too slow, client gone)."""
        self.closed = True
        self._changes.clear()
        self._wake()

    def empty(self) -> bool:
        return not self._changes

    async def next(self) -> PaymentStatusChanged | None:
        """The next change, waiting for it; None once closed."""
        while not self._changes:
            if self.closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._changes.popleft()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class StatusHub:
    def __init__(self, queue_size: int = 64) -> None:
        self._watchers: dict[str, set[Watcher]] = defaultdict(set)
        self._queue_size = queue_size

    def watch(self, payment_id: str) -> Watcher:
        watcher = Watcher(payment_id, self._queue_size)
        self._watchers[payment_id].add(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        watchers = self._watchers.get(watcher.payment_id)
        if watchers is None:
            return
        watchers.discard(watcher)
        if not watchers:
            del self._watchers[watcher.payment_id]

    def publish(self, event: PaymentStatusChanged) -> int:
        """Hand the change to every watcher of its payment; returns how many got it."""
        delivered = 0
        for watcher in list(self._watchers.get(event.payment.payment_id, ())):
            if watcher.offer(event):
                delivered += 1
            else:
                self.unwatch(watcher)
        return delivered

    def close_all(self) -> None:
        for watchers in list(self._watchers.values()):
            for watcher in list(watchers):
                watcher.close()
                self.unwatch(watcher)


Beat = Callable[[], Awaitable[bool]]


class Heartbeats:
    """One clock for every open stream's heartbeat comment.

    The interval is cut into slots a quarter of a second long; each stream gets a random slot
    when it opens, and each tick beats only that slot's streams. So 20,000 streams opened in
    the same second do not all write in the same tick later on, and no stream needs a task of
    its own. A beat that fails (the client is gone or stalled) ends its stream through
    `on_failure`."""

    TICK = 0.25

    def __init__(self, interval: float) -> None:
        self.interval = interval
        slots = max(1, round(interval / self.TICK))
        self._tick = interval / slots
        self._slots: list[dict[object, tuple[Beat, Callable[[], None]]]] = [
            {} for _ in range(slots)
        ]
        self._where: dict[object, int] = {}
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._where)

    def add(self, key: object, beat: Beat, on_failure: Callable[[], None]) -> None:
        slot = random.randrange(len(self._slots))  # spreading load, not a secret
        self._slots[slot][key] = (beat, on_failure)
        self._where[key] = slot

    def remove(self, key: object) -> None:
        slot = self._where.pop(key, None)
        if slot is not None:
            self._slots[slot].pop(key, None)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sse-heartbeats")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self._tick
        slot = 0
        while True:
            await asyncio.sleep(max(next_at - loop.time(), 0))
            next_at += self._tick
            slot = (slot + 1) % len(self._slots)
            for key, (beat, on_failure) in list(self._slots[slot].items()):
                try:
                    alive = await beat()
                except Exception as exc:  # one stream's trouble never stops the clock
                    log.warning("heartbeat failed", error=repr(exc)[:200])
                    alive = False
                if not alive:
                    self.remove(key)
                    on_failure()
