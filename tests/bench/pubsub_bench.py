"""Solana sandbox PubSub: 1,000 subscriptions open at once do not slow the slot clock.

One sandbox process of its own (50 ms slots, finality 32 slots, as fast a clock as any test
here uses) with a steady stream of transfers to a few wallets throughout. Its clock's real
slot durations (GET /admin/clock: sleep, the slot's own work, any event-loop delay) are read
over SLOTS slots with no subscription, then over SLOTS more with 1,000 subscriptions open
over 50 WebSocket connections: slot and root subscribers (told every slot), account and
logs subscribers on the wallets being paid at processed, confirmed and finalized (told per
transfer), and signature subscribers on signatures that never land (indexed, never told).
The figure is the slot duration p50/p99 of the loaded chain beside the same chain with none.

The clients read everything they are sent (none may be dropped for falling behind: that is
checked), in this process, so the sandbox's own process is what is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from typing import Any

import aiohttp
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.keypair import Keypair
from solders.signature import Signature

from deploy.local.processes import ChildProcess
from sandbox.infra import free_port
from tests.bench.harness import Figure, Report, percentile
from tests.bench.stack import BenchStack
from tests.fixtures.solana import send_transfer

SLOT_INTERVAL = 0.05
SLOTS = 200
CONNECTIONS = 50
SUBSCRIPTIONS = 1_000
WALLETS = 10
#: Transfers a second during both measurements.
TRANSFER_RATE = 10
#: Each transfer: enough for a new wallet to be rent-exempt.
TRANSFER_LAMPORTS = 1_000_000
COMMITMENTS = ("processed", "confirmed", "finalized")


class Subscriber:
    """One WebSocket connection holding a share of the subscriptions; counts what it reads."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.notifications = 0
        self._answers: dict[int, asyncio.Future[Any]] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            payload = json.loads(message.data)
            if "method" in payload:
                self.notifications += 1
            elif (answer := self._answers.pop(payload.get("id"), None)) is not None:
                answer.set_result(payload)

    async def subscribe(self, request_id: int, method: str, params: list[Any]) -> None:
        answer = asyncio.get_running_loop().create_future()
        self._answers[request_id] = answer
        body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        await self.ws.send_str(json.dumps(body))
        response = await asyncio.wait_for(answer, 10)
        if not isinstance(response.get("result"), int):
            raise RuntimeError(f"{method} refused: {response}")

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.ws.close()


def subscription_plan(wallets: list[str]) -> list[tuple[str, list[Any]]]:
    """SUBSCRIPTIONS (method, params): a fifth each of slot, root, account, logs, signature."""
    kinds = itertools.cycle(["slot", "root", "account", "logs", "signature"])
    plan: list[tuple[str, list[Any]]] = []
    for index, kind in zip(range(SUBSCRIPTIONS), kinds, strict=False):
        wallet = wallets[index % len(wallets)]
        commitment = {"commitment": COMMITMENTS[index % len(COMMITMENTS)]}
        match kind:
            case "slot":
                plan.append(("slotSubscribe", []))
            case "root":
                plan.append(("rootSubscribe", []))
            case "account":
                plan.append(("accountSubscribe", [wallet, {**commitment, "encoding": "base64"}]))
            case "logs":
                plan.append(("logsSubscribe", [{"mentions": [wallet]}, commitment]))
            case _:
                plan.append(("signatureSubscribe", [str(Signature.new_unique()), commitment]))
    return plan


async def slot_durations(http: aiohttp.ClientSession, base_url: str) -> list[float]:
    """The durations of the next SLOTS slots the sandbox's clock makes, in seconds."""

    async def clock() -> dict[str, Any]:
        async with http.get(base_url + "/admin/clock") as resp:
            body: dict[str, Any] = await resp.json()
            return body

    start = (await clock())["ticks"]
    while True:
        await asyncio.sleep(SLOT_INTERVAL * 10)
        state = await clock()
        made = state["ticks"] - start
        if made >= SLOTS:
            intervals: list[float] = state["recent_intervals"]
            return intervals[-made:]


