"""One payment at a time, on loopback: the Helius webhook in → the `provisioned` event out on
the browser's SSE stream (through the gateway), measured from the moment the webhook is sent,
so separately from the wait for chain finality (every transfer is finalized beforehand).

Beside it, from the same run: the sandbox chain's own getTransaction at finalized, one at a
time (the verifier must read the transaction once; nothing can be faster than that)."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
from solana.rpc.async_api import AsyncClient

from axiom_payments.settings import DEV_MERCHANT_WALLET
from tests.bench.endtoend_bench import airdropped, finalized
from tests.bench.harness import Figure, Report, closed_loop, percentile
from tests.bench.stack import BenchStack
from tests.fixtures.solana import send_transfer

PAYMENTS = 200
PRICE = 100_000_000
SECRET = "bench-latency-helius-secret"


async def _provisioned_on_stream(http: aiohttp.ClientSession, url: str) -> None:
    """Read the stream until the `provisioned` status event."""
    async with http.get(url, headers={"Accept": "text/event-stream"}) as resp:
        assert resp.status == 200, await resp.text()
        async for line in resp.content:
            if line.startswith(b"data: ") and json.loads(line[6:])["status"] == "provisioned":
                return
    raise RuntimeError("the stream ended before provisioned")


async def run(stack: BenchStack, report: Report) -> None:
    await stack.start_service(
        "payments", RECONCILE_INTERVAL_SECONDS="3600", **stack.fresh_db("latency")
    )
    # The `confirmed` watch off: it would have each payment read again at finalized on its
    # own (issue 18), so the webhook would no longer be what finds it.
    await stack.start_service("verifier", SEEN_WATCH="false")
    notifier = await stack.start_service("notifier")
    gateway = await stack.start_service(
        "gateway", HELIUS_WEBHOOK_SECRET=SECRET, NOTIFIER_URL=notifier.base_url
    )
    async with aiohttp.ClientSession() as http, AsyncClient(stack.solana_url) as rpc:
        payers = await airdropped(rpc, 4)
        created = []
        for _ in range(PAYMENTS):
            async with http.post(
                gateway.base_url + "/api/pay/req/axiomid-pro-monthly", json={}
            ) as r:
                created.append(await r.json())
        signatures = [
            await send_transfer(
                rpc, payers[n % len(payers)], DEV_MERCHANT_WALLET, PRICE, (p["reference"],)
            )
            for n, p in enumerate(created)
        ]
        await finalized(rpc, list(signatures))

        latencies: list[float] = []
        for payment, signature in zip(created, signatures, strict=True):
            stream_url = f"{gateway.base_url}/api/sse/payment-status/{payment['payment_id']}"
            watching = asyncio.create_task(_provisioned_on_stream(http, stream_url))
            await asyncio.sleep(0.05)  # the stream is open and has sent the pending status
            sent = time.perf_counter()
            async with http.post(
                gateway.base_url + "/api/webhooks/helius",
                json=[{"signature": str(signature), "type": "TRANSFER"}],
                headers={"Authorization": SECRET},
            ) as resp:
                assert resp.status == 200, await resp.text()
            await asyncio.wait_for(watching, 30)
            latencies.append(time.perf_counter() - sent)

        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "getTransaction",
            "params": [
                str(signatures[0]),
                {
                    "commitment": "finalized",
                    "encoding": "json",
                    "maxSupportedTransactionVersion": 0,
                },
            ],
        }

        async def get_tx(session: aiohttp.ClientSession) -> bool:
            async with session.post(stack.solana_url, json=body) as resp:
                await resp.read()
                return resp.status == 200

        chain = await closed_loop(get_tx, concurrency=1, seconds=3.0)

    for label, p in (("latency p50", 50), ("latency p99", 99)):
        report.add(
            Figure(
                "webhook → SSE provisioned (1 payment)",
                label,
                percentile(latencies, p) * 1000,
                "ms",
                "sandbox getTransaction, 1 at a time",
                chain.percentile(p) * 1000,
                higher_is_better=False,
                notes=f"{PAYMENTS} payments one after another, each already finalized",
            )
        )
