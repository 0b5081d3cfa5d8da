"""Payment creation through the gateway (gateway → NATS → payments → libSQL + outbox)
beside a bare aiohttp hello-world, measured in the same run on the same machine."""

from __future__ import annotations

import aiohttp
from solders.keypair import Keypair

from tests.bench.harness import Figure, Report, closed_loop
from tests.bench.stack import BenchStack

CONCURRENCY = 50
SECONDS = 5.0


async def run(stack: BenchStack, report: Report) -> None:
    hello = await stack.start_hello()
    await stack.start_service("payments", **stack.fresh_db("creation"))
    gateway = await stack.start_service("gateway")

    async def hello_call(http: aiohttp.ClientSession) -> bool:
        async with http.post(hello.base_url + "/", json={}) as resp:
            await resp.read()
            return resp.status == 200

    url = gateway.base_url + "/api/pay/req/axiomid-pro-monthly"

    async def create(http: aiohttp.ClientSession) -> bool:
        async with http.post(url, json={}) as resp:
            await resp.read()
            return resp.status == 200

    account = str(Keypair().pubkey())

    async def create_with_tx(http: aiohttp.ClientSession) -> bool:
        async with http.post(url, json={"account": account}) as resp:
            await resp.read()
            return resp.status == 200

    baseline = await closed_loop(hello_call, concurrency=CONCURRENCY, seconds=SECONDS)
    plain = await closed_loop(create, concurrency=CONCURRENCY, seconds=SECONDS)

    # Polling, the fallback of the live status: what one check-status costs.
    async with aiohttp.ClientSession() as http, http.post(url, json={}) as resp:
        polled = (await resp.json())["payment_id"]
    status_url = f"{gateway.base_url}/api/pay/check-status/{polled}"

    async def poll(http: aiohttp.ClientSession) -> bool:
        async with http.get(status_url) as resp:
            await resp.read()
            return resp.status == 200

    polling = await closed_loop(poll, concurrency=CONCURRENCY, seconds=SECONDS)
    with_tx = await closed_loop(create_with_tx, concurrency=CONCURRENCY, seconds=SECONDS)
    for name, result in (
        ("payment creation", plain),
        ("payment creation + tx", with_tx),
        ("check-status (polling)", polling),
    ):
        report.add(
            Figure(
                name,
                "requests/s",
                result.rps,
                "req/s",
                "aiohttp hello-world",
                baseline.rps,
                notes=f"errors={result.errors}, p99={result.percentile(99) * 1000:.1f} ms",
            )
        )
        report.add(
            Figure(
                name,
                "latency p99",
                result.percentile(99) * 1000,
                "ms",
                "aiohttp hello-world",
                baseline.percentile(99) * 1000,
                higher_is_better=False,
            )
        )
