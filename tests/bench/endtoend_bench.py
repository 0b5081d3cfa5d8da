"""1,000 payments end to end: created through the gateway, paid from sandbox wallets, found by
the sandbox's Helius-style webhooks, verified at finalized and provisioned. Beside it, in the
same run, the time the sandbox alone takes to land and finalize the same 1,000 transfers (the
chain is the floor: nothing can be provisioned before its transfer is finalized)."""

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
from tests.bench.harness import Figure, Report
from tests.bench.stack import BenchStack
from tests.fixtures.solana import send_transfer

PAYMENTS = 1000
PRICE = 100_000_000
CONCURRENCY = 32
PAYERS = 16
SECRET = "bench-endtoend-helius-secret"


async def airdropped(rpc: AsyncClient, count: int) -> list[Keypair]:
    payers = [Keypair() for _ in range(count)]
    for payer in payers:
        sig = (await rpc.request_airdrop(payer.pubkey(), 20 * PRICE * PAYMENTS // count)).value
        await rpc.confirm_transaction(sig, Confirmed, sleep_seconds=0.05)
    return payers


async def finalized(rpc: AsyncClient, signatures: list[Signature]) -> None:
    """Until every one of `signatures` is finalized."""
    pending = list(signatures)
    while pending:
        still: list[Signature] = []
        for start in range(0, len(pending), 256):
            chunk = pending[start : start + 256]
            statuses = (await rpc.get_signature_statuses(chunk)).value
            for sig, status in zip(chunk, statuses, strict=True):
                if status is None or "inalized" not in str(status.confirmation_status):
                    still.append(sig)
        pending = still
        if pending:
            await asyncio.sleep(0.05)


async def chain_alone(rpc: AsyncClient) -> float:
    """Seconds for the sandbox to land and finalize PAYMENTS transfers sent as our payers do."""
    payers = await airdropped(rpc, PAYERS)
    sem = asyncio.Semaphore(CONCURRENCY)

    async def pay(index: int) -> Signature:
        async with sem:
            reference = str(Keypair().pubkey())
            payer = payers[index % len(payers)]
            return await send_transfer(rpc, payer, DEV_MERCHANT_WALLET, PRICE, (reference,))

    started = time.perf_counter()
    signatures = await asyncio.gather(*(pay(i) for i in range(PAYMENTS)))
    await finalized(rpc, signatures)
    return time.perf_counter() - started


async def run(stack: BenchStack, report: Report) -> None:
    await stack.start_service(
        "payments", RECONCILE_INTERVAL_SECONDS="3600", **stack.fresh_db("endtoend")
    )
    await stack.start_service("verifier")
    gateway = await stack.start_service("gateway", HELIUS_WEBHOOK_SECRET=SECRET)

    async with aiohttp.ClientSession() as http, AsyncClient(stack.solana_url) as rpc:
        baseline = await chain_alone(rpc)
        async with http.post(
            stack.solana_url + "/v0/webhooks",
            json={
                "webhookURL": gateway.base_url + "/api/webhooks/helius",
                "accountAddresses": [DEV_MERCHANT_WALLET],
                "webhookType": "enhanced",
                "transactionTypes": ["ANY"],
                "authHeader": SECRET,
            },
        ) as resp:
            assert resp.status < 300, await resp.text()
            webhook_id = (await resp.json())["webhookID"]
        payers = await airdropped(rpc, PAYERS)

        provisioned: set[str] = set()
        done = asyncio.Event()
        nc = await nats.connect(stack.nats.url)

        async def on_status(msg: Msg) -> None:
            payment = json.loads(msg.data)["payment"]
            if payment["status"] == "provisioned":
                provisioned.add(payment["payment_id"])
                if len(provisioned) >= PAYMENTS:
                    done.set()

        await nc.subscribe("payments.events.status.>", cb=on_status)
        sem = asyncio.Semaphore(CONCURRENCY)
        url = gateway.base_url + "/api/pay/req/axiomid-pro-monthly"

        async def buy(index: int) -> None:
            async with sem:
                async with http.post(url, json={}) as resp:
                    assert resp.status == 200, await resp.text()
                    payment = await resp.json()
                payer = payers[index % len(payers)]
                await send_transfer(
                    rpc, payer, payment["recipient"], PRICE, (payment["reference"],)
                )

        started = time.perf_counter()
        await asyncio.gather(*(buy(i) for i in range(PAYMENTS)))
        await asyncio.wait_for(done.wait(), 300)
        ours = time.perf_counter() - started
        await nc.close()
        async with http.delete(stack.solana_url + f"/v0/webhooks/{webhook_id}"):
            pass

    report.add(
        Figure(
            f"{PAYMENTS} payments end to end",
            "total time",
            ours,
            "s",
            "sandbox lands + finalizes the transfers",
            baseline,
            higher_is_better=False,
            notes="create, pay, webhook, verify at finalized, provision",
        )
    )
