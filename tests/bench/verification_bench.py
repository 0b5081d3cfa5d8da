"""Webhook in → provisioned, over 2,000 payments: latency p50/p99 and verifications/s, beside
the sandbox chain's own getTransaction rate and latency measured in the same run (the floor
any verification stands on: each one reads the transaction at finalized)."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import nats
from nats.aio.msg import Msg
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.keypair import Keypair
from solders.signature import Signature

from axiom_payments.settings import DEV_MERCHANT_WALLET
from tests.bench.harness import Figure, Report, closed_loop
from tests.bench.stack import BenchStack
from tests.fixtures.solana import send_transfer

PAYMENTS = 2000
PRICE = 100_000_000
SECRET = "bench-helius-secret"


async def run(stack: BenchStack, report: Report) -> None:
    await stack.start_service(
        "payments", RECONCILE_INTERVAL_SECONDS="3600", **stack.fresh_db("verification")
    )
    # The `confirmed` watch off: it would have each payment read again at finalized on its
    # own (issue 18), so the webhook would no longer be what finds it.
    await stack.start_service("verifier", SEEN_WATCH="false")
    gateway = await stack.start_service("gateway", HELIUS_WEBHOOK_SECRET=SECRET)
    rpc_url = stack.solana_url

    async with aiohttp.ClientSession() as http, AsyncClient(rpc_url) as rpc:
        payers = [Keypair() for _ in range(16)]
        for payer in payers:
            sig = (await rpc.request_airdrop(payer.pubkey(), 20_000_000_000)).value
            await rpc.confirm_transaction(sig, Confirmed, sleep_seconds=0.05)

        sem = asyncio.Semaphore(32)

        async def create() -> dict[str, str]:
            async with (
                sem,
                http.post(gateway.base_url + "/api/pay/req/axiomid-pro-monthly", json={}) as resp,
            ):
                body: dict[str, str] = await resp.json()
                return body

        created = await asyncio.gather(*(create() for _ in range(PAYMENTS)))

        async def pay(index: int, payment: dict[str, str]) -> str:
            async with sem:
                signature = await send_transfer(
                    rpc,
                    payers[index % len(payers)],
                    DEV_MERCHANT_WALLET,
                    PRICE,
                    (payment["reference"],),
                )
                return str(signature)

        signatures = await asyncio.gather(*(pay(i, p) for i, p in enumerate(created)))
        # Wait until the last one is finalized: the webhooks then name finalized transactions.
        last = signatures[-1]
        while True:
            status = (await rpc.get_signature_statuses([Signature.from_string(last)])).value[0]
            if status is not None and "inalized" in str(status.confirmation_status):
                break
            await asyncio.sleep(0.1)

        provisioned_at: dict[str, float] = {}
        done = asyncio.Event()
        nc = await nats.connect(stack.nats.url)

        async def on_status(msg: Msg) -> None:
            body = json.loads(msg.data)
            if body["payment"]["status"] == "provisioned":
                provisioned_at.setdefault(body["payment"]["payment_id"], time.perf_counter())
                if len(provisioned_at) >= PAYMENTS:
                    done.set()

        await nc.subscribe("payments.events.status.>", cb=on_status)
        sent_at: dict[str, float] = {}

        async def webhook(batch: list[tuple[dict[str, str], str]]) -> None:
            items = [{"signature": sig, "type": "TRANSFER"} for _, sig in batch]
            async with sem:
                now = time.perf_counter()
                for payment, _ in batch:
                    sent_at[payment["payment_id"]] = now
                async with http.post(
                    gateway.base_url + "/api/webhooks/helius",
                    json=items,
                    headers={"Authorization": SECRET},
                ) as resp:
                    assert resp.status == 200, await resp.text()

        pairs = list(zip(created, signatures, strict=True))
        started = time.perf_counter()
        await asyncio.gather(*(webhook(pairs[i : i + 5]) for i in range(0, PAYMENTS, 5)))
        await asyncio.wait_for(done.wait(), 120)
        finished = max(provisioned_at.values())
        await nc.close()

    latencies = sorted(provisioned_at[p["payment_id"]] - sent_at[p["payment_id"]] for p in created)

    def pct(values: list[float], p: float) -> float:
        return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]

    # Baseline: the sandbox chain's own getTransaction, at finalized, same concurrency.
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "getTransaction",
        "params": [
            signatures[0],
            {"commitment": "finalized", "encoding": "base64", "maxSupportedTransactionVersion": 0},
        ],
    }

    async def get_tx(session: aiohttp.ClientSession) -> bool:
        async with session.post(rpc_url, json=body) as resp:
            await resp.read()
            return resp.status == 200

    chain = await closed_loop(get_tx, concurrency=32, seconds=3.0)
    rate = PAYMENTS / (finished - started)
    report.add(
        Figure(
            "webhook → provisioned",
            "verifications/s",
            rate,
            "1/s",
            "sandbox getTransaction",
            chain.rps,
        )
    )
    report.add(
        Figure(
            "webhook → provisioned",
            "latency p50",
            pct(latencies, 50) * 1000,
            "ms",
            "sandbox getTransaction",
            chain.percentile(50) * 1000,
            higher_is_better=False,
        )
    )
    report.add(
        Figure(
            "webhook → provisioned",
            "latency p99",
            pct(latencies, 99) * 1000,
            "ms",
            "sandbox getTransaction",
            chain.percentile(99) * 1000,
            higher_is_better=False,
        )
    )
