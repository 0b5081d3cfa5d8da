"""Payment creation fetches the recent blockhash at most once per slot, shared by every
concurrent request (`RecentBlockhash`)."""

from __future__ import annotations

import asyncio

import pytest
from solders.hash import Hash

from axiom_shared.solana_rpc import RecentBlockhash, RpcUnavailable, SolanaRpc


class CountingRpc(SolanaRpc):
    """The client's blockhash call answered locally, slowly, and counted."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    async def latest_blockhash(self, commitment: str = "finalized") -> Hash:
        self.calls += 1
        await asyncio.sleep(0.01)
        if self.fail:
            raise RpcUnavailable("getLatestBlockhash: HTTP 503")
        return Hash.new_unique()


async def test_concurrent_requests_share_one_fetch_per_slot() -> None:
    now = [0.0]
    rpc = CountingRpc()
    cache = RecentBlockhash(rpc, max_age=0.4, clock=lambda: now[0])
    first = await asyncio.gather(*(cache.get() for _ in range(200)))
    assert rpc.calls == 1
    assert len(set(first)) == 1
    now[0] = 0.39
    assert await cache.get() == first[0]
    assert rpc.calls == 1
    now[0] = 0.41  # the next slot
    second = await asyncio.gather(*(cache.get() for _ in range(50)))
    assert rpc.calls == 2
    assert len(set(second)) == 1
    assert second[0] != first[0]


async def test_a_failed_fetch_fails_its_waiters_and_the_next_call_asks_again() -> None:
    rpc = CountingRpc()
    rpc.fail = True
    cache = RecentBlockhash(rpc, max_age=0.4)
    results = await asyncio.gather(*(cache.get() for _ in range(10)), return_exceptions=True)
    assert all(isinstance(r, RpcUnavailable) for r in results)
    assert rpc.calls == 1
    rpc.fail = False
    assert isinstance(await cache.get(), Hash)
    assert rpc.calls == 2


async def test_a_caller_giving_up_does_not_cancel_the_others() -> None:
    rpc = CountingRpc()
    cache = RecentBlockhash(rpc, max_age=0.4)
    impatient = asyncio.ensure_future(cache.get())
    patient = asyncio.ensure_future(cache.get())
    await asyncio.sleep(0)
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    assert isinstance(await patient, Hash)
    assert rpc.calls == 1
