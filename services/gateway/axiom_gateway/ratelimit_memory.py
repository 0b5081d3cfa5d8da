"""The per-replica fallback: the same exact sliding window, in this process's memory.

Used only while Redis is down or slow. Each client keeps the times of its admitted requests
(at most `limit` of them: denied requests are not recorded), so memory is bounded by
`max_clients * limit`; idle clients are dropped first, and past `max_clients` the least
recently seen client is forgotten.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Decision:
    allowed: bool
    #: Requests still allowed in the current window after this one.
    remaining: int
    #: Milliseconds until the oldest admitted request leaves the window (a slot frees up).
    reset_ms: int

    @property
    def reset_seconds(self) -> int:
        return math.ceil(self.reset_ms / 1000)


@dataclass
class _Window:
    window: float
    admitted: deque[float] = field(default_factory=deque)


class MemorySlidingWindow:
    def __init__(
        self, max_clients: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_clients = max_clients
        self._clock = clock
        self._windows: OrderedDict[str, _Window] = OrderedDict()

    def __len__(self) -> int:
        return len(self._windows)

    def hit(self, key: str, limit: int, window: float) -> Decision:
        """Count one request of `key` if fewer than `limit` were admitted in the last `window`
        seconds (a request admitted at t counts while now < t + window)."""
        now = self._clock()
        self._evict_idle(now)
        entry = self._windows.get(key)
        if entry is None:
            entry = self._windows[key] = _Window(window)
        else:
            self._windows.move_to_end(key)
            entry.window = window
        admitted = entry.admitted
        while admitted and admitted[0] <= now - window:
            admitted.popleft()
        allowed = len(admitted) < limit
        if allowed:
            admitted.append(now)
        while len(self._windows) > self.max_clients:
            self._windows.popitem(last=False)
        reset = admitted[0] + window - now if admitted else 0.0
        return Decision(
            allowed=allowed,
            remaining=max(limit - len(admitted), 0),
            # A refusal always names a wait: `t + window - now` may round to 0.0 in floats
            # while `t > now - window` still held.
            reset_ms=max(math.ceil(reset * 1000), 0 if allowed else 1),
        )

    def _evict_idle(self, now: float) -> None:
        """Drop least recently seen clients whose every admitted request has left the window."""
        while self._windows:
            key, entry = next(iter(self._windows.items()))
            if entry.admitted and entry.admitted[-1] > now - entry.window:
                return
            del self._windows[key]
