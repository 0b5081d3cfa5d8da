"""Property: the sliding-window limiter never admits more than `limit` requests in any span of
`window` seconds, and (in memory, where time is ours) refuses only when `limit` requests were
admitted within the last `window` seconds.

- `MemorySlidingWindow` (the per-replica fallback) under a fake clock: many examples, any
  limit, window, request times and interleaving of clients.
- the Redis Lua script (`RedisSlidingWindow`) against a real redis-server, timed by Redis's
  clock: fewer examples, real time, bursts of concurrent requests. Redis's admission time of a
  request is somewhere between our send and our answer, so the check is the sound one: no
  `limit + 1` admitted requests were all sent and answered within less than `window`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from axiom_gateway.ratelimit import RedisSlidingWindow
from axiom_gateway.ratelimit_memory import MemorySlidingWindow
from axiom_gateway.ratelimit_settings import RateLimitRule
from axiom_shared.redis import create_redis
from sandbox.infra import RedisServer

MEMORY_EXAMPLES = 1000
REDIS_EXAMPLES = 25


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@st.composite
def memory_runs(draw: st.DrawFn) -> tuple[int, float, list[tuple[float, str]]]:
    limit = draw(st.integers(1, 6))
    window = draw(st.sampled_from([0.5, 1.0, 2.5, 10.0]))
    steps = draw(
        st.lists(
            st.tuples(
                # Often simultaneous, sometimes just inside or outside the window.
                st.one_of(
                    st.just(0.0),
                    st.floats(0, window * 1.2, allow_nan=False),
                    st.sampled_from([window, window / 2]),
                ),
                st.sampled_from(["a", "b", "c"]),
            ),
            min_size=1,
            max_size=60,
        )
    )
    return limit, window, steps


def test_memory_window_never_admits_more_than_the_limit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    counts = {"examples": 0, "requests": 0, "admitted": 0}

    @settings(max_examples=MEMORY_EXAMPLES, deadline=None, database=None)
    @given(run=memory_runs())
    def one(run: tuple[int, float, list[tuple[float, str]]]) -> None:
        limit, window, steps = run
        clock = FakeClock()
        limiter = MemorySlidingWindow(max_clients=100, clock=clock)
        admitted: dict[str, list[float]] = defaultdict(list)
        for gap, client in steps:
            clock.now += gap
            decision = limiter.hit(client, limit, window)
            # A request admitted at t counts while now < t + window.
            recent = [t for t in admitted[client] if t > clock.now - window]
            if decision.allowed:
                admitted[client].append(clock.now)
                assert len(recent) < limit
                assert decision.remaining == limit - len(recent) - 1
            else:
                # Exact: refused only when the window is really full.
                assert len(recent) == limit
                assert decision.remaining == 0
                assert decision.reset_ms > 0
        for times in admitted.values():
            for first, last in zip(times, times[limit:], strict=False):
                assert last - first >= window
        counts["examples"] += 1
        counts["requests"] += len(steps)
        counts["admitted"] += sum(len(times) for times in admitted.values())

    one()
    with capsys.disabled():
        print(f"\nmemory sliding window: {counts}")


# --- Redis ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    sent: float
    answered: float
    allowed: bool


@st.composite
def redis_runs(draw: st.DrawFn) -> tuple[int, float, list[tuple[float, int]]]:
    limit = draw(st.integers(1, 5))
    window = draw(st.sampled_from([0.15, 0.25]))
    # (pause before, concurrent requests)
    bursts = draw(
        st.lists(
            st.tuples(st.sampled_from([0.0, 0.01, 0.05, 0.1, window]), st.integers(1, 6)),
            min_size=1,
            max_size=8,
        )
    )
    return limit, window, bursts


def violations(attempts: list[Attempt], limit: int, window: float) -> list[list[Attempt]]:
    """Groups of `limit + 1` admitted requests that Redis must have admitted within less than
    `window` of each other (all were sent and answered inside such a span)."""
    admitted = sorted((a for a in attempts if a.allowed), key=lambda a: a.sent)
    found = []
    for i, first in enumerate(admitted):
        inside = [a for a in admitted[i:] if a.answered < first.sent + window]
        if len(inside) > limit:
            found.append(inside)
    return found


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


@pytest.mark.connected
@pytest.mark.timeout(180)
def test_redis_window_never_admits_more_than_the_limit(
    redis_server: RedisServer,
    loop: asyncio.AbstractEventLoop,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = create_redis(redis_server.url, timeout=2.0)
    shared = RedisSlidingWindow(f"prop:ratelimit:{uuid.uuid4().hex}")
    counts = {"examples": 0, "requests": 0, "admitted": 0}

    async def hit(rule: RateLimitRule, identity: str) -> Attempt:
        sent = time.monotonic()
        decision = await shared.hit(client, rule, identity)
        return Attempt(sent, time.monotonic(), decision.allowed)

    async def play(
        limit: int, window: float, bursts: list[tuple[float, int]]
    ) -> tuple[RateLimitRule, list[Attempt]]:
        rule = RateLimitRule(prefix="/api/proxy/", limit=limit, window=window)
        identity = f"ip:{uuid.uuid4().hex}"
        attempts: list[Attempt] = []
        # A fresh client's first `limit` requests, one after another, are all admitted.
        for _ in range(limit):
            attempt = await hit(rule, identity)
            assert attempt.allowed
            attempts.append(attempt)
        for pause, concurrent in bursts:
            await asyncio.sleep(pause)
            attempts += await asyncio.gather(*(hit(rule, identity) for _ in range(concurrent)))
        return rule, attempts

    @settings(max_examples=REDIS_EXAMPLES, deadline=None, database=None)
    @given(run=redis_runs())
    def one(run: tuple[int, float, list[tuple[float, int]]]) -> None:
        limit, window, bursts = run
        _rule, attempts = loop.run_until_complete(play(limit, window, bursts))
        assert violations(attempts, limit, window) == []
        counts["examples"] += 1
        counts["requests"] += len(attempts)
        counts["admitted"] += sum(a.allowed for a in attempts)

    try:
        one()
    finally:
        loop.run_until_complete(client.aclose())
    with capsys.disabled():
        print(f"\nredis sliding window (Lua, real redis-server): {counts}")


def test_the_violation_finder_finds_one() -> None:
    """The Redis check is not vacuous: limit + 1 admissions inside a window are found."""
    attempts = [Attempt(0.0, 0.01, True), Attempt(0.02, 0.03, True), Attempt(0.5, 0.51, True)]
    assert violations(attempts, limit=1, window=0.1)
    assert not violations(attempts, limit=2, window=0.1)


@pytest.mark.connected
@pytest.mark.timeout(60)
def test_decisions_of_one_turn_share_one_call_and_stay_exact(
    redis_server: RedisServer, loop: asyncio.AbstractEventLoop
) -> None:
    """600 decisions asked for at once, for three clients (limit 7 each) and one other rule:
    they go to Redis in a few coalesced calls, and each client still gets exactly its limit,
    in order (remaining counts down 6..0), whatever call its requests landed in."""
    client = create_redis(redis_server.url, timeout=2.0)
    shared = RedisSlidingWindow(f"prop:coalesce:{uuid.uuid4().hex}")
    rule = RateLimitRule(prefix="/api/proxy/", limit=7, window=30.0)
    other = RateLimitRule(prefix="/api/pay/", limit=3, window=30.0)

    async def burst() -> list[tuple[str, str, bool, int]]:
        asks = [(rule, f"ip:198.51.100.{n % 3}") for n in range(500)]
        asks += [(other, f"ip:198.51.100.{n % 3}") for n in range(100)]
        decisions = await asyncio.gather(*(shared.hit(client, r, who) for r, who in asks))
        return [
            (r.prefix, who, d.allowed, d.remaining)
            for (r, who), d in zip(asks, decisions, strict=True)
        ]

    try:
        answers = loop.run_until_complete(burst())
    finally:
        loop.run_until_complete(client.aclose())
    assert shared.decisions == 600
    assert shared.calls <= 4  # 600 / MAX_COALESCED, rounded up, not 600 round trips
    for prefix, limit in (("/api/proxy/", 7), ("/api/pay/", 3)):
        for n in range(3):
            mine = [a for a in answers if a[0] == prefix and a[1] == f"ip:198.51.100.{n}"]
            admitted = [a[3] for a in mine if a[2]]
            assert admitted == list(range(limit - 1, -1, -1))
            assert all(a[3] == 0 for a in mine if not a[2])
