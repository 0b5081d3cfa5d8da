"""Outbound pacing shared by every replica, so that what reaches Amadeus stays in its quota.

Amadeus counts requests per client id (test: 10 per second and one per 100 ms; production: 40
per second) and answers 429 to the rest. Our gateway admits bursts that are bigger than that, so
instead of passing Amadeus's 429 on we queue each call briefly: one Lua script, atomic in Redis
and timed by Redis's own clock (`TIME`, so replicas' clocks do not matter), hands out the next
send slot. A slot is at least `min_interval` after the previous one, and at most
`rate_per_second` slots lie within any second (the list holds the last `rate` slots: the new one
is a second after the oldest of them). Each rule gets a small guard on top, for the jitter
between our send and Amadeus's clock. A call whose slot would be more than `max_wait` away
takes no slot and is refused with 429 and `Retry-After`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from redis.asyncio import Redis

from axiom_shared.errors import ApiError
from axiom_shared.logging import get_logger

log = get_logger(__name__)

T = TypeVar("T")

# KEYS[1]: list of the recent slots (ms, newest first).
# ARGV: rate per second (0 = off), min interval ms, window ms, max wait ms.
# Returns {1, wait_ms} with a slot reserved, or {0, wait_ms} when it would be too far away.
_RESERVE_SLOT = """
local rate = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local max_wait = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local slot = now
local last = redis.call('LINDEX', KEYS[1], 0)
if last then
  slot = math.max(slot, tonumber(last) + interval)
end
if rate > 0 then
  local oldest = redis.call('LINDEX', KEYS[1], rate - 1)
  if oldest then
    slot = math.max(slot, tonumber(oldest) + window)
  end
end
local wait = slot - now
if wait > max_wait then
  return {0, wait}
end
redis.call('LPUSH', KEYS[1], slot)
redis.call('LTRIM', KEYS[1], 0, math.max(rate, 1) - 1)
redis.call('PEXPIRE', KEYS[1], wait + window + interval + 1000)
return {1, wait}
"""


@dataclass(frozen=True)
class PacingPolicy:
    rate_per_second: int
    min_interval: float
    guard: float
    max_wait: float

    @property
    def interval_ms(self) -> int:
        if self.min_interval <= 0:
            return 0
        return math.ceil((self.min_interval + self.guard) * 1000)

    @property
    def window_ms(self) -> int:
        return math.ceil((1.0 + self.guard) * 1000)


class Pacer:
    """Waits for this call's send slot (shared by all replicas through Redis)."""

    def __init__(self, redis: Redis, key: str, policy: PacingPolicy) -> None:
        self._redis = redis
        self._key = key
        self._policy = policy
        self._script = redis.register_script(_RESERVE_SLOT)

    async def wait_for_slot(self, ready: Callable[[], Awaitable[T]]) -> T:
        """Wait for this call's slot, then run `ready` (the last step before sending) and
        return its result; raise 429 when the queue is longer than `max_wait`.

        A caller that is ready later than its slot (a stalled event loop, a slow `ready`) would
        send together with the callers after it: it takes a new slot instead, within the same
        `max_wait`.
        """
        policy = self._policy
        if policy.rate_per_second <= 0 and policy.interval_ms <= 0:
            return await ready()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + policy.max_wait
        while True:
            sent_at = loop.time()
            reserved, wait_ms = await self._script(
                keys=[self._key],
                args=[
                    policy.rate_per_second,
                    policy.interval_ms,
                    policy.window_ms,
                    max(0, math.floor((deadline - sent_at) * 1000)),
                ],
            )
            if not reserved:
                retry_after = max(1, math.ceil(int(wait_ms) / 1000))
                log.warning("amadeus pacing queue full", wait_ms=int(wait_ms))
                raise ApiError(
                    429,
                    "upstream_busy",
                    "too many travel requests right now, try again shortly",
                    headers={"Retry-After": str(retry_after)},
                )
            # The slot in our clock: Redis read its clock between our send and its answer.
            slot = (sent_at + loop.time()) / 2 + int(wait_ms) / 1000
            if slot > loop.time():
                await asyncio.sleep(slot - loop.time())
            result = await ready()
            # Past the deadline the slot is used as it is: re-reserving could loop forever
            # when the event loop lags more than the guard (the wait would always be 0).
            if loop.time() - slot <= policy.guard or loop.time() >= deadline:
                return result
            log.info(
                "amadeus send slot missed, taking another",
                late_ms=round((loop.time() - slot) * 1000),
            )
