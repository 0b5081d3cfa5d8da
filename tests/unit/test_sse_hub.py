"""The notifier's fan-out pieces on their own: watchers and the shared heartbeat clock."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from axiom_notifier.hub import Heartbeats, StatusHub
from axiom_shared.schemas import ChangeSource, PaymentStatus, PaymentStatusChanged, PaymentView

KEY = "4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D4xWLs4gDB4T"


def change(payment_id: str, version: int) -> PaymentStatusChanged:
    now = datetime.now(UTC)
    return PaymentStatusChanged(
        payment=PaymentView(
            payment_id=payment_id,
            status=PaymentStatus.PENDING,
            order_id="axiomid-pro-monthly",
            amount_lamports=1,
            recipient=KEY,
            reference=KEY,
            expires_at=now + timedelta(minutes=15),
            created_at=now,
            updated_at=now,
            version=version,
        ),
        previous_status=None,
        source=ChangeSource.OPERATOR,
    )


async def test_a_change_reaches_only_its_payments_watchers_in_order() -> None:
    hub = StatusHub(queue_size=4)
    mine = [hub.watch("pay_a") for _ in range(3)]
    other = hub.watch("pay_b")
    for version in (1, 2, 3):
        assert hub.publish(change("pay_a", version)) == 3
    assert other.empty()
    for watcher in mine:
        got = [await watcher.next() for _ in range(3)]
        assert [c.payment.version for c in got if c is not None] == [1, 2, 3]


async def test_a_watcher_too_far_behind_is_cut_off_and_forgotten() -> None:
    hub = StatusHub(queue_size=2)
    slow, fast = hub.watch("pay_a"), hub.watch("pay_a")
    assert hub.publish(change("pay_a", 1)) == 2
    assert await fast.next() is not None
    assert hub.publish(change("pay_a", 2)) == 2
    assert await fast.next() is not None
    assert hub.publish(change("pay_a", 3)) == 1  # slow had 2 waiting: cut off
    assert slow.closed
    assert await slow.next() is None  # nothing half-kept: it reconnects and resumes
    assert hub.publish(change("pay_a", 4)) == 1


async def test_a_waiting_watcher_wakes_on_a_change_and_on_close() -> None:
    hub = StatusHub()
    watcher = hub.watch("pay_a")
    waiting = asyncio.create_task(watcher.next())
    await asyncio.sleep(0)
    hub.publish(change("pay_a", 1))
    first = await asyncio.wait_for(waiting, 1)
    assert first is not None
    assert first.payment.version == 1
    waiting = asyncio.create_task(watcher.next())
    await asyncio.sleep(0)
    hub.close_all()
    assert await asyncio.wait_for(waiting, 1) is None


async def test_heartbeats_are_spread_over_the_interval_not_one_tick() -> None:
    """2,000 streams opened at the same moment, interval 1 s (4 slots): every stream beats
    about once a second, and no tick beats much more than its share.

    Ticks are told apart by the event loop, not by the wall clock: a task that yields on every
    loop turn counts the turns, and one tick beats its streams within one turn. (Counted by
    wall-clock quarter seconds, a stalled loop's catch-up ticks fell into one bucket.)"""
    beats = Heartbeats(interval=1.0)
    turns = 0
    ticks: Counter[int] = Counter()
    per_stream: Counter[int] = Counter()

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    def beat_for(n: int) -> Callable[[], Awaitable[bool]]:
        async def beat() -> bool:
            per_stream[n] += 1
            ticks[turns] += 1
            return True

        return beat

    for n in range(2_000):
        beats.add(n, beat_for(n), lambda: None)
    counter = asyncio.create_task(count_turns())
    beats.start()
    await asyncio.sleep(2.1)
    await beats.stop()
    counter.cancel()
    assert len(ticks) >= 8  # (at least) 8 ticks, each beating its own streams
    assert max(ticks.values()) < 2_000 * 0.4  # a quarter each, give or take chance
    assert set(per_stream.values()) <= {1, 2, 3}
    assert len(per_stream) == 2_000


async def test_a_failed_beat_ends_that_stream_only() -> None:
    beats = Heartbeats(interval=0.25)
    ended: list[str] = []

    async def alive() -> bool:
        return True

    async def gone() -> bool:
        return False

    async def broken() -> bool:
        raise ConnectionResetError("closing transport")

    beats.add("alive", alive, lambda: ended.append("alive"))
    beats.add("gone", gone, lambda: ended.append("gone"))
    beats.add("broken", broken, lambda: ended.append("broken"))
    beats.start()
    await asyncio.sleep(0.7)
    await beats.stop()
    assert sorted(ended) == ["broken", "gone"]
    assert len(beats) == 1
