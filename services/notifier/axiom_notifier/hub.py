"""In-process fan-out of payment status changes to the streams that watch each payment."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from axiom_shared.schemas import PaymentStatusChanged


class StatusHub:
    """Each watcher gets its own bounded queue; a watcher too slow to keep up is cut off
    (its queue gets `None`) rather than letting memory grow: it reconnects with
    Last-Event-ID and resumes from the latest status."""

    def __init__(self, queue_size: int = 64) -> None:
        self._watchers: dict[str, set[asyncio.Queue[PaymentStatusChanged | None]]] = defaultdict(
            set
        )
        self._queue_size = queue_size

    def watch(self, payment_id: str) -> asyncio.Queue[PaymentStatusChanged | None]:
        queue: asyncio.Queue[PaymentStatusChanged | None] = asyncio.Queue(self._queue_size)
        self._watchers[payment_id].add(queue)
        return queue

    def unwatch(self, payment_id: str, queue: asyncio.Queue[PaymentStatusChanged | None]) -> None:
        watchers = self._watchers.get(payment_id)
        if watchers is None:
            return
        watchers.discard(queue)
        if not watchers:
            del self._watchers[payment_id]

    def publish(self, event: PaymentStatusChanged) -> int:
        """Hand the change to every watcher of its payment; returns how many got it."""
        delivered = 0
        for queue in list(self._watchers.get(event.payment.payment_id, ())):
            try:
                queue.put_nowait(event)
                delivered += 1
            except asyncio.QueueFull:
                self._cut_off(event.payment.payment_id, queue)
        return delivered

    def close_all(self) -> None:
        for payment_id, watchers in list(self._watchers.items()):
            for queue in list(watchers):
                self._cut_off(payment_id, queue)

    def _cut_off(self, payment_id: str, queue: asyncio.Queue[PaymentStatusChanged | None]) -> None:
        self.unwatch(payment_id, queue)
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(None)
