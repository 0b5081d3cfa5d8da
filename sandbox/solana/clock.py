"""The slot clock: produces one slot every `interval` seconds while running, and remembers how
long each slot really took (sleep, the slot's own work and any event-loop delay)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

from sandbox.solana.chain import Chain

#: Slot durations kept for /admin/clock (the bench reads them).
RECENT_SLOTS = 4096


class SlotClock:
    def __init__(self, chain: Chain, interval: float) -> None:
        self.chain = chain
        self.interval = interval
        self._running = asyncio.Event()
        if interval > 0:
            self._running.set()
        self._task: asyncio.Task[None] | None = None
        #: Slots the clock has produced, and the seconds between consecutive ones.
        self.ticks = 0
        self.recent_intervals: deque[float] = deque(maxlen=RECENT_SLOTS)
        self._last_tick: float | None = None

    @property
    def running(self) -> bool:
        return self._running.is_set()

    def set(self, *, running: bool | None = None, interval: float | None = None) -> None:
        if interval is not None:
            if interval < 0:
                raise ValueError("slot_interval must be >= 0")
            self.interval = interval
        if running is None:
            running = self.running
        if running and self.interval > 0:
            self._running.set()
        else:
            self._running.clear()
        # A pause, or a new pace, is not a slow slot.
        self._last_tick = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="solana-sandbox-slot-clock")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._running.wait()
            await asyncio.sleep(self.interval)
            if self._running.is_set():
                self.chain.advance(1)
                self._tick()

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last_tick is not None:
            self.recent_intervals.append(now - self._last_tick)
        self._last_tick = now
        self.ticks += 1