async def pay_steadily(rpc: AsyncClient, payer: Keypair, wallets: list[str]) -> None:
    """TRANSFER_RATE transfers a second, round the wallets, until cancelled."""
    began = time.perf_counter()
    for index in itertools.count():
        delay = began + index / TRANSFER_RATE - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        wallet = wallets[index % len(wallets)]
        await send_transfer(rpc, payer, wallet, TRANSFER_LAMPORTS, memo=str(index))


async def start_sandbox(stack: BenchStack) -> tuple[ChildProcess, int]:
    ws_port = free_port()
    child = await stack.start_module(
        "solana-pubsub",
        "sandbox.solana",
        "--pubsub-port",
        str(ws_port),
        "--slot-interval",
        str(SLOT_INTERVAL),
        "--log-level",
        "WARNING",
    )
    return child, ws_port


async def run(stack: BenchStack, report: Report) -> None:
    sandbox, ws_port = await start_sandbox(stack)
    base_url = sandbox.base_url
    wallets = [str(Keypair().pubkey()) for _ in range(WALLETS)]
    subscribers: list[Subscriber] = []
    async with aiohttp.ClientSession() as http, AsyncClient(base_url) as rpc:
        payer = Keypair()
        airdrop = (await rpc.request_airdrop(payer.pubkey(), 100_000_000_000)).value
        await rpc.confirm_transaction(airdrop, Confirmed, sleep_seconds=0.05)
        payments = asyncio.create_task(pay_steadily(rpc, payer, wallets))
        try:
            await asyncio.sleep(1.0)  # warm: the payments are flowing
            baseline = await slot_durations(http, base_url)
            if payments.done():
                payments.result()  # the load stopped: say why

            plan = subscription_plan(wallets)
            for _ in range(CONNECTIONS):
                ws = await http.ws_connect(f"ws://127.0.0.1:{ws_port}", max_msg_size=0)
                subscribers.append(Subscriber(ws))
            await asyncio.gather(
                *(
                    subscribers[index % CONNECTIONS].subscribe(index, method, params)
                    for index, (method, params) in enumerate(plan)
                )
            )
            await asyncio.sleep(1.0)
            received_before = sum(s.notifications for s in subscribers)
            loaded_started = time.perf_counter()
            loaded = await slot_durations(http, base_url)
            loaded_seconds = time.perf_counter() - loaded_started
            if payments.done():
                payments.result()
            received = sum(s.notifications for s in subscribers) - received_before
            async with http.get(base_url + "/admin/stats") as resp:
                stats = await resp.json()
        finally:
            payments.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await payments
            await asyncio.gather(*(s.close() for s in subscribers), return_exceptions=True)
    if stats["pubsub_connections_dropped"]:
        raise RuntimeError(f"{stats['pubsub_connections_dropped']} bench clients were dropped")
    if stats["pubsub_subscriptions"] != SUBSCRIPTIONS:
        raise RuntimeError(
            f"{stats['pubsub_subscriptions']} subscriptions open, not {SUBSCRIPTIONS}"
        )

    rate = received / loaded_seconds
    notes = (
        f"{SLOT_INTERVAL * 1000:.0f} ms clock, {TRANSFER_RATE} transfers/s, {SUBSCRIPTIONS:,} "
        f"subscriptions over {CONNECTIONS} connections, {rate:,.0f} notifications/s read"
    )
    for p in (50, 99):
        report.add(
            Figure(
                benchmark="solana pubsub",
                metric=f"slot interval p{p}",
                value=percentile(loaded, p) * 1000,
                unit="ms",
                baseline="same chain, no subscriptions",
                baseline_value=percentile(baseline, p) * 1000,
                higher_is_better=False,
                notes=notes,
            )
        )
    print(f"  solana pubsub: {notes}", flush=True)
